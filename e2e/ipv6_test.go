package e2e

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/netconfig"
	"golang.org/x/sys/unix"
)

// TestIPv6: a network with -o vxsafe.ipv6 gives containers on three nodes distinct IPv6 addresses,
// derived from their IPv4 ones, that reach each other both ways; IPv4 on the network is unaffected
// (the default route through docker_gwbridge stays); churn leaves no IPv6 neighbour entry behind; and a
// network created with Docker's own --ipv6 is refused with the error that says what to use instead.
func TestIPv6(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxv6", Nodes: 3})
	installVxsafe(t, c, nil)
	nodes := c.Nodes()
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	img := c.Image()
	const prefix = "fd00:9::/64"
	_, pfx, _ := net.ParseCIDR(prefix)

	// A prefix that is not one is refused by the manager's AllocateNetwork. Swarm allocates networks
	// after `docker network create` has returned, so the manager's log is where the refusal is (a
	// container's attachment then times out, Docker's "check manager logs").
	offset := len(n1.Log())
	docker(t, n1, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.19.0/24", "-o", "vxsafe.ipv6=10.0.0.0/8", "v6bad")
	var refusal string
	poll(t, 30*time.Second, "the manager's plugin refuses vxsafe.ipv6=10.0.0.0/8", func() error {
		if refusal = logLine(pluginLogSince(n1, offset), "invalid option vxsafe.ipv6=", "fd00:1::/64"); refusal == "" {
			return fmt.Errorf("no refusal in n1's log")
		}
		return nil
	})
	t.Logf("IPV6 -o vxsafe.ipv6=10.0.0.0/8, the manager's log: %s", refusal)
	removeSwarmNetwork(t, n1, "v6bad")

	docker(t, n1, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.9.0/24",
		"-o", "vxsafe.ipv6="+prefix, "v6")
	names := []string{"c1", "c2", "c3"}
	on := map[string]*cluster.Node{"c1": n1, "c2": n2, "c3": n3}
	for _, name := range names {
		docker(t, on[name], "run", "-d", "--name", name, "--network", "v6", img, "sleep", "3600")
	}
	v4 := map[string]string{}
	v6 := map[string]string{}
	seen := map[string]string{}
	for _, name := range names {
		n := on[name]
		v4[name] = containerIP(t, n, name, "v6")
		want := netconfig.IPv6For(pfx, net.ParseIP(v4[name])).String()
		got := docker(t, n, "inspect", "-f", `{{(index .NetworkSettings.Networks "v6").GlobalIPv6Address}}`, name)
		inside := docker(t, n, "exec", name, "ip", "-6", "-o", "addr", "show", "scope", "global")
		t.Logf("IPV6 %s on %s: IPv4 %s, IPv6 %s (docker inspect: %q); in the container: %s", name, n.Name, v4[name], want, got, strings.TrimSpace(inside))
		if !strings.Contains(inside, want+"/64") {
			t.Fatalf("%s on %s has not got %s/64 on its interface: %s", name, n.Name, want, inside)
		}
		if other, dup := seen[want]; dup {
			t.Fatalf("%s and %s have the same IPv6 address %s", name, other, want)
		}
		seen[want], v6[name] = name, want
		sys := docker(t, n, "exec", name, "sh", "-c", "for f in all default eth0 lo; do echo $f=$(cat /proc/sys/net/ipv6/conf/$f/disable_ipv6); done")
		t.Logf("IPV6 %s disable_ipv6: %s", name, strings.Join(strings.Fields(sys), " "))
		routes := docker(t, n, "exec", name, "ip", "-4", "route", "show", "default")
		t.Logf("IPV6 %s IPv4 default route: %s; IPv6 routes: %s", name, routes,
			strings.Join(strings.Split(docker(t, n, "exec", name, "ip", "-6", "route"), "\n"), "; "))
		if !strings.Contains(routes, "default via") {
			t.Errorf("%s on %s lost its IPv4 default route (docker_gwbridge): %q", name, n.Name, routes)
		}
	}

	// Both ways, every pair, by address; IPv4 too.
	for _, a := range names {
		for _, b := range names {
			if a == b {
				continue
			}
			took := poll(t, 20*time.Second, a+" pings "+b+" over IPv6", func() error { return ping6Once(on[a], a, v6[b]) })
			t.Logf("IPV6 %s (%s) -> %s (%s) %s: reply after %.1fs", a, on[a].Name, b, on[b].Name, v6[b], took.Seconds())
			if err := pingOnce(on[a], a, v4[b]); err != nil {
				t.Errorf("IPv4 on the network: %v", err)
			}
		}
	}
	// A TCP connection over IPv6 (not only ICMP): c2 serves, c1 and c3 fetch.
	docker(t, n2, "exec", "-d", "c2", "httpd", "-p", "[::]:8080", "-h", "/etc")
	for _, a := range []string{"c1", "c3"} {
		poll(t, 20*time.Second, a+" fetches from c2 over IPv6 TCP", func() error {
			out, err := on[a].Docker(ctxT(t, 30*time.Second), "exec", a, "sh", "-c",
				fmt.Sprintf("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 %s 8080", v6["c2"]))
			if err != nil || !strings.Contains(out, "200") {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	}
	t.Logf("IPV6 TCP over IPv6 to c2 [%s]:8080 from c1 and c3: HTTP 200", v6["c2"])

	// A service in its default mode (VIP): its tasks have IPv6 addresses of their own, reachable from c1,
	// and the service answers by name over IPv4 (its VIP) as before.
	netID, _ := networkVNI(t, n1, "v6")
	r := &vipRig{t: t, c: c, m: n1, netID: netID}
	docker(t, n1, "service", "create", "--detach", "--name", "web6", "--network", "v6", "--replicas", "2",
		"--stop-grace-period", "1s", img, "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc")
	var tasks map[string]time.Time
	poll(t, 90*time.Second, "2 replicas of web6 running", func() error {
		if tasks = r.taskIPs("web6"); len(tasks) != 2 {
			return fmt.Errorf("%d running", len(tasks))
		}
		return nil
	})
	for ip := range tasks {
		a6 := netconfig.IPv6For(pfx, net.ParseIP(ip)).String()
		took := poll(t, 20*time.Second, "c1 pings web6's task "+a6, func() error { return ping6Once(n1, "c1", a6) })
		t.Logf("IPV6 web6 task %s / %s: reply to c1 after %.1fs", ip, a6, took.Seconds())
	}
	poll(t, 30*time.Second, "c1 fetches from web6 by name (VIP, IPv4)", func() error {
		out, err := n1.Docker(ctxT(t, 30*time.Second), "exec", "c1", "sh", "-c", "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 web6 8080")
		if err != nil || !strings.Contains(out, "200") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	t.Logf("IPV6 web6 by name (its IPv4 VIP %s) from c1: HTTP 200", r.serviceVIP("web6"))
	docker(t, n1, "service", "rm", "web6")

	// Names: which engines' DNS answers AAAA, for a container on the same node and on another.
	docker(t, n1, "run", "-d", "--name", "c1b", "--network", "v6", img, "sleep", "3600")
	for _, target := range []string{"c1b", "c2"} {
		out, _ := n1.Docker(ctxT(t, 30*time.Second), "exec", "c1", "nslookup", "-type=AAAA", target, "127.0.0.11")
		t.Logf("IPV6 DNS on %s: AAAA %s (from c1): %q", n1.Name, target, out)
	}
	docker(t, n1, "rm", "-f", "c1b")

	// Churn on n2 and n3: containers come and go; what stays on n1's device is exactly c2's and c3's.
	for i := 0; i < 4; i++ {
		for _, n := range []*cluster.Node{n2, n3} {
			name := fmt.Sprintf("ch%d-%s", i, n.Name)
			docker(t, n, "run", "-d", "--name", name, "--network", "v6", img, "sleep", "3600")
			ip := containerIP(t, n, name, "v6")
			poll(t, 20*time.Second, "c1 reaches "+name, func() error {
				return ping6Once(n1, "c1", netconfig.IPv6For(pfx, net.ParseIP(ip)).String())
			})
			docker(t, n, "rm", "-f", name)
		}
	}
	links, err := linksWithPrefix(n1, "vx-")
	if err != nil || len(links) != 1 {
		t.Fatalf("n1's vxlan devices: %v %v", links, err)
	}
	dev := links[0]
	want := []string{v6["c2"], v6["c3"]}
	sort.Strings(want)
	var got []string
	poll(t, 20*time.Second, "n1's IPv6 neighbours are c2's and c3's", func() error {
		got = nil
		err := permanentNeighbours(n1, dev, unix.AF_INET6, func(nb netlink.Neigh) { got = append(got, nb.IP.String()) })
		if err != nil {
			return err
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("have %v, want %v", got, want)
		}
		return nil
	})
	t.Logf("IPV6 after churn of 8 containers, n1's IPv6 neighbours on %s: %v", dev, got)
	for _, name := range names {
		docker(t, on[name], "rm", "-f", name)
	}
	poll(t, 20*time.Second, "n1's device and its entries are gone", func() error {
		l, err := linksWithPrefix(n1, "vx-")
		if err != nil || len(l) != 0 {
			return fmt.Errorf("links %v %v", l, err)
		}
		return nil
	})
	removeSwarmNetwork(t, n1, "v6")

	// Docker's own --ipv6 never runs a task with duplicate addresses. Where the engine gets as far as
	// the driver, each node's CreateNetwork refuses it and the task's error says what to use instead
	// (docker service ps). Measured: with an IPv6 --subnet, 20.10 reaches vxsafe and the current engine's
	// swarm allocator fails first (for overlay too); without one, 20.10's node finds no IPv6 pool and the
	// current engine's node takes one of its default pools, which vxsafe refuses.
	refusedBy := map[string]string{}
	for _, c := range []struct{ name, v6subnet string }{{"v6docker", "fd00:10::/64"}, {"v6docker2", ""}} {
		args := []string{"network", "create", "-d", pluginName, "--attachable", "--ipv6", "--subnet", "10.0.10.0/24"}
		if c.v6subnet != "" {
			args = append(args, "--subnet", c.v6subnet)
		}
		offset := len(n1.Log())
		docker(t, n1, append(args, c.name)...)
		id := docker(t, n1, "network", "inspect", "-f", "{{.Id}}", c.name)
		docker(t, n1, "service", "create", "--detach", "--name", c.name+"-svc", "--network", c.name, img, "sleep", "3600")
		poll(t, 60*time.Second, c.name+": the service's task is refused", func() error {
			out, err := n1.Docker(ctxT(t, 30*time.Second), "service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}", c.name+"-svc")
			if err != nil {
				return err
			}
			if strings.Contains(out, "Running") {
				t.Fatalf("%s: a task runs on a network with Docker's --ipv6: %s", c.name, out)
			}
			for _, l := range strings.Split(out, "\n") {
				if _, e, _ := strings.Cut(l, "|"); e != "" {
					refusedBy[c.name] = e
					return nil
				}
			}
			if strings.Contains(n1.Log()[offset:], "Failed allocation for network "+id) {
				refusedBy[c.name] = "swarm's allocator (manager log: Failed allocation for network " + id[:12] + ")"
				return nil
			}
			return fmt.Errorf("tasks: %q", out)
		})
		t.Logf("IPV6 --ipv6 (IPv6 subnet %q): refused by %s", c.v6subnet, refusedBy[c.name])
		docker(t, n1, "service", "rm", c.name+"-svc")
		removeSwarmNetwork(t, n1, c.name)
	}
	vxsafeSaid := 0
	for name, why := range refusedBy {
		if strings.Contains(why, "vxsafe.ipv6=PREFIX") {
			vxsafeSaid++
			if !strings.Contains(why, "moby/moby#48116") {
				t.Errorf("%s: vxsafe's refusal does not say why: %s", name, why)
			}
		}
	}
	if vxsafeSaid == 0 {
		t.Errorf("no --ipv6 network reached vxsafe's refusal on this engine: %v", refusedBy)
	}
}

func ping6Once(n *cluster.Node, container, target string) error {
	out, err := n.Docker(context.Background(), "exec", container, "ping6", "-c", "1", "-W", "1", target)
	if err != nil {
		return fmt.Errorf("%s -> %s: %v: %s", container, target, err, out)
	}
	return nil
}
