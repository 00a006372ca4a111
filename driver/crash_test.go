package driver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/internal/nstest"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

// TestCrashChild is TestKillBetweenSteps's plugin process: with VXSAFE_CRASH_CHILD=DIR it serves a
// driver on DIR/vxsafe.sock, its state in DIR and its host namespace VXSAFE_CRASH_NS, until killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("VXSAFE_CRASH_CHILD")
	if dir == "" {
		t.Skip("only the plugin process of TestKillBetweenSteps")
	}
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	logger.SetLevel(logrus.DebugLevel)
	log := logrus.NewEntry(logger)
	st, err := store.Open(filepath.Join(dir, "vxsafe.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.OpenNotes() {
		log.Warn(n)
	}
	dp, err := dataplane.New(dataplane.Options{NSPath: os.Getenv("VXSAFE_CRASH_NS"), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	drv, err := New(Config{Store: st, Dataplane: dp, VNIMin: 1048576, VNIMax: 1048676, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	drv.Reconcile()
	l, err := Listen(filepath.Join(dir, "vxsafe.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Fatal(Serve(l, Handler(drv, log, nil), nil))
}

// crashPlugin is one run of TestCrashChild.
type crashPlugin struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

func startCrashPlugin(t *testing.T, e *benchEnv) *crashPlugin {
	t.Helper()
	p := &crashPlugin{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.v")
	p.cmd.Env = append(os.Environ(), "VXSAFE_CRASH_CHILD="+e.stateDir, "VXSAFE_CRASH_NS="+e.host.Path())
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	for began := time.Now(); ; {
		var caps network.CapabilitiesResponse
		if err := e.do("GetCapabilities", struct{}{}, &caps); err == nil {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("plugin process exited: %v\n%s", p.cmd.ProcessState, p.out.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(began) > 30*time.Second {
			t.Fatalf("plugin process not answering after 30 s:\n%s", p.out.String())
		}
	}
}

// kill ends the process with SIGKILL, as a crash or `kill -9` would, and waits for it.
func (p *crashPlugin) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// TestKillBetweenSteps runs the plugin as a real process and kills it with SIGKILL between every two
// steps of a container's life (CreateEndpoint, Join, Leave, DeleteEndpoint, and at once after the last
// DeleteEndpoint of the network, with its interface and device deletes maybe still pending), restarting it
// on the same state each time. After each restart: the records say what the engine was told (no lost
// record of a joined endpoint, none of a deleted one), the joined endpoints' interfaces and the network's
// device are intact, and nothing of vxsafe's is left over in the host namespace.
func TestKillBetweenSteps(t *testing.T) {
	nstest.RequireRoot(t)
	e := &benchEnv{tb: t, host: nstest.New(t, "vxkhost"), sink: nstest.New(t, "vxkctr"), stateDir: t.TempDir()}
	e.connect(filepath.Join(e.stateDir, "vxsafe.sock"))
	t.Cleanup(func() { e.client.CloseIdleConnections() })
	p := startCrashPlugin(t, e)
	e.createNetwork()
	var dev string
	swept := 0 // restarts whose sweep found a leftover: a kill that interrupted a pending delete
	restart := func(step string) {
		t.Helper()
		p.kill()
		e.client.CloseIdleConnections()
		p = startCrashPlugin(t, e)
		t.Logf("killed and restarted after %s", step)
	}
	// records reads the state with the plugin stopped (it holds the files' locks).
	records := func() map[string]store.EndpointRecord {
		t.Helper()
		p.kill()
		st, err := store.Open(filepath.Join(e.stateDir, "vxsafe.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		eps, err := st.ListEndpoints("")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]store.EndpointRecord{}
		for _, ep := range eps {
			out[ep.EndpointID] = ep
		}
		return out
	}
	hostLinks := func() map[string]netlink.Link {
		t.Helper()
		links, err := e.host.NL.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]netlink.Link{}
		for _, l := range links {
			if _, _, ours := dataplane.ParseAlias(l.Attrs().Alias); ours {
				out[l.Attrs().Name] = l
			}
		}
		return out
	}
	inContainer := func(i int) bool {
		_, err := e.sink.NL.LinkByName(netconfig.EndpointIfName(benchEP(i)))
		return err == nil
	}
	// check: after a restart, endpoint keep (joined, in the container) and endpoint i in state want.
	check := func(step string, i int, want string) {
		t.Helper()
		recs := records()
		if r, ok := recs[benchEP(0)]; !ok || !r.Joined || r.SandboxKey != e.sink.Path() {
			t.Fatalf("after %s: the record of joined endpoint 0 is %+v (present %v)", step, r, ok)
		}
		r, ok := recs[benchEP(i)]
		switch want {
		case "created", "left":
			if !ok || r.Joined {
				t.Fatalf("after %s: record of endpoint %d %+v (present %v), want it not joined", step, i, r, ok)
			}
		case "joined":
			if !ok || !r.Joined || r.SandboxKey != e.sink.Path() {
				t.Fatalf("after %s: record of endpoint %d %+v (present %v), want it joined", step, i, r, ok)
			}
		case "deleted":
			if ok {
				t.Fatalf("after %s: record of deleted endpoint %d is still there: %+v", step, i, r)
			}
		}
		p = startCrashPlugin(t, e)
		if strings.Contains(p.out.String(), "sweep: deleted") {
			swept++
		}
		links := hostLinks()
		if !inContainer(0) {
			t.Fatalf("after %s: joined endpoint 0 lost its interface", step)
		}
		if want == "joined" && !inContainer(i) {
			t.Fatalf("after %s: joined endpoint %d lost its interface", step, i)
		}
		if d, ok := links[dev]; !ok || d.Attrs().Index == 0 {
			t.Fatalf("after %s: the network's device %s is gone with endpoints joined", step, dev)
		}
		for name := range links {
			if name != dev {
				t.Fatalf("after %s: %s left in the host namespace", step, name)
			}
		}
	}
	join := func(i int) {
		t.Helper()
		var jr network.JoinResponse
		e.must("Join", network.JoinRequest{NetworkID: benchNet, EndpointID: benchEP(i), SandboxKey: e.sink.Path()}, &jr)
		e.move(e.host, e.sink, jr.InterfaceName.SrcName)
	}
	create := func(i int) {
		t.Helper()
		e.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: benchNet, EndpointID: benchEP(i),
			Interface: &network.EndpointInterface{Address: benchIP(i)}}, nil)
	}
	leave := func(i int) {
		t.Helper()
		e.must("Leave", network.LeaveRequest{NetworkID: benchNet, EndpointID: benchEP(i)}, nil)
		e.move(e.sink, e.host, netconfig.EndpointIfName(benchEP(i)))
	}
	del := func(i int) {
		t.Helper()
		e.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: benchNet, EndpointID: benchEP(i)}, nil)
	}

	// Endpoint 0 stays joined throughout, in the container.
	create(0)
	join(0)
	for name := range hostLinks() {
		dev = name
	}
	if dev == "" {
		t.Fatal("no device after the first Join")
	}
	restart("the first Join")
	for i := 1; i <= 3; i++ {
		create(i)
		check("CreateEndpoint", i, "created")
		join(i)
		check("Join", i, "joined")
		leave(i)
		check("Leave", i, "left")
		del(i)
		// At once: the interface's delete may still be pending in the killed process.
		check("DeleteEndpoint", i, "deleted")
	}
	// Several deletes pending at the kill.
	for i := 4; i <= 8; i++ {
		create(i)
		join(i)
	}
	for i := 4; i <= 8; i++ {
		leave(i)
		del(i)
	}
	check("five DeleteEndpoints", 8, "deleted")

	// The network's last endpoint: its device goes too, in the background or, after a kill, by the sweep.
	leave(0)
	del(0)
	restart("the last DeleteEndpoint")
	if links := hostLinks(); len(links) != 0 {
		t.Fatalf("after the last DeleteEndpoint and a kill: left in the host namespace: %v", links)
	}
	if recs := records(); len(recs) != 0 {
		t.Fatalf("records left: %v", recs)
	}
	t.Logf("%d restarts swept a leftover interface (a kill after Leave, or one that interrupted a pending delete)", swept)
}
