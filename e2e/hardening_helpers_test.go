package e2e

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/gossip"
	"golang.org/x/sys/unix"
)

// listenIn listens on a TCP address inside the network namespace at nsPath (see dialIn). The listener
// keeps the namespace; Accept works from any thread.
func listenIn(nsPath, addr string) (net.Listener, error) {
	return inNetNS(nsPath, func() (net.Listener, error) { return net.Listen("tcp", addr) })
}

// inNetNS runs open on an OS thread switched into the network namespace at nsPath and returns what it
// made (a socket keeps the namespace it was created in). The thread is switched back before it is
// released, and never released if that fails: it exits with its goroutine instead of running others in
// the wrong namespace, and what open made is closed.
func inNetNS[T io.Closer](nsPath string, open func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("opening %s: %w", nsPath, err)}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("entering %s: %w", nsPath, err)}
			return
		}
		v, oerr := open()
		if err := netns.Set(orig); err != nil {
			if any(v) != nil {
				v.Close()
			}
			ch <- result{err: fmt.Errorf("returning from %s: %w", nsPath, err)}
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		ch <- result{v, oerr}
	}()
	r := <-ch
	return r.v, r.err
}

// pluginPID returns the PID of the plugin process of plugin name on node n, verified to belong to that
// node's plugin: the child of the containerd shim whose arguments name the node's plugin containerd
// namespace, the plugin's ID and the node's containerd socket, running /vxsafe.
func pluginPID(ctx context.Context, n *cluster.Node, name string) (int, error) {
	id, err := n.PluginID(ctx, name)
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	type proc struct {
		ppid int
		args []string
	}
	procs := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cl) == 0 {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(st), ')')
		f := strings.Fields(string(st)[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		procs[pid] = proc{ppid: ppid, args: strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")}
	}
	isShim := func(args []string) bool {
		ns, sid, addr, ok := cluster.ShimArgs(args)
		return ok && ns == n.Hostname+"-plugins" && sid == id && strings.HasPrefix(addr, n.ExecRoot+"/")
	}
	var found []int
	for pid, p := range procs {
		if len(p.args) > 0 && p.args[0] == "/vxsafe" {
			if parent, ok := procs[p.ppid]; ok && isShim(parent.args) {
				found = append(found, pid)
			}
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("node %s: %d processes of plugin %s (%s): %v", n.Name, len(found), name, id[:12], found)
	}
	return found[0], nil
}

// waitPluginPID waits until node n's plugin runs with a PID other than old; it returns the new PID.
func waitPluginPID(t *testing.T, n *cluster.Node, old int, limit time.Duration) int {
	t.Helper()
	var pid int
	poll(t, limit, "node "+n.Name+": plugin running again", func() error {
		p, err := pluginPID(context.Background(), n, pluginName)
		if err != nil {
			return err
		}
		if p == old {
			return fmt.Errorf("still pid %d", p)
		}
		pid = p
		return nil
	})
	return pid
}

// pinger is a continuous ping (every 0.2 s) from a container, whose output is read when it stops.
type pinger struct {
	n         *cluster.Node
	container string
	target    string
	done      chan struct{}
	out       string
	err       error
}

const pingInterval = 200 * time.Millisecond

func startPing(t *testing.T, n *cluster.Node, container, target string) *pinger {
	t.Helper()
	p := &pinger{n: n, container: container, target: target, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.out, p.err = n.Docker(context.Background(), "exec", container, "ping", "-i", "0.2", "-W", "1", "-w", "900", target)
	}()
	// Wait for the first replies.
	poll(t, 20*time.Second, fmt.Sprintf("ping %s from %s answering", target, container), func() error {
		out, err := n.Docker(context.Background(), "exec", container, "ping", "-c", "1", "-W", "1", target)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return p
}

// stop ends the ping (SIGINT, so it prints its summary) and returns the largest gap between replies.
func (p *pinger) stop(t *testing.T) (gap time.Duration, received, transmitted int) {
	t.Helper()
	_, _ = p.n.Docker(context.Background(), "exec", p.container, "killall", "-INT", "ping")
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("ping in %s did not stop", p.container)
	}
	gap, received, transmitted, err := pingGap(p.out)
	if err != nil {
		t.Fatalf("ping %s from %s: %v (exit: %v)\n%s", p.target, p.container, err, p.err, p.out)
	}
	return gap, received, transmitted
}

var (
	reSeq     = regexp.MustCompile(`seq=(\d+)`)
	reSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)
)

// pingGap computes the largest interval without a reply from busybox ping output: between consecutive
// replies, before the first and after the last (until the last probe sent).
func pingGap(out string) (gap time.Duration, received, transmitted int, err error) {
	m := reSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0, errors.New("no summary line")
	}
	transmitted, _ = strconv.Atoi(m[1])
	var seqs []int
	seen := map[int]bool{}
	for _, s := range reSeq.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(s[1])
		if !seen[v] {
			seen[v] = true
			seqs = append(seqs, v)
		}
	}
	received = len(seqs)
	if received == 0 {
		return time.Duration(transmitted) * pingInterval, 0, transmitted, nil
	}
	sort.Ints(seqs)
	worst := seqs[0] + 1 // before the first reply
	for i := 1; i < len(seqs); i++ {
		worst = max(worst, seqs[i]-seqs[i-1])
	}
	worst = max(worst, transmitted-seqs[len(seqs)-1])
	return time.Duration(worst) * pingInterval, received, transmitted, nil
}

