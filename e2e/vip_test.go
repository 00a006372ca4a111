package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/engine"
)

// vipConvergeLimit is the bound: a task added or removed is in or out of every node's tables
// within it.
const vipConvergeLimit = 2 * time.Second

// connectScript makes count HTTP connections to target:8080 (busybox httpd serving /etc, GET /hostname
// answering the replica's hostname), every pause microseconds, printing "ok <hostname>" or "FAIL" for each;
// with count 0 it runs until /tmp/stop exists, then writes /tmp/done.
func connectScript(target string, count int, pauseUS int) string {
	cond := fmt.Sprintf(`[ $i -lt %d ]`, count)
	if count == 0 {
		cond = `[ ! -e /tmp/stop ]`
	}
	return fmt.Sprintf(`i=0; while %s; do r=$(printf 'GET /hostname HTTP/1.0\r\n\r\n' | nc -w 1 %s 8080 2>&1 | tail -n 1); `+
		`case "$r" in *200\ OK*|*nc:*|"") echo "FAIL $(date +%%T) $r";; *) echo "ok $r";; esac; i=$((i+1)); [ %d -gt 0 ] && usleep %d; done; touch /tmp/done`,
		cond, target, pauseUS, pauseUS)
}

// tally counts the answers of connectScript's output by replica, and the failures.
func tally(out string) (hits map[string]int, failed int) {
	hits, fails := tallyFailures(out)
	return hits, len(fails)
}

// tallyFailures is tally with each failure's line (its time and what nc said).
func tallyFailures(out string) (hits map[string]int, fails []string) {
	hits = map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		switch f := strings.Fields(l); {
		case len(f) == 2 && f[0] == "ok":
			hits[f[1]]++
		case len(f) > 0:
			fails = append(fails, l)
		}
	}
	return hits, fails
}

// vipRig is a 3-node swarm with a vxsafe network, a client container on every node and a view of the
// service tables in the clients' namespaces.
type vipRig struct {
	t       *testing.T
	c       *cluster.Cluster
	m       *cluster.Node
	dp      *dataplane.Manager
	netID   string
	clients map[*cluster.Node]string // node -> client container's netns path
}

func (r *vipRig) tables(n *cluster.Node) ([]dataplane.Service, error) {
	all, err := r.dp.ServiceTables(r.clients[n])
	if err != nil {
		return nil, err
	}
	return all[dataplane.ServiceTableName(r.netID)], nil
}

// backends returns the backends of vip in node n's client table (nil when the VIP has no rule).
func (r *vipRig) backends(n *cluster.Node, vip string) ([]string, error) {
	svcs, err := r.tables(n)
	if err != nil {
		return nil, err
	}
	for _, s := range svcs {
		if s.VIP.String() == vip {
			out := []string{}
			for _, b := range s.Backends {
				out = append(out, b.String())
			}
			return out, nil
		}
	}
	return nil, nil
}

// connect runs connectScript with count connections in node n's client and tallies the answers.
func (r *vipRig) connect(n *cluster.Node, target string, count int) (map[string]int, int) {
	r.t.Helper()
	out, err := n.Docker(ctxT(r.t, 2*time.Minute), "exec", "client", "sh", "-c", connectScript(target, count, 0))
	if err != nil {
		r.t.Fatalf("node %s: connections to %s: %v", n.Name, target, err)
	}
	return tally(out)
}

// serviceVIP is the VIP of service svc on the rig's network.
func (r *vipRig) serviceVIP(svc string) string {
	r.t.Helper()
	out := docker(r.t, r.m, "service", "inspect", "-f", `{{range .Endpoint.VirtualIPs}}{{.NetworkID}}={{.Addr}} {{end}}`, svc)
	for _, f := range strings.Fields(out) {
		if id, addr, ok := strings.Cut(f, "="); ok && id == r.netID {
			ip, _, _ := strings.Cut(addr, "/")
			return ip
		}
	}
	r.t.Fatalf("service %s has no VIP on network %s: %q", svc, r.netID[:12], out)
	return ""
}

