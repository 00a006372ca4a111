package gossip

import (
	"crypto/hpke"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultPort             = 7947 // not 7946, which swarm uses itself
	DefaultBindAddr         = "0.0.0.0"
	DefaultLabel            = "vxsafe"
	DefaultGracePeriod      = 10 * time.Second
	DefaultHostUpGrace      = 10 * time.Minute
	DefaultTombstoneTTL     = 10 * time.Minute
	DefaultPushPullInterval = 10 * time.Second
	DefaultGossipInterval   = 200 * time.Millisecond
	DefaultProbeInterval    = time.Second
	DefaultProbeTimeout     = 500 * time.Millisecond // memberlist's LAN default
	DefaultRejoinInterval   = 30 * time.Second

	leaveTimeout = time.Second
)

// NoGracePeriod as Config.GracePeriod removes the records of a departed node
// immediately (0 selects DefaultGracePeriod).
const NoGracePeriod time.Duration = -1

// Endpoint is a container endpoint hosted by some node.
type Endpoint struct {
	Network    string // docker network ID
	EndpointID string
	IP         string // IPv4 address without prefix, e.g. "10.0.1.5"
	MAC        string // "02:42:0a:00:01:05"
	VTEP       string // owner node's underlay address, e.g. "192.168.77.2"
}

// EventKind tells whether a remote endpoint appeared or disappeared.
type EventKind int

const (
	Added EventKind = iota + 1
	Removed
)

