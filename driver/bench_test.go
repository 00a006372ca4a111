package driver

// Benchmarks of the remote-driver handlers against the real kernel: a Driver serving its unix socket, its
// "host" a fresh network namespace, driven over HTTP as dockerd drives it. Run with
//
//	go test -run '^$' -bench . -benchtime 1x ./driver/
//
// Every benchmark collects a fixed number of latency samples per run (VXSAFE_BENCH_SAMPLES, default 400)
// and reports percentiles as custom metrics; -benchtime 1x is enough. VXSAFE_BENCH_PLOT=FILE.png draws
// Join latency against endpoint count from BenchmarkJoinLeave. VXSAFE_BENCH_LOAD=N keeps N cores busy
// during the measurement of BenchmarkJoinLeave, BenchmarkJoinSteps and BenchmarkFirstJoin (N child
// processes spinning, see benchLoad), so that figures "under load" are reproducible.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/internal/nstest"
	"github.com/vxsafe/overlay/internal/plot"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
	"golang.org/x/sys/unix"
)

const benchNet = "b3nch0000000000000000000000000000000000000000000000000000000000a"

// benchSizes are the endpoint counts on the host at which Join and Leave are measured.
var benchSizes = []int{1, 100, 1000}

func benchSamples() int {
	if n, err := strconv.Atoi(os.Getenv("VXSAFE_BENCH_SAMPLES")); err == nil && n > 0 {
		return n
	}
	return 400
}

// benchEP is the ID of benchmark endpoint i: its first 10 characters (the interface name) are unique.
func benchEP(i int) string { return fmt.Sprintf("%010d", i) + strings.Repeat("b", 54) }

// benchIP is endpoint i's address in 10.128.0.0/16.
func benchIP(i int) string { return fmt.Sprintf("10.128.%d.%d/16", (i+2)/256, (i+2)%256) }

// benchEnv is the socket harness for benchmarks: a Driver on a unix socket in a fresh namespace, and a
// second namespace standing for the containers, into which joined endpoint interfaces are moved as
// libnetwork moves them.
type benchEnv struct {
	tb       testing.TB
	host     *nstest.NS
	sink     *nstest.NS
	stateDir string
	st       *store.Store
	dp       *dataplane.Manager
	drv      *Driver
	l        net.Listener
	client   *http.Client
	joined   []int
	// sandboxKey, when set, is the sandbox key given in Join instead of the container namespace's path;
	// deadGrace is the driver's DeadEndpointGrace (0 = default).
	sandboxKey string
	deadGrace  time.Duration
	// settle: before each measured container life, wait for the last one's background deletes (its
	// interface and the network's device), as BenchmarkFirstJoin needs to measure a Join that makes the
	// device.
	settle bool
}

// newBenchEnv starts a driver whose state database is in stateDir ("" = a temporary directory on the
// filesystem of os.TempDir).
func newBenchEnv(tb testing.TB, stateDir string) *benchEnv {
	tb.Helper()
	e := newBenchNamespaces(tb, stateDir)
	e.start()
	tb.Cleanup(e.stop)
	return e
}

// newBenchNamespaces makes the host and container namespaces and the state directory, without a driver.
func newBenchNamespaces(tb testing.TB, stateDir string) *benchEnv {
	tb.Helper()
	if stateDir == "" {
		stateDir = tb.TempDir()
	}
	return &benchEnv{tb: tb, host: nstest.New(tb, "vxbdrv"), sink: nstest.New(tb, "vxbctr"), stateDir: stateDir}
}

// connect points the client at a plugin socket.
func (e *benchEnv) connect(sock string) {
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
}

