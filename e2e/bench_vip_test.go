package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/e2e/cluster"
)

// TestBenchmarkVIP measures what a service VIP costs against the task's own address, on a two-node swarm,
// interleaved in one run: TCP connect latency (from the client container's namespace, 300 samples each)
// and iperf3 throughput (1 and 4 streams), client on n2 and the single task on n1. It also reports how long
// the plugin takes to bring a new service into a table already holding up to 31 (the watcher's update
// latency: from the service's task running to its VIP in the remote client's table), and the plugin's CPU and memory while it
// watches them. VXSAFE_BENCH=1 (`make bench`) runs it; VXSAFE_BENCH_OUT appends the summary to that file.
func TestBenchmarkVIP(t *testing.T) {
	if os.Getenv("VXSAFE_BENCH") != "1" {
		t.Skip("benchmark: set VXSAFE_BENCH=1 (make bench)")
	}
	c := startCluster(t, cluster.Options{Prefix: "vxbv", Nodes: 2, WithIperf3: true})
	installVxsafe(t, c, map[string]string{"LOG_LEVEL": "info"})
	n1, n2, img := c.Node(1), c.Node(2), c.Image()
	dp, err := dataplane.New(dataplane.Options{Log: logrus.NewEntry(logrus.New())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	docker(t, n1, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.8.0/24", "vipb")
	netID, _ := networkVNI(t, n1, "vipb")
	for _, svc := range [][]string{{"web", "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"}, {"perf", "iperf3", "-s"}} {
		docker(t, n1, append([]string{"service", "create", "--detach=false", "--name", svc[0], "--network", "vipb",
			"--constraint", "node.hostname==" + n1.Hostname, img}, svc[1:]...)...)
	}
	docker(t, n2, "run", "-d", "--name", "client", "--network", "vipb", img, "sleep", "3600")
	nsPath := filepath.Join("/proc", docker(t, n2, "inspect", "-f", "{{.State.Pid}}", "client"), "ns", "net")
	r := &vipRig{t: t, c: c, m: n1, dp: dp, netID: netID, clients: map[*cluster.Node]string{n2: nsPath}}
	vips := map[string]string{"web": r.serviceVIP("web"), "perf": r.serviceVIP("perf")}
	tasks := map[string]string{}
	for svc := range vips {
		ips := keys(r.taskIPs(svc))
		if len(ips) != 1 {
			t.Fatalf("service %s: tasks %v", svc, ips)
		}
		tasks[svc] = ips[0]
		r.waitBackends(vips[svc], ips, 30*time.Second)
	}

	// Connect latency, VIP and task address interleaved.
	lat := map[string][]time.Duration{}
	for i := 0; i < 300; i++ {
		for _, path := range []string{"vip", "task"} {
			addr := vips["web"]
			if path == "task" {
				addr = tasks["web"]
			}
			start := time.Now()
			conn, err := inNetNS(nsPath, func() (net.Conn, error) {
				return net.DialTimeout("tcp", net.JoinHostPort(addr, "8080"), 2*time.Second)
			})
			d := time.Since(start)
			if err != nil {
				t.Fatalf("connect to %s (%s): %v", addr, path, err)
			}
			conn.Close()
			lat[path] = append(lat[path], d)
		}
	}
	// Throughput, interleaved rounds.
	tput := map[string]map[int][]float64{"vip": {}, "task": {}}
	for round := 0; round < 3; round++ {
		for k, path := range []string{"vip", "task"} {
			if round%2 == 1 {
				path = []string{"task", "vip"}[k]
			}
			addr := vips["perf"]
			if path == "task" {
				addr = tasks["perf"]
			}
			for _, streams := range []int{1, 4} {
				var out string
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					out, err = n2.Docker(ctxT(t, time.Minute), "exec", "client", "iperf3", "-c", addr, "-t", "4", "-P", strconv.Itoa(streams), "-J")
					if err == nil || !strings.Contains(out, "busy") {
						break
					}
					time.Sleep(time.Second)
				}
				var res iperfResult
				if jerr := json.Unmarshal([]byte(jsonPart(out)), &res); jerr != nil || res.Error != "" || err != nil {
					t.Fatalf("iperf3 to %s (%s), %d streams: %v %s %v\n%s", addr, path, streams, err, res.Error, jerr, out)
				}
				tput[path][streams] = append(tput[path][streams], res.End.SumReceived.BitsPerSecond/1e9)
			}
		}
	}

	// The plugin's CPU and memory on n2 over 20 s of watching 2 services, then (below) 32.
	pid, err := pluginPID(ctxT(t, time.Minute), n2, pluginName)
	if err != nil {
		t.Fatal(err)
	}
	cpu2, rss2 := pluginLoad(t, pid)

	// The watcher: 30 more services (one task each, on n1), created one after the other; for each, the time
	// from its task running (the task's own timestamp) to its VIP with that task in the client's table on n2.
	var update []time.Duration
	for i := 0; i < 30; i++ {
		name := fmt.Sprintf("s%02d", i)
		docker(t, n1, "service", "create", "--detach", "--name", name, "--network", "vipb",
			"--constraint", "node.hostname=="+n1.Hostname, img, "sleep", "3600")
		vip := r.serviceVIP(name)
		var seenAt time.Time
		poll(t, 60*time.Second, name+" in the client's table", func() error {
			bs, err := r.backends(n2, vip)
			if err != nil || len(bs) != 1 {
				return fmt.Errorf("backends %v, %v", bs, err)
			}
			seenAt = time.Now()
			return nil
		})
		for _, at := range r.taskIPs(name) {
			update = append(update, max(0, seenAt.Sub(at)))
		}
	}
	cpu32, rss32 := pluginLoad(t, pid)

	var b strings.Builder
	fmt.Fprintf(&b, "service VIP benchmark (2 nodes, client on n2, task on n1, %s)\n", describeMachine(t, n1))
	for _, path := range []string{"vip", "task"} {
		fmt.Fprintf(&b, "  connect %-4s p50 %.3f ms  p99 %.3f ms  (%d samples)\n", path, ms(median(lat[path])), ms(pctD(lat[path], 99)), len(lat[path]))
	}
	fmt.Fprintf(&b, "  connect VIP/task p50 ratio %.2f\n", ms(median(lat["vip"]))/ms(median(lat["task"])))
	for _, streams := range []int{1, 4} {
		v, k := medianF(tput["vip"][streams]), medianF(tput["task"][streams])
		fmt.Fprintf(&b, "  iperf3 %d stream(s): VIP %.2f Gbit/s, task %.2f Gbit/s, ratio %.3f  (rounds %s / %s)\n", streams, v, k, v/k,
			fmtList(tput["vip"][streams]), fmtList(tput["task"][streams]))
	}
	sort.Slice(update, func(i, j int) bool { return update[i] < update[j] })
	fmt.Fprintf(&b, "  new service's task in a remote client's table after it is running: p50 %.0f ms, max %.0f ms (30 services, polled every 100 ms)\n",
		ms(median(update)), ms(update[len(update)-1]))
	fmt.Fprintf(&b, "  plugin on n2 watching 2 services: CPU %.2f%% of a core, RSS %.1f MiB; 32 services: CPU %.2f%%, RSS %.1f MiB (VIP_REFRESH 250ms)\n",
		100*cpu2, float64(rss2)/(1<<20), 100*cpu32, float64(rss32)/(1<<20))
	t.Log("\n" + b.String())
	if p := os.Getenv("VXSAFE_BENCH_OUT"); p != "" {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.WriteString(b.String())
			f.Close()
		}
	}
}

// pluginLoad is the share of a core process pid used over 20 s, and its resident memory after.
func pluginLoad(t *testing.T, pid int) (float64, int64) {
	cpu0 := procCPU(t, pid)
	began := time.Now()
	time.Sleep(20 * time.Second) // a measurement window, not a synchronisation
	return (procCPU(t, pid) - cpu0).Seconds() / time.Since(began).Seconds(), procRSS(t, pid)
}

// procCPU is the user+system CPU time of process pid.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(st)[strings.LastIndexByte(string(st), ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stt) * time.Second / 100 // USER_HZ
}

// procRSS is the resident memory of process pid in bytes.
func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
