package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/e2e/stale"
	"github.com/vxsafe/overlay/e2e/vxsafe"
)

const steps = 6

// What the story expects to see.
const (
	overlayLogError = "error creating vxlan interface: file exists"
	liveVNI         = 4100
	liveDevice      = "vxlive1"
	liveBridge      = "brlive"
)

// demo is one run of the story.
type demo struct {
	ui           *ui
	ctx          context.Context
	interrupted  atomic.Bool
	quietHarness atomic.Bool  // the harness's progress lines are shown during setup only
	clusterName  atomic.Value // string: the cluster's name as soon as Start names it

	bundle    string // plugin bundle directory (temporary)
	vxsafeBin string // the bundle's vxsafe binary, also `vxsafe doctor` on the host
	c         *cluster.Cluster
	n1, n2    *cluster.Node
	img       string

	ovl, vxs network

	rows       []row
	stepBegan  time.Time
	unexpected []string
}

// network is one of the two networks of the story.
type network struct {
	name, driver, subnet string
	id                   string
	vni                  uint32
	dev                  string // its VXLAN device name, vx-<vni>-<id>
}

// row is a line of the summary table.
type row struct {
	step, what      string
	overlay, vxsafe cell
	took            string
}

// fatal aborts the story (the summary and the clean-up still run).
type fatal struct{ err error }

func (d *demo) must(err error) {
	if err != nil {
		panic(fatal{err})
	}
}

// deviation records that something did not behave as the story says; the demo goes on and exits 1.
func (d *demo) deviation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.unexpected = append(d.unexpected, msg)
	d.ui.bad("UNEXPECTED: %s", msg)
}

func (d *demo) beginStep(i int, title string) {
	d.stepBegan = time.Now()
	d.ui.step(i, steps, title)
}

func (d *demo) stepTook() string { return fmt.Sprintf("%.1fs", time.Since(d.stepBegan).Seconds()) }

func (d *demo) run() int {
	u := d.ui
	u.printf("%s\n", u.paint(bold, "vxsafe/overlay demo: Docker's overlay and vxsafe/overlay side by side, on a stale VXLAN device"))
	u.printf("%s\n", "Each node is a network namespace with its own dockerd; nN$ is the docker CLI talking to node N's daemon,")
	u.printf("%s\n", "nN# a root shell in node N's network namespace. The machine's own Docker engine is not touched.")

	var failure error
	func() {
		defer func() {
			if r := recover(); r != nil {
				if f, ok := r.(fatal); ok {
					failure = f.err
				} else {
					failure = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
				}
			}
		}()
		d.setup()
		d.step1()
		d.step2()
		d.step3()
		d.step4()
		d.step5()
	}()
	if d.interrupted.Load() {
		failure = errors.New("interrupted")
	}
	if failure != nil && !d.interrupted.Load() {
		u.printf("\n%s%s\n", u.paint(dim, u.stamp()), u.paint(red, "stopped: "+failure.Error()))
		if d.c != nil {
			for _, n := range d.c.Nodes() {
				u.say("dockerd log of %s, last lines:", n.Name)
				u.out(n.LogTail(15))
			}
		}
	}

	d.beginStep(6, "summary and clean-up")
	d.summary(failure)
	left := d.cleanup()
	switch {
	case d.interrupted.Load():
		u.printf("demo: INTERRUPTED after %.1fs\n", u.elapsed().Seconds())
		return 130
	case failure != nil || len(d.unexpected) > 0 || len(left) > 0:
		u.printf("demo: %s after %.1fs\n", u.paint(red, "FAILED"), u.elapsed().Seconds())
		return 1
	}
	u.printf("demo: %s in %.1fs\n", u.paint(green, "OK"), u.elapsed().Seconds())
	return 0
}