func (k EventKind) String() string {
	switch k {
	case Added:
		return "added"
	case Removed:
		return "removed"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event reports a change of the visible remote endpoints. An update of an
// endpoint's content is reported as Removed (old) followed by Added (new).
type Event struct {
	Kind     EventKind
	Endpoint Endpoint
	Node     string // owner node name
}

// Config configures an Agent. Zero values select the defaults above.
type Config struct {
	NodeName      string // unique per node; default os.Hostname()
	BindAddr      string // default "0.0.0.0"
	BindPort      int    // default 7947
	AdvertiseAddr string // the VTEP address
	AdvertisePort int    // default = BindPort
	Key           []byte // 16, 24 or 32 bytes; nil = unauthenticated (warning)
	Label         string // default "vxsafe"
	// GracePeriod: records of a failed or departed node are kept this long
	// once its host is reported gone (HostGone), or when HostUpGrace is
	// negative (default 10s; NoGracePeriod or any negative value = remove at
	// once).
	GracePeriod time.Duration
	// HostUpGrace: records of a failed or departed node whose host nobody has
	// reported gone are kept this long: its agent is restarting or stopped,
	// but its endpoints' data plane keeps working (default 10 min; negative =
	// GracePeriod; never less than GracePeriod).
	HostUpGrace time.Duration
	// TombstoneTTL: how long removals are remembered (default 10 min).
	TombstoneTTL time.Duration
	// PushPullInterval: full state exchange with one random member (default 10s).
	PushPullInterval time.Duration
	// GossipInterval: how often queued deltas are sent (default 200ms).
	GossipInterval time.Duration
	// ProbeInterval: memberlist failure-detection probe interval (default 1s);
	// a silent node is declared failed after roughly 5 intervals.
	ProbeInterval time.Duration
	// ProbeTimeout: how long a probe waits for its direct ack before asking
	// others to probe indirectly (default min(500ms, ProbeInterval/2); at most
	// ProbeInterval). Raise it where a member's answer can be late without the
	// member being down: a loaded host, a slow link.
	ProbeTimeout time.Duration
	// RejoinInterval: how often seeds given to Join that are not members are
	// contacted again (default 30s; negative disables).
	RejoinInterval time.Duration
	// VTEPCheck: show a record only when its VTEP is the gossip address of the member that owns it, so
	// that a member can speak only for its own address (the plugin advertises its VTEP).
	VTEPCheck bool
	// OnNetworkKeys is called, before the notice is acknowledged, when a key notice of the network's
	// authority changed a network's keys (to keep them across restarts).
	OnNetworkKeys func(network string, keys NetworkKeys, notice KeyNotice)
	// OnKeyRequest is called when member from, at gossip address addr, asks for a network's current
	// keys (it holds those of epoch): see RequestKeys. OnBehind is called when a record of a network
	// with a key authority was signed with a key this node does not hold: this node may have missed a
	// rotation. Both are called from the agent's goroutines and must not block long.
	OnKeyRequest func(network, from, addr string, epoch uint64)
	OnBehind     func(network string)
	Log          *logrus.Entry

	// transport, when set (tests: a simulated partition), wraps the UDP and TCP transport that
	// memberlist would otherwise make itself on BindAddr:BindPort.
	transport func(*memberlist.NetTransport) memberlist.Transport
}

// Stats are counters for metrics.
type Stats struct {
	Members            int    // live memberlist members incl. self
	LocalEndpoints     int    // endpoints published by this node
	RemoteEndpoints    int    // visible remote endpoints
	PendingRecords     int    // remote records held but not visible
	Tombstones         int    // remembered removals (local and remote)
	MessagesSent       uint64 // delta messages sent (direct sends, gossip incl. retransmits)
	MessageBytesSent   uint64 // their bytes, before memberlist's framing, compression and encryption
	MessagesReceived   uint64 // delta messages received
	StateSyncsSent     uint64 // full states sent (join and push/pull)
	StateSyncsReceived uint64 // full states received
	RejectedRecords    uint64 // stale, duplicate, self-owned, malformed or refused records
	RefusedRecords     uint64 // refused for their signature, their VTEP or as replays (part of RejectedRecords)
	EventsDelivered    uint64 // onChange calls
}

// Agent is one node's gossip control plane.
type Agent struct {
	cfg      Config
	log      *logrus.Entry
	tbl      *table
	ml       atomic.Pointer[memberlist.Memberlist]
	queue    *memberlist.TransmitLimitedQueue
	disp     *dispatcher
	ownAddrs map[string]bool

	opMu sync.Mutex // serializes table operation + event enqueue

	noDirect bool // tests: measure the gossip path alone

	seedMu sync.Mutex
	seeds  []string

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closed    atomic.Bool

	sent, sentBytes, received, syncsSent, syncsReceived atomic.Uint64
	// pulls: outstanding pull requests (digest.go); pullsSent: requests sent.
	pulls     atomic.Int32
	pullsSent atomic.Uint64

	refusalMu   sync.Mutex
	refusalLog  map[string]refusalWindow // owner+network+reason -> lines logged in the current window
	refusalSeen map[string]bool          // records whose refusal was logged

	boot  hpke.PrivateKey // this process's boot key: rotated network keys are sealed to it
	ackMu sync.Mutex
	acks  []*ackWait
}

// New validates cfg, starts memberlist on the configured address and returns
// the Agent. onChange (may be nil) is called for remote endpoints only, from a
// single goroutine, never while the agent holds a lock.
func New(cfg Config, onChange func(Event)) (*Agent, error) {
	if err := applyDefaults(&cfg); err != nil {
		return nil, err
	}
	lg := cfg.Log
	if lg == nil {
		lg = logrus.NewEntry(logrus.StandardLogger())
	}
	lg = lg.WithFields(logrus.Fields{"component": "gossip", "self": cfg.NodeName})

	inc := uint64(time.Now().UnixNano())
	a := &Agent{
		cfg:        cfg,
		log:        lg,
		tbl:        newTable(cfg.NodeName, inc, cfg.GracePeriod, cfg.HostUpGrace, cfg.TombstoneTTL),
		refusalLog: map[string]refusalWindow{}, refusalSeen: map[string]bool{},
		disp: newDispatcher(onChange),
		stop: make(chan struct{}),
	}
	a.tbl.vtepCheck = cfg.VTEPCheck
	boot, err := bootKEM.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("gossip node %s: boot key: %w", cfg.NodeName, err)
	}
	a.boot = boot
	a.tbl.pub = boot.PublicKey().Bytes()
	a.queue = &memberlist.TransmitLimitedQueue{
		NumNodes: func() int {
			if ml := a.ml.Load(); ml != nil {
				return ml.NumMembers()
			}
			return 1
		},
		RetransmitMult: 4,
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.Label = cfg.Label
	mc.PushPullInterval = cfg.PushPullInterval
	mc.GossipInterval = cfg.GossipInterval
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.Delegate = (*delegate)(a)
	mc.Events = (*eventDelegate)(a)
	mc.Logger = log.New(mlLogWriter{lg}, "", 0)
	mc.LogOutput = nil
	if len(cfg.Key) > 0 {
		mc.SecretKey = slices.Clone(cfg.Key)
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	} else {
		lg.Warn("gossip runs without a gossip key: any host that reaches the gossip port can join the gossip cluster " +
			"(records of keyed networks are still signed and checked; set GOSSIP_KEY to keep such hosts out)")
	}

	a.ownAddrs = map[string]bool{}
	if cfg.AdvertiseAddr != "" {
		a.ownAddrs[net.JoinHostPort(cfg.AdvertiseAddr, strconv.Itoa(cfg.AdvertisePort))] = true
	}
	if ip := net.ParseIP(cfg.BindAddr); ip != nil && !ip.IsUnspecified() {
		a.ownAddrs[net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort))] = true
	}

	if cfg.transport != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{cfg.BindAddr},
			BindPort: cfg.BindPort, Logger: mc.Logger})
		if err != nil {
			return nil, fmt.Errorf("start gossip node %s on %s:%d: %w", cfg.NodeName, cfg.BindAddr, cfg.BindPort, err)
		}
		mc.Transport = cfg.transport(nt)
	}
	go a.disp.run(a.log)
	ml, err := memberlist.Create(mc)
	if err != nil {
		a.disp.close()
		return nil, fmt.Errorf("start gossip node %s on %s:%d: %w", cfg.NodeName, cfg.BindAddr, cfg.BindPort, err)
	}
	a.ml.Store(ml)
	a.ownAddrs[ml.LocalNode().Address()] = true

	a.wg.Add(1)
	go a.tickLoop()
	if cfg.RejoinInterval > 0 {
		go a.rejoinLoop()
	}
	lg.WithFields(logrus.Fields{"addr": ml.LocalNode().Address(), "encrypted": len(cfg.Key) > 0, "label": cfg.Label,
		"probe_interval": cfg.ProbeInterval, "probe_timeout": cfg.ProbeTimeout}).
		Info("gossip started")
	return a, nil
}