// taskIPs maps the running tasks of svc to their address on the rig's network and the time each became
// running.
func (r *vipRig) taskIPs(svc string) map[string]time.Time {
	r.t.Helper()
	ids := strings.Fields(docker(r.t, r.m, "service", "ps", "-q", "--filter", "desired-state=running", svc))
	out := map[string]time.Time{}
	for _, id := range ids {
		f := strings.Fields(docker(r.t, r.m, "inspect", "-f",
			`{{.Status.State}} {{.Status.Timestamp.Format "2006-01-02T15:04:05.999999999Z07:00"}} {{range .NetworksAttachments}}{{.Network.ID}}={{range .Addresses}}{{.}}{{end}} {{end}}`, id))
		if len(f) < 3 || f[0] != "running" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, f[1])
		if err != nil {
			r.t.Fatalf("task %s: timestamp %q: %v", id, f[1], err)
		}
		for _, a := range f[2:] {
			if nid, addr, ok := strings.Cut(a, "="); ok && nid == r.netID {
				ip, _, _ := strings.Cut(addr, "/")
				out[ip] = at
			}
		}
	}
	return out
}

// seen is when an address was first and last seen in a view.
type seen struct{ first, last time.Time }

// views maps a node to what it was seen holding for a VIP: in its client's table ("table") and in its own
// engine's service view ("engine"), by backend address.
type views map[*cluster.Node]map[string]map[string]*seen

func (v views) note(n *cluster.Node, view string, ips []string, now time.Time) {
	if v[n] == nil {
		v[n] = map[string]map[string]*seen{}
	}
	if v[n][view] == nil {
		v[n][view] = map[string]*seen{}
	}
	for _, ip := range ips {
		if s := v[n][view][ip]; s == nil {
			v[n][view][ip] = &seen{now, now}
		} else {
			s.last = now
		}
	}
}