// setup builds the plugin bundle, starts the two-node swarm and installs vxsafe/overlay on both nodes.
func (d *demo) setup() {
	u := d.ui
	d.stepBegan = time.Now()
	u.printf("\n%s%s\n", u.paint(dim, u.stamp()), u.paint(bold, "setup     the plugin bundle, a two-node swarm, vxsafe/overlay on both nodes"))
	dir, err := os.MkdirTemp("", Prefix+"-bundle-")
	d.must(err)
	d.bundle = dir
	d.vxsafeBin = filepath.Join(dir, "rootfs", "vxsafe")
	// The bundle builds while the nodes start.
	buildBegan := time.Now()
	u.cmd("$", "go", "build", "-o", d.vxsafeBin, "./plugin")
	u.out("(in the background, while the nodes start)")
	built := make(chan error, 1)
	go func() { built <- vxsafe.BuildBundle(d.ctx, dir, "demo") }()

	// The plugin goes on before the swarm forms: a plugin enabled on a formed swarm is announced only at
	// the swarm agent's next periodic node update (every 20 s), and a container asking for a network in
	// between waits for it.
	began := time.Now()
	ctx, cancel := context.WithTimeout(d.ctx, 3*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Prefix: Prefix, Nodes: 2, NoSwarm: true, Log: harnessLog{u, &d.quietHarness, &d.clusterName}})
	if err != nil {
		<-built // the bundle directory is removed at clean-up: let go build finish with it first
		d.must(err)
	}
	d.c, d.n1, d.n2, d.img = c, c.Node(1), c.Node(2), c.Image()
	u.good("2 nodes of %s, each a network namespace with its own dockerd, busybox imported as %s, in %.1fs",
		c.Name(), d.img, time.Since(began).Seconds())
	d.must(<-built)
	u.good("plugin bundle %s (config.json + rootfs/) built in %.1fs", dir, time.Since(buildBegan).Seconds())

	began = time.Now()
	d.must(vxsafe.Install(ctx, c, d.bundle, nil))
	u.good("%s installed and enabled on both nodes (per-node state, the node's own dockerd socket) in %.1fs",
		vxsafe.Plugin, time.Since(began).Seconds())

	began = time.Now()
	d.must(c.FormSwarm(ctx))
	d.quietHarness.Store(true)
	u.good("swarm formed: n1 manager, n2 worker, in %.1fs", time.Since(began).Seconds())
	d.show(d.n1, time.Minute, "node", "ls", "--format", "table {{.Hostname}}\t{{.Status}}\t{{.ManagerStatus}}")
	d.show(d.n2, time.Minute, "plugin", "ls", "--format", "table {{.Name}}\t{{.Enabled}}")
	d.rows = append(d.rows, row{step: "-", what: "setup: bundle, swarm, plugin", overlay: cell{text: "built into dockerd"}, vxsafe: cell{text: "installed on n1, n2"}, took: d.stepTook()})
}

// step1: two networks and a container of each on n1.
func (d *demo) step1() {
	d.beginStep(1, "two nodes; a network with Docker's overlay and one with vxsafe/overlay; a container of each on n1")
	d.ovl = network{name: "ovl", driver: "overlay", subnet: "10.0.1.0/24"}
	d.vxs = network{name: "vxs", driver: vxsafe.Plugin, subnet: "10.0.2.0/24"}
	for _, nw := range []*network{&d.ovl, &d.vxs} {
		_, err := d.show(d.n1, time.Minute, "network", "create", "-d", nw.driver, "--attachable", "--subnet", nw.subnet, nw.name)
		d.must(err)
		nw.id, nw.vni = d.networkVNI(nw.name)
		nw.dev = stale.DockerOverlayVXLANName(nw.vni, nw.id)
		d.ui.good("network %s: driver %s, VNI %d; its VXLAN device on each node is %s", nw.name, nw.driver, nw.vni, nw.dev)
	}
	res := map[string]cell{}
	for _, nw := range []*network{&d.ovl, &d.vxs} {
		name := nw.name + "-n1"
		r := d.showResult(d.n1, 2*time.Minute, "run", "-d", "--name", name, "--network", nw.name, d.img, "sleep", "3600")
		if r.err != nil {
			d.must(fmt.Errorf("node n1: docker run --network %s: %w: %s", nw.name, r.err, r.stderr))
		}
		d.ui.good("%s running after %.1fs", name, r.took.Seconds())
		ip, err := d.n1.Docker(d.ctx, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, nw.name), name)
		d.must(err)
		res[nw.name] = cell{text: "running, " + ip, color: green}
	}
	d.show(d.n1, time.Minute, "ps", "--format", "table {{.Names}}\t{{.Networks}}\t{{.Status}}")
	d.rows = append(d.rows, row{step: "1", what: "a container on n1", overlay: res["ovl"], vxsafe: res["vxs"], took: d.stepTook()})
}

