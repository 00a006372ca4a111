package gossip

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/internal/porttest"
)

const (
	itGrace    = 600 * time.Millisecond
	itPushPull = 400 * time.Millisecond
	itTimeout  = 8 * time.Second
)

var (
	keyA = bytes.Repeat([]byte{0xA5}, 32)
	keyB = bytes.Repeat([]byte{0x5A}, 16)
)

type timedEvent struct {
	Event
	at time.Time
}

type recorder struct {
	mu  sync.Mutex
	evs []timedEvent
}

func (r *recorder) on(ev Event) {
	r.mu.Lock()
	r.evs = append(r.evs, timedEvent{ev, time.Now()})
	r.mu.Unlock()
}

// last returns the last event about endpointID.
func (r *recorder) last(endpointID string) (timedEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.evs) - 1; i >= 0; i-- {
		if r.evs[i].Endpoint.EndpointID == endpointID {
			return r.evs[i], true
		}
	}
	return timedEvent{}, false
}

func (r *recorder) has(kind EventKind, endpointID string) bool {
	e, ok := r.last(endpointID)
	return ok && e.Kind == kind
}

func (r *recorder) all() []timedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(itTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", itTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

type node struct {
	*Agent
	rec  *recorder
	addr string
}

func startNode(t *testing.T, name string, port int, key []byte, mod func(*Config)) *node {
	t.Helper()
	lg := logrus.New()
	lg.SetOutput(testLogWriter{t})
	lg.SetLevel(logrus.WarnLevel)
	cfg := Config{
		NodeName:         name,
		BindAddr:         "127.0.0.1",
		BindPort:         port,
		AdvertiseAddr:    "127.0.0.1",
		Key:              key,
		GracePeriod:      itGrace,
		HostUpGrace:      -1, // most tests: records go GracePeriod after a failure
		TombstoneTTL:     5 * time.Second,
		PushPullInterval: itPushPull,
		Log:              logrus.NewEntry(lg).WithField("test_node", name),
	}
	if mod != nil {
		mod(&cfg)
	}
	rec := &recorder{}
	a, err := New(cfg, rec.on)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() { a.Close() })
	return &node{Agent: a, rec: rec, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}

func testEP(n int) Endpoint {
	return Endpoint{
		Network:    "netX",
		EndpointID: fmt.Sprintf("ep%02d", n),
		IP:         fmt.Sprintf("10.0.1.%d", n),
		MAC:        fmt.Sprintf("02:42:0a:00:01:%02x", n),
	}
}

func withVTEP(e Endpoint) Endpoint { e.VTEP = "127.0.0.1"; return e }

func membersAre(n int, nodes ...*node) func() bool {
	return func() bool {
		for _, x := range nodes {
			if len(x.Members()) != n {
				return false
			}
		}
		return true
	}
}

func TestAgentCluster(t *testing.T) {
	pa := porttest.Free(t)
	a := startNode(t, "A", pa, keyA, nil)
	b := startNode(t, "B", porttest.Free(t), keyA, nil)
	c := startNode(t, "C", porttest.Free(t), keyA, nil)
	// Join skips the own address (with and without port).
	if n, err := a.Join([]string{a.addr, "127.0.0.1"}); n != 0 || err != nil {
		t.Fatalf("A.Join(self) = %d, %v", n, err)
	}
	for _, x := range []*node{b, c} {
		if n, err := x.Join([]string{a.addr}); n != 1 || err != nil {
			t.Fatalf("Join: %d, %v", n, err)
		}
	}
	waitFor(t, "3 members everywhere", membersAre(3, a, b, c))

	// Publish on A -> Added on B and C; measure propagation, first with the
	// direct send, then over the gossip path alone.
	measure := func(from, to int) []time.Duration {
		var lat []time.Duration
		for i := from; i <= to; i++ {
			e := testEP(i)
			start := time.Now()
			a.Publish(e)
			waitFor(t, "Added "+e.EndpointID+" on B and C", func() bool {
				return b.rec.has(Added, e.EndpointID) && c.rec.has(Added, e.EndpointID)
			})
			ev, _ := b.rec.last(e.EndpointID)
			if ev.Node != "A" || ev.Endpoint != withVTEP(e) {
				t.Fatalf("event on B: %+v", ev)
			}
			lat = append(lat, ev.at.Sub(start))
		}
		slices.Sort(lat)
		return lat
	}
	show := func(l []time.Duration) string {
		return fmt.Sprintf("min %v median %v max %v (%d samples)", l[0].Round(10*time.Microsecond),
			l[len(l)/2].Round(10*time.Microsecond), l[len(l)-1].Round(10*time.Microsecond), len(l))
	}
	t.Logf("propagation Publish(A) -> Added(B), direct send: %s", show(measure(1, 5)))
	a.noDirect = true
	t.Logf("propagation Publish(A) -> Added(B), gossip only (GossipInterval %v): %s", DefaultGossipInterval, show(measure(6, 8)))
	a.noDirect = false

	if got := b.Remote("netX"); len(got) != 8 || got[0] != withVTEP(testEP(1)) {
		t.Fatalf("B.Remote = %+v", got)
	}
	if got := a.Remote("netX"); len(got) != 0 {
		t.Fatalf("A.Remote lists own endpoints: %+v", got)
	}
	if s := a.Stats(); s.LocalEndpoints != 8 || s.Members != 3 || s.MessagesSent == 0 || s.MessageBytesSent < s.MessagesSent {
		t.Fatalf("A stats %+v", s)
	}

	// Withdraw -> Removed.
	a.Withdraw("netX", "ep01")
	waitFor(t, "Removed ep01 on B and C", func() bool {
		return b.rec.has(Removed, "ep01") && c.rec.has(Removed, "ep01")
	})
	// Endpoints published by B reach A and C.
	b.Publish(testEP(20))
	waitFor(t, "B's ep20 on A and C", func() bool { return a.rec.has(Added, "ep20") && c.rec.has(Added, "ep20") })

	// Close A -> its endpoints are removed on B, but only after the grace period.
	closedAt := time.Now()
	if err := a.Close(); err != nil {
		t.Fatalf("Close A: %v", err)
	}
	waitFor(t, "A's endpoints removed on B and C", func() bool {
		return b.rec.has(Removed, "ep08") && c.rec.has(Removed, "ep08")
	})
	rm, _ := b.rec.last("ep08")
	if d := rm.at.Sub(closedAt); d < itGrace {
		t.Fatalf("A's endpoints removed %v after Close, before the %v grace period", d, itGrace)
	} else {
		t.Logf("A's endpoints removed on B %v after Close (grace %v)", d.Round(time.Millisecond), itGrace)
	}
	if got := b.Remote("netX"); len(got) != 0 {
		t.Fatalf("B.Remote after A left: %+v", got)
	}
	if !c.rec.has(Added, "ep20") || len(c.Remote("netX")) != 1 {
		t.Fatalf("C lost B's endpoint: %+v", c.Remote("netX"))
	}

	// A restarts (new process, same name and port) and republishes ep02 only.
	a2 := startNode(t, "A", pa, keyA, nil)
	a2.Publish(testEP(2))
	if n, err := a2.Join([]string{b.addr}); n != 1 || err != nil {
		t.Fatalf("A2.Join: %d, %v", n, err)
	}
	waitFor(t, "ep02 restored on B and C", func() bool { return b.rec.has(Added, "ep02") && c.rec.has(Added, "ep02") })
	waitFor(t, "A2 sees B's ep20", func() bool { return a2.rec.has(Added, "ep20") })
	// Let a few push/pull rounds pass, then: only ep02 of A is visible.
	syncs := b.Stats().StateSyncsReceived
	waitFor(t, "push/pull rounds on B", func() bool { return b.Stats().StateSyncsReceived >= syncs+3 })
	if got := b.Remote("netX"); len(got) != 1 || got[0] != withVTEP(testEP(2)) {
		t.Fatalf("B.Remote after A restart: %+v", got)
	}
	for _, ev := range b.rec.all() {
		if ev.Kind == Added && ev.Node == "A" && ev.at.After(closedAt) && ev.Endpoint.EndpointID != "ep02" {
			t.Fatalf("stale endpoint of A's old process restored: %+v", ev)
		}
	}
}

func TestAgentDifferentKeysDoNotMerge(t *testing.T) {
	a := startNode(t, "A", porttest.Free(t), keyA, nil)
	b := startNode(t, "B", porttest.Free(t), keyA, nil)
	x := startNode(t, "X", porttest.Free(t), keyB, nil)
	y := startNode(t, "Y", porttest.Free(t), keyA, func(c *Config) { c.Label = "other" })
	z := startNode(t, "Z", porttest.Free(t), nil, nil)
	x.Publish(testEP(9))
	y.Publish(testEP(8))
	z.Publish(testEP(7))
	a.Publish(testEP(1))
	for _, o := range []*node{x, y, z} {
		if n, err := o.Join([]string{a.addr}); n != 0 || err == nil {
			t.Fatalf("%s joined A with wrong key/label: %d, %v", o.Members(), n, err)
		}
	}
	// Barrier: B joins properly and exchanges state with A both ways.
	if _, err := b.Join([]string{a.addr}); err != nil {
		t.Fatalf("B.Join: %v", err)
	}
	b.Publish(testEP(2))
	waitFor(t, "A and B exchange", func() bool { return a.rec.has(Added, "ep02") && b.rec.has(Added, "ep01") })
	syncs := a.Stats().StateSyncsReceived
	waitFor(t, "push/pull rounds on A", func() bool { return a.Stats().StateSyncsReceived >= syncs+2 })
	for _, o := range []*node{a, b} {
		if m := o.Members(); len(m) != 2 {
			t.Fatalf("members %v", m)
		}
		if got := o.Remote("netX"); len(got) != 1 {
			t.Fatalf("foreign endpoints merged: %+v", got)
		}
	}
	for _, o := range []*node{x, y, z} {
		if got := o.Remote("netX"); len(got) != 0 || len(o.Members()) != 1 {
			t.Fatalf("foreign node merged: remote %+v members %v", got, o.Members())
		}
	}
}

func TestAgentLateJoinerGetsFullState(t *testing.T) {
	a := startNode(t, "A", porttest.Free(t), keyA, nil)
	b := startNode(t, "B", porttest.Free(t), keyA, nil)
	if _, err := b.Join([]string{a.addr}); err != nil {
		t.Fatalf("B.Join: %v", err)
	}
	for i := 1; i <= 20; i++ {
		a.Publish(testEP(i))
	}
	a.Withdraw("netX", "ep20")
	b.Publish(testEP(30))
	waitFor(t, "B has A's endpoints", func() bool { return len(b.Remote("netX")) == 19 })

	// D joins B only, long after the broadcasts are done.
	d := startNode(t, "D", porttest.Free(t), keyA, nil)
	start := time.Now()
	if n, err := d.Join([]string{b.addr}); n != 1 || err != nil {
		t.Fatalf("D.Join: %d, %v", n, err)
	}
	waitFor(t, "D has the full state", func() bool {
		return len(d.Remote("netX")) == 20 && d.rec.has(Added, "ep01") && d.rec.has(Added, "ep19") && d.rec.has(Added, "ep30")
	})
	t.Logf("late joiner had the full state (20 endpoints, 2 owners) %v after Join started", time.Since(start).Round(time.Millisecond))
	if d.rec.has(Added, "ep20") {
		t.Fatal("withdrawn endpoint ep20 reached the late joiner")
	}
	ev, _ := d.rec.last("ep05")
	if ev.Node != "A" || ev.Endpoint != withVTEP(testEP(5)) {
		t.Fatalf("D's event for ep05: %+v", ev)
	}
	// And D's own endpoint reaches both.
	d.Publish(testEP(40))
	waitFor(t, "D's endpoint on A and B", func() bool { return a.rec.has(Added, "ep40") && b.rec.has(Added, "ep40") })
}

func TestAgentNodeFailureWithoutLeave(t *testing.T) {
	// A node that dies without Leave is detected by memberlist probes; its
	// records go after the grace period. NoGracePeriod removes at once.
	fast := func(c *Config) { c.ProbeInterval = 100 * time.Millisecond }
	a := startNode(t, "A", porttest.Free(t), keyA, func(c *Config) { fast(c); c.GracePeriod = NoGracePeriod })
	b := startNode(t, "B", porttest.Free(t), keyA, fast)
	if _, err := b.Join([]string{a.addr}); err != nil {
		t.Fatal(err)
	}
	b.Publish(testEP(3))
	waitFor(t, "A has ep03", func() bool { return a.rec.has(Added, "ep03") })
	// Simulate a crash: shut memberlist down without leaving.
	crashed := time.Now()
	if err := b.close(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A removes ep03 of failed B", func() bool { return a.rec.has(Removed, "ep03") })
	t.Logf("failed node's endpoints removed %v after the crash (probe interval 100ms, no grace)", time.Since(crashed).Round(time.Millisecond))
}

func TestAgentHostUpGraceUntilHostGone(t *testing.T) {
	// B's agent crashes while its host stays in the swarm: A keeps B's
	// endpoints (their data plane still works) far beyond GracePeriod, until
	// it is told that B's host is gone; then they go GracePeriod later.
	fast := func(c *Config) { c.ProbeInterval = 100 * time.Millisecond }
	a := startNode(t, "A", porttest.Free(t), keyA, func(c *Config) { fast(c); c.HostUpGrace = time.Hour })
	b := startNode(t, "B", porttest.Free(t), keyA, fast)
	if _, err := b.Join([]string{a.addr}); err != nil {
		t.Fatal(err)
	}
	b.Publish(testEP(3))
	waitFor(t, "A has ep03", func() bool { return a.rec.has(Added, "ep03") })
	if err := b.close(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A notices B's failure", func() bool { return a.Stats().Members == 1 })
	failed := time.Now()
	// Several grace periods and ticks pass: the endpoint stays.
	deadline := failed.Add(4 * itGrace)
	for time.Now().Before(deadline) {
		if a.rec.has(Removed, "ep03") {
			t.Fatalf("ep03 of B removed %v after B failed, with its host not reported gone", time.Since(failed))
		}
		time.Sleep(itGrace / 4)
	}
	if got := a.Remote("netX"); len(got) != 1 {
		t.Fatalf("A's remote endpoints while B's host is up: %+v", got)
	}
	gone := time.Now()
	if n := a.HostGone("127.0.0.1"); n != 1 {
		t.Fatalf("HostGone matched %d owners, want 1", n)
	}
	waitFor(t, "A removes ep03 after B's host is gone", func() bool { return a.rec.has(Removed, "ep03") })
	took := time.Since(gone)
	if took < itGrace {
		t.Fatalf("ep03 removed %v after HostGone, before the grace period %v", took, itGrace)
	}
	t.Logf("failed agent's endpoint kept %v with its host up, removed %v after its host was reported gone (grace %v)",
		gone.Sub(failed).Round(time.Millisecond), took.Round(time.Millisecond), itGrace)
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{NodeName: "x", Key: []byte("short")},
		{NodeName: "x", BindAddr: "not-an-ip"},
		{NodeName: "x", AdvertiseAddr: "nope"},
		{NodeName: "x", BindPort: 70000},
	} {
		if _, err := New(c, nil); err == nil {
			t.Fatalf("New(%+v) accepted an invalid config", c)
		}
	}
	c := Config{NodeName: "x"}
	if err := applyDefaults(&c); err != nil {
		t.Fatal(err)
	}
	if c.BindPort != 7947 || c.AdvertisePort != 7947 || c.Label != "vxsafe" || c.GracePeriod != 10*time.Second || c.HostUpGrace != 10*time.Minute ||
		c.TombstoneTTL != 10*time.Minute || c.PushPullInterval != 10*time.Second || c.BindAddr != "0.0.0.0" {
		t.Fatalf("defaults: %+v", c)
	}
	c = Config{NodeName: "x", GracePeriod: NoGracePeriod}
	applyDefaults(&c)
	if c.GracePeriod != 0 {
		t.Fatalf("NoGracePeriod became %v", c.GracePeriod)
	}
	// The probe timeout: memberlist's 500ms, at most half a short interval unless set, never above the interval.
	for _, p := range []struct{ interval, timeout, want time.Duration }{
		{0, 0, 500 * time.Millisecond},
		{400 * time.Millisecond, 0, 200 * time.Millisecond},
		{2 * time.Second, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{time.Second, 5 * time.Second, time.Second},
	} {
		c = Config{NodeName: "x", ProbeInterval: p.interval, ProbeTimeout: p.timeout}
		applyDefaults(&c)
		if c.ProbeTimeout != p.want {
			t.Errorf("probe interval %v, timeout %v: timeout became %v, want %v", p.interval, p.timeout, c.ProbeTimeout, p.want)
		}
	}
}

func TestPublishFillsVTEPAndRejectsInvalid(t *testing.T) {
	a := startNode(t, "A", porttest.Free(t), keyA, nil)
	a.Publish(Endpoint{Network: "n", EndpointID: "e", IP: "bogus", MAC: "02:42:0a:00:01:05"})
	if s := a.Stats(); s.LocalEndpoints != 0 {
		t.Fatalf("invalid endpoint published: %+v", s)
	}
	a.Publish(testEP(1))
	st := a.tbl.state(time.Now())
	if r := st.Groups[0].Records; len(r) != 1 || r[0].VTEP != "127.0.0.1" {
		t.Fatalf("VTEP not filled: %+v", r)
	}
}

func TestAgentFastRestartWinsOverOldRecords(t *testing.T) {
	// A crashes and a new process with the same name comes back before B
	// notices (and well within a long grace period): endpoints it republishes
	// stay without churn, the others disappear once its state arrives.
	long := func(c *Config) { c.GracePeriod = 30 * time.Second }
	pa := porttest.Free(t)
	a := startNode(t, "A", pa, keyA, long)
	b := startNode(t, "B", porttest.Free(t), keyA, long)
	if _, err := b.Join([]string{a.addr}); err != nil {
		t.Fatal(err)
	}
	a.Publish(testEP(2))
	a.Publish(testEP(3))
	waitFor(t, "B has A's endpoints", func() bool { return b.rec.has(Added, "ep02") && b.rec.has(Added, "ep03") })

	crashed := time.Now()
	if err := a.close(false); err != nil {
		t.Fatal(err)
	}
	a2 := startNode(t, "A", pa, keyA, long)
	a2.Publish(testEP(2))
	e4 := testEP(4)
	a2.Publish(e4)
	if _, err := a2.Join([]string{b.addr}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B drops ep03 and adds ep04 of the new process", func() bool {
		return b.rec.has(Removed, "ep03") && b.rec.has(Added, "ep04")
	})
	t.Logf("old process's stale endpoint removed %v after the restart (grace 30s)", time.Since(crashed).Round(time.Millisecond))
	if ev, _ := b.rec.last("ep02"); ev.Kind != Added || ev.at.After(crashed) {
		t.Fatalf("republished ep02 churned on B: %+v", ev)
	}
	if got := b.Remote("netX"); len(got) != 2 || got[0] != withVTEP(testEP(2)) || got[1] != withVTEP(e4) {
		t.Fatalf("B.Remote = %+v", got)
	}
}

func TestAgentSyncedAfterFirstStateExchange(t *testing.T) {
	a := startNode(t, "A", porttest.Free(t), keyA, nil)
	b := startNode(t, "B", porttest.Free(t), keyA, nil)
	if a.Synced() || b.Synced() {
		t.Fatalf("synced before any exchange: A %v, B %v", a.Synced(), b.Synced())
	}
	if _, err := b.Join([]string{a.addr}); err != nil {
		t.Fatal(err)
	}
	// The join itself is a push/pull: both sides merge the other's state.
	waitFor(t, "A and B synced", func() bool { return a.Synced() && b.Synced() })
}