func applyDefaults(cfg *Config) error {
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fmt.Errorf("gossip config: node name empty and hostname unavailable: %w", err)
		}
		cfg.NodeName = h
	}
	if len(cfg.NodeName) > maxFieldLen {
		return fmt.Errorf("gossip config: node name %q too long", cfg.NodeName)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = DefaultBindAddr
	}
	if net.ParseIP(cfg.BindAddr) == nil {
		return fmt.Errorf("gossip config: bind address %q is not an IP address", cfg.BindAddr)
	}
	if cfg.AdvertiseAddr != "" && net.ParseIP(cfg.AdvertiseAddr) == nil {
		return fmt.Errorf("gossip config: advertise address %q is not an IP address", cfg.AdvertiseAddr)
	}
	if cfg.BindPort == 0 {
		cfg.BindPort = DefaultPort
	}
	if cfg.AdvertisePort == 0 {
		cfg.AdvertisePort = cfg.BindPort
	}
	if cfg.BindPort < 0 || cfg.BindPort > 65535 || cfg.AdvertisePort < 0 || cfg.AdvertisePort > 65535 {
		return fmt.Errorf("gossip config: port %d/%d out of range", cfg.BindPort, cfg.AdvertisePort)
	}
	switch len(cfg.Key) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("gossip config: key must be 16, 24 or 32 bytes, got %d", len(cfg.Key))
	}
	if cfg.Label == "" {
		cfg.Label = DefaultLabel
	}
	if len(cfg.Label) > memberlist.LabelMaxSize {
		return fmt.Errorf("gossip config: label %q longer than %d bytes", cfg.Label, memberlist.LabelMaxSize)
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = DefaultGracePeriod
	} else if cfg.GracePeriod < 0 {
		cfg.GracePeriod = 0
	}
	if cfg.HostUpGrace == 0 {
		cfg.HostUpGrace = DefaultHostUpGrace
	}
	cfg.HostUpGrace = max(cfg.HostUpGrace, cfg.GracePeriod)
	if cfg.TombstoneTTL <= 0 {
		cfg.TombstoneTTL = DefaultTombstoneTTL
	}
	if cfg.PushPullInterval <= 0 {
		cfg.PushPullInterval = DefaultPushPullInterval
	}
	if cfg.GossipInterval <= 0 {
		cfg.GossipInterval = DefaultGossipInterval
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = min(DefaultProbeTimeout, cfg.ProbeInterval/2)
	}
	cfg.ProbeTimeout = min(cfg.ProbeTimeout, cfg.ProbeInterval)
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = DefaultRejoinInterval
	}
	return nil
}