// step2: the seed's stale devices on n2.
func (d *demo) step2() {
	u := d.ui
	d.beginStep(2, "a stale VXLAN device on n2 for each network, exactly as the seed found them")
	u.say("What a crash or a lost race leaves behind: a DOWN vx-<VNI>-<network ID> holding the network's VNI,")
	u.say("created here with netlink (stale.PlantVXLAN) as `ip link add NAME type vxlan id VNI dstport 4789` would.")
	for _, nw := range []*network{&d.ovl, &d.vxs} {
		d.must(stale.PlantVXLAN(d.n2, nw.dev, nw.vni))
		d.exec(d.n2, "ip", "-d", "link", "show", nw.dev)
	}
	d.rows = append(d.rows, row{step: "2", what: "stale device planted on n2",
		overlay: cell{text: d.ovl.dev + ", DOWN"}, vxsafe: cell{text: d.vxs.dev + ", DOWN"}, took: d.stepTook()})
}

// step3: docker run on n2 for both networks.
func (d *demo) step3() {
	u := d.ui
	d.beginStep(3, "docker run on n2, for both networks")
	n2 := d.n2
	mark := len(n2.Log())

	ovlArgs := []string{"run", "-d", "--name", "ovl-n2", "--network", "ovl", d.img, "sleep", "3600"}
	u.cmd("n2$", append([]string{"docker"}, ovlArgs...)...)
	u.out("(Docker overlay: runs in the background; its answer takes about 20 s)")
	ovlDone := make(chan result, 1)
	go func() { ovlDone <- d.docker(n2, 90*time.Second, ovlArgs...) }()
	ovlBegan := time.Now()
	// dockerd logs the cause when the sandbox join fails, long before the CLI's answer.
	ovlLine := d.waitLog(n2, mark, 4*time.Second, func(l string) bool { return strings.Contains(l, overlayLogError) })
	if ovlLine != "" {
		u.out(fmt.Sprintf("n2's dockerd logged, %.1fs later:", time.Since(ovlBegan).Seconds()))
		d.logLine(ovlLine)
	}

	vxArgs := []string{"run", "-d", "--name", "vxs-n2", "--network", "vxs", d.img, "sleep", "3600"}
	r := d.showResult(n2, 2*time.Minute, vxArgs...)
	vxCell := cell{}
	if r.err != nil {
		d.deviation("vxsafe/overlay's docker run on n2 failed: %s", r.stderr)
		vxCell = cell{text: "FAILED", color: red}
	} else {
		pl := d.waitLog(n2, mark, 5*time.Second, func(l string) bool {
			return strings.Contains(l, "plugin=") && strings.Contains(l, "deleted stale") && strings.Contains(l, d.vxs.dev)
		})
		if pl == "" {
			d.deviation("the dockerd log of n2 has no plugin line naming %s", d.vxs.dev)
			vxCell = cell{text: fmt.Sprintf("running after %.1fs", r.took.Seconds()), color: green}
		} else {
			u.out("vxsafe's log line (n2's dockerd log, plugin=…):")
			d.logLine(pl)
			u.good("running after %.1fs: vxsafe found the stale %s, deleted it and went on", r.took.Seconds(), d.vxs.dev)
			vxCell = cell{text: fmt.Sprintf("running (%.1fs), removed stale device", r.took.Seconds()), color: green}
		}
	}

	u.event("Docker overlay's docker run on n2 (started %.1fs ago), waiting for its answer", time.Since(ovlBegan).Seconds())
	var or result
	select {
	case or = <-ovlDone:
	case <-d.ctx.Done():
		d.must(d.ctx.Err())
	}
	ovCell := cell{}
	if or.err == nil {
		d.deviation("Docker overlay's docker run on n2 succeeded despite the stale %s", d.ovl.dev)
		ovCell = cell{text: "running (no failure)", color: red}
	} else {
		u.out(or.stderr)
		if ovlLine == "" {
			ovlLine = d.waitLog(n2, mark, 5*time.Second, func(l string) bool { return strings.Contains(l, overlayLogError) })
			if ovlLine != "" {
				u.out("n2's dockerd log:")
				d.logLine(ovlLine)
			}
		}
		if ovlLine == "" {
			d.deviation("n2's dockerd log lacks %q", overlayLogError)
		}
		u.expectedFailure("Docker overlay fails after %.1fs; the log says \"file exists\" but not which interface: the stale %s",
			or.took.Seconds(), d.ovl.dev)
		ovCell = cell{text: fmt.Sprintf("FAILED after %.1fs: file exists", or.took.Seconds()), color: red}
	}
	d.rows = append(d.rows, row{step: "3", what: "docker run on n2", overlay: ovCell, vxsafe: vxCell, took: d.stepTook()})
}

