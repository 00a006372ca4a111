package driver

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"
)

// BenchmarkPluginProcess runs the real vxsafe binary (the plugin's entrypoint, `vxsafe serve`) outside
// Docker in a fresh namespace, with its gossip agent on, and drives it through its socket: resident memory
// idle and with 1000 endpoints joined, Join and Leave latency at 1000 endpoints through the whole plugin
// (gossip publish included), and the time a restart with 1000 endpoints takes until the socket answers
// (load the state, reconcile with the kernel, serve).
func BenchmarkPluginProcess(b *testing.B) {
	const n = 1000
	bin := filepath.Join(b.TempDir(), "vxsafe")
	build := exec.Command("go", "build", "-o", bin, "../plugin")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the plugin: %v\n%s", err, out)
	}
	e := newBenchNamespaces(b, "")
	// An underlay address for the VTEP, so that the gossip agent starts as on a swarm node.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vxbul0"}, PeerName: "vxbul1"}
	if err := e.host.NL.LinkAdd(veth); err != nil {
		b.Fatal(err)
	}
	ul, _ := e.host.NL.LinkByName("vxbul0")
	peer, _ := e.host.NL.LinkByName("vxbul1")
	if err := e.host.NL.AddrAdd(ul, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 0, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		b.Fatal(err)
	}
	_ = e.host.NL.LinkSetUp(ul)
	_ = e.host.NL.LinkSetUp(peer)

	sock := filepath.Join(e.stateDir, "vxsafe.sock")
	e.connect(sock)
	p := startPlugin(b, bin, e)
	idle := p.rss(b)
	e.createNetwork()
	e.grow(n)
	full := p.rss(b)
	cs := e.measure(benchSamples())
	r := rowOf("disk", n, cs)
	loaded := p.rss(b)

	// Restart on the state of 1000 joined endpoints, three times (the median is reported).
	var readies []time.Duration
	var recs []string
	var restarted uint64
	for i := 0; i < 3; i++ {
		p.stop(b)
		p = startPlugin(b, bin, e)
		readies = append(readies, p.ready)
		recs = append(recs, p.reconcileTook())
		restarted = p.rss(b)
	}
	p.stop(b)
	sort.Slice(readies, func(i, j int) bool { return readies[i] < readies[j] })
	took := readies[1]
	rec := strings.Join(recs, ", ")

	mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mib(idle), "rss-idle-MiB")
	b.ReportMetric(mib(full), "rss-1000ep-MiB")
	b.ReportMetric(r.JoinP50, "join-p50-ms")
	b.ReportMetric(r.JoinP99, "join-p99-ms")
	b.ReportMetric(float64(took)/float64(time.Millisecond), "restart-ms")
	b.Logf("vxsafe process: RSS %.1f MiB idle, %.1f MiB with %d endpoints joined, %.1f MiB after %d more join/leave cycles, "+
		"%.1f MiB after a restart with %d endpoints; restart answered after %.1f ms (median of 3; reconcile logged took=%s); "+
		"at %d endpoints Join p50 %.2f / p99 %.2f ms, Leave p50 %.2f / p99 %.2f ms",
		mib(idle), mib(full), n, mib(loaded), len(cs), mib(restarted), n, float64(took)/float64(time.Millisecond), rec,
		n, r.JoinP50, r.JoinP99, r.LeaveP50, r.LeaveP99)
}

type pluginProc struct {
	cmd   *exec.Cmd
	out   *syncBuffer
	done  chan struct{}
	ready time.Duration // from exec to the first answer on the socket
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startPlugin runs `vxsafe serve` in e's host namespace and waits for its socket to answer.
func startPlugin(tb testing.TB, bin string, e *benchEnv) *pluginProc {
	tb.Helper()
	p := &pluginProc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("nsenter", "--net="+e.host.Path(), "--", bin, "serve")
	p.cmd.Env = []string{"STATE_DIR=" + e.stateDir, "SOCKET=" + filepath.Join(e.stateDir, "vxsafe.sock"),
		"DOCKER_SOCKET=" + filepath.Join(e.stateDir, "no-docker.sock"), "LOG_LEVEL=info", "VTEP=10.99.0.1",
		"GOSSIP_PORT=7947", "VNI_RANGE=1048576-1048676"}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	began := time.Now()
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() { p.kill() })
	for {
		var caps network.CapabilitiesResponse
		if err := e.do("GetCapabilities", struct{}{}, &caps); err == nil {
			p.ready = time.Since(began)
			return p
		}
		select {
		case <-p.done:
			tb.Fatalf("vxsafe exited: %v\n%s", p.cmd.ProcessState, p.out.String())
		case <-time.After(time.Millisecond):
		}
		if time.Since(began) > 60*time.Second {
			tb.Fatalf("vxsafe not answering after 60 s:\n%s", p.out.String())
		}
	}
}

func (p *pluginProc) rss(tb testing.TB) uint64 {
	tb.Helper()
	v, err := rssOf(p.cmd.Process.Pid)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

var tookRE = regexp.MustCompile(`reconciled state with the kernel.* took=([^ \n]+)`)

func (p *pluginProc) reconcileTook() string {
	if m := tookRE.FindStringSubmatch(p.out.String()); m != nil {
		return m[1]
	}
	return "?"
}

// stop ends the plugin as dockerd does (SIGTERM) and waits for it.
func (p *pluginProc) stop(tb testing.TB) {
	tb.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
		tb.Fatalf("vxsafe did not stop within 20 s of SIGTERM:\n%s", p.out.String())
	}
}

func (p *pluginProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}
