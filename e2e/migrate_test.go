package e2e

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/engine"
)

// migrateRun runs the bundle's vxsafe binary as an operator would, `vxsafe migrate --docker-host
// unix://<manager socket> args...`, logs its output with t.Log, calls onLine with each line as it comes,
// and returns the output and the exit status.
func migrateRun(t *testing.T, bin string, m *cluster.Node, onLine func(string), args ...string) (string, int) {
	t.Helper()
	full := append([]string{"migrate", "--docker-host", "unix://" + m.Socket}, args...)
	cmd := exec.CommandContext(ctxT(t, 10*time.Minute), bin, full...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		l := sc.Text()
		out.WriteString(l + "\n")
		if onLine != nil {
			onLine(l)
		}
	}
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("vxsafe migrate: %v", err)
	}
	t.Logf("$ vxsafe %s   (exit status %d, %.1fs)\n%s", strings.Join(full, " "), code, time.Since(began).Seconds(), out.String())
	return out.String(), code
}

// migrateRig is the swarm of TestMigrate and what its subtests share.
type migrateRig struct {
	c   *cluster.Cluster
	m   *cluster.Node
	api *engine.Client
	bin string
}

// serviceNetworks returns the network names of service svc's spec, and, for each of its tasks that
// should run, whether it runs and its networks' names.
func (r *migrateRig) serviceNetworks(t *testing.T, svc string) (spec []string, tasks []string) {
	t.Helper()
	names := map[string]string{}
	nets, err := r.api.Networks()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		names[n.ID] = n.Name
	}
	spec = strings.Fields(docker(t, r.m, "service", "inspect", "-f", `{{range .Spec.TaskTemplate.Networks}}{{.Target}} {{end}}`, svc))
	for i, id := range spec {
		if n, ok := names[id]; ok {
			spec[i] = n
		}
	}
	id := docker(t, r.m, "service", "inspect", "-f", "{{.ID}}", svc)
	ts, err := r.api.Tasks(map[string][]string{"service": {id}, "desired-state": {"running"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		var on []string
		for _, nid := range tk.Networks() {
			if n, ok := names[nid]; ok && n != "ingress" {
				on = append(on, n)
			} else if !ok {
				on = append(on, nid[:12])
			}
		}
		tasks = append(tasks, tk.Status.State+":"+strings.Join(on, "+"))
	}
	return spec, tasks
}

// waitServiceOn waits until svc's spec names exactly nets and its running tasks, replicas of them, are
// on exactly nets.
func (r *migrateRig) waitServiceOn(t *testing.T, svc string, replicas int, nets string, limit time.Duration) {
	t.Helper()
	poll(t, limit, fmt.Sprintf("service %s: %d tasks running on %s", svc, replicas, nets), func() error {
		spec, tasks := r.serviceNetworks(t, svc)
		if strings.Join(spec, "+") != nets {
			return fmt.Errorf("spec on %v", spec)
		}
		ok := 0
		for _, tk := range tasks {
			if tk == "running:"+nets {
				ok++
			}
		}
		if ok != replicas || len(tasks) != replicas {
			return fmt.Errorf("tasks %v", tasks)
		}
		return nil
	})
}

func (r *migrateRig) networkExists(t *testing.T, name string) bool {
	_, err := r.m.Docker(ctxT(t, time.Minute), "network", "inspect", name)
	return err == nil
}

// createHTTPService creates a busybox httpd service (GET /hostname answers the task's hostname) on net.
func (r *migrateRig) createHTTPService(t *testing.T, name, net string, replicas int, extra ...string) {
	t.Helper()
	args := []string{"service", "create", "--detach", "--name", name, "--network", net, "--replicas", fmt.Sprint(replicas),
		"--stop-grace-period", "1s", "--update-monitor", "1s"}
	args = append(append(args, extra...), r.c.Image(), "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc")
	docker(t, r.m, args...)
}

// callScript calls target by name every 100 ms until /tmp/stop exists, as a client with one immediate
// retry does: a call is "ok HOST" when the first or the retried try is answered, "FAIL time ..." when both
// fail; a first try that failed is also noted as "retry time ...". (During a rolling update a name may
// still resolve, for a moment, to a task that has just stopped: swarm removes a stopped task's records on
// the other nodes through gossip. A cut-off fails both tries.)
func callScript(target string) string {
	call := fmt.Sprintf(`printf 'GET /hostname HTTP/1.0\r\n\r\n' | nc -w 1 %s 8080 2>&1 | tail -n 1`, target)
	return fmt.Sprintf(`while [ ! -e /tmp/stop ]; do r=$(%s); case "$r" in *200\ OK*|*nc:*|"") `+
		`r2=$(%s); case "$r2" in *200\ OK*|*nc:*|"") echo "FAIL $(date +%%T) $r / $r2";; *) echo "retry $(date +%%T) $r"; echo "ok $r2";; esac;; `+
		`*) echo "ok $r";; esac; usleep 100000; done`, call, call)
}

// clientLoops starts, in container client, a loop per service calling it by name every 100 ms
// (callScript). stop ends them (once; it is also a cleanup) and returns the calls made, those that failed
// twice, and those whose first try failed; each failure is logged.
func (r *migrateRig) clientLoops(t *testing.T, client string, services []string) (stop func() (total, failures, retried int)) {
	t.Helper()
	docker(t, r.m, "exec", client, "rm", "-f", "/tmp/stop")
	for _, s := range services {
		docker(t, r.m, "exec", client, "rm", "-f", "/tmp/res-"+s)
		docker(t, r.m, "exec", "-d", client, "sh", "-c", "( "+callScript(s)+" ) > /tmp/res-"+s+".part; mv /tmp/res-"+s+".part /tmp/res-"+s)
	}
	var once sync.Once
	stop = func() (total, failures, retried int) {
		once.Do(func() {
			docker(t, r.m, "exec", client, "touch", "/tmp/stop")
			for _, s := range services {
				var res string
				poll(t, 30*time.Second, "client loop of "+s+" ended", func() error {
					out, err := r.m.Docker(ctxT(t, time.Minute), "exec", client, "cat", "/tmp/res-"+s)
					res = out
					return err
				})
				var kept []string
				n := 0
				for _, l := range strings.Split(res, "\n") {
					if strings.HasPrefix(l, "retry ") {
						t.Logf("client -> %s: first try failed, the retry answered: %s", s, l)
						n++
						continue
					}
					kept = append(kept, l)
				}
				hits, fails := tallyFailures(strings.Join(kept, "\n"))
				ok := 0
				for _, h := range hits {
					ok += h
				}
				for _, f := range fails {
					t.Logf("client -> %s: %s", s, f)
				}
				t.Logf("client -> %s: %d calls, %d failed twice, %d answered on the retry, answered by %d tasks", s, ok+len(fails), len(fails), n, len(hits))
				total += ok + len(fails)
				failures += len(fails)
				retried += n
			}
		})
		return total, failures, retried
	}
	t.Cleanup(func() { stop() })
	return stop
}

// migrateUnderCalls runs vxsafe migrate args while container client calls each of services by name
// every 100 ms, from a second before; it reports the failed calls (an error unless 0) and returns the
// command's output and exit status. The log has the wall-clock time each step finished, to match failures
// to steps.
func (r *migrateRig) migrateUnderCalls(t *testing.T, client string, services []string, args ...string) (string, int) {
	t.Helper()
	stop := r.clientLoops(t, client, services)
	time.Sleep(time.Second) // a few calls before the first step
	began := time.Now()
	var steps []string
	out, code := migrateRun(t, r.bin, r.m, func(l string) {
		if strings.Contains(l, "] step ") {
			steps = append(steps, time.Now().Format("15:04:05.000")+" "+strings.SplitN(l, " ... ", 2)[0])
		}
	}, args...)
	took := time.Since(began)
	total, failures, retried := stop()
	t.Logf("steps, at the wall-clock time each finished:\n%s", strings.Join(steps, "\n"))
	t.Logf("MIGRATE %s %s: %d of %d calls by name failed during the migration, %d more answered on an immediate retry (%.1fs, one call per service every 100 ms)",
		cluster.EngineName(), strings.Join(args, " "), failures, total, retried, took.Seconds())
	if failures != 0 {
		t.Errorf("%d of %d calls failed during the migration, want 0", failures, total)
	}
	if total < len(services)*int(took.Seconds()) {
		t.Errorf("only %d calls in %.1fs: the client loops did not run", total, took.Seconds())
	}
	return out, code
}

// reachesByName polls, for up to 30 s, until container client's calls to svc by name (calls of them)
// all succeed, answered by tasks distinct tasks (0: any number).
func (r *migrateRig) reachesByName(t *testing.T, client, svc string, calls, tasks int) {
	t.Helper()
	poll(t, 30*time.Second, fmt.Sprintf("%s reaches %s by name", client, svc), func() error {
		hits, failed := tally(docker(t, r.m, "exec", client, "sh", "-c", connectScript(svc, calls, 0)))
		if failed != 0 || len(hits) == 0 || (tasks > 0 && len(hits) != tasks) {
			return fmt.Errorf("%d failed, answered by %v", failed, hits)
		}
		return nil
	})
}

// TestMigrate: `vxsafe migrate` moves a Docker overlay network's services and attachable container to a
// vxsafe twin while a client calls every service by name every 100 ms; a failed service update is rolled
// back and reported; --revert moves a half-done migration back. One 3-node swarm for every subtest.
func TestMigrate(t *testing.T) {
	began := time.Now()
	c := startCluster(t, cluster.Options{Prefix: "vxmig", Nodes: 3})
	installVxsafe(t, c, nil)
	m := c.Manager()
	api, err := engine.New("unix://"+m.Socket, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := &migrateRig{c: c, m: m, api: api, bin: filepath.Join(pluginBundle(t), "rootfs", "vxsafe")}
	img := c.Image()

	// The network to move: Docker's overlay, attachable, with an MTU and a label, three services calling
	// each other by name (dnsrr: this machine's kernel has no IPVS, so Docker's overlay serves no VIP
	// here), a service in the default VIP mode, and an attachable container.
	docker(t, m, "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.20.0/24",
		"-o", "com.docker.network.driver.mtu=1400", "--label", "team=web", "appnet")
	webs := []string{"web1", "web2", "web3"}
	for _, s := range webs {
		r.createHTTPService(t, s, "appnet", 2, "--endpoint-mode", "dnsrr", "--update-order", "start-first")
	}
	r.createHTTPService(t, "webvip", "appnet", 2, "--update-order", "start-first")
	docker(t, m, "run", "-d", "--name", "client", "--stop-timeout", "1", "--network", "appnet", img, "sleep", "3600")
	t.Cleanup(func() { m.Docker(ctxT(t, time.Minute), "rm", "-f", "client") })
	for _, s := range append(webs, "webvip") {
		r.waitServiceOn(t, s, 2, "appnet", 90*time.Second)
	}
	// Swarm learns a plugin enabled after the node joined at its next node update: the migration's plugin
	// check reads that.
	poll(t, 60*time.Second, "every node announces "+pluginName+" to the managers", func() error {
		for _, n := range c.Nodes() {
			out, err := m.Docker(ctxT(t, time.Minute), "node", "inspect", "-f", `{{range .Description.Engine.Plugins}}{{.Type}}={{.Name}} {{end}}`, n.Hostname)
			if err != nil {
				return err
			}
			if !strings.Contains(out, "Network="+pluginName) {
				return fmt.Errorf("node %s: %s", n.Name, out)
			}
		}
		return nil
	})
	for _, s := range webs {
		r.reachesByName(t, "client", s, 5, 0)
	}
	t.Logf("TIMING setup (swarm, plugin, network, 4 services, client) in %.1fs", time.Since(began).Seconds())

	t.Run("DryRun", func(t *testing.T) {
		out, code := migrateRun(t, r.bin, m, nil, "--dry-run", "appnet")
		if code != 0 {
			t.Fatalf("--dry-run: exit status %d", code)
		}
		for _, w := range []string{"appnet-vxsafe", "10.0.21.0/24", "web1", "web2", "web3", "webvip", "client", "start-first",
			"com.docker.network.driver.mtu=1400", "team=web", "--dry-run: nothing changed",
			"container client was started with --network appnet"} {
			if !strings.Contains(out, w) {
				t.Errorf("the plan does not say %q", w)
			}
		}
		if r.networkExists(t, "appnet-vxsafe") {
			t.Errorf("--dry-run created the twin")
		}
	})

	t.Run("Migrate", func(t *testing.T) {
		out, code := r.migrateUnderCalls(t, "client", webs, "--yes", "appnet")
		if code != 0 {
			t.Fatalf("vxsafe migrate: exit status %d", code)
		}
		// Every task on the twin only, the old network gone, the client moved.
		for _, s := range append(webs, "webvip") {
			r.waitServiceOn(t, s, 2, "appnet-vxsafe", 10*time.Second)
		}
		// Docker removes a swarm network asynchronously: the manager engine's inspect may find it for a moment
		// after the DELETE succeeded.
		poll(t, 30*time.Second, "network appnet gone from the manager engine", func() error {
			if r.networkExists(t, "appnet") {
				return fmt.Errorf("network appnet is still there")
			}
			return nil
		})
		tw := docker(t, m, "network", "inspect", "-f", `{{.Driver}} {{.Attachable}} {{index .Options "com.docker.network.driver.mtu"}} {{index .Labels "team"}} {{index .Labels "io.vxsafe.migrate.from"}} {{range .IPAM.Config}}{{.Subnet}}{{end}}`, "appnet-vxsafe")
		if tw != pluginName+" true 1400 web appnet 10.0.21.0/24" {
			t.Errorf("twin: %q, want %q", tw, pluginName+" true 1400 web appnet 10.0.21.0/24")
		}
		if nets := docker(t, m, "inspect", "-f", `{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}`, "client"); nets != "appnet-vxsafe" {
			t.Errorf("client container on %q, want appnet-vxsafe", nets)
		}
		// The twin's interface in the client (its name changes with the reconnect) has the old MTU.
		if mtus := docker(t, m, "exec", "client", "sh", "-c", "cat /sys/class/net/eth*/mtu"); !strings.Contains(mtus, "1400") {
			t.Errorf("no interface of the client has the twin's MTU 1400: %q", mtus)
		}
		// The VIP-mode service answers by name through vxsafe's VIP now.
		r.reachesByName(t, "client", "webvip", 10, 2)
		// Running it again is safe: nothing left to do.
		out, code = migrateRun(t, r.bin, m, nil, "--yes", "appnet")
		if code != 0 || !strings.Contains(out, "Nothing left to do") {
			t.Errorf("second run: exit status %d", code)
		}
		_ = out
	})

	t.Run("FailedUpdateRollbackRevert", func(t *testing.T) {
		docker(t, m, "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.30.0/24", "failnet")
		n1, n3 := c.Nodes()[0], c.Nodes()[2]
		// good: one task on n1; pinned: one task per node, updated stop-first (its new task lands on the node
		// its old one left).
		r.createHTTPService(t, "good", "failnet", 1, "--constraint", "node.hostname=="+n1.Hostname, "--endpoint-mode", "dnsrr")
		r.createHTTPService(t, "pinned", "failnet", 3, "--replicas-max-per-node", "1", "--update-order", "stop-first", "--endpoint-mode", "dnsrr")
		r.waitServiceOn(t, "good", 1, "failnet", 90*time.Second)
		r.waitServiceOn(t, "pinned", 3, "failnet", 90*time.Second)
		// Once the twin exists, a live foreign VXLAN device on n3 takes its VNI: vxsafe refuses to join the
		// twin there ("not deleting a live interface"), so pinned's new task on n3 fails; its old spec, on
		// Docker's overlay, still runs there.
		var once sync.Once
		planted := make(chan error, 1)
		t.Cleanup(func() { _ = n3.RemoveLink("vxmiglive") })
		out, code := migrateRun(t, r.bin, m, func(l string) {
			if strings.Contains(l, "create network failnet-vxsafe") && strings.Contains(l, "ok") {
				once.Do(func() {
					// The swarm's allocator puts the VNI in the network's options a moment after the create.
					var vni string
					err := pollErr(10*time.Second, func() error {
						out, err := m.Docker(ctxT(t, time.Minute), "network", "inspect", "-f", `{{index .Options "com.docker.network.driver.overlay.vxlanid_list"}}`, "failnet-vxsafe")
						if vni = strings.TrimSpace(out); err == nil && vni == "" {
							err = fmt.Errorf("no VNI yet")
						}
						return err
					})
					if err != nil {
						planted <- fmt.Errorf("the VNI of failnet-vxsafe: %w", err)
						return
					}
					for _, args := range [][]string{
						{"link", "add", "vxmiglive", "type", "vxlan", "id", vni, "dstport", "4789"},
						{"addr", "add", "10.99.30.1/24", "dev", "vxmiglive"},
						{"link", "set", "vxmiglive", "up"},
					} {
						if _, err = n3.Exec(ctxT(t, time.Minute), "ip", args...); err != nil {
							break
						}
					}
					planted <- err
				})
			}
		}, "--yes", "--timeout", "90s", "failnet")
		select {
		case err := <-planted:
			if err != nil {
				t.Fatalf("planting the live device on %s: %v", n3.Name, err)
			}
		default:
			t.Fatalf("the migration never said it created failnet-vxsafe")
		}
		if code != 1 {
			t.Fatalf("vxsafe migrate with a failing update: exit status %d, want 1", code)
		}
		// 20.10 pauses the update; the current engine may retry the task, or call the update completed a
		// replica short while the task fails again and again: the run stops it either way.
		if !strings.Contains(out, "service pinned: update paused") && !strings.Contains(out, "service pinned: update failing (") {
			t.Errorf("the output says neither that pinned's update paused nor that it is failing")
		}
		for _, w := range []string{"not deleting a live interface", "service pinned: rolled back",
			"service pinned: back on its previous networks", "State now:", "--revert failnet"} {
			if !strings.Contains(out, w) {
				t.Errorf("the output does not say %q", w)
			}
		}
		if !strings.Contains(out, "vxmiglive") && !strings.Contains(out, n3.Hostname) {
			t.Errorf("the output names neither the device nor the node")
		}
		// The state it reported: good on both, pinned back on the old network only.
		r.waitServiceOn(t, "good", 1, "failnet+failnet-vxsafe", 10*time.Second)
		r.waitServiceOn(t, "pinned", 3, "failnet", 60*time.Second)
		if err := n3.RemoveLink("vxmiglive"); err != nil {
			t.Fatal(err)
		}

		// --revert: good back on failnet only, the twin removed.
		out, code = migrateRun(t, r.bin, m, nil, "--revert", "--yes", "failnet")
		if code != 0 {
			t.Fatalf("--revert: exit status %d", code)
		}
		r.waitServiceOn(t, "good", 1, "failnet", 10*time.Second)
		r.waitServiceOn(t, "pinned", 3, "failnet", 10*time.Second)
		if r.networkExists(t, "failnet-vxsafe") {
			t.Errorf("--revert left the twin failnet-vxsafe")
		}
		if !r.networkExists(t, "failnet") {
			t.Errorf("--revert removed failnet")
		}
		_ = out
		docker(t, m, "service", "rm", "good", "pinned")
		removeSwarmNetwork(t, m, "failnet")
	})
	t.Run("MissingImageRollback", func(t *testing.T) {
		// noimg's image is a tag that n3 loses after its task started there: the restart of the update cannot
		// pull it, the swarm pauses the update, and the migration rolls noimg back; its old task, updated
		// start-first, kept running. imgok, before it in the plan, is on both networks by then.
		n1, n3 := c.Nodes()[0], c.Nodes()[2]
		const tag = "vxmig-local:only"
		for _, n := range c.Nodes() {
			docker(t, n, "tag", img, tag)
		}
		t.Cleanup(func() {
			m.Docker(ctxT(t, time.Minute), "service", "rm", "imgok", "noimg")
			for _, n := range c.Nodes() {
				n.Docker(ctxT(t, time.Minute), "rmi", tag)
			}
		})
		docker(t, m, "network", "create", "-d", "overlay", "--subnet", "10.0.50.0/24", "imgnet")
		r.createHTTPService(t, "imgok", "imgnet", 1, "--constraint", "node.hostname=="+n1.Hostname, "--endpoint-mode", "dnsrr")
		docker(t, m, "service", "create", "--detach", "--name", "noimg", "--network", "imgnet", "--replicas", "1", "--no-resolve-image",
			"--constraint", "node.hostname=="+n3.Hostname, "--update-order", "start-first", "--update-monitor", "1s", "--stop-grace-period", "1s",
			"--endpoint-mode", "dnsrr", tag, "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc")
		r.waitServiceOn(t, "imgok", 1, "imgnet", 90*time.Second)
		r.waitServiceOn(t, "noimg", 1, "imgnet", 90*time.Second)
		docker(t, n3, "rmi", tag)

		out, code := migrateRun(t, r.bin, m, nil, "--yes", "--timeout", "90s", "imgnet")
		if ps, err := m.Docker(ctxT(t, time.Minute), "service", "ps", "--no-trunc", "--format", "{{.ID}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}", "noimg"); err == nil {
			t.Logf("noimg's tasks after the run:\n%s", ps)
		}
		if code != 1 {
			t.Fatalf("vxsafe migrate with an image missing on %s: exit status %d, want 1", n3.Name, code)
		}
		// 20.10 pauses the update at the first failed task; the current engine keeps the task in "preparing",
		// retrying the pull, and the update goes on, until the command stops it as stuck (or as failing, if
		// the swarm fails the task instead).
		if !strings.Contains(out, "service noimg: update paused") && !strings.Contains(out, "service noimg: update stuck") &&
			!strings.Contains(out, "service noimg: update failing (") {
			t.Errorf("the output says neither that noimg's update paused nor that it is stuck or failing")
		}
		for _, w := range []string{tag, n3.Hostname, "service noimg: rolled back",
			"service noimg: back on its previous networks", "State now:"} {
			if !strings.Contains(out, w) {
				t.Errorf("the output does not say %q", w)
			}
		}
		r.waitServiceOn(t, "imgok", 1, "imgnet+imgnet-vxsafe", 10*time.Second)
		r.waitServiceOn(t, "noimg", 1, "imgnet", 60*time.Second)

		// With the image back on n3, the run goes on from where it stopped.
		docker(t, n3, "tag", img, tag)
		if _, code := migrateRun(t, r.bin, m, nil, "--resume", "--yes", "--timeout", "90s", "imgnet"); code != 0 {
			t.Fatalf("--resume: exit status %d", code)
		}
		r.waitServiceOn(t, "imgok", 1, "imgnet-vxsafe", 10*time.Second)
		r.waitServiceOn(t, "noimg", 1, "imgnet-vxsafe", 10*time.Second)
		docker(t, m, "service", "rm", "imgok", "noimg")
		removeSwarmNetwork(t, m, "imgnet-vxsafe")
	})

	t.Run("KeepSubnet", func(t *testing.T) {
		// keepnet, with a gateway of its own, ends on its own subnet and name through a temporary twin.
		docker(t, m, "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.40.0/24", "--gateway", "10.0.40.254",
			"--label", "team=keep", "keepnet")
		r.createHTTPService(t, "keep1", "keepnet", 2, "--endpoint-mode", "dnsrr", "--update-order", "start-first")
		r.createHTTPService(t, "keepvip", "keepnet", 1, "--update-order", "start-first")
		// A container started with --network keepnet: its network mode names keepnet, which comes back.
		docker(t, m, "run", "-d", "--name", "kclient", "--stop-timeout", "1", "--network", "keepnet", r.c.Image(), "sleep", "3600")
		t.Cleanup(func() {
			m.Docker(ctxT(t, time.Minute), "rm", "-f", "kclient")
			m.Docker(ctxT(t, time.Minute), "service", "rm", "keep1", "keepvip")
		})
		r.waitServiceOn(t, "keep1", 2, "keepnet", 90*time.Second)
		r.waitServiceOn(t, "keepvip", 1, "keepnet", 90*time.Second)
		r.reachesByName(t, "kclient", "keep1", 5, 0)

		out, code := migrateRun(t, r.bin, m, nil, "--keep-subnet", "--dry-run", "keepnet")
		if code != 0 {
			t.Fatalf("--keep-subnet --dry-run: exit status %d", code)
		}
		for _, w := range []string{"pass 1 of 2", "keepnet-vxsafe-tmp", "10.0.40.0/24", "restarts twice", "--dry-run: nothing changed"} {
			if !strings.Contains(out, w) {
				t.Errorf("the --keep-subnet plan does not say %q", w)
			}
		}
		if r.networkExists(t, "keepnet-vxsafe-tmp") {
			t.Errorf("--dry-run created the temporary twin")
		}

		out, code = r.migrateUnderCalls(t, "kclient", []string{"keep1"}, "--keep-subnet", "--yes", "keepnet")
		if code != 0 {
			t.Fatalf("vxsafe migrate --keep-subnet: exit status %d", code)
		}
		for _, w := range []string{"pass 1 done", "pass 2 of 2", "remove network keepnet-vxsafe-tmp"} {
			if !strings.Contains(out, w) {
				t.Errorf("the output does not say %q", w)
			}
		}
		r.waitServiceOn(t, "keep1", 2, "keepnet", 10*time.Second)
		r.waitServiceOn(t, "keepvip", 1, "keepnet", 10*time.Second)
		poll(t, 30*time.Second, "network keepnet-vxsafe-tmp gone from the manager engine", func() error {
			if r.networkExists(t, "keepnet-vxsafe-tmp") {
				return fmt.Errorf("still there")
			}
			return nil
		})
		want := pluginName + " true 10.0.40.0/24 10.0.40.254 keep keepnet"
		if got := docker(t, m, "network", "inspect", "-f", `{{.Driver}} {{.Attachable}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{index .Labels "team"}} {{index .Labels "io.vxsafe.migrate.from"}}`, "keepnet"); got != want {
			t.Errorf("keepnet after the move: %q, want %q", got, want)
		}
		if ip := docker(t, m, "inspect", "-f", `{{(index .NetworkSettings.Networks "keepnet").IPAddress}}`, "kclient"); !strings.HasPrefix(ip, "10.0.40.") {
			t.Errorf("kclient's address on keepnet: %q, want one in 10.0.40.0/24", ip)
		}
		// Its network mode names a network that exists again: the engine connects it to another.
		docker(t, m, "network", "connect", "appnet-vxsafe", "kclient")
		if ns := docker(t, m, "exec", "kclient", "nslookup", "keep1", "127.0.0.11"); !strings.Contains(ns, "10.0.40.") {
			t.Errorf("keep1's tasks not on 10.0.40.0/24: %s", ns)
		}
		r.reachesByName(t, "kclient", "keepvip", 5, 1)
		for _, args := range [][]string{{"--keep-subnet", "--yes", "keepnet"}, {"--yes", "keepnet"}} {
			if out, code := migrateRun(t, r.bin, m, nil, args...); code != 0 || !strings.Contains(out, "Nothing left to do") {
				t.Errorf("vxsafe migrate %v after the move: exit status %d, want 0 and nothing left to do", args, code)
			}
		}
	})
	t.Logf("TIMING TestMigrate on %s: %.1fs", cluster.EngineName(), time.Since(began).Seconds())
}

// pollErr calls f every 100 ms until it returns nil or limit has passed, and returns its last error.
func pollErr(limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
