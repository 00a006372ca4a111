// Package metrics exposes vxsafe's Prometheus metrics: request latency per remote-driver method, stale
// devices removed by reason, conflicts refused, errors by kind, networks and endpoints on the host, gossip
// peers and messages, and the Go runtime and process collectors (goroutines, memory).
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

// Counts reports sizes that are read at scrape time.
type Counts interface {
	// Counts returns networks known and endpoints joined on this host.
	Counts() (networks, endpoints int)
}

// GossipStats reports the control plane's figures at scrape time.
type GossipStats interface {
	GossipStats() (members int, sent, received uint64)
}

// Metrics holds vxsafe's collectors in a registry of its own.
type Metrics struct {
	Registry  *prometheus.Registry
	requests  *prometheus.HistogramVec
	stale     *prometheus.CounterVec
	conflicts prometheus.Counter
	errs      *prometheus.CounterVec
}

// New registers every collector.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "vxsafe", Name: "request_duration_seconds",
		Help:    "Duration of remote-driver requests by method and outcome.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"method", "outcome"})
	m.stale = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "vxsafe", Name: "stale_devices_removed_total",
		Help: "Stale interfaces found and removed, by reason.",
	}, []string{"reason"})
	m.conflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "vxsafe", Name: "conflicts_refused_total",
		Help: "Joins refused because a live interface held the network's name or VNI.",
	})
	m.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "vxsafe", Name: "errors_total", Help: "Errors by kind.",
	}, []string{"kind"})
	m.Registry.MustRegister(m.requests, m.stale, m.conflicts, m.errs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Attach adds gauges read from c and g at scrape time (either may be nil).
func (m *Metrics) Attach(c Counts, g GossipStats) {
	if c != nil {
		m.Registry.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "vxsafe", Name: "networks", Help: "vxsafe networks known on this host."},
				func() float64 { n, _ := c.Counts(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "vxsafe", Name: "endpoints", Help: "Endpoints joined on this host."},
				func() float64 { _, e := c.Counts(); return float64(e) }))
	}
	if g != nil {
		m.Registry.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "vxsafe", Name: "gossip_members", Help: "Live members of the gossip cluster, this node included."},
				func() float64 { n, _, _ := g.GossipStats(); return float64(n) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "vxsafe", Name: "gossip_messages_sent_total", Help: "Gossip messages sent."},
				func() float64 { _, s, _ := g.GossipStats(); return float64(s) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "vxsafe", Name: "gossip_messages_received_total", Help: "Gossip messages received."},
				func() float64 { _, _, r := g.GossipStats(); return float64(r) }))
		if r, ok := g.(GossipRefusals); ok {
			m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "vxsafe", Name: "gossip_refused_records_total",
				Help: "Endpoint records refused: unsigned, signed with a key this node does not hold or forged, replayed, or naming a VTEP that is not the sender's address."},
				func() float64 { return float64(r.RefusedRecords()) }))
		}
		if b, ok := g.(GossipBytes); ok {
			m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "vxsafe", Name: "gossip_message_bytes_sent_total",
				Help: "Bytes of the endpoint changes this node sent (direct sends and gossip, retransmissions and relays included), before memberlist's framing, compression and encryption."},
				func() float64 { return float64(b.MessageBytesSent()) }))
		}
	}
}

// GossipRefusals is what a control plane that checks its records reports.
type GossipRefusals interface {
	RefusedRecords() uint64
}

// GossipBytes is what a control plane that counts the bytes of its changes reports.
type GossipBytes interface {
	MessageBytesSent() uint64
}

// Observe records one request.
func (m *Metrics) Observe(method string, took time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.requests.WithLabelValues(method, outcome).Observe(took.Seconds())
}

// StaleRemoved counts a removed stale interface; the free-text reason is reduced to a small label set.
func (m *Metrics) StaleRemoved(reason string) { m.stale.WithLabelValues(ReasonLabel(reason)).Inc() }

// ConflictRefused counts a refused join.
func (m *Metrics) ConflictRefused() { m.conflicts.Inc() }

// Error counts an error of a kind.
func (m *Metrics) Error(kind string) { m.errs.WithLabelValues(kind).Inc() }

// ReasonLabel maps a classification reason to a metric label.
func ReasonLabel(reason string) string {
	switch {
	case reason == "sweep":
		return "sweep"
	case strings.Contains(reason, "overlay sandbox"):
		return "overlay_sandbox"
	case strings.Contains(reason, "vxsafe network"):
		return "other_network"
	case strings.Contains(reason, "endpoint interface"):
		return "endpoint_interface"
	case strings.Contains(reason, "down"):
		return "down"
	case strings.Contains(reason, "carries nothing"), strings.Contains(reason, "nothing attached"):
		return "unattached"
	}
	return "other"
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// Serve serves /metrics on addr until ctx ends.
func (m *Metrics) Serve(ctx context.Context, addr string, log *logrus.Entry) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.WithError(err).WithField("address", addr).Error("metrics: cannot listen")
		return
	}
	log.WithField("address", l.Addr().String()).Info("metrics: serving /metrics")
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.WithError(err).Error("metrics: server stopped")
	}
}