func (e *benchEnv) start() {
	e.tb.Helper()
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	logger.SetLevel(logrus.InfoLevel) // the plugin's default
	log := logrus.NewEntry(logger)
	st, err := store.Open(filepath.Join(e.stateDir, "vxsafe.db"))
	if err != nil {
		e.tb.Fatal(err)
	}
	dp, err := dataplane.New(dataplane.Options{NS: e.host.Handle, Log: log})
	if err != nil {
		e.tb.Fatal(err)
	}
	drv, err := New(Config{Store: st, Dataplane: dp, VNIMin: 1048576, VNIMax: 1048676, Log: log, DeadEndpointGrace: e.deadGrace})
	if err != nil {
		e.tb.Fatal(err)
	}
	drv.Reconcile()
	sock := filepath.Join(e.stateDir, "vxsafe.sock")
	l, err := Listen(sock)
	if err != nil {
		e.tb.Fatal(err)
	}
	go Serve(l, Handler(drv, log, nil), nil)
	e.st, e.dp, e.drv, e.l = st, dp, drv, l
	e.connect(sock)
}

func (e *benchEnv) stop() {
	if e.l == nil {
		return
	}
	e.l.Close()
	e.client.CloseIdleConnections()
	e.flush()
	e.dp.Close()
	e.st.Close()
	e.l = nil
}

// flush waits for the driver's background deletes.
func (e *benchEnv) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.drv.Flush(ctx); err != nil {
		e.tb.Error(err)
	}
}

// do posts one request as dockerd does; an error answer becomes an error.
func (e *benchEnv) do(method string, req, resp any) error {
	body, _ := json.Marshal(req)
	r, err := e.client.Post("http://plugin/NetworkDriver."+method, "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	defer r.Body.Close()
	data, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK {
		var er network.ErrorResponse
		_ = json.Unmarshal(data, &er)
		return fmt.Errorf("%s: status %d: %s", method, r.StatusCode, er.Err)
	}
	if resp != nil {
		return json.Unmarshal(data, resp)
	}
	return nil
}

func (e *benchEnv) must(method string, req, resp any) {
	e.tb.Helper()
	if err := e.do(method, req, resp); err != nil {
		e.tb.Fatal(err)
	}
}

func (e *benchEnv) createNetwork() {
	e.tb.Helper()
	var alloc network.AllocateNetworkResponse
	e.must("AllocateNetwork", network.AllocateNetworkRequest{NetworkID: benchNet,
		IPv4Data: []network.IPAMData{{Pool: "10.128.0.0/16", Gateway: "10.128.0.1/16"}}}, &alloc)
	generic := map[string]any{}
	for k, v := range alloc.Options {
		generic[k] = v
	}
	e.must("CreateNetwork", network.CreateNetworkRequest{NetworkID: benchNet,
		Options:  map[string]any{netconfig.GenericKey: generic},
		IPv4Data: []*network.IPAMData{{Pool: "10.128.0.0/16", Gateway: "10.128.0.1/16"}}}, nil)
}

// timings of one container's life on the network, as dockerd calls the driver.
type cycle struct{ create, join, leave, del time.Duration }

// attach runs CreateEndpoint and Join for endpoint i and moves its interface into the container
// namespace; it returns the handler latencies. The sandbox key is the container namespace's bind mount,
// as dockerd's is for a live container.
func (e *benchEnv) attach(i int) (create, join time.Duration) {
	e.tb.Helper()
	t0 := time.Now()
	e.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: benchNet, EndpointID: benchEP(i),
		Interface: &network.EndpointInterface{Address: benchIP(i)}}, nil)
	t1 := time.Now()
	var jr network.JoinResponse
	key := e.sink.Path()
	if e.sandboxKey != "" {
		key = e.sandboxKey
	}
	e.must("Join", network.JoinRequest{NetworkID: benchNet, EndpointID: benchEP(i), SandboxKey: key}, &jr)
	t2 := time.Now()
	e.move(e.host, e.sink, jr.InterfaceName.SrcName)
	return t1.Sub(t0), t2.Sub(t1)
}

// detach runs Leave, moves the interface back as libnetwork does, and runs DeleteEndpoint.
func (e *benchEnv) detach(i int) (leave, del time.Duration) {
	e.tb.Helper()
	t0 := time.Now()
	e.must("Leave", network.LeaveRequest{NetworkID: benchNet, EndpointID: benchEP(i)}, nil)
	t1 := time.Now()
	e.move(e.sink, e.host, netconfig.EndpointIfName(benchEP(i)))
	t2 := time.Now()
	e.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: benchNet, EndpointID: benchEP(i)}, nil)
	return t1.Sub(t0), time.Since(t2)
}