func containerIP(t *testing.T, n *cluster.Node, container, network string) string {
	t.Helper()
	return docker(t, n, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, network), container)
}

func containerMAC(t *testing.T, n *cluster.Node, container, network string) string {
	t.Helper()
	return docker(t, n, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).MacAddress}}`, network), container)
}

func pingOnce(n *cluster.Node, container, target string) error {
	out, err := n.Docker(context.Background(), "exec", container, "ping", "-c", "1", "-W", "1", target)
	if err != nil {
		return fmt.Errorf("%s -> %s: %v: %s", container, target, err, out)
	}
	return nil
}

// fdbEntries lists the permanent FDB entries (MAC -> destination) of the link called dev on node n.
func fdbEntries(n *cluster.Node, dev string) (map[string]string, error) {
	out := map[string]string{}
	err := permanentNeighbours(n, dev, unix.AF_BRIDGE, func(f netlink.Neigh) {
		if f.IP != nil {
			out[f.HardwareAddr.String()] = f.IP.String()
		}
	})
	return out, err
}

// permanentNeighbours calls f with each permanent entry of family (unix.AF_BRIDGE: FDB; unix.AF_INET:
// neighbours) on the link called dev of node n.
func permanentNeighbours(n *cluster.Node, dev string, family int, f func(netlink.Neigh)) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return err
	}
	entries, err := h.NeighList(l.Attrs().Index, family)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.State&netlink.NUD_PERMANENT != 0 {
			f(e)
		}
	}
	return nil
}

// vxsafeNeighbours counts, on node n, the FDB entries with a remote destination on any VXLAN device and
// the permanent IPv4 neighbour entries with a 02:42 MAC (what vxsafe programs for remote endpoints).
func vxsafeNeighbours(n *cluster.Node) (fdb, neigh int, err error) {
	h, err := n.Handle()
	if err != nil {
		return 0, 0, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range links {
		if _, ok := l.(*netlink.Vxlan); ok {
			fs, err := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
			if err != nil {
				return 0, 0, err
			}
			for _, f := range fs {
				if f.IP != nil && !f.IP.IsUnspecified() {
					fdb++
				}
			}
		}
	}
	nbs, err := h.NeighList(0, unix.AF_INET)
	if err != nil {
		return 0, 0, err
	}
	for _, nb := range nbs {
		if nb.State&netlink.NUD_PERMANENT != 0 && strings.HasPrefix(nb.HardwareAddr.String(), "02:42:") {
			neigh++
		}
	}
	return fdb, neigh, nil
}

// linksWithPrefix lists node n's links whose names start with one of prefixes.
func linksWithPrefix(n *cluster.Node, prefixes ...string) ([]string, error) {
	names, err := n.LinkNames()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range names {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return out, nil
}

// pluginLogSince returns the plugin lines of node n's dockerd log written after offset (a byte length
// of an earlier Log()).
func pluginLogSince(n *cluster.Node, offset int) string {
	log := n.Log()
	if offset > len(log) {
		offset = 0
	}
	var b strings.Builder
	for _, line := range strings.Split(log[offset:], "\n") {
		if strings.Contains(line, "plugin=") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// logLine returns the first line of log containing every word, or "".
func logLine(log string, words ...string) string {
next:
	for _, line := range strings.Split(log, "\n") {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		return line
	}
	return ""
}

// copyBundle copies a plugin bundle and rebuilds its binary with another version string.
func copyBundle(t *testing.T, src, version string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, fi.Mode().Perm())
		}
		if rel == filepath.Join("rootfs", "vxsafe") {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		return errors.Join(err, out.Close())
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-ldflags", "-s -w -X main.version="+version, "-o", filepath.Join(dst, "rootfs", "vxsafe"), "../plugin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin %s: %v\n%s", version, err, out)
	}
	return dst
}

// killPID sends SIGKILL to a process the caller verified.
func killPID(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// rogueSpec configures the rogue gossip agent (TestRogueGossipAgent in a helper process).
type rogueSpec struct {
	Bind    string // address to bind and advertise (the node's)
	Target  string // member to join, host:port
	Key     string // hex; empty: none
	Network string // when set, publish a record for this network
	IP, MAC string
	// VTEP is the published record's VTEP (empty: the rogue's own address); NetKey (hex) signs the
	// network's records with a key of the rogue's choosing or one it obtained.
	VTEP   string
	NetKey string
	// Extra are more records to publish (IP, MAC pairs).
	Extra [][2]string
}

type rogue struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	joined int
	line   string
	mu     sync.Mutex
	out    *strings.Builder
}

// command sends a line to the rogue agent ("capture ENDPOINT-PREFIX", "replay") and waits for its
// answer line starting with "ROGUE <word>=".
func (r *rogue) command(t *testing.T, cmd, word string) string {
	t.Helper()
	r.mu.Lock()
	offset := r.out.Len()
	r.mu.Unlock()
	if _, err := io.WriteString(r.stdin, cmd+"\n"); err != nil {
		t.Fatalf("rogue agent: %v", err)
	}
	var line string
	poll(t, 20*time.Second, "rogue agent answers "+cmd, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, l := range strings.Split(r.out.String()[offset:], "\n") {
			if strings.HasPrefix(l, "ROGUE "+word+"=") {
				line = l
				return nil
			}
		}
		return fmt.Errorf("no answer yet")
	})
	return line
}

// startRogue runs a gossip agent that is not part of the cluster inside node n's network namespace, on
// port 7949, tries to join spec.Target and, if it joined and spec.Network is set, publishes the record.
// It returns once the join attempt is over; stop ends it (leaving the cluster).
func startRogue(t *testing.T, n *cluster.Node, spec rogueSpec) *rogue {
	t.Helper()
	return startRogueIn(t, n.NetnsPath(), n.Addr, spec)
}

// startRogueIn is startRogue in the network namespace at netnsPath, whose address is addr.
func startRogueIn(t *testing.T, netnsPath, addr string, spec rogueSpec) *rogue {
	t.Helper()
	spec.Bind = addr
	b, _ := json.Marshal(spec)
	cmd := exec.Command("nsenter", "--net="+netnsPath, os.Args[0], "-test.run=^TestRogueGossipAgent$", "-test.v")
	cmd.Env = append(os.Environ(), "VXH_ROGUE="+string(b))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &rogue{cmd: cmd, stdin: stdin, out: &strings.Builder{}}
	t.Cleanup(func() { r.kill() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("rogue agent exited: %s", r.out)
			}
			r.mu.Lock()
			r.out.WriteString(l + "\n")
			r.mu.Unlock()
			if strings.HasPrefix(l, "ROGUE joined=") {
				r.line = l
				fmt.Sscanf(l, "ROGUE joined=%d", &r.joined)
				go func() {
					for l := range lines {
						r.mu.Lock()
						r.out.WriteString(l + "\n")
						r.mu.Unlock()
					}
				}()
				return r
			}
		case <-timeout:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("rogue agent: no join result within 60s: %s", r.out)
		}
	}
}

func (r *rogue) stop(t *testing.T) {
	t.Helper()
	r.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		r.kill()
		t.Errorf("rogue agent did not stop")
	}
}

func (r *rogue) kill() {
	if r.cmd.Process != nil && r.cmd.ProcessState == nil {
		_ = r.cmd.Process.Kill()
	}
}

// TestRogueGossipAgent is not a test of its own: the hardening tests run the test binary with VXH_ROGUE
// set, inside a node's network namespace, as a gossip agent of a host that is not part of the cluster.
func TestRogueGossipAgent(t *testing.T) {
	spec := os.Getenv("VXH_ROGUE")
	if spec == "" {
		t.Skip("helper process of the hardening tests")
	}
	var s rogueSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatal(err)
	}
	var key []byte
	if s.Key != "" {
		var err error
		if key, err = hex.DecodeString(s.Key); err != nil {
			t.Fatal(err)
		}
	}
	a, err := gossip.New(gossip.Config{NodeName: "rogue/" + s.Bind, BindAddr: s.Bind, BindPort: 7949, AdvertiseAddr: s.Bind,
		Key: key, RejoinInterval: -1, Log: logrus.NewEntry(logrus.New())}, nil)
	if err != nil {
		fmt.Printf("ROGUE joined=0 start failed: %v\n", err)
		return
	}
	defer a.Close()
	n, err := a.Join([]string{s.Target})
	msg := "<nil>"
	if err != nil {
		msg = strings.Join(strings.Fields(err.Error()), " ")
	}
	if s.NetKey != "" {
		k, err := hex.DecodeString(s.NetKey)
		if err == nil {
			err = a.SetNetworkKeys(s.Network, gossip.NetworkKeys{Primary: k})
		}
		if err != nil {
			fmt.Printf("ROGUE joined=0 network key: %v\n", err)
			return
		}
	}
	fmt.Printf("ROGUE joined=%d err=%s\n", n, msg)
	if n > 0 && s.Network != "" && s.IP != "" {
		for i, r := range append([][2]string{{s.IP, s.MAC}}, s.Extra...) {
			a.Publish(gossip.Endpoint{Network: s.Network, EndpointID: fmt.Sprintf("r0gue%059d", i), IP: r[0], MAC: r[1], VTEP: s.VTEP})
		}
	}
	// Commands, one per line, until the test closes stdin.
	var captured []gossip.Captured
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "capture":
			captured = nil
			for _, c := range a.Captured(s.Network) {
				if strings.HasPrefix(c.Endpoint().EndpointID, f[1]) {
					captured = append(captured, c)
				}
			}
			fmt.Printf("ROGUE captured=%d\n", len(captured))
		case len(f) == 1 && f[0] == "replay":
			a.Replay(captured)
			fmt.Printf("ROGUE replayed=%d\n", len(captured))
		}
	}
}

// upgradeScript runs scripts/upgrade-plugin (what `make upgrade` runs) against node n with bundle as the
// new build and extra environment settings.
func upgradeScript(t *testing.T, n *cluster.Node, bundle string, env ...string) {
	t.Helper()
	script, err := filepath.Abs("../scripts/upgrade-plugin")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script)
	cmd.Env = append(n.CommandEnv(), append([]string{"PLUGIN=" + pluginName, "BUNDLE=" + bundle}, env...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("UPGRADE %s", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    "))
	if err != nil {
		t.Fatalf("scripts/upgrade-plugin on %s: %v", n.Name, err)
	}
}
