package gossip

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"

	"github.com/vxsafe/overlay/internal/plot"
)

// BenchmarkGossipScale runs the real gossip agent and table at 10, 25, 50 and 100 nodes
// (VXSAFE_BENCH_SCALE overrides, e.g. "10,25" or "250": on two cores, 250 agents in one process need
// VXSAFE_BENCH_SCALE_PROBE=2s/1500ms and VXSAFE_BENCH_SCALE_ENDPOINTS=1000, as make bench sets, see
// docs/performance.md), all in one process in a fresh network namespace of its
// own (a child process made with CLONE_NEWNET; each node has its own loopback address), with no dockerd.
// Per size it prints: the time for an endpoint published on one node to be known on all (p50/p99 of
// 20), the bytes per second per node at rest and under churn (10 endpoint changes a second
// cluster-wide) and per update, the heap per node with 10,000 endpoints cluster-wide, the time for the
// others to remove the endpoints of a node that dies (its host reported gone, as dockerd's node
// discovery does, then the grace period), and what a partition of 10% of the nodes does. One process
// carries every node's work on this machine's cores: a real node has its own. VXSAFE_BENCH_SCALE_PLOT=
// FILE.png draws convergence against nodes; VXSAFE_BENCH_STRICT=1 fails on a missed target
// (convergence p99 < 2 s, bytes per update per node O(log n)).
func BenchmarkGossipScale(b *testing.B) {
	if os.Getenv("VXSAFE_SCALE_CHILD") == "" {
		if os.Geteuid() != 0 {
			b.Skip("the scale simulation runs in a network namespace of its own: root")
		}
		args := []string{"-test.run=^$", "-test.bench=^BenchmarkGossipScale$", "-test.benchtime=1x", "-test.v"}
		if p := os.Getenv("VXSAFE_SCALE_PROFILE"); p != "" {
			args = append(args, "-test.cpuprofile="+p)
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "VXSAFE_SCALE_CHILD=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			b.Fatalf("the simulation in its own network namespace: %v", err)
		}
		return
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		b.Fatalf("loopback up in the simulation's namespace: %v", err)
	}
	sizes := []int{10, 25, 50, 100}
	if s := os.Getenv("VXSAFE_BENCH_SCALE"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 3 {
				b.Fatalf("VXSAFE_BENCH_SCALE=%q: want sizes of at least 3", s)
			}
			sizes = append(sizes, n)
		}
	}
	sink := &byteSink{}
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics, cfg.EnableHostnameLabel = false, false, false
	if _, err := metrics.NewGlobal(cfg, sink); err != nil {
		b.Fatal(err)
	}
	probe, err := scaleProbe()
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("SCALE machine: %d CPUs, %s; one process, every node's agent on its own loopback address; memberlist probe interval/timeout %s\n",
		runtime.NumCPU(), runtime.Version(), probe)
	var rows []scaleRow
	for _, n := range sizes {
		rows = append(rows, runScale(b, n, sink, probe))
		printScale(rows)
	}
	var missed []string
	for i := 1; i < len(rows); i++ {
		a, z := rows[0], rows[i]
		logRatio := math.Log2(float64(z.nodes)) / math.Log2(float64(a.nodes))
		fmt.Printf("SCALE ratio %d->%d nodes: convergence p99 x%.2f, the changes' message bytes per update per node x%.2f (log2 ratio %.2f)\n",
			a.nodes, z.nodes, float64(z.convP99)/float64(a.convP99), z.deltaPerUpdate/a.deltaPerUpdate, logRatio)
		// O(log n) per update. The figure is the changes' own messages, not a difference of two windows
		// of all traffic (B/upd/n, which a push/pull falling into one window swings either way).
		if z.deltaPerUpdate > logRatio*a.deltaPerUpdate {
			missed = append(missed, fmt.Sprintf("message bytes per update per node grew x%.2f from %d to %d nodes, more than O(log n) (x%.2f)",
				z.deltaPerUpdate/a.deltaPerUpdate, a.nodes, z.nodes, logRatio))
		}
	}
	for _, r := range rows {
		if r.convP99 >= 2*time.Second {
			missed = append(missed, fmt.Sprintf("convergence p99 %v at %d nodes (target < 2 s)", r.convP99.Round(time.Millisecond), r.nodes))
		}
	}
	for _, m := range missed {
		fmt.Printf("SCALE target missed: %s\n", m)
	}
	if path := os.Getenv("VXSAFE_BENCH_SCALE_PLOT"); path != "" {
		var pts []plot.ScalePoint
		for _, r := range rows {
			pts = append(pts, plot.ScalePoint{Nodes: r.nodes, P50: ms(r.convP50), P99: ms(r.convP99)})
		}
		sub := fmt.Sprintf("one process on %d CPUs, %d endpoints, 20 probes a size; p99 dashed", runtime.NumCPU(), scaleEndpoints())
		if err := plot.WriteConvergence(path, pts, sub); err != nil {
			b.Error(err)
		} else {
			fmt.Printf("SCALE convergence plot written to %s\n", path)
		}
	}
	if os.Getenv("VXSAFE_BENCH_STRICT") == "1" && len(missed) > 0 {
		b.Errorf("%d targets missed", len(missed))
	}
}