// apply runs a table operation and queues its events in order.
func (a *Agent) apply(op func() []Event) {
	a.opMu.Lock()
	evs := op()
	a.disp.push(evs)
	a.opMu.Unlock()
	a.logRefusals()
	for _, ev := range evs {
		a.log.WithFields(logrus.Fields{
			"network": ev.Endpoint.Network, "endpoint": ev.Endpoint.EndpointID, "node": ev.Node,
			"ip": ev.Endpoint.IP, "mac": ev.Endpoint.MAC, "vtep": ev.Endpoint.VTEP,
		}).Debugf("remote endpoint %s", ev.Kind)
	}
}

// refusalLogEvery and refusalLogBurst bound the refusal log lines: a record that arrives again (relays,
// retransmissions, full states) is logged once, and at most refusalLogBurst records per owner, network
// and reason in each refusalLogEvery.
const (
	refusalLogEvery = time.Minute
	refusalLogBurst = 8
)

type refusalWindow struct {
	start time.Time
	lines int
}

// logRefusals logs the records the table refused since the last call.
func (a *Agent) logRefusals() {
	refs := a.tbl.takeRefusals()
	if len(refs) == 0 {
		return
	}
	now := time.Now()
	a.refusalMu.Lock()
	defer a.refusalMu.Unlock()
	for _, r := range refs {
		if r.Reason == refuseUnknownKey && a.cfg.OnBehind != nil {
			a.cfg.OnBehind(r.Network)
		}
		k := r.Owner + "\x00" + r.Network + "\x00" + r.Reason
		rec := fmt.Sprintf("%s\x00%s\x00%s\x00%d\x00%d", k, r.Endpoint, r.KeyID, r.Inc, r.Seq)
		if a.refusalSeen[rec] {
			continue
		}
		if len(a.refusalSeen) > 4096 {
			clear(a.refusalSeen)
		}
		a.refusalSeen[rec] = true
		w := a.refusalLog[k]
		if now.Sub(w.start) >= refusalLogEvery {
			w = refusalWindow{start: now}
		}
		if w.lines >= refusalLogBurst {
			continue
		}
		w.lines++
		if len(a.refusalLog) > 4096 {
			clear(a.refusalLog)
		}
		a.refusalLog[k] = w
		a.log.WithFields(logrus.Fields{"owner": r.Owner, "network": r.Network, "endpoint": r.Endpoint,
			"ip": r.IP, "mac": r.MAC, "vtep": r.VTEP, "key": r.KeyID}).
			Warn("refusing gossip record: " + r.Reason + " (all are counted in vxsafe_gossip_refused_records_total; the log shows each record once, and at most 8 a minute per owner, network and reason)")
	}
}