// step4: a cross-host ping on the vxsafe network; a live conflicting device and vxsafe's refusal.
func (d *demo) step4() {
	u := d.ui
	d.beginStep(4, "a cross-host ping on the vxsafe network; a live conflicting device and vxsafe's refusal")
	// The gossip control plane tells n2 where vxs-n1 is; wait for the first answer, then show a ping.
	began := time.Now()
	var lastErr error
	attempts := 0
	for time.Since(began) < 30*time.Second {
		attempts++
		if _, lastErr = d.n2.Docker(d.ctx, "exec", "vxs-n2", "ping", "-c", "1", "-W", "1", "vxs-n1"); lastErr == nil {
			break
		}
		d.must(d.ctx.Err())
		time.Sleep(200 * time.Millisecond)
	}
	firstReply := time.Since(began)
	pingCell := cell{}
	out, err := d.show(d.n2, time.Minute, "exec", "vxs-n2", "ping", "-c", "3", "-W", "2", "vxs-n1")
	if err != nil || !strings.Contains(out, " 0% packet loss") {
		d.deviation("ping from vxs-n2 (n2) to vxs-n1 (n1) across hosts: %v (first attempts: %v)", err, lastErr)
		pingCell = cell{text: "FAILED", color: red}
	} else {
		u.good("vxs-n2 on n2 reaches vxs-n1 on n1 by name, across hosts (first reply after %.1fs, %d attempt(s))", firstReply.Seconds(), attempts)
		pingCell = cell{text: "3/3 replies", color: green}
	}
	d.rows = append(d.rows, row{step: "4", what: "ping n2 -> n1 across hosts", overlay: cell{text: "-"}, vxsafe: pingCell, took: d.stepTook()})

	stepBegan := time.Now()
	u.say("")
	u.say("Another program's device on n2, up and enslaved to a bridge, holding VNI %d:", liveVNI)
	d.exec(d.n2, "ip", "link", "add", liveBridge, "type", "bridge")
	d.exec(d.n2, "ip", "link", "add", liveDevice, "type", "vxlan", "id", strconv.Itoa(liveVNI), "dstport", "4789")
	d.exec(d.n2, "ip", "link", "set", liveDevice, "master", liveBridge, "up")
	d.exec(d.n2, "ip", "link", "set", liveBridge, "up")
	_, err = d.show(d.n1, time.Minute, "network", "create", "-d", vxsafe.Plugin, "--attachable", "--subnet", "10.0.3.0/24",
		"-o", fmt.Sprintf("com.docker.network.driver.overlay.vxlanid_list=%d", liveVNI), "vxs4100")
	d.must(err)
	r := d.showResult(d.n2, 2*time.Minute, "run", "--rm", "--network", "vxs4100", d.img, "true")
	refCell := cell{}
	switch {
	case r.err == nil:
		d.deviation("docker run on vxs4100 succeeded despite the live %s holding VNI %d", liveDevice, liveVNI)
		refCell = cell{text: "ran (no refusal)", color: red}
	case !strings.Contains(r.stderr, fmt.Sprintf("vxlan interface %q", liveDevice)) || !strings.Contains(r.stderr, "not deleting a live interface"):
		d.deviation("docker's error does not name %s as a live interface", liveDevice)
		refCell = cell{text: "refused, not naming it", color: red}
	default:
		d.exec(d.n2, "ip", "-br", "link", "show", liveDevice)
		if !d.hasLink(d.n2, liveDevice) {
			d.deviation("vxsafe deleted the live %s", liveDevice)
			refCell = cell{text: "refused, but deleted it", color: red}
		} else {
			u.good("vxsafe refused, naming %s and why it is live, and left it alone", liveDevice)
			refCell = cell{text: "refused, named " + liveDevice + ", kept it", color: green}
		}
	}
	u.say("The demo removes its own live device again:")
	d.exec(d.n2, "ip", "link", "del", liveDevice)
	d.exec(d.n2, "ip", "link", "del", liveBridge)
	d.rows = append(d.rows, row{step: "", what: "a live device on VNI " + strconv.Itoa(liveVNI), overlay: cell{text: "-"}, vxsafe: refCell,
		took: fmt.Sprintf("%.1fs", time.Since(stepBegan).Seconds())})
}

