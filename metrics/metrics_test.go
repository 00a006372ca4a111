package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

type fakeCounts struct {
	mu                  sync.Mutex
	networks, endpoints int
}

func (f *fakeCounts) Counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.networks, f.endpoints
}

type fakeGossip struct{}

func (fakeGossip) GossipStats() (int, uint64, uint64) { return 3, 120, 97 }
func (fakeGossip) MessageBytesSent() uint64           { return 31415 }

// scrape fetches url and parses the Prometheus text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scraping %s: status %d: %s", url, resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return fams
}

// find returns the metric of family name whose labels include want, or nil.
func find(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := find(fams, name, labels)
	if m == nil {
		t.Fatalf("no %s%v in the scrape", name, labels)
	}
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	t.Fatalf("%s%v is neither gauge nor counter", name, labels)
	return 0
}

func TestScrapeHasEveryFamilyWithValues(t *testing.T) {
	m := New()
	counts := &fakeCounts{networks: 2, endpoints: 5}
	m.Attach(counts, fakeGossip{})
	m.Observe("Join", 3*time.Millisecond, nil)
	m.Observe("Join", 700*time.Microsecond, nil)
	m.Observe("Join", 2*time.Second, errors.New("boom"))
	m.Observe("Leave", time.Millisecond, nil)
	m.StaleRemoved("is down")
	m.StaleRemoved("is an earlier, down device of this network")
	m.StaleRemoved("sweep")
	m.ConflictRefused()
	m.Error("peer")
	m.Error("peer")
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	fams := scrape(t, srv.URL)
	join := find(fams, "vxsafe_request_duration_seconds", map[string]string{"method": "Join", "outcome": "ok"})
	if join == nil || join.GetHistogram() == nil {
		t.Fatalf("no Join histogram: %v", fams["vxsafe_request_duration_seconds"])
	}
	h := join.GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() < 0.0037 || h.GetSampleSum() > 0.0038 {
		t.Errorf("Join ok: count %d sum %g, want 2 and 0.0037", h.GetSampleCount(), h.GetSampleSum())
	}
	// Cumulative buckets: 0.7 ms is below 1 ms, 3 ms below 5 ms.
	for _, b := range h.GetBucket() {
		want := uint64(0)
		switch ub := b.GetUpperBound(); {
		case ub >= 0.005:
			want = 2
		case ub >= 0.001:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("Join bucket le=%g: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	jerr := find(fams, "vxsafe_request_duration_seconds", map[string]string{"method": "Join", "outcome": "error"})
	if jerr == nil || jerr.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("Join error outcome not counted once: %v", jerr)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vxsafe_stale_devices_removed_total", map[string]string{"reason": "down"}, 2},
		{"vxsafe_stale_devices_removed_total", map[string]string{"reason": "sweep"}, 1},
		{"vxsafe_conflicts_refused_total", nil, 1},
		{"vxsafe_errors_total", map[string]string{"kind": "peer"}, 2},
		{"vxsafe_networks", nil, 2},
		{"vxsafe_endpoints", nil, 5},
		{"vxsafe_gossip_members", nil, 3},
		{"vxsafe_gossip_messages_sent_total", nil, 120},
		{"vxsafe_gossip_messages_received_total", nil, 97},
		{"vxsafe_gossip_message_bytes_sent_total", nil, 31415},
	} {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	if g := value(t, fams, "go_goroutines", nil); g < 1 || g > 10000 {
		t.Errorf("go_goroutines = %g", g)
	}
	if rss := value(t, fams, "process_resident_memory_bytes", nil); rss < 1<<20 || rss > 1<<34 {
		t.Errorf("process_resident_memory_bytes = %g", rss)
	}

	// The gauges are read at scrape time.
	counts.mu.Lock()
	counts.networks, counts.endpoints = 1, 0
	counts.mu.Unlock()
	fams = scrape(t, srv.URL)
	if n, e := value(t, fams, "vxsafe_networks", nil), value(t, fams, "vxsafe_endpoints", nil); n != 1 || e != 0 {
		t.Errorf("after a change: networks %g endpoints %g, want 1 and 0", n, e)
	}
}

func TestAttachNilSourcesRegistersNothing(t *testing.T) {
	m := New()
	m.Attach(nil, nil)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := scrape(t, srv.URL)
	for _, name := range []string{"vxsafe_networks", "vxsafe_endpoints", "vxsafe_gossip_members"} {
		if fams[name] != nil {
			t.Errorf("%s registered without a source", name)
		}
	}
	if fams["go_goroutines"] == nil {
		t.Error("no Go runtime collector")
	}
}

// Reasons as the dataplane and driver write them, and the label each gets.
func TestReasonLabel(t *testing.T) {
	for reason, want := range map[string]string{
		"sweep":   "sweep",
		"is down": "down",
		"is an earlier, down device of this network":                                        "down",
		"is down with no master and no address":                                             "down",
		`is a leftover of a Docker overlay sandbox: bridge "br0" has no container attached`: "overlay_sandbox",
		"belongs to vxsafe network 0123456789ab, which has no endpoint on this host":        "other_network",
		"is a leftover vxsafe endpoint interface that no container holds":                   "endpoint_interface",
		"is up but carries nothing (no master, no upper device, no address)":                "unattached",
		"is an earlier device of this network with other settings and nothing attached":     "unattached",
		"something new": "other",
	} {
		if got := ReasonLabel(reason); got != want {
			t.Errorf("ReasonLabel(%q) = %q, want %q", reason, got, want)
		}
	}
}

func TestServeListensAndStops(t *testing.T) {
	m := New()
	m.Attach(&fakeCounts{networks: 1, endpoints: 1}, nil)
	logger, hook := test.NewNullLogger()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Serve(ctx, "127.0.0.1:0", logrus.NewEntry(logger))
		close(done)
	}()
	var addr string
	deadline := time.Now().Add(10 * time.Second)
	for addr == "" && time.Now().Before(deadline) {
		for _, e := range hook.AllEntries() {
			if e.Message == "metrics: serving /metrics" {
				addr, _ = e.Data["address"].(string)
			}
		}
		if addr == "" {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if addr == "" {
		cancel()
		t.Fatalf("Serve logged no address: %v", hook.AllEntries())
	}
	fams := scrape(t, fmt.Sprintf("http://%s/metrics", addr))
	if value(t, fams, "vxsafe_endpoints", nil) != 1 {
		t.Error("vxsafe_endpoints != 1")
	}
	// Only /metrics is served.
	if resp, err := http.Get(fmt.Sprintf("http://%s/", addr)); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET / = %d, want 404", resp.StatusCode)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := http.Get(fmt.Sprintf("http://%s/metrics", addr)); err == nil {
		t.Error("still serving after the context ended")
	}
}

func TestServeReportsListenError(t *testing.T) {
	logger, hook := test.NewNullLogger()
	done := make(chan struct{})
	go func() {
		New().Serve(context.Background(), "127.0.0.1:notaport", logrus.NewEntry(logger))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve on a bad address did not return")
	}
	e := hook.LastEntry()
	if e == nil || e.Level != logrus.ErrorLevel || !strings.Contains(e.Message, "cannot listen") || e.Data["address"] != "127.0.0.1:notaport" {
		t.Fatalf("want an error naming the address, got %+v", e)
	}
}
