package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/e2e/stale"
	"github.com/vxsafe/overlay/e2e/vxsafe"
)

const pluginName = vxsafe.Plugin

var (
	bundleOnce sync.Once
	bundleDir  string
	bundleErr  error
)

// pluginBundle builds a fresh plugin bundle (config.json + rootfs/ with a static vxsafe) once per test
// binary, in a directory of its own, so a stale rootfs/ in the checkout can never be what is tested.
func pluginBundle(t *testing.T) string {
	t.Helper()
	bundleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vxsafe-bundle-")
		if err != nil {
			bundleErr = err
			return
		}
		bundleDir = dir
		bundleErr = vxsafe.BuildBundle(context.Background(), dir, "e2e")
	})
	if bundleErr != nil {
		t.Fatal(bundleErr)
	}
	return bundleDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bundleDir != "" {
		os.RemoveAll(bundleDir)
	}
	os.Exit(code)
}

// installVxsafe installs the plugin on every node of c with per-node state and Docker socket mounts
// (vxsafe.Install: vxsafe.Settings overridden by env).
func installVxsafe(t *testing.T, c *cluster.Cluster, env map[string]string) {
	t.Helper()
	began := time.Now()
	if err := vxsafe.Install(ctxT(t, 3*time.Minute), c, pluginBundle(t), env); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING plugin installed on %d nodes in %.1fs", len(c.Nodes()), time.Since(began).Seconds())
}

// poll retries f until it succeeds or the deadline passes; it returns the time taken.
func poll(t *testing.T, limit time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < limit {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, limit, err)
	return 0
}