// scaleEndpoints is the endpoints spread over the nodes: 10,000, or VXSAFE_BENCH_SCALE_ENDPOINTS (a
// smaller number makes the largest sizes fit one run on two cores: the load is endpoints × nodes).
func scaleEndpoints() int {
	if n, err := strconv.Atoi(os.Getenv("VXSAFE_BENCH_SCALE_ENDPOINTS")); err == nil && n >= 100 {
		return n
	}
	return 10000
}

// probeTiming is memberlist's probe interval and timeout for the simulation: the agent's defaults (zero), or
// VXSAFE_BENCH_SCALE_PROBE=INTERVAL/TIMEOUT (e.g. 2s/1500ms). One process on few cores gives each of
// hundreds of nodes a few milliseconds of CPU a second, so that a probe's ack can come later than a real
// node's would and memberlist suspects members that are up; the probes' timing changes failure detection
// only, never how an endpoint travels (the owner sends it to every member directly).
type probeTiming struct{ interval, timeout time.Duration }

func (p probeTiming) String() string {
	if p.interval == 0 {
		return fmt.Sprintf("%v/%v (the defaults)", DefaultProbeInterval, min(DefaultProbeTimeout, DefaultProbeInterval/2))
	}
	return fmt.Sprintf("%v/%v (VXSAFE_BENCH_SCALE_PROBE)", p.interval, p.timeout)
}

