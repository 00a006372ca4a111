package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/e2e/stale"
)

// metricsAddr is where the tests ask the plugin to serve Prometheus metrics. The plugin runs with network
// "host", i.e. in its node's network namespace: the address is the node's loopback.
const metricsAddr = "127.0.0.1:9323"

// dialIn dials a TCP address from inside the network namespace at nsPath; the connection keeps the
// namespace (see inNetNS).
func dialIn(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	return inNetNS(nsPath, func() (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) })
}

// nodeHTTP is an HTTP client whose connections are made inside the node's network namespace.
func nodeHTTP(n *cluster.Node) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialIn(ctx, n.NetnsPath(), addr)
		}}}
}

// scrapeNode fetches the plugin's /metrics on node n and parses it.
func scrapeNode(n *cluster.Node) (map[string]*dto.MetricFamily, error) {
	resp, err := nodeHTTP(n).Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("node %s: scraping %s: %w", n.Name, metricsAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("node %s: scraping %s: status %d", n.Name, metricsAddr, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("node %s: parsing the metrics: %w", n.Name, err)
	}
	return fams, nil
}

// metric returns the sample of family name whose labels include labels.
func metric(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (*dto.Metric, bool) {
next:
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// metricValue is the value of a gauge, counter or untyped sample (histograms: the sample count).
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	m, ok := metric(fams, name, labels)
	if !ok {
		return 0, false
	}
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), true
	case m.Counter != nil:
		return m.GetCounter().GetValue(), true
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount()), true
	case m.Untyped != nil:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

// TestVxsafeMetrics scrapes the plugin's Prometheus endpoint (METRICS_ADDR) from inside a node: request
// latency of the Join that started a container, networks and endpoints on the host, the stale device the
// Join removed, and the Go runtime and process collectors.
func TestVxsafeMetrics(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxm", Nodes: 1})
	// Non-default probe settings: config.json must declare them for `docker plugin set`, and the agent
	// must run with them (checked on its start line below).
	installVxsafe(t, c, map[string]string{"METRICS_ADDR": metricsAddr, "GOSSIP_PROBE_INTERVAL": "2s", "GOSSIP_PROBE_TIMEOUT": "1500ms"})
	n := c.Manager()
	img := c.Image()

	var fams map[string]*dto.MetricFamily
	poll(t, 30*time.Second, "metrics endpoint answering", func() (err error) {
		fams, err = scrapeNode(n)
		return err
	})
	for _, name := range []string{"vxsafe_networks", "vxsafe_endpoints"} {
		if v, ok := metricValue(fams, name, nil); !ok || v != 0 {
			t.Errorf("before any network: %s = %v (present %v), want 0", name, v, ok)
		}
	}

	docker(t, n, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.4.0/24", "vxm")
	id, vni := networkVNI(t, n, "vxm")
	// The seed's stale device, so that the first Join has something to remove.
	if err := stale.PlantVXLAN(n, vxName(vni, id), vni); err != nil {
		t.Fatal(err)
	}
	docker(t, n, "run", "-d", "--name", "m1", "--network", "vxm", img, "sleep", "600")

	fams, err := scrapeNode(n)
	if err != nil {
		t.Fatal(err)
	}
	join, ok := metric(fams, "vxsafe_request_duration_seconds", map[string]string{"method": "Join", "outcome": "ok"})
	if !ok || join.GetHistogram() == nil {
		t.Fatalf("no vxsafe_request_duration_seconds{method=\"Join\",outcome=\"ok\"}; families: %v", names(fams))
	}
	h := join.GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() <= 0 || h.GetSampleSum() > 5 {
		t.Errorf("Join: count %d, sum %gs; want one Join of less than 5 s", h.GetSampleCount(), h.GetSampleSum())
	}
	t.Logf("METRIC Join took %.2f ms (with a stale device removed)", h.GetSampleSum()*1000)
	if v, ok := metricValue(fams, "vxsafe_request_duration_seconds", map[string]string{"method": "CreateEndpoint", "outcome": "ok"}); !ok || v < 1 {
		t.Errorf("CreateEndpoint requests: %v (present %v), want >= 1", v, ok)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vxsafe_networks", nil, 1},
		{"vxsafe_endpoints", nil, 1},
		{"vxsafe_stale_devices_removed_total", map[string]string{"reason": "down"}, 1},
	} {
		if v, ok := metricValue(fams, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	g, ok := metricValue(fams, "go_goroutines", nil)
	if !ok || g < 5 || g > 5000 {
		t.Errorf("go_goroutines = %v (present %v), want 5..5000", g, ok)
	}
	rss, ok := metricValue(fams, "process_resident_memory_bytes", nil)
	if !ok || rss < 1<<20 || rss > 1<<30 {
		t.Errorf("process_resident_memory_bytes = %v (present %v), want 1 MiB..1 GiB", rss, ok)
	}
	t.Logf("METRIC plugin with 1 endpoint: %d goroutines, RSS %.1f MiB", int(g), rss/(1<<20))
	poll(t, 30*time.Second, "the gossip agent started with GOSSIP_PROBE_INTERVAL=2s GOSSIP_PROBE_TIMEOUT=1500ms", func() error {
		if logLine(pluginLogSince(n, 0), "gossip started", "probe_interval=2s", "probe_timeout=1.5s") == "" {
			return fmt.Errorf("no such start line in the plugin log")
		}
		return nil
	})

	// The container goes: Leave is observed and the gauges follow.
	docker(t, n, "rm", "-f", "m1")
	poll(t, 20*time.Second, "vxsafe_endpoints back to 0", func() error {
		fams, err := scrapeNode(n)
		if err != nil {
			return err
		}
		if v, _ := metricValue(fams, "vxsafe_endpoints", nil); v != 0 {
			return fmt.Errorf("vxsafe_endpoints = %v", v)
		}
		if v, _ := metricValue(fams, "vxsafe_request_duration_seconds", map[string]string{"method": "Leave", "outcome": "ok"}); v != 1 {
			return fmt.Errorf("Leave requests = %v", v)
		}
		return nil
	})
	docker(t, n, "network", "rm", "vxm")
}

func names(fams map[string]*dto.MetricFamily) string {
	var s []string
	for k := range fams {
		s = append(s, k)
	}
	return strings.Join(s, " ")
}