// SetNetworkKeys declares a network of this node with its keys (see NetworkKeys): records of it are
// signed with the primary key and accepted only when a held key signs them. Records held for it that
// the keys do not sign are dropped. When the primary key changed, this node's records of the network
// are signed again and sent. A network that is never declared has its records accepted unchecked.
func (a *Agent) SetNetworkKeys(network string, keys NetworkKeys) error {
	kr, err := newKeyring(keys)
	if err != nil {
		return fmt.Errorf("keys of network %s: %w", network, err)
	}
	var resigned wireGroup
	a.apply(func() []Event {
		var evs []Event
		evs, resigned = a.tbl.setKeys(network, kr, time.Now())
		return evs
	})
	if len(resigned.Records) > 0 {
		a.broadcast(resigned)
		a.sendDirect(resigned)
	}
	return nil
}

// ForgetNetwork undeclares a network that was removed from this node.
func (a *Agent) ForgetNetwork(network string) { a.tbl.forgetKeys(network) }

// Join contacts the given seeds ("ip", "ip:port" or "host:port"; the default
// port is the own BindPort) and returns how many were reached. The own
// address is skipped. Seeds are remembered and retried every RejoinInterval
// while they are not members.
func (a *Agent) Join(addrs []string) (int, error) {
	ml := a.ml.Load()
	if ml == nil || a.closed.Load() {
		return 0, errors.New("gossip agent is closed")
	}
	var targets []string
	for _, s := range addrs {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		hp := a.withPort(s)
		if a.ownAddrs[hp] {
			continue
		}
		targets = append(targets, hp)
	}
	a.rememberSeeds(targets)
	if len(targets) == 0 {
		return 0, nil
	}
	n, err := ml.Join(targets)
	if err != nil {
		a.log.WithError(err).WithField("seeds", targets).Warn("gossip join failed")
		return n, fmt.Errorf("join gossip seeds %v: %w", targets, err)
	}
	a.log.WithFields(logrus.Fields{"seeds": targets, "reached": n}).Info("gossip joined")
	return n, nil
}

func (a *Agent) withPort(s string) string {
	if host, port, err := net.SplitHostPort(s); err == nil {
		return net.JoinHostPort(host, port)
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), strconv.Itoa(a.cfg.BindPort))
}

func (a *Agent) rememberSeeds(targets []string) {
	a.seedMu.Lock()
	defer a.seedMu.Unlock()
	for _, t := range targets {
		if !slices.Contains(a.seeds, t) {
			a.seeds = append(a.seeds, t)
		}
	}
}

// Publish announces (or updates) an endpoint hosted by this node. An empty
// ep.VTEP is filled with the advertise address. Invalid endpoints are logged
// and dropped.
func (a *Agent) Publish(ep Endpoint) {
	if ep.VTEP == "" {
		ep.VTEP = a.vtep()
	}
	lg := a.log.WithFields(logrus.Fields{"network": ep.Network, "endpoint": ep.EndpointID})
	ep, err := normalizeEndpoint(ep)
	if err != nil {
		lg.WithError(err).Error("not publishing invalid endpoint")
		return
	}
	d, changed := a.tbl.localPublish(ep, time.Now())
	if !changed {
		return
	}
	a.broadcast(d)
	a.sendDirect(d)
	lg.WithFields(logrus.Fields{"ip": ep.IP, "mac": ep.MAC, "vtep": ep.VTEP}).Debug("endpoint published")
}

// Withdraw removes an endpoint hosted by this node (tombstone + broadcast).
func (a *Agent) Withdraw(network, endpointID string) {
	d, changed := a.tbl.localWithdraw(network, endpointID, time.Now())
	if !changed {
		return
	}
	a.broadcast(d)
	a.sendDirect(d)
	a.log.WithFields(logrus.Fields{"network": network, "endpoint": endpointID}).Debug("endpoint withdrawn")
}

func (a *Agent) vtep() string {
	if a.cfg.AdvertiseAddr != "" {
		return a.cfg.AdvertiseAddr
	}
	if ml := a.ml.Load(); ml != nil {
		return ml.LocalNode().Addr.String()
	}
	return ""
}

// broadcast queues one message per record so that a newer version of a
// record replaces an older one still waiting in the queue.
func (a *Agent) broadcast(g wireGroup) {
	for _, r := range g.Records {
		msg, err := encodeMsg(msgDelta, wireGroup{Owner: g.Owner, Records: []wireRecord{r}})
		if err != nil {
			a.log.WithError(err).Error("encode delta")
			continue
		}
		a.queue.QueueBroadcast(&broadcast{name: g.Owner + "\x00" + r.Network + "\x00" + r.Endpoint, msg: msg})
	}
}