func docker(t *testing.T, n *cluster.Node, args ...string) string {
	t.Helper()
	out, err := n.Docker(ctxT(t, 2*time.Minute), args...)
	if err != nil {
		t.Fatalf("node %s: docker %s: %v", n.Name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out)
}

// removeSwarmNetwork removes a swarm-scoped network on manager m. The manager drops the attachment task of
// a removed container asynchronously (and later still for a node that has just come back from a
// partition), refusing the removal with "is in use by task" meanwhile: retry that for a minute.
func removeSwarmNetwork(t *testing.T, m *cluster.Node, name string) {
	t.Helper()
	took := poll(t, time.Minute, "docker network rm "+name, func() error {
		_, err := m.Docker(ctxT(t, 2*time.Minute), "network", "rm", name)
		if err != nil && !strings.Contains(err.Error(), "in use by task") {
			t.Fatalf("node %s: docker network rm %s: %v", m.Name, name, err)
		}
		return err
	})
	if took > time.Second {
		t.Logf("network %s removed after %.1fs (swarm still held an attachment task)", name, took.Seconds())
	}
}

// networkVNI reads a swarm network's full ID and first VNI on n, waiting for swarm's allocator to give it one.
func networkVNI(t *testing.T, n *cluster.Node, net string) (string, uint32) {
	t.Helper()
	id, vnis, err := stale.OverlayVNIs(ctxT(t, time.Minute), n, net)
	if err != nil {
		t.Fatal(err)
	}
	return id, vnis[0]
}

func vxName(vni uint32, id string) string { return fmt.Sprintf("vx-%06x-%s", vni, id[:5]) }

func hasLink(n *cluster.Node, name string) bool {
	names, _ := n.LinkNames()
	for _, l := range names {
		if l == name {
			return true
		}
	}
	return false
}

// TestVxsafeSingleNode: the plugin in a real dockerd — two containers ping each other by name, and the
// seed's stale device does not block a container start.
func TestVxsafeSingleNode(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxs1", Nodes: 1})
	installVxsafe(t, c, nil)
	n := c.Manager()
	img := c.Image()
	docker(t, n, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.1.0/24", "vxs")
	id, vni := networkVNI(t, n, "vxs")
	if vni < 1048576 {
		t.Fatalf("VNI %d is not from vxsafe's default range", vni)
	}
	docker(t, n, "run", "-d", "--name", "ca", "--network", "vxs", img, "sleep", "600")
	dev := vxName(vni, id)
	if !hasLink(n, dev) {
		t.Fatalf("no %s on the node after the first container", dev)
	}
	out := docker(t, n, "run", "--rm", "--network", "vxs", img, "ping", "-c", "2", "-W", "2", "ca")
	if !strings.Contains(out, "2 packets received") {
		t.Fatalf("ping by name: %s", out)
	}
	docker(t, n, "rm", "-f", "ca")
	poll(t, 20*time.Second, "device removed after the last container", func() error {
		if hasLink(n, dev) {
			return fmt.Errorf("%s still there", dev)
		}
		return nil
	})
	// The seed's case: a DOWN vx-<vni>-<id> holding the network's VNI, left by an earlier run.
	if err := stale.PlantVXLAN(n, dev, vni); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out = docker(t, n, "run", "--rm", "--network", "vxs", img, "echo", "started")
	if !strings.Contains(out, "started") {
		t.Fatalf("docker run on the network: %q", out)
	}
	t.Logf("TIMING docker run with a stale device planted: %.2fs", time.Since(start).Seconds())
	named := false
	for _, line := range strings.Split(n.Log(), "\n") {
		if strings.Contains(line, "plugin=") && strings.Contains(line, "deleted stale vxlan interface") && strings.Contains(line, dev) {
			named = true
			t.Logf("plugin log: %s", line)
		}
	}
	if !named {
		t.Fatalf("the dockerd log has no plugin line naming %s; tail:\n%s", dev, n.LogTail(40))
	}
	docker(t, n, "network", "rm", "vxs")
}

// TestVxsafeLiveConflict: a live foreign device holding the network's VNI is named in docker's error and
// left alone.
func TestVxsafeLiveConflict(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxs2", Nodes: 1})
	installVxsafe(t, c, nil)
	n := c.Manager()
	docker(t, n, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.2.0/24",
		"-o", "com.docker.network.driver.overlay.vxlanid_list=4100", "vxl")
	if _, err := n.Exec(ctxT(t, time.Minute), "ip", "link", "add", "vxlive1", "type", "vxlan", "id", "4100", "dstport", "4789"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Exec(ctxT(t, time.Minute), "ip", "addr", "add", "10.99.0.1/24", "dev", "vxlive1"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Exec(ctxT(t, time.Minute), "ip", "link", "set", "vxlive1", "up"); err != nil {
		t.Fatal(err)
	}
	_, err := n.Docker(ctxT(t, time.Minute), "run", "--rm", "--network", "vxl", c.Image(), "true")
	if err == nil {
		t.Fatal("docker run succeeded despite a live conflicting device")
	}
	for _, w := range []string{`vxlan interface "vxlive1"`, "VNI 4100", "port 4789", "10.99.0.1/24", "not deleting a live interface"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("docker's error lacks %q:\n%v", w, err)
		}
	}
	if !hasLink(n, "vxlive1") {
		t.Fatal("live device deleted")
	}
	_ = n.RemoveLink("vxlive1")
	docker(t, n, "run", "--rm", "--network", "vxl", c.Image(), "true")
}

// TestVxsafeMultiNode: three nodes; containers reach each other by IP and by name across hosts; a service
// spreads over the nodes; endpoint removal and node loss propagate; nothing is left after the network goes.
func TestVxsafeMultiNode(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxs3", Nodes: 3})
	installVxsafe(t, c, nil)
	nodes := c.Nodes()
	img := c.Image()
	m := c.Manager()
	docker(t, m, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.3.0/24", "mh")
	id, vni := networkVNI(t, m, "mh")
	dev := vxName(vni, id)
	ips := map[string]string{}
	for i, n := range nodes {
		name := fmt.Sprintf("c%d", i+1)
		began := time.Now()
		docker(t, n, "run", "-d", "--name", name, "--network", "mh", img, "sleep", "3600")
		runTook := time.Since(began)
		ips[name] = docker(t, n, "inspect", "-f", `{{(index .NetworkSettings.Networks "mh").IPAddress}}`, name)
		if i > 0 {
			// convergence: the new container answers from node 1
			took := poll(t, 20*time.Second, "ping from n1 to "+name, func() error {
				_, err := nodes[0].Docker(context.Background(), "exec", "c1", "ping", "-c", "1", "-W", "1", ips[name])
				return err
			})
			t.Logf("TIMING convergence %s on %s: docker run took %.2fs, then reachable from n1 after %.2fs",
				name, n.Name, runTook.Seconds(), took.Seconds())
		}
	}
	// By IP and by name, in both directions between every pair.
	for i, a := range nodes {
		for j := range nodes {
			if i == j {
				continue
			}
			from, to := fmt.Sprintf("c%d", i+1), fmt.Sprintf("c%d", j+1)
			for _, target := range []string{ips[to], to} {
				poll(t, 15*time.Second, fmt.Sprintf("%s -> %s (%s)", from, to, target), func() error {
					_, err := a.Docker(context.Background(), "exec", from, "ping", "-c", "1", "-W", "1", target)
					return err
				})
			}
		}
	}
	// MTU = underlay (1500) - 50, and the outside is reached through docker_gwbridge, as with overlay:
	// here the node's own underlay address (the test swarm runs without NAT, so other nodes could not
	// answer a container's 172.x source).
	if mtu := docker(t, nodes[0], "exec", "c1", "cat", "/sys/class/net/eth0/mtu"); mtu != "1450" {
		t.Errorf("container MTU %s, want 1450 (underlay 1500 - 50)", mtu)
	}
	if _, err := nodes[0].Docker(ctxT(t, time.Minute), "exec", "c1", "ping", "-c", "1", "-W", "2", nodes[0].Addr); err != nil {
		t.Errorf("c1 cannot reach %s (outside the overlay) through docker_gwbridge: %v", nodes[0].Addr, err)
	}
	// A service with 3 replicas spread over the nodes (DNS round robin: VIPs need Docker's overlay).
	docker(t, m, "service", "create", "--detach", "--name", "svc", "--network", "mh", "--endpoint-mode", "dnsrr",
		"--replicas", "3", "--replicas-max-per-node", "1", img, "sleep", "3600")
	poll(t, 90*time.Second, "3 service replicas running", func() error {
		out, err := m.Docker(context.Background(), "service", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", "svc")
		if err != nil {
			return err
		}
		if strings.Count(out, "Running") != 3 {
			return fmt.Errorf("service ps: %q", out)
		}
		return nil
	})
	poll(t, 30*time.Second, "c1 reaches the 3 replicas by service name", func() error {
		out, err := nodes[0].Docker(context.Background(), "exec", "c1", "nslookup", "svc")
		if err != nil {
			return err
		}
		addrs := regexp.MustCompile(`Address: (10\.0\.3\.\d+)`).FindAllStringSubmatch(out, -1)
		if len(addrs) != 3 {
			return fmt.Errorf("nslookup svc: %q", out)
		}
		for _, a := range addrs {
			if _, err := nodes[0].Docker(context.Background(), "exec", "c1", "ping", "-c", "1", "-W", "1", a[1]); err != nil {
				return fmt.Errorf("ping replica %s: %w", a[1], err)
			}
		}
		return nil
	})
	docker(t, m, "service", "rm", "svc")
	// An endpoint that leaves is gone from the other hosts' FDB within seconds.
	mac3 := docker(t, nodes[2], "inspect", "-f", `{{(index .NetworkSettings.Networks "mh").MacAddress}}`, "c3")
	docker(t, nodes[2], "rm", "-f", "c3")
	took := poll(t, 15*time.Second, "c3's FDB entry removed on n1", func() error {
		out, err := nodes[0].Exec(context.Background(), "bridge", "fdb", "show", "dev", dev)
		if err != nil {
			return err
		}
		if strings.Contains(out, mac3) {
			return fmt.Errorf("still there: %s", out)
		}
		return nil
	})
	t.Logf("TIMING endpoint removal propagated in %.2fs", took.Seconds())
	// Node loss: cut n2 off the underlay; its endpoints go from n1 within a bounded time, and come back.
	mac2 := docker(t, nodes[1], "inspect", "-f", `{{(index .NetworkSettings.Networks "mh").MacAddress}}`, "c2")
	if err := c.SetNodeLink(nodes[1], false); err != nil {
		t.Fatal(err)
	}
	took = poll(t, 60*time.Second, "n2's endpoint removed on n1 after n2 is cut off", func() error {
		out, _ := nodes[0].Exec(context.Background(), "bridge", "fdb", "show", "dev", dev)
		if strings.Contains(out, mac2) {
			return fmt.Errorf("still there")
		}
		return nil
	})
	t.Logf("TIMING failed node's endpoints removed after %.2fs", took.Seconds())
	// They went because swarm itself reported n2 gone (DiscoverDelete), not only because its plugin fell
	// silent: a silent plugin on a node still in the swarm keeps its endpoints (PLUGIN_DOWN_GRACE).
	if line := logLine(pluginLogSince(nodes[0], 0), "node gone", "node="+nodes[1].Addr); line == "" {
		t.Errorf("n1's plugin did not log DiscoverDelete for n2 (%s)", nodes[1].Addr)
	} else {
		t.Logf("n1: %s", line)
	}
	if err := c.SetNodeLink(nodes[1], true); err != nil {
		t.Fatal(err)
	}
	took = poll(t, 60*time.Second, "n2's endpoint restored on n1", func() error {
		_, err := nodes[0].Docker(context.Background(), "exec", "c1", "ping", "-c", "1", "-W", "1", ips["c2"])
		return err
	})
	t.Logf("TIMING returning node's endpoints reachable after %.2fs", took.Seconds())
	// Clean up: no device, FDB or neighbour entry on any node.
	docker(t, nodes[0], "rm", "-f", "c1")
	docker(t, nodes[1], "rm", "-f", "c2")
	removeSwarmNetwork(t, m, "mh")
	for _, n := range nodes {
		poll(t, 30*time.Second, "nothing left on "+n.Name, func() error {
			names, err := n.LinkNames()
			if err != nil {
				return err
			}
			for _, l := range names {
				if strings.HasPrefix(l, "vx-") || strings.HasPrefix(l, "vxe-") {
					return fmt.Errorf("left: %v", names)
				}
			}
			return nil
		})
	}
}