// step5: vxsafe doctor finds overlay's stale device on n2 and --fix cures overlay.
func (d *demo) step5() {
	u := d.ui
	d.beginStep(5, "vxsafe doctor on n2 finds overlay's stale device; --fix makes overlay work again")
	help, _ := exec.CommandContext(d.ctx, d.vxsafeBin, "doctor", "--help").CombinedOutput()
	if !strings.Contains(string(help), "vxsafe doctor") {
		u.out("skipped: doctor not built (this vxsafe has no doctor command)")
		d.rows = append(d.rows, row{step: "5", what: "vxsafe doctor on n2", overlay: cell{text: "skipped: doctor not built", color: yellow},
			vxsafe: cell{text: "-"}, took: d.stepTook()})
		return
	}
	u.say("vxsafe is the plugin's own binary (%s), run on the machine, looking at node n2:", d.vxsafeBin)
	base := []string{"doctor", "--netns", d.n2.NetnsPath(), "--docker-host", "unix://" + d.n2.Socket}
	out, code := d.doctor(base...)
	found := code == 1 && strings.Contains(out, d.ovl.dev)
	if !found {
		d.deviation("vxsafe doctor did not report %s as stale (exit status %d)", d.ovl.dev, code)
	} else {
		u.good("exit status 1: stale devices found, %s among them", d.ovl.dev)
	}
	out, code = d.doctor(append(base, "--fix", "--yes")...)
	fixed := code == 0 && !d.hasLink(d.n2, d.ovl.dev)
	if !fixed {
		d.deviation("vxsafe doctor --fix: exit status %d, %s still there: %v", code, d.ovl.dev, d.hasLink(d.n2, d.ovl.dev))
	} else {
		u.good("exit status 0: %s removed, nothing stale left", d.ovl.dev)
	}
	_ = out
	r := d.showResult(d.n2, 2*time.Minute, "run", "--rm", "--network", "ovl", d.img, "ping", "-c", "2", "-W", "5", "ovl-n1")
	works := r.err == nil && strings.Contains(r.stdout, " 0% packet loss")
	if !works {
		d.deviation("Docker overlay on n2 after vxsafe doctor --fix: %v %s", r.err, r.stderr)
	} else {
		u.good("Docker overlay works on n2 again: a container there reaches ovl-n1 on n1 by name (%.1fs)", r.took.Seconds())
	}
	c := cell{text: "found, fixed, runs again", color: green}
	switch {
	case !found:
		c = cell{text: "not found", color: red}
	case !fixed:
		c = cell{text: "found, NOT fixed", color: red}
	case !works:
		c = cell{text: "found, fixed, still FAILS", color: red}
	}
	d.rows = append(d.rows, row{step: "5", what: "vxsafe doctor --fix on n2", overlay: c, vxsafe: cell{text: "-"}, took: d.stepTook()})
}