// sendDirect sends an own delta at once to every live member by UDP (encrypted and labelled like all
// memberlist packets), so that peers learn a new endpoint in one network round trip instead of at the
// next gossip tick. It is marked direct: its receivers do not relay it, since every member got it.
// Lost packets are covered by the queued broadcast (whose receivers relay it) and push/pull.
func (a *Agent) sendDirect(g wireGroup) {
	ml := a.ml.Load()
	if ml == nil || a.closed.Load() || a.noDirect {
		return
	}
	g.Direct = true
	msg, err := encodeMsg(msgDelta, g)
	if err != nil {
		a.log.WithError(err).Error("encode delta")
		return
	}
	for _, n := range ml.Members() {
		if n.Name == a.cfg.NodeName {
			continue
		}
		if err := ml.SendBestEffort(n, msg); err != nil {
			a.log.WithError(err).WithField("node", n.Name).Debug("direct delta send failed")
			continue
		}
		a.sent.Add(1)
		a.sentBytes.Add(uint64(len(msg)))
	}
}

// Remote returns the live remote endpoints of a network.
func (a *Agent) Remote(network string) []Endpoint {
	if network == "" {
		return nil
	}
	return a.tbl.remote(network)
}

// Members returns the "ip:port" addresses of the live members, self included.
func (a *Agent) Members() []string {
	ml := a.ml.Load()
	if ml == nil {
		return nil
	}
	var out []string
	for _, n := range ml.Members() {
		out = append(out, n.Address())
	}
	slices.Sort(out)
	return out
}

// Stats returns counters for metrics.
func (a *Agent) Stats() Stats {
	ts := a.tbl.stats()
	s := Stats{
		LocalEndpoints:     ts.LocalEndpoints,
		RemoteEndpoints:    ts.RemoteEndpoints,
		PendingRecords:     ts.PendingRecords,
		Tombstones:         ts.Tombstones,
		RejectedRecords:    ts.Rejected,
		RefusedRecords:     ts.Refused,
		MessagesSent:       a.sent.Load(),
		MessageBytesSent:   a.sentBytes.Load(),
		MessagesReceived:   a.received.Load(),
		StateSyncsSent:     a.syncsSent.Load(),
		StateSyncsReceived: a.syncsReceived.Load(),
		EventsDelivered:    a.disp.delivered.Load(),
	}
	if ml := a.ml.Load(); ml != nil && !a.closed.Load() {
		s.Members = ml.NumMembers()
	}
	return s
}

// Synced reports whether the agent has merged another member's full state since it started: only then
// is its view of remote endpoints complete enough to remove what it does not list.
func (a *Agent) Synced() bool { return a.syncsReceived.Load() > 0 }

// HostGone tells the agent that the host with address addr (a node's gossip
// or VTEP address) has left the cluster it belongs to, e.g. libnetwork's
// DiscoverDelete: the records of its agent are removed GracePeriod after the
// agent is down, instead of HostUpGrace. It returns how many owners matched.
func (a *Agent) HostGone(addr string) int {
	var n int
	a.apply(func() []Event {
		m, evs := a.tbl.hostGone(addr, time.Now())
		n = m
		return evs
	})
	return n
}

// HostBack withdraws a HostGone report for addr (the host is back).
func (a *Agent) HostBack(addr string) {
	a.apply(func() []Event { return a.tbl.hostBack(addr, time.Now()) })
}

// Close leaves the cluster (waiting at most ~1s for the leave message to go
// out) and shuts memberlist down. Events not yet delivered are dropped.
func (a *Agent) Close() error { return a.close(true) }