// watchTables polls, every 20 ms until stop is closed, every client's table of vip and the node engine's
// own list of the service's tasks (the source the plugin reads), recording when each backend was first and
// last seen in each.
func (r *vipRig) watchTables(vip string, stop <-chan struct{}) func() views {
	var mu sync.Mutex
	res := views{}
	clients := map[*cluster.Node]*engine.Client{}
	for n := range r.clients {
		c, err := engine.New("unix://"+n.Socket, 2*time.Second)
		if err != nil {
			r.t.Fatal(err)
		}
		clients[n] = c
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for last := false; ; {
			for n := range r.clients {
				if bs, err := r.backends(n, vip); err == nil {
					mu.Lock()
					res.note(n, "table", bs, time.Now())
					mu.Unlock()
				}
				if svcs, err := clients[n].NetworkServices(r.netID); err == nil {
					now := time.Now()
					for _, s := range svcs {
						if s.VIP.String() == vip {
							var ips []string
							for _, b := range s.Backends {
								ips = append(ips, b.String())
							}
							mu.Lock()
							res.note(n, "engine", ips, now)
							mu.Unlock()
						}
					}
				}
			}
			if last {
				return
			}
			select {
			case <-stop:
				last = true // one more pass: what the caller waited for is seen
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() views {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return res
	}
}

// waitBackends waits until every client's table of vip holds exactly want.
func (r *vipRig) waitBackends(vip string, want []string, limit time.Duration) {
	r.t.Helper()
	sort.Strings(want)
	poll(r.t, limit, fmt.Sprintf("every node's table: %s -> %v", vip, want), func() error {
		for n := range r.clients {
			got, err := r.backends(n, vip)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			sort.Strings(got)
			if strings.Join(got, " ") != strings.Join(want, " ") {
				return fmt.Errorf("node %s: %v", n.Name, got)
			}
		}
		return nil
	})
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestServiceVIP: swarm services in their default endpoint mode (VIP) on a vxsafe network, which Docker
// serves on no plugin network. One 3-node swarm for every subtest.
func TestServiceVIP(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxvip", Nodes: 3})
	installVxsafe(t, c, nil)
	m := c.Manager()
	img := c.Image()
	dp, err := dataplane.New(dataplane.Options{Log: logrus.NewEntry(logrus.New())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	docker(t, m, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.7.0/24", "vipnet")
	netID, _ := networkVNI(t, m, "vipnet")
	r := &vipRig{t: t, c: c, m: m, dp: dp, netID: netID, clients: map[*cluster.Node]string{}}

	docker(t, m, "service", "create", "--detach", "--name", "web", "--network", "vipnet", "--replicas", "3",
		"--replicas-max-per-node", "1", "--stop-grace-period", "1s", img, "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc")
	for _, n := range c.Nodes() {
		docker(t, n, "run", "-d", "--name", "client", "--network", "vipnet", img, "sleep", "3600")
		pid := docker(t, n, "inspect", "-f", "{{.State.Pid}}", "client")
		r.clients[n] = filepath.Join("/proc", pid, "ns", "net")
	}
	t.Cleanup(func() {
		for _, n := range c.Nodes() {
			n.Docker(ctxT(t, time.Minute), "rm", "-f", "client")
		}
	})
	vip := r.serviceVIP("web")
	poll(t, 90*time.Second, "3 replicas of web running", func() error {
		if n := len(r.taskIPs("web")); n != 3 {
			return fmt.Errorf("%d running", n)
		}
		return nil
	})
	r.waitBackends(vip, keys(r.taskIPs("web")), 10*time.Second)

	t.Run("SpreadAndPing", func(t *testing.T) {
		r.t = t
		for _, n := range c.Nodes() {
			hits, failed := r.connect(n, "web", 30)
			t.Logf("node %s: 30 connections to web (VIP %s): %d failed, answered by %v", n.Name, vip, failed, hits)
			if failed != 0 || len(hits) != 3 {
				t.Errorf("node %s: %d of 30 connections failed and %d replicas answered, want 0 and 3", n.Name, failed, len(hits))
			}
			if out, err := n.Docker(ctxT(t, time.Minute), "exec", "client", "ping", "-c", "2", "-W", "2", "web"); err != nil {
				t.Errorf("node %s: ping web: %v\n%s", n.Name, err, out)
			}
		}
	})

	t.Run("ScaleConverges", func(t *testing.T) {
		r.t = t
		for _, to := range []int{1, 5} {
			before := r.taskIPs("web")
			stop := make(chan struct{})
			result := r.watchTables(vip, stop)
			issued := time.Now()
			docker(t, m, "service", "update", "--detach", "--replicas-max-per-node", "0", "--replicas", strconv.Itoa(to), "web")
			var after map[string]time.Time
			poll(t, 90*time.Second, fmt.Sprintf("web scaled to %d", to), func() error {
				after = r.taskIPs("web")
				if len(after) != to {
					return fmt.Errorf("%d running", len(after))
				}
				return nil
			})
			r.waitBackends(vip, keys(after), 30*time.Second)
			close(stop)
			obs := result()
			// Per node: a new task in the table after the node's engine lists it, a removed one out of it after
			// the engine drops it (negative: earlier, through the withdrawn endpoint).
			var worst, fromIssued time.Duration
			for n, v := range obs {
				for ip := range after {
					if _, was := before[ip]; was {
						continue
					}
					tab, eng := v["table"][ip], v["engine"][ip]
					if tab == nil || eng == nil {
						t.Errorf("node %s: new task %s never seen (table %v, engine %v)", n.Name, ip, tab != nil, eng != nil)
						continue
					}
					worst = max(worst, tab.first.Sub(eng.first))
					fromIssued = max(fromIssued, tab.first.Sub(issued))
				}
				for ip := range before {
					if _, still := after[ip]; still {
						continue
					}
					if tab, eng := v["table"][ip], v["engine"][ip]; tab != nil && eng != nil {
						worst = max(worst, tab.last.Sub(eng.last))
						fromIssued = max(fromIssued, tab.last.Sub(issued))
					}
				}
			}
			t.Logf("TIMING scale to %d: every node's table followed its engine within %.2fs (%.2fs after the scale was issued)", to, worst.Seconds(), fromIssued.Seconds())
			if worst > vipConvergeLimit {
				t.Errorf("scale to %d: a table took %s, want at most %s", to, worst, vipConvergeLimit)
			}
		}
		hits, failed := r.connect(c.Nodes()[0], "web", 30)
		if failed != 0 || len(hits) != 5 {
			t.Errorf("after scaling to 5: %d failed, %d replicas answered (%v), want 0 and 5", failed, len(hits), hits)
		}
	})

	t.Run("RollingUpdate", func(t *testing.T) {
		r.t = t
		docker(t, m, "service", "update", "--detach=false", "--replicas", "3", "web")
		r.waitBackends(vip, keys(r.taskIPs("web")), 30*time.Second)
		for _, order := range []string{"stop-first", "start-first"} {
			for _, n := range c.Nodes() {
				docker(t, n, "exec", "client", "rm", "-f", "/tmp/stop", "/tmp/done", "/tmp/res")
				docker(t, n, "exec", "-d", "client", "sh", "-c", "( "+connectScript("web", 0, 100000)+" ) > /tmp/res.part; mv /tmp/res.part /tmp/res")
			}
			began := time.Now()
			docker(t, m, "service", "update", "--detach=false", "--force", "--update-order", order, "--update-parallelism", "1",
				"--update-monitor", "1s", "web")
			took := time.Since(began)
			r.waitBackends(vip, keys(r.taskIPs("web")), 30*time.Second)
			// The clients keep connecting until every replaced task has stopped (the update returns before).
			poll(t, time.Minute, "every replaced task of web stopped", func() error {
				out, err := m.Docker(ctxT(t, time.Minute), "service", "ps", "--filter", "desired-state=shutdown", "--format", "{{.CurrentState}}", "web")
				if err != nil {
					return err
				}
				for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
					if l != "" && !strings.HasPrefix(l, "Shutdown") && !strings.HasPrefix(l, "Complete") && !strings.HasPrefix(l, "Failed") {
						return fmt.Errorf("a task is %q", l)
					}
				}
				return nil
			})
			total, failures := 0, 0
			for _, n := range c.Nodes() {
				docker(t, n, "exec", "client", "touch", "/tmp/stop")
				var out string
				poll(t, 30*time.Second, "node "+n.Name+": client loop ended", func() error {
					var err error
					out, err = n.Docker(ctxT(t, time.Minute), "exec", "client", "cat", "/tmp/res")
					return err
				})
				hits, fails := tallyFailures(out)
				failed := len(fails)
				for _, f := range fails {
					t.Logf("node %s: %s update: %s", n.Name, order, f)
				}
				ok := 0
				for _, h := range hits {
					ok += h
				}
				total += ok + failed
				failures += failed
				t.Logf("node %s: %s update: %d connections, %d failed", n.Name, order, ok+failed, failed)
			}
			t.Logf("ROLLING %s update (%.1fs): %d of %d connections failed on 3 nodes, one every 100ms", order, took.Seconds(), failures, total)
			if (order == "start-first" || os.Getenv("VXE2E_VIP_STRICT") != "") && failures != 0 {
				t.Errorf("start-first rolling update: %d of %d connections failed, want 0", failures, total)
			}
		}
	})

	t.Run("ComposeStack", func(t *testing.T) {
		r.t = t
		dir := t.TempDir()
		file := filepath.Join(dir, "compose.yml")
		compose := fmt.Sprintf(`version: "3.8"
services:
  api:
    image: %[1]s
    command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"]
    networks: [appnet]
    deploy:
      replicas: 2
  probe:
    image: %[1]s
    command: ["sleep", "86400"]
    stop_grace_period: 1s
    networks: [appnet]
    deploy:
      mode: global
networks:
  appnet:
    driver: %[2]s
`, img, pluginName)
		if err := os.WriteFile(file, []byte(compose), 0o644); err != nil {
			t.Fatal(err)
		}
		docker(t, m, "stack", "deploy", "--resolve-image", "never", "-c", file, "vst")
		removed := false
		t.Cleanup(func() {
			if !removed {
				m.Docker(ctxT(t, time.Minute), "stack", "rm", "vst")
			}
		})
		for _, n := range c.Nodes() {
			var probe string
			poll(t, 90*time.Second, "node "+n.Name+": a probe task running", func() error {
				out, err := n.Docker(ctxT(t, 30*time.Second), "ps", "-q", "--filter", "label=com.docker.swarm.service.name=vst_probe")
				if err != nil {
					return err
				}
				if f := strings.Fields(out); len(f) == 1 {
					probe = f[0]
					return nil
				}
				return fmt.Errorf("%q", out)
			})
			var hits map[string]int
			var failed int
			poll(t, 30*time.Second, "node "+n.Name+": the stack's api answers by name through its VIP", func() error {
				out, err := n.Docker(ctxT(t, time.Minute), "exec", probe, "sh", "-c", connectScript("api", 10, 0))
				if err != nil {
					return err
				}
				hits, failed = tally(out)
				if failed != 0 || len(hits) != 2 {
					return fmt.Errorf("%d failed, answered by %v", failed, hits)
				}
				return nil
			})
			t.Logf("node %s: stack vst: 10 connections to api answered by %v", n.Name, hits)
		}
		docker(t, m, "stack", "rm", "vst")
		removed = true
	})

	t.Run("PublishModeHost", func(t *testing.T) {
		r.t = t
		n := c.Nodes()[1]
		docker(t, m, "service", "create", "--detach", "--name", "hostpub", "--network", "vipnet", "--constraint", "node.hostname=="+n.Hostname,
			"--publish", "mode=host,target=8080,published=18080", img, "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc")
		defer m.Docker(ctxT(t, time.Minute), "service", "rm", "hostpub")
		poll(t, 60*time.Second, "hostpub running", func() error {
			out, err := m.Docker(ctxT(t, time.Minute), "service", "ps", "--no-trunc", "--format", "{{.CurrentState}} {{.Error}}", "hostpub")
			if err != nil {
				return err
			}
			if !strings.HasPrefix(strings.TrimSpace(out), "Running") {
				return fmt.Errorf("%s", out)
			}
			return nil
		})
		poll(t, 30*time.Second, "hostpub answers on "+n.Addr+":18080 from node "+m.Name, func() error {
			conn, err := inNetNS(m.NetnsPath(), func() (net.Conn, error) {
				return net.DialTimeout("tcp", net.JoinHostPort(n.Addr, "18080"), 2*time.Second)
			})
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			fmt.Fprintf(conn, "GET /hostname HTTP/1.0\r\n\r\n")
			buf := make([]byte, 4096)
			k, _ := conn.Read(buf)
			if !strings.Contains(string(buf[:k]), "200 OK") {
				return fmt.Errorf("answer %q", buf[:k])
			}
			return nil
		})
		// And it is reachable through its VIP on the vxsafe network too.
		r.waitBackends(r.serviceVIP("hostpub"), keys(r.taskIPs("hostpub")), 10*time.Second)
		if hits, failed := r.connect(c.Nodes()[0], "hostpub", 5); failed != 0 || len(hits) != 1 {
			t.Errorf("hostpub through its VIP: %d failed, answered by %v", failed, hits)
		}
	})

	t.Run("PluginKilled", func(t *testing.T) {
		r.t = t
		n := c.Nodes()[1]
		pid, err := pluginPID(ctxT(t, time.Minute), n, pluginName)
		if err != nil {
			t.Fatal(err)
		}
		if err := killPID(pid); err != nil {
			t.Fatal(err)
		}
		hits, failed := r.connect(n, "web", 30)
		t.Logf("node %s, plugin killed: 30 connections to web: %d failed, answered by %v", n.Name, failed, hits)
		if failed != 0 || len(hits) != 3 {
			t.Errorf("with the plugin killed: %d failed, %d replicas answered, want 0 and 3", failed, len(hits))
		}
		waitPluginPID(t, n, pid, 90*time.Second)
		// Resynced: a change after the restart reaches the node's table.
		docker(t, m, "service", "update", "--detach=false", "--replicas", "2", "web")
		r.waitBackends(vip, keys(r.taskIPs("web")), 30*time.Second)
		if hits, failed := r.connect(n, "web", 20); failed != 0 || len(hits) != 2 {
			t.Errorf("after the restart: %d failed, answered by %v, want 0 and 2 replicas", failed, hits)
		}
	})

	t.Run("RemovalLeavesNoTable", func(t *testing.T) {
		r.t = t
		docker(t, m, "service", "rm", "web")
		poll(t, 30*time.Second, "every client's vxsafe table gone after the service is removed", func() error {
			for n, p := range r.clients {
				tabs, err := dp.ServiceTables(p)
				if err != nil {
					return err
				}
				if len(tabs) != 0 {
					return fmt.Errorf("node %s: %v", n.Name, tabs)
				}
			}
			return nil
		})
		// A second service, then the last container leaves: no vxsafe table in any namespace.
		docker(t, m, "service", "create", "--detach=false", "--name", "web2", "--network", "vipnet", "--replicas", "1",
			"--stop-grace-period", "1s", img, "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc")
		vip2 := r.serviceVIP("web2")
		r.waitBackends(vip2, keys(r.taskIPs("web2")), 30*time.Second)
		for _, n := range c.Nodes() {
			docker(t, n, "rm", "-f", "client")
		}
		docker(t, m, "service", "rm", "web2")
		poll(t, 30*time.Second, "no vxsafe table in any namespace", func() error {
			var left []string
			for _, ns := range dp.Namespaces() {
				tabs, err := dp.ServiceTables(ns.Path)
				if err != nil {
					continue
				}
				for name := range tabs {
					left = append(left, name+" in "+ns.Desc)
				}
			}
			if len(left) > 0 {
				return fmt.Errorf("%s", strings.Join(left, "; "))
			}
			return nil
		})
	})
}