// summary prints the table of what happened.
func (d *demo) summary(failure error) {
	u := d.ui
	rows := make([][]cell, 0, len(d.rows)+1)
	for _, r := range d.rows {
		rows = append(rows, []cell{{text: r.step}, {text: r.what}, r.overlay, r.vxsafe, {text: r.took}})
	}
	if len(rows) > 0 {
		u.printf("\n")
		u.table([]string{"step", "what", "Docker overlay", "vxsafe/overlay", "time"}, rows)
	}
	u.printf("\n")
	switch {
	case d.interrupted.Load():
		u.say("result: INTERRUPTED")
	case failure != nil:
		u.say("result: %s: stopped early: %v", u.paint(red, "FAILED"), failure)
	case len(d.unexpected) > 0:
		u.say("result: %s: %d step(s) did not behave as the story says:", u.paint(red, "FAILED"), len(d.unexpected))
		for _, m := range d.unexpected {
			u.say("  - %s", m)
		}
	default:
		u.say("result: %s: a stale device blocks Docker's overlay and does not block vxsafe/overlay", u.paint(green, "OK"))
	}
}

// cleanup removes the cluster and the bundle and returns what is left (nothing, normally).
func (d *demo) cleanup() []string {
	u := d.ui
	d.quietHarness.Store(true)
	began := time.Now()
	var errs []error
	var left []string
	name := ""
	what := "nothing was started"
	switch n, _ := d.clusterName.Load().(string); {
	case d.c != nil:
		name = d.c.Name()
		errs = append(errs, d.c.Close())
		left = append(left, d.c.Leftovers()...)
		what = fmt.Sprintf("cluster %s removed in %.1fs (dockerd, containers, plugins, namespaces, mounts, cgroups, directories)",
			name, time.Since(began).Seconds())
	case n != "":
		// Start failed or was interrupted: it removed what it had made; check.
		left = append(left, cluster.Leftovers(n)...)
		what = fmt.Sprintf("cluster %s, stopped while starting, removed by the harness", n)
	}
	if d.bundle != "" {
		errs = append(errs, os.RemoveAll(d.bundle))
		if _, err := os.Lstat(d.bundle); err == nil {
			left = append(left, "dir "+d.bundle)
		}
	}
	if err := errors.Join(errs...); err != nil {
		u.event("clean-up: %s: %v", what, err)
	}
	if len(left) > 0 {
		u.event("clean-up: %s; %s: %s", what, u.paint(red, "left behind"), strings.Join(left, "; "))
		return left
	}
	u.event("clean-up: %s; nothing left", what)
	return nil
}

// result is what a docker command gave.
type result struct {
	stdout, stderr string
	took           time.Duration
	err            error
}