// close stops the agent; without leave it disappears like a crashed node.
func (a *Agent) close(leave bool) error {
	var err error
	a.closeOnce.Do(func() {
		a.closed.Store(true)
		close(a.stop)
		ml := a.ml.Load()
		if leave {
			if lerr := ml.Leave(leaveTimeout); lerr != nil {
				a.log.WithError(lerr).Debug("gossip leave")
			}
		}
		if serr := ml.Shutdown(); serr != nil {
			err = fmt.Errorf("shut down gossip node %s: %w", a.cfg.NodeName, serr)
		}
		a.wg.Wait()
		a.disp.close()
		a.log.Info("gossip stopped")
	})
	return err
}

func (a *Agent) tickLoop() {
	defer a.wg.Done()
	iv := time.Second
	if g := a.cfg.GracePeriod / 4; g > 0 && g < iv {
		iv = g
	}
	if tt := a.cfg.TombstoneTTL / 4; tt < iv {
		iv = tt
	}
	iv = max(iv, 10*time.Millisecond)
	tk := time.NewTicker(iv)
	defer tk.Stop()
	for {
		select {
		case <-a.stop:
			return
		case now := <-tk.C:
			a.apply(func() []Event { return a.tbl.tick(now) })
		}
	}
}

// rejoinLoop contacts remembered seeds that are not members. It is not waited
// for by Close (a join to an unreachable seed can take the TCP timeout).
func (a *Agent) rejoinLoop() {
	tk := time.NewTicker(a.cfg.RejoinInterval)
	defer tk.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-tk.C:
		}
		members := map[string]bool{}
		for _, m := range a.Members() {
			members[m] = true
		}
		a.seedMu.Lock()
		var missing []string
		for _, s := range a.seeds {
			if !members[s] {
				missing = append(missing, s)
			}
		}
		a.seedMu.Unlock()
		for _, s := range missing {
			if a.closed.Load() {
				return
			}
			if _, err := a.ml.Load().Join([]string{s}); err != nil {
				a.log.WithError(err).WithField("seed", s).Debug("gossip rejoin failed")
			} else {
				a.log.WithField("seed", s).Info("gossip rejoined seed")
			}
		}
	}
}

// delegate implements memberlist.Delegate for an Agent.
type delegate Agent

func (d *delegate) NodeMeta(limit int) []byte {
	return encodeMeta(d.tbl.inc)
}