func (e *benchEnv) move(from, to *nstest.NS, name string) {
	e.tb.Helper()
	l, err := from.NL.LinkByName(name)
	if err != nil {
		e.tb.Fatalf("endpoint interface %s: %v", name, err)
	}
	if err := from.NL.LinkSetNsFd(l, int(to.Handle)); err != nil {
		e.tb.Fatalf("moving %s: %v", name, err)
	}
}

// grow joins background endpoints until n are joined on the host.
func (e *benchEnv) grow(n int) {
	e.tb.Helper()
	for len(e.joined) < n {
		i := len(e.joined)
		e.attach(i)
		e.joined = append(e.joined, i)
	}
}

// measure runs samples full endpoint lives.
func (e *benchEnv) measure(samples int) []cycle {
	e.tb.Helper()
	var out []cycle
	for k := 0; k < samples; k++ {
		out = append(out, e.measureOne(k)...)
	}
	return out
}

// measureOne runs the k-th full endpoint life (its index from 60000 up, beyond the background ones); the
// first one only warms up connections and caches and is not returned.
func (e *benchEnv) measureOne(k int) []cycle {
	e.tb.Helper()
	if k == 0 {
		i := 60000 + 999
		e.attach(i)
		e.detach(i)
	}
	i := 60000 + k%999
	if e.settle {
		e.flush()
	}
	var c cycle
	c.create, c.join = e.attach(i)
	c.leave, c.del = e.detach(i)
	return []cycle{c}
}

// pct returns the p-th percentile (nearest rank) of ds, in milliseconds.
func pct(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(s) {
		rank = len(s) - 1
	}
	return float64(s[rank]) / float64(time.Millisecond)
}

func field(cs []cycle, f func(cycle) time.Duration) []time.Duration {
	out := make([]time.Duration, len(cs))
	for i, c := range cs {
		out[i] = f(c)
	}
	return out
}

// latencyRow is one line of the Join/Leave table (milliseconds).
type latencyRow struct {
	State                                    string
	Endpoints                                int
	CreateP50, CreateP99, JoinP50, JoinP99   float64
	LeaveP50, LeaveP99, DeleteP50, DeleteP99 float64
}

func rowOf(state string, n int, cs []cycle) latencyRow {
	c := field(cs, func(c cycle) time.Duration { return c.create })
	j := field(cs, func(c cycle) time.Duration { return c.join })
	l := field(cs, func(c cycle) time.Duration { return c.leave })
	d := field(cs, func(c cycle) time.Duration { return c.del })
	return latencyRow{State: state, Endpoints: n,
		CreateP50: pct(c, 50), CreateP99: pct(c, 99), JoinP50: pct(j, 50), JoinP99: pct(j, 99),
		LeaveP50: pct(l, 50), LeaveP99: pct(l, 99), DeleteP50: pct(d, 50), DeleteP99: pct(d, 99)}
}