// docker runs the docker CLI against n's daemon.
func (d *demo) docker(n *cluster.Node, limit time.Duration, args ...string) result {
	ctx, cancel := context.WithTimeout(d.ctx, limit)
	defer cancel()
	cmd := n.DockerCommand(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err := cmd.Run()
	r := result{stdout: strings.TrimSpace(stdout.String()), stderr: strings.TrimSpace(stderr.String()), took: time.Since(began), err: err}
	if err != nil && ctx.Err() != nil {
		r.err = fmt.Errorf("node %s: docker %s: %w", n.Name, strings.Join(args, " "), ctx.Err())
	}
	return r
}

// showResult prints a docker command, runs it and prints what it printed.
func (d *demo) showResult(n *cluster.Node, limit time.Duration, args ...string) result {
	d.ui.cmd(n.Name+"$", append([]string{"docker"}, args...)...)
	r := d.docker(n, limit, args...)
	d.ui.out(r.stdout)
	d.ui.out(r.stderr)
	if d.ctx.Err() != nil {
		d.must(d.ctx.Err())
	}
	return r
}

// show is showResult for commands that must succeed (the error names the command).
func (d *demo) show(n *cluster.Node, limit time.Duration, args ...string) (string, error) {
	r := d.showResult(n, limit, args...)
	if r.err != nil {
		return r.stdout, fmt.Errorf("node %s: docker %s: %w: %s", n.Name, strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout, nil
}

// exec prints and runs a command in n's network namespace; it must succeed.
func (d *demo) exec(n *cluster.Node, name string, args ...string) string {
	d.ui.cmd(n.Name+"#", append([]string{name}, args...)...)
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	out, err := n.Exec(ctx, name, args...)
	d.ui.out(out)
	d.must(err)
	return out
}

// doctor prints and runs `vxsafe doctor ARGS` on the host, printing its output; it returns the output and
// the exit status.
func (d *demo) doctor(args ...string) (string, int) {
	d.ui.cmd("host#", append([]string{"vxsafe"}, args[0:]...)...)
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.vxsafeBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	d.ui.out(out.String())
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		d.must(fmt.Errorf("vxsafe %s: %w", strings.Join(args, " "), err))
	}
	d.must(d.ctx.Err())
	d.ui.out(fmt.Sprintf("(exit status %d)", code))
	return out.String(), code
}

// networkVNI reads a network's full ID and first VNI on the manager, waiting for swarm's allocator to give
// it one.
func (d *demo) networkVNI(name string) (string, uint32) {
	id, vnis, err := stale.OverlayVNIs(d.ctx, d.n1, name)
	d.must(err)
	return id, vnis[0]
}

func (d *demo) hasLink(n *cluster.Node, name string) bool {
	names, err := n.LinkNames()
	d.must(err)
	for _, l := range names {
		if l == name {
			return true
		}
	}
	return false
}

// waitLog polls n's dockerd log, from byte offset mark on, for a line that match accepts.
func (d *demo) waitLog(n *cluster.Node, mark int, limit time.Duration, match func(string) bool) string {
	deadline := time.Now().Add(limit)
	for {
		log := n.Log()
		if mark < len(log) {
			for _, l := range strings.Split(log[mark:], "\n") {
				if match(l) {
					return l
				}
			}
		}
		if time.Now().After(deadline) || d.ctx.Err() != nil {
			return ""
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logLine prints a dockerd log line as level and message (a plugin's line unwrapped from dockerd's).
func (d *demo) logLine(line string) {
	level, msg, plugin := logMessage(line)
	src := "dockerd"
	if plugin != "" {
		src = "plugin " + plugin[:min(12, len(plugin))]
	}
	d.ui.out(fmt.Sprintf("  %s, level=%s: %s", src, level, msg))
}

var harnessNameRE = regexp.MustCompile(`^\[(` + Prefix + `-[0-9a-f]+) `)

// harnessLog shows the test harness's progress lines while the swarm starts (its clean-up is summed up
// by the demo's own line).
type harnessLog struct {
	u     *ui
	quiet *atomic.Bool
	name  *atomic.Value // the cluster's name, from the first line ("[vxd-1a2b   0.00s] ...")
}

func (h harnessLog) Write(p []byte) (int, error) {
	if h.name.Load() == nil {
		if m := harnessNameRE.FindSubmatch(p); m != nil {
			h.name.Store(string(m[1]))
		}
	}
	if h.quiet.Load() {
		return len(p), nil
	}
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		h.u.printf("%s%s\n", indent1, h.u.paint(dim, l))
	}
	return len(p), nil
}