func scaleProbe() (probeTiming, error) {
	v := os.Getenv("VXSAFE_BENCH_SCALE_PROBE")
	if v == "" {
		return probeTiming{}, nil
	}
	iv, tv, ok := strings.Cut(v, "/")
	i, err1 := time.ParseDuration(iv)
	t, err2 := time.ParseDuration(tv)
	if !ok || err1 != nil || err2 != nil || i <= 0 || t <= 0 || t > i {
		return probeTiming{}, fmt.Errorf("VXSAFE_BENCH_SCALE_PROBE=%q: want INTERVAL/TIMEOUT, e.g. 2s/1500ms, timeout <= interval", v)
	}
	return probeTiming{i, t}, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func cutTimes(r scaleRow) string {
	major := fmt.Sprintf("%.1f", r.partMajor.Seconds())
	if r.partMajor < 0 {
		major = ">180"
	}
	if r.partDetect < 0 {
		return major + "/>120"
	}
	return fmt.Sprintf("%s/%.1f", major, r.partDetect.Seconds())
}

// secs prints a phase's duration, or what it waited for in vain (a negative d: -limit).
func secs(d time.Duration) string {
	if d < 0 {
		return fmt.Sprintf(">%.0f", (-d).Seconds())
	}
	return fmt.Sprintf("%.1f", d.Seconds())
}

// printScale prints the table of the sizes run so far.
func printScale(rows []scaleRow) {
	fmt.Printf("SCALE %5s %8s %8s %9s %9s %11s %11s %11s %11s %10s %8s %11s %11s %9s %9s\n", "nodes", "join(s)", "load(s)",
		"conv p50", "conv p99", "rest B/s/n", "churn B/s/n", "B/upd/n", "msg B/upd/n", "heap/n", "dead(s)",
		"cut(s)", "kept", "rejoin(s)", "caught(s)")
	// cut(s): the majority / the minority had declared the other side failed.
	for _, r := range rows {
		fmt.Printf("SCALE %5d %8.1f %8.1f %7.0fms %7.0fms %11.0f %11.0f %11.0f %11.0f %8.1fMB %8s %11s %11s %9s %9s\n",
			r.nodes, r.join.Seconds(), r.load.Seconds(), ms(r.convP50), ms(r.convP99), r.restBps, r.churnBps, r.perUpdate, r.deltaPerUpdate,
			r.heapPerNode/1e6, secs(r.dead), cutTimes(r),
			fmt.Sprintf("%d/%d", r.partKept, r.partHad),
			secs(r.healMembers), secs(r.healData))
	}
}

type scaleRow struct {
	nodes                              int
	join, load, convP50, convP99, dead time.Duration
	restBps, churnBps, perUpdate       float64
	deltaPerUpdate                     float64 // the changes' own message bytes per update per node
	heapPerNode                        float64
	// The partition: how long until the majority, then the minority, saw the other side as failed, how many of the minority's
	// endpoints the majority still showed then (of how many), and after the heal how long until all
	// were members again and the minority knew the endpoints published meanwhile. A phase that did
	// not end within its limit is -limit (the bench goes on: the figures after it still mean something).
	partMajor, partDetect, healMembers, healData time.Duration
	partKept, partHad                            int
}

// partition cuts the simulated network between the minority's nodes and the others while on: their
// transports drop the packets and refuse the connections that would cross it.
type partition struct {
	on    atomic.Bool
	minor map[string]bool // the minority's gossip addresses
}

func (p *partition) wrap(self string) func(*memberlist.NetTransport) memberlist.Transport {
	return func(nt *memberlist.NetTransport) memberlist.Transport {
		return &cutTransport{NetTransport: nt, p: p, minor: p.minor[self]}
	}
}

type cutTransport struct {
	*memberlist.NetTransport
	p     *partition
	minor bool
}

func (t *cutTransport) cut(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && t.p.on.Load() && t.p.minor[host] != t.minor
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.cut(addr) {
		return time.Now(), nil // lost on the way
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.cut(a.Addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.cut(addr) {
		return nil, fmt.Errorf("dial %s: partitioned", addr)
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.cut(a.Addr) {
		return nil, fmt.Errorf("dial %s: partitioned", a.Addr)
	}
	return t.NetTransport.DialAddressTimeout(a, timeout)
}

// runPartition cuts the minority off, waits until both sides have declared the other failed, publishes
// 10 endpoints on the majority, heals the cut and has the minority join node 0 again (as the plugin's
// rejoin loop does with the swarm's managers), then waits until everyone is a member again and the
// minority knows the 10 endpoints.
func runPartition(b *testing.B, r *scaleRow, part *partition, agents []*Agent, addr func(int) string, next *int) {
	b.Helper()
	n := len(agents)
	var major, minor []*Agent
	var majorIdx []int
	for i, a := range agents {
		if part.minor[addr(i)] {
			minor = append(minor, a)
		} else {
			major = append(major, a)
			majorIdx = append(majorIdx, i)
		}
	}
	minorityEPs := func(a *Agent) int {
		c := 0
		for _, ep := range a.tbl.remote("") {
			if part.minor[ep.VTEP] {
				c++
			}
		}
		return c
	}
	r.partHad = minorityEPs(agents[0])
	t0 := time.Now()
	part.on.Store(true)
	sideDone := func(side []*Agent) bool {
		for _, a := range side {
			if a.Stats().Members != len(side) {
				return false
			}
		}
		return true
	}
	r.partMajor = scaleTry(3*time.Minute, "the majority declaring the minority failed", func() bool { return sideDone(major) })
	// The minority's side is memberlist's own slowness (each of its nodes probes one member a second,
	// gets no confirmations, and Lifeguard's awareness lengthens its timeouts): not waited for longer.
	r.partDetect = -1
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if sideDone(minor) {
			r.partDetect = time.Since(t0)
			break
		}
	}
	r.partKept = minorityEPs(agents[0])
	var eps []Endpoint
	for i := range 10 {
		node := majorIdx[i%len(majorIdx)]
		ep := scaleEndpoint(2, *next, addr(node))
		*next++
		agents[node].Publish(ep)
		eps = append(eps, ep)
	}
	part.on.Store(false)
	t0 = time.Now()
	for _, a := range minor {
		if _, err := a.Join([]string{addr(0) + ":7947"}); err != nil {
			fmt.Printf("SCALE   a minority node joining node 0 after the heal: %v\n", err)
		}
	}
	r.healMembers = scaleTry(3*time.Minute, "every node a member again after the heal", func() bool {
		for _, a := range agents {
			if a.Stats().Members != n {
				return false
			}
		}
		return true
	})
	t1 := time.Now()
	r.healData = scaleTry(3*time.Minute, "the minority knowing the endpoints published during the partition", func() bool {
		for _, a := range minor {
			known := map[string]bool{}
			for _, ep := range a.tbl.remote(eps[0].Network) {
				known[ep.EndpointID] = true
			}
			for _, ep := range eps {
				if !known[ep.EndpointID] {
					return false
				}
			}
		}
		return true
	})
	if r.healData >= 0 {
		r.healData += t1.Sub(t0)
	}
}

// byteSink counts the bytes memberlist reports sent (UDP and TCP), for every node of the process.
type byteSink struct{ sent atomic.Uint64 }

func (s *byteSink) count(key []string, val float32) {
	if len(key) >= 2 && key[len(key)-1] == "sent" && (key[len(key)-2] == "udp" || key[len(key)-2] == "tcp") {
		s.sent.Add(uint64(val))
	}
}
func (s *byteSink) SetGauge([]string, float32)                                     {}
func (s *byteSink) SetGaugeWithLabels([]string, float32, []metrics.Label)          {}
func (s *byteSink) SetPrecisionGauge([]string, float64)                            {}
func (s *byteSink) SetPrecisionGaugeWithLabels([]string, float64, []metrics.Label) {}
func (s *byteSink) EmitKey([]string, float32)                                      {}
func (s *byteSink) IncrCounter(k []string, v float32)                              { s.count(k, v) }
func (s *byteSink) IncrCounterWithLabels(k []string, v float32, _ []metrics.Label) { s.count(k, v) }
func (s *byteSink) AddSample([]string, float32)                                    {}
func (s *byteSink) AddSampleWithLabels([]string, float32, []metrics.Label)         {}

// watch records, per endpoint ID, when each node learned it (Added) or forgot it (Removed).
type watch struct {
	mu      sync.Mutex
	added   map[string]int
	removed map[string]int
	done    map[string]chan struct{}
	want    int
}

func (w *watch) on(ev Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := ev.Endpoint.EndpointID
	m := w.added
	if ev.Kind == Removed {
		m = w.removed
	}
	m[id]++
	if m[id] == w.want {
		if ch, ok := w.done[id]; ok {
			close(ch)
			delete(w.done, id)
		}
	}
}

// expect returns a channel closed once want nodes have reported endpoint id.
func (w *watch) expect(id string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	w.done[id] = ch
	return ch
}

const scaleNetworks = 10

func scaleEndpoint(netIdx, i int, vtep string) Endpoint {
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	return Endpoint{Network: fmt.Sprintf("scalenet%017d", netIdx), EndpointID: hex.EncodeToString(id),
		IP:  net.IPv4(10, byte(netIdx), byte(i>>8), byte(i)).String(),
		MAC: net.HardwareAddr{2, 0x42, 10, byte(netIdx), byte(i >> 8), byte(i)}.String(), VTEP: vtep}
}

func runScale(b *testing.B, n int, sink *byteSink, probe probeTiming) scaleRow {
	lg := logrus.New()
	lg.SetLevel(logrus.ErrorLevel)
	w := &watch{added: map[string]int{}, removed: map[string]int{}, done: map[string]chan struct{}{}, want: n - 1}
	keys := make([]NetworkKeys, scaleNetworks)
	for i := range keys {
		k := make([]byte, KeySize)
		_, _ = rand.Read(k)
		keys[i] = NetworkKeys{Primary: k}
	}
	addr := func(i int) string { return fmt.Sprintf("127.10.%d.%d", i/200, i%200+1) }
	// 10% of the nodes (not the one that dies later) make the minority of a partition.
	part := &partition{minor: map[string]bool{}}
	minority := max(1, n/10)
	for i := n - 1 - minority; i < n-1; i++ {
		part.minor[addr(i)] = true
	}
	agents := make([]*Agent, n)
	defer func() {
		for _, a := range agents {
			if a != nil {
				a.close(false)
			}
		}
	}()
	start := time.Now()
	for i := range agents {
		a, err := New(Config{NodeName: fmt.Sprintf("node%03d", i), BindAddr: addr(i), BindPort: 7947, AdvertiseAddr: addr(i),
			GracePeriod: 10 * time.Second, VTEPCheck: true, RejoinInterval: -1, Log: logrus.NewEntry(lg),
			ProbeInterval: probe.interval, ProbeTimeout: probe.timeout,
			transport: part.wrap(addr(i))}, w.on)
		if err != nil {
			b.Fatal(err)
		}
		agents[i] = a
		for j, k := range keys {
			if err := a.SetNetworkKeys(fmt.Sprintf("scalenet%017d", j), k); err != nil {
				b.Fatal(err)
			}
		}
		if i > 0 {
			var seeds []string
			for range 3 {
				seeds = append(seeds, addr(mrand.IntN(i))+":7947")
			}
			if _, err := a.Join(seeds); err != nil {
				b.Fatalf("node %d joining: %v", i, err)
			}
		}
	}
	scaleWait(b, 3*time.Minute, fmt.Sprintf("%d members everywhere", n), func() bool {
		for _, a := range agents {
			if a.Stats().Members != n {
				return false
			}
		}
		return true
	})
	r := scaleRow{nodes: n, join: time.Since(start)}
	phase := time.Now()
	progress := func(what string) {
		fmt.Printf("SCALE   %d nodes: %s in %.1fs\n", n, what, time.Since(phase).Seconds())
		phase = time.Now()
	}
	fmt.Printf("SCALE   %d nodes: joined, every node listing %d members, in %.1fs\n", n, n, r.join.Seconds())

	// 10,000 endpoints cluster-wide, spread over the nodes and 10 networks.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	total := scaleEndpoints()
	for i := 0; i < total; i++ {
		node := i % n
		agents[node].Publish(scaleEndpoint(i%scaleNetworks, i/scaleNetworks, addr(node)))
	}
	scaleWait(b, 5*time.Minute+time.Duration(n)*3*time.Second, fmt.Sprintf("%d endpoints known everywhere", total), func() bool {
		for _, a := range agents {
			s := a.Stats()
			if s.LocalEndpoints+s.RemoteEndpoints != total {
				return false
			}
		}
		return true
	})
	r.load = time.Since(phase)
	progress(fmt.Sprintf("%d endpoints known everywhere", total))
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	r.heapPerNode = float64(after.HeapAlloc) / float64(n)
	_ = before
	fmt.Printf("SCALE   %d nodes: heap %.1f MB per node\n", n, r.heapPerNode/1e6)

	// Convergence: one endpoint at a time, from a random node, until every other node has it.
	var conv []time.Duration
	next := total / scaleNetworks
	for range 20 {
		node := mrand.IntN(n)
		ep := scaleEndpoint(0, next, addr(node))
		next++
		ch := w.expect(ep.EndpointID)
		t0 := time.Now()
		agents[node].Publish(ep)
		select {
		case <-ch:
			conv = append(conv, time.Since(t0))
		case <-time.After(60 * time.Second):
			b.Fatalf("%d nodes: an endpoint was not known everywhere within 60 s", n)
		}
	}
	slices.Sort(conv)
	r.convP50, r.convP99 = conv[len(conv)/2], conv[len(conv)-1]
	progress(fmt.Sprintf("20 convergence probes (p50 %v, p99 %v)", r.convP50.Round(time.Millisecond), r.convP99.Round(time.Millisecond)))

	// Traffic at rest, then under 10 changes a second cluster-wide.
	const window = 10 * time.Second
	s0 := sink.sent.Load()
	time.Sleep(window)
	r.restBps = float64(sink.sent.Load()-s0) / window.Seconds() / float64(n)
	var churned []struct {
		node int
		ep   Endpoint
	}
	s0 = sink.sent.Load()
	deltaBytes := func() (sum uint64) {
		for _, a := range agents {
			sum += a.Stats().MessageBytesSent
		}
		return sum
	}
	d0 := deltaBytes()
	tick := time.NewTicker(100 * time.Millisecond)
	changes := 0
	for end := time.Now().Add(window); time.Now().Before(end); {
		<-tick.C
		if len(churned) > 0 && changes%2 == 1 {
			c := churned[0]
			churned = churned[1:]
			agents[c.node].Withdraw(c.ep.Network, c.ep.EndpointID)
		} else {
			node := mrand.IntN(n)
			ep := scaleEndpoint(1, next, addr(node))
			next++
			agents[node].Publish(ep)
			churned = append(churned, struct {
				node int
				ep   Endpoint
			}{node, ep})
		}
		changes++
	}
	tick.Stop()
	r.churnBps = float64(sink.sent.Load()-s0) / window.Seconds() / float64(n)
	r.perUpdate = (r.churnBps - r.restBps) / (float64(changes) / window.Seconds())
	// The changes' own messages, counted by the agents as they hand them to memberlist (direct sends and
	// gossip, with every retransmission and relay), once every queue has drained: no push/pull in it.
	drained := scaleTry(time.Minute, "the gossip queues drained after the churn", func() bool {
		for _, a := range agents {
			if a.queue.NumQueued() > 0 {
				return false
			}
		}
		return true
	})
	r.deltaPerUpdate = float64(deltaBytes()-d0) / float64(changes) / float64(n)
	progress(fmt.Sprintf("rest and churn windows (%.0f / %.0f B/s per node, %.0f B per update per node; the changes' own messages %.0f B per update per node, queues drained %ss after)",
		r.restBps, r.churnBps, r.perUpdate, r.deltaPerUpdate, secs(drained)))
	runPartition(b, &r, part, agents, addr, &next)
	progress(fmt.Sprintf("partition and heal (the cut seen by the majority / minority %s s, the minority's endpoints kept %d of %d, heal: members %s s, data %s s)",
		cutTimes(r), r.partKept, r.partHad, secs(r.healMembers), secs(r.healData)))

	// A node dies: its agent stops without leaving, and every other node hears its host is gone.
	victim := n - 1
	vaddr := addr(victim)
	theirs := func() int {
		c := 0
		for _, a := range agents[:victim] {
			for _, ep := range a.tbl.remote("") {
				if ep.VTEP == vaddr {
					c++
				}
			}
		}
		return c
	}
	if theirs() == 0 {
		b.Fatalf("%d nodes: no node lists an endpoint of node %d", n, victim)
	}
	t0 := time.Now()
	agents[victim].close(false)
	agents[victim] = nil
	for _, a := range agents[:victim] {
		a.HostGone(vaddr)
	}
	if r.dead = scaleTry(2*time.Minute, "the dead node's endpoints removed everywhere", func() bool { return theirs() == 0 }); r.dead >= 0 {
		r.dead = time.Since(t0)
	}
	fmt.Printf("SCALE   %d nodes: a dead node's endpoints removed everywhere in %ss\n", n, secs(r.dead))
	return r
}

// scaleTry polls f for up to limit and returns how long it took, or -limit (printed) if f never held.
func scaleTry(limit time.Duration, what string, f func() bool) time.Duration {
	t0 := time.Now()
	for end := t0.Add(limit); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if f() {
			return time.Since(t0)
		}
	}
	fmt.Printf("SCALE   %s: not within %s; going on\n", what, limit)
	return -limit
}

func scaleWait(b *testing.B, limit time.Duration, what string, f func() bool) {
	b.Helper()
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if f() {
			return
		}
	}
	b.Fatalf("%s: not within %s", what, limit)
}