// tmpfsDir is a state directory on tmpfs, where fsync costs nothing: the difference to the disk run is
// what bbolt's fsyncs cost.
func tmpfsDir(tb testing.TB) string {
	tb.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		tb.Skip("/dev/shm is not a tmpfs")
	}
	d, err := os.MkdirTemp("/dev/shm", "vxbench-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// BenchmarkJoinLeave measures CreateEndpoint, Join, Leave and DeleteEndpoint of one container with 1, 100
// and 1000 other endpoints joined on the host, with the state database on disk (as in production: the
// plugin's state mount) and on tmpfs (no fsync cost). The six cases are six drivers, each on a host
// namespace of its own, alive together; their samples are taken in turn, so that load from elsewhere on
// the machine (and its drift) hits every case alike.
func BenchmarkJoinLeave(b *testing.B) {
	type bcase struct {
		state string
		n     int
		e     *benchEnv
		cs    []cycle
	}
	var cases []*bcase
	for _, state := range []string{"disk", "tmpfs"} {
		for _, n := range benchSizes {
			dir := ""
			if state == "tmpfs" {
				dir = tmpfsDir(b)
			}
			c := &bcase{state: state, n: n, e: newBenchEnv(b, dir)}
			c.e.createNetwork()
			c.e.grow(n)
			cases = append(cases, c)
		}
	}
	spin := benchLoad(b)
	load0 := loadavg1()
	for i := 0; i < b.N; i++ {
		for k := 0; k < benchSamples(); k++ {
			for _, c := range cases {
				c.cs = append(c.cs, c.e.measureOne(k)...)
			}
		}
	}
	load1 := loadavg1()
	var rows []latencyRow
	for _, c := range cases {
		r := rowOf(c.state, c.n, c.cs)
		rows = append(rows, r)
		b.Run(fmt.Sprintf("state=%s/endpoints=%d", c.state, c.n), func(b *testing.B) {
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.JoinP50, "join-p50-ms")
			b.ReportMetric(r.JoinP99, "join-p99-ms")
			b.ReportMetric(r.LeaveP50, "leave-p50-ms")
			b.ReportMetric(r.LeaveP99, "leave-p99-ms")
			b.ReportMetric(r.CreateP50, "create-p50-ms")
			b.ReportMetric(r.DeleteP50, "delete-p50-ms")
		})
	}
	fmt.Printf("BenchmarkJoinLeave: handler latency in ms (p50 / p99 / max), %d samples each, state database on disk or tmpfs; "+
		"%s; machine load average %s at the start, %s at the end:\n", len(cases[0].cs), spin, load0, load1)
	fmt.Printf("  %-6s %9s %24s %24s %24s %24s\n", "state", "endpoints", "CreateEndpoint", "Join", "Leave", "DeleteEndpoint")
	for _, c := range cases {
		f := func(g func(cycle) time.Duration) string {
			ds := field(c.cs, g)
			return fmt.Sprintf("%6.2f / %6.2f / %6.2f", pct(ds, 50), pct(ds, 99), pct(ds, 100))
		}
		fmt.Printf("  %-6s %9d %24s %24s %24s %24s\n", c.state, c.n, f(func(c cycle) time.Duration { return c.create }),
			f(func(c cycle) time.Duration { return c.join }), f(func(c cycle) time.Duration { return c.leave }),
			f(func(c cycle) time.Duration { return c.del }))
	}
	if os.Getenv("VXSAFE_BENCH_STRICT") == "1" {
		for _, r := range rows {
			if r.JoinP99 >= 10 {
				b.Errorf("target missed: Join p99 %.2f ms with %d endpoints, state on %s (target < 10 ms)", r.JoinP99, r.Endpoints, r.State)
			}
		}
	}
	if path := os.Getenv("VXSAFE_BENCH_PLOT"); path != "" {
		if err := writeJoinPlot(path, rows, fmt.Sprintf("machine load %s-%s", load0, load1)); err != nil {
			b.Error(err)
		} else {
			fmt.Printf("BenchmarkJoinLeave: Join latency plot written to %s\n", path)
		}
	}
}