func (d *delegate) NotifyMsg(buf []byte) {
	a := (*Agent)(d)
	a.received.Add(1)
	typ, body, err := decodeMsg(buf)
	switch {
	case err == nil && typ == msgRekey:
		go a.handleRekey(body) // it persists keys and answers: not on memberlist's receive path
		return
	case err == nil && typ == msgAck:
		a.handleAck(body)
		return
	case err == nil && typ == msgKeyRequest:
		go a.handleKeyRequest(body)
		return
	case err == nil && typ == msgPull:
		go a.handlePull(body) // it answers over a reliable send: not on memberlist's receive path
		return
	case err == nil && typ == msgGroups:
		a.handleGroups(body)
		return
	case err == nil && typ != msgDelta:
		err = fmt.Errorf("unexpected gossip message type %d", typ)
	}
	var g wireGroup
	if err == nil {
		g, err = decodeDelta(body)
	}
	if err != nil {
		a.log.WithError(err).Debug("dropping gossip message")
		return
	}
	var accepted wireGroup
	a.apply(func() []Event {
		var evs []Event
		evs, accepted = a.tbl.applyDelta(g, time.Now())
		return evs
	})
	// Relay what was new to us: epidemic spread beyond the origin's fan-out. A direct delta went to every
	// member: relaying it too made every member transmit every change RetransmitMult·log(n) times.
	if len(accepted.Records) > 0 && !g.Direct && !a.closed.Load() {
		a.broadcast(accepted)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	msgs := d.queue.GetBroadcasts(overhead, limit)
	d.sent.Add(uint64(len(msgs)))
	for _, m := range msgs {
		d.sentBytes.Add(uint64(len(m)))
	}
	return msgs
}

func (d *delegate) LocalState(join bool) []byte {
	a := (*Agent)(d)
	buf, err := encodeMsg(msgState, a.tbl.state(time.Now()))
	if err != nil {
		a.log.WithError(err).Error("encode local state")
		return nil
	}
	a.syncsSent.Add(1)
	return buf
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	a := (*Agent)(d)
	typ, body, err := decodeMsg(buf)
	if err == nil && typ != msgState {
		err = fmt.Errorf("unexpected gossip state type %d", typ)
	}
	var s wireState
	if err == nil {
		s, err = decodeState(body)
	}
	if err != nil {
		a.log.WithError(err).Debug("dropping gossip state")
		return
	}
	a.apply(func() []Event { return a.tbl.applyState(s, time.Now()) })
	a.syncsReceived.Add(1)
	if owners := a.tbl.mismatched(s); len(owners) > 0 && !a.closed.Load() {
		go a.pull(s.From, owners)
	}
}

// eventDelegate implements memberlist.EventDelegate for an Agent. memberlist
// calls it with its own locks held: it must not call back into memberlist.
type eventDelegate Agent

func (e *eventDelegate) NotifyJoin(n *memberlist.Node) { e.up(n, "joined") }

func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { e.up(n, "updated") }

func (e *eventDelegate) up(n *memberlist.Node, what string) {
	a := (*Agent)(e)
	if n.Name == a.cfg.NodeName {
		return
	}
	lg := a.log.WithFields(logrus.Fields{"node": n.Name, "addr": n.Address()})
	inc, err := decodeMeta(n.Meta)
	if err != nil {
		lg.WithError(err).Warn("ignoring member without vxsafe metadata")
		return
	}
	lg.WithField("incarnation", inc).Info("gossip member " + what)
	a.apply(func() []Event { return a.tbl.nodeUp(n.Name, n.Addr.String(), inc, time.Now()) })
}

func (e *eventDelegate) NotifyLeave(n *memberlist.Node) {
	a := (*Agent)(e)
	if n.Name == a.cfg.NodeName {
		return
	}
	a.log.WithFields(logrus.Fields{"node": n.Name, "addr": n.Address(), "grace": a.cfg.HostUpGrace, "grace_host_gone": a.cfg.GracePeriod}).
		Info("gossip member left or failed; its endpoints stay until its host is reported gone")
	a.apply(func() []Event { return a.tbl.nodeDown(n.Name, time.Now()) })
}

// broadcast is a queued delta; a newer delta for the same record replaces it.
type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcast)
	return ok && ob.name == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// mlLogWriter routes memberlist's log lines to logrus at debug level.
type mlLogWriter struct{ log *logrus.Entry }

func (w mlLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := ""
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			level, line = line[1:i], strings.TrimSpace(line[i+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.log.WithField("ml_level", level).Debug("memberlist: " + line)
	return len(p), nil
}

// dispatcher delivers events to onChange from one goroutine.
type dispatcher struct {
	fn        func(Event)
	mu        sync.Mutex
	q         []Event
	wake      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once
	delivered atomic.Uint64
}

func newDispatcher(fn func(Event)) *dispatcher {
	return &dispatcher{fn: fn, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

func (d *dispatcher) push(evs []Event) {
	if len(evs) == 0 || d.fn == nil {
		return
	}
	d.mu.Lock()
	d.q = append(d.q, evs...)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) run(lg *logrus.Entry) {
	defer close(d.done)
	for {
		select {
		case <-d.stop:
			return
		case <-d.wake:
		}
		for {
			d.mu.Lock()
			batch := d.q
			d.q = nil
			d.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, ev := range batch {
				select {
				case <-d.stop:
					return
				default:
				}
				d.call(ev, lg)
			}
		}
	}
}

func (d *dispatcher) call(ev Event, lg *logrus.Entry) {
	defer func() {
		if r := recover(); r != nil {
			lg.WithFields(logrus.Fields{"network": ev.Endpoint.Network, "endpoint": ev.Endpoint.EndpointID, "node": ev.Node}).
				Errorf("gossip onChange panicked: %v", r)
		}
	}()
	d.fn(ev)
	d.delivered.Add(1)
}

func (d *dispatcher) close() {
	d.once.Do(func() { close(d.stop) })
	<-d.done
}