// BenchmarkFirstJoin measures the first container of a network on a host: its Join creates the network's
// VXLAN device (after the stale-device checks); after its DeleteEndpoint the device is removed in the
// background, which each round waits for before the next container.
func BenchmarkFirstJoin(b *testing.B) {
	e := newBenchEnv(b, "")
	e.settle = true
	e.createNetwork()
	spin := benchLoad(b)
	var cs []cycle
	for i := 0; i < b.N; i++ {
		cs = append(cs, e.measure(benchSamples()/2)...)
	}
	r := rowOf("disk", 0, cs)
	fmt.Printf("BenchmarkFirstJoin: ms (p50 / p99 / max), %d samples, state on disk, %s:\n", len(cs), spin)
	for _, f := range []struct {
		name string
		get  func(cycle) time.Duration
	}{{"CreateEndpoint", func(c cycle) time.Duration { return c.create }}, {"Join", func(c cycle) time.Duration { return c.join }},
		{"Leave", func(c cycle) time.Duration { return c.leave }}, {"DeleteEndpoint", func(c cycle) time.Duration { return c.del }}} {
		ds := field(cs, f.get)
		fmt.Printf("  %-16s %6.2f / %6.2f / %6.2f\n", f.name, pct(ds, 50), pct(ds, 99), pct(ds, 100))
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(r.JoinP50, "join-p50-ms")
	b.ReportMetric(r.JoinP99, "join-p99-ms")
	b.ReportMetric(r.DeleteP50, "delete-p50-ms")
	b.ReportMetric(r.DeleteP99, "delete-p99-ms")
}

// BenchmarkStorePutEndpoint measures one bbolt write (a transaction with its fsyncs), which CreateEndpoint,
// Join, Leave and DeleteEndpoint each make once.
func BenchmarkStorePutEndpoint(b *testing.B) {
	for _, state := range []string{"disk", "tmpfs"} {
		b.Run("state="+state, func(b *testing.B) {
			dir := b.TempDir()
			if state == "tmpfs" {
				dir = tmpfsDir(b)
			}
			st, err := store.Open(filepath.Join(dir, "vxsafe.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			if err := st.PutNetwork(store.NetworkRecord{ID: benchNet, VNI: 1048576}); err != nil {
				b.Fatal(err)
			}
			var ds []time.Duration
			for i := 0; i < b.N; i++ {
				for k := 0; k < benchSamples(); k++ {
					t0 := time.Now()
					if err := st.PutEndpoint(store.EndpointRecord{NetworkID: benchNet, EndpointID: benchEP(k), IP: benchIP(k),
						MAC: "02:42:0a:80:00:02", IfName: netconfig.EndpointIfName(benchEP(k)), Joined: true}); err != nil {
						b.Fatal(err)
					}
					ds = append(ds, time.Since(t0))
				}
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(pct(ds, 50), "put-p50-ms")
			b.ReportMetric(pct(ds, 99), "put-p99-ms")
		})
	}
}

// BenchmarkReconcile measures a plugin start on a host with 1000 joined endpoints: opening the state,
// loading it (New) and reconciling it with the kernel. "restart": the kernel objects are intact (plugin
// restart or upgrade); "reboot": the network's device is gone and is re-created (the endpoints'
// interfaces in the container namespace go with it; only the device matters to the reconcile). The
// restart rounds run first.
func BenchmarkReconcile(b *testing.B) {
	const n = 1000
	e := newBenchEnv(b, "")
	e.createNetwork()
	e.grow(n)
	for _, kind := range []string{"restart", "reboot"} {
		b.Run(fmt.Sprintf("%s/endpoints=%d", kind, n), func(b *testing.B) {
			var ds []time.Duration
			for i := 0; i < b.N; i++ {
				for k := 0; k < 5; k++ {
					e.stop()
					if kind == "reboot" {
						e.deleteDevices(b)
					}
					t0 := time.Now()
					e.start()
					ds = append(ds, time.Since(t0))
					if _, eps := e.drv.Counts(); eps != n {
						b.Fatalf("after a %s: %d endpoints joined, want %d", kind, eps, n)
					}
					if kind == "reboot" {
						if _, ok := e.dp.VXLANIndex(e.drv.networks[benchNet].spec); !ok {
							b.Fatal("reconcile did not re-create the network's device")
						}
					}
				}
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(pct(ds, 50), "startup-p50-ms")
			b.ReportMetric(pct(ds, 100), "startup-max-ms")
		})
	}
}

// BenchmarkReconcileInvisibleSandboxes: a restart with 1000 joined endpoints, old enough to be checked for
// death, whose sandbox keys lie in a directory that no mount namespace shows (a plugin that cannot see
// dockerd's exec root). Nothing may be reaped, and the check must not scan every process's mount
// namespace once per endpoint (it did: 6-9.5 s).
func BenchmarkReconcileInvisibleSandboxes(b *testing.B) {
	const n = 1000
	e := newBenchNamespaces(b, "")
	e.sandboxKey = "/run/vxsafe-bench-nowhere/netns/sandbox"
	e.deadGrace = time.Millisecond
	e.start()
	b.Cleanup(e.stop)
	e.createNetwork()
	e.grow(n)
	var ds []time.Duration
	for i := 0; i < b.N; i++ {
		for k := 0; k < 5; k++ {
			e.stop()
			t0 := time.Now()
			e.start()
			ds = append(ds, time.Since(t0))
			if _, eps := e.drv.Counts(); eps != n {
				b.Fatalf("after a restart: %d endpoints joined, want %d (reaped without proof)", eps, n)
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(pct(ds, 50), "startup-p50-ms")
	b.ReportMetric(pct(ds, 100), "startup-max-ms")
}

// deleteDevices deletes the network's VXLAN device, as a reboot would (its macvlans go with it).
func (e *benchEnv) deleteDevices(tb testing.TB) {
	tb.Helper()
	links, err := e.host.NL.LinkList()
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range links {
		if _, ok := l.(*netlink.Vxlan); ok {
			if err := e.host.NL.LinkDel(l); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// BenchmarkMemory reports the Go heap in use and the resident memory of this process with the driver
// idle and with 1000 endpoints joined (the real plugin's own figures: BenchmarkPluginProcess).
func BenchmarkMemory(b *testing.B) {
	e := newBenchEnv(b, "")
	e.createNetwork()
	heap0, rss0 := memNow()
	e.grow(1000)
	heap1, rss1 := memNow()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(heap1-heap0)/1024, "heap-delta-KiB")
	b.ReportMetric(float64(rss1-rss0)/1024, "rss-delta-KiB")
	b.Logf("benchmark process: heap in use %.1f -> %.1f MiB, RSS %.1f -> %.1f MiB (0 -> 1000 endpoints)",
		float64(heap0)/(1<<20), float64(heap1)/(1<<20), float64(rss0)/(1<<20), float64(rss1)/(1<<20))
}

func memNow() (heap, rss uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r, _ := rssOf(os.Getpid())
	return ms.HeapInuse, r
}

// rssOf reads VmRSS of a process, in bytes.
func rssOf(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

// BenchmarkJoinSteps breaks the Join path down into its steps, called directly as Join calls them with
// 1000 endpoints on the host: reading the endpoint record, writing it (bbolt, fsync), checking the
// network's device, creating the macvlan (link add, lookup, alias), and for comparison DeleteEndpoint's
// kernel step (macvlan delete). This is where Join's time goes.
func BenchmarkJoinSteps(b *testing.B) {
	e := newBenchEnv(b, "")
	e.createNetwork()
	e.grow(1000)
	ns := e.drv.networks[benchNet]
	spin := benchLoad(b)
	steps := map[string][]time.Duration{}
	order := []string{"store.GetEndpoint", "store.PutEndpoint", "dataplane.VXLANIndex", "dataplane.CreateEndpointIf", "move there and back (libnetwork)", "dataplane.DeleteEndpointIf"}
	for i := 0; i < b.N; i++ {
		for k := 0; k < benchSamples(); k++ {
			id := 60000 + k
			ip, _, _ := net.ParseCIDR(benchIP(id))
			rec := store.EndpointRecord{NetworkID: benchNet, EndpointID: benchEP(id), IP: benchIP(id),
				MAC: netconfig.MACFromIP(ip).String(), IfName: netconfig.EndpointIfName(benchEP(id))}
			if err := e.st.PutEndpoint(rec); err != nil {
				b.Fatal(err)
			}
			step := func(name string, f func() error) {
				t0 := time.Now()
				if err := f(); err != nil {
					b.Fatalf("%s: %v", name, err)
				}
				steps[name] = append(steps[name], time.Since(t0))
			}
			step("store.GetEndpoint", func() error { _, _, err := e.st.GetEndpoint(benchNet, rec.EndpointID); return err })
			rec.Joined = true
			step("store.PutEndpoint", func() error { return e.st.PutEndpoint(rec) })
			step("dataplane.VXLANIndex", func() error {
				if _, ok := e.dp.VXLANIndex(ns.spec); !ok {
					return errors.New("no device")
				}
				return nil
			})
			step("dataplane.CreateEndpointIf", func() error {
				_, err := e.dp.CreateEndpointIf(dataplane.EndpointSpec{NetworkID: benchNet, EndpointID: rec.EndpointID, Name: rec.IfName,
					ParentIndex: ns.vxIndex, MAC: netconfig.MACFromIP(ip), MTU: ns.spec.MTU})
				return err
			})
			step("move there and back (libnetwork)", func() error {
				l, err := e.host.NL.LinkByName(rec.IfName)
				if err == nil {
					err = e.host.NL.LinkSetNsFd(l, int(e.sink.Handle))
				}
				if err == nil {
					l, err = e.sink.NL.LinkByName(rec.IfName)
				}
				if err == nil {
					err = e.sink.NL.LinkSetNsFd(l, int(e.host.Handle))
				}
				return err
			})
			step("dataplane.DeleteEndpointIf", func() error { return e.dp.DeleteEndpointIf(benchNet, rec.EndpointID, rec.IfName) })
			if err := e.st.DeleteEndpoint(benchNet, rec.EndpointID); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	fmt.Printf("BenchmarkJoinSteps: Join's steps at 1000 endpoints, ms (p50 / p99 / max), state on disk, %s:\n", spin)
	for _, name := range order {
		ds := steps[name]
		fmt.Printf("  %-34s %6.3f / %6.3f / %6.3f\n", name, pct(ds, 50), pct(ds, 99), pct(ds, 100))
	}
	b.ReportMetric(pct(steps["store.PutEndpoint"], 99), "put-p99-ms")
	b.ReportMetric(pct(steps["dataplane.CreateEndpointIf"], 99), "macvlan-p99-ms")
}

// benchLoad starts the load VXSAFE_BENCH_LOAD asks for: N child processes (this test binary again, in
// TestBenchSpinner) that each keep one core busy until the benchmark ends. It returns a description of the
// load for the printed tables ("no added load" without the variable).
func benchLoad(tb testing.TB) string {
	tb.Helper()
	n, err := strconv.Atoi(os.Getenv("VXSAFE_BENCH_LOAD"))
	if err != nil || n <= 0 {
		return "no added load"
	}
	for i := 0; i < n; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBenchSpinner$", "-test.count=1")
		cmd.Env = append(os.Environ(), "VXSAFE_BENCH_SPINNER=1", "GOMAXPROCS=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			tb.Fatalf("starting load process: %v", err)
		}
		tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	return fmt.Sprintf("%d core(s) of %d kept busy by spinning processes (VXSAFE_BENCH_LOAD=%d)", n, runtime.NumCPU(), n)
}

// TestBenchSpinner is benchLoad's child: with VXSAFE_BENCH_SPINNER=1 it spins on one core until killed
// (or for an hour); otherwise it skips.
func TestBenchSpinner(t *testing.T) {
	if os.Getenv("VXSAFE_BENCH_SPINNER") != "1" {
		t.Skip("only a load process for the benchmarks (VXSAFE_BENCH_LOAD)")
	}
	for start := time.Now(); time.Since(start) < time.Hour; {
	}
}

// loadavg1 is the machine's 1-minute load average, for the record: other work on the machine shows in the
// tails.
func loadavg1() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// writeJoinPlot writes the plot of BenchmarkJoinLeave's rows as a PNG.
func writeJoinPlot(path string, rows []latencyRow, note string) error {
	points := make([]plot.Point, len(rows))
	for i, r := range rows {
		points[i] = plot.Point{State: r.State, Endpoints: r.Endpoints, P50: r.JoinP50, P99: r.JoinP99}
	}
	return plot.WriteJoinLatency(path, points, fmt.Sprintf("vxsafe/overlay, %d Joins per point, %s; p99 dashed", benchSamples(), note))
}
