// Package vip gives swarm services on vxsafe networks their virtual IPs.
//
// Docker makes a network's load-balancer endpoint only for its own overlay driver, so on any plugin
// network a service in the default endpoint mode (VIP) has a name that resolves to an address nothing
// answers. The engine still knows every service's VIP and tasks, on every node attached to the network.
// A Balancer reads them from the engine's API (asynchronously: an API call made inside a driver request
// can deadlock dockerd) and has the data plane program, in the network namespace of every local
// container on the network, a table that sends each connection to a VIP to one of its tasks at random.
// The rules live in the kernel: they keep working while the plugin is down, and a restarted plugin
// re-programs them from a fresh read.
package vip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
)

// Kernel is what the Balancer needs of the data plane (*dataplane.Manager).
type Kernel interface {
	// SandboxPath opens a container's sandbox key once it is a network namespace.
	SandboxPath(key string) (path string, ok bool)
	ProgramServices(nsPath, netID string, svcs []dataplane.Service) error
	RemoveServices(nsPath, netID string) error
	// ForgetBackends ends the UDP flows from vip to tasks that are no backend any more.
	ForgetBackends(nsPath string, vip net.IP, gone []net.IP) (int, error)
	// ResolveIn asks a DNS server from inside a namespace (the engine's embedded one, for tasks.<service>).
	ResolveIn(nsPath, name, server string, timeout time.Duration) ([]net.IP, error)
}

// Engine is where the services of a network are read (*engine.Client).
type Engine interface {
	NetworkServices(netID string) ([]engine.Service, error)
}

// Config configures a Balancer.
type Config struct {
	Kernel Kernel
	// Engine is nil when the plugin has no engine API: VIPs are then not served (dnsrr still is).
	Engine Engine
	// EngineDesc names the engine's API in logs, e.g. its socket.
	EngineDesc string
	// Reachable returns the addresses of the network's endpoints this node reaches now (its own joined
	// ones and the remote ones the control plane knows), or nil when it cannot tell yet (a control plane
	// that has not synced since the plugin started): a task the engine lists is a backend only if
	// reachable, so a task that is gone from the data plane stops taking connections before the engine's
	// own view catches up. Nil Reachable keeps every task.
	Reachable func(netID string) map[string]bool
	// Refresh is how often the engine is read; 0: 250ms. A task the engine adds or removes is in or out of
	// every local table within about this long.
	Refresh time.Duration
	Log     *logrus.Entry
}

// pendingFast is how long after its Join a sandbox whose key is not yet a namespace is looked at every
// pendingTick (a container's namespace is bound at its key when it starts, right after the Join); later
// only at every slowTick.
const (
	pendingFast = 10 * time.Second
	pendingTick = 5 * time.Millisecond
	slowTick    = time.Second
)

// sandbox is a local endpoint's container namespace on a network.
type sandbox struct {
	netID, epID, key string
	joined           time.Time
	path             string // where its namespace opens; "" until its key is one
	programmed       string // fingerprint of the table in it; "" when there is none
	table            []dataplane.Service
	failed           string // the last programming error, logged once
}

// Balancer keeps the VIP tables of the local containers of vxsafe networks.
type Balancer struct {
	cfg Config
	log *logrus.Entry

	mu       sync.Mutex
	sandbox  map[string]*sandbox // by endpoint ID
	left     []*sandbox          // left, their table still to remove
	services map[string][]engine.Service
	read     map[string]bool   // networks read from the engine at least once since the start
	nsOf     map[string]string // a namespace path of a local sandbox per network, to ask the engine's DNS in
	apiDown  bool

	kick chan struct{} // the programming loop has work
}

// New makes a Balancer; Run starts it.
func New(cfg Config) *Balancer {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 250 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	return &Balancer{cfg: cfg, log: cfg.Log.WithField("part", "vip"), sandbox: map[string]*sandbox{},
		services: map[string][]engine.Service{}, read: map[string]bool{}, nsOf: map[string]string{},
		kick: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Joined records that endpoint epID of network netID joined the sandbox at key. It never blocks on the
// kernel or the engine (the driver calls it inside Join).
func (b *Balancer) Joined(netID, epID, key string) {
	if key == "" {
		return
	}
	b.mu.Lock()
	if old, ok := b.sandbox[epID]; ok && old.key != key {
		b.left = append(b.left, old)
	}
	if old, ok := b.sandbox[epID]; !ok || old.key != key {
		b.sandbox[epID] = &sandbox{netID: netID, epID: epID, key: key, joined: time.Now()}
	}
	b.mu.Unlock()
	signal(b.kick)
}

// Left records that endpoint epID left its sandbox; its table there is removed. It never blocks.
func (b *Balancer) Left(epID string) {
	b.mu.Lock()
	if sb, ok := b.sandbox[epID]; ok {
		delete(b.sandbox, epID)
		b.left = append(b.left, sb)
	}
	b.mu.Unlock()
	signal(b.kick)
}

// Changed tells the Balancer that the reachable endpoints of network netID changed (the tables are
// recomputed from what is known; the engine is not read).
func (b *Balancer) Changed(netID string) { signal(b.kick) }

// Services returns what the tables of network netID hold now: every VIP with its backends.
func (b *Balancer) Services(netID string) []dataplane.Service {
	return b.desired(netID)
}

// Run reads the engine and programs the tables until ctx ends.
func (b *Balancer) Run(ctx context.Context) {
	if b.cfg.Engine == nil {
		b.log.Warn("no Docker API socket (the docker-socket mount): swarm service VIPs on vxsafe networks are not served; " +
			"services with --endpoint-mode dnsrr work as usual")
	} else {
		go b.readLoop(ctx)
	}
	t := time.NewTimer(slowTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		case <-t.C:
		}
		pending := b.sync()
		next := slowTick
		if pending {
			next = pendingTick
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// readLoop reads the services of every network with settled local sandboxes every Refresh.
func (b *Balancer) readLoop(ctx context.Context) {
	t := time.NewTicker(b.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.readEngine()
	}
}

// readEngine reads the services of the networks with local sandboxes. When the engine cannot be read,
// the last known services stay (one warning per outage).
func (b *Balancer) readEngine() {
	b.mu.Lock()
	nets := map[string]bool{}
	now := time.Now()
	for _, sb := range b.sandbox {
		// Not in a network's first moments on this node: dockerd is still attaching it (a verbose
		// network inspect then raced the attachment of the next container on 20.10).
		if now.Sub(sb.joined) >= settle {
			nets[sb.netID] = true
		}
	}
	for id := range b.services {
		if !nets[id] {
			delete(b.services, id)
			delete(b.read, id)
		}
	}
	b.mu.Unlock()
	changed := false
	for id := range nets {
		svcs, err := b.cfg.Engine.NetworkServices(id)
		if err != nil {
			if isNotFound(err) {
				svcs = nil // the engine no longer has the network: no services on it
			} else {
				b.mu.Lock()
				down := b.apiDown
				b.apiDown = true
				b.mu.Unlock()
				if !down {
					b.log.WithError(err).Warnf("cannot read swarm services from the Docker API at %s: service VIPs keep their last known tasks "+
						"until it answers (services with --endpoint-mode dnsrr are not affected)", b.cfg.EngineDesc)
				}
				continue
			}
		}
		svcs = b.enabledOnly(id, svcs)
		b.mu.Lock()
		if b.apiDown {
			b.apiDown = false
			b.log.Infof("the Docker API at %s answers again: service VIPs follow their tasks", b.cfg.EngineDesc)
		}
		if !b.read[id] || fingerprint(toDataplane(b.services[id], nil)) != fingerprint(toDataplane(svcs, nil)) {
			changed = true
		}
		b.services[id], b.read[id] = svcs, true
		b.mu.Unlock()
	}
	if changed {
		signal(b.kick)
	}
}

// enabledOnly drops from svcs the tasks that the engine has withdrawn from their service but not yet
// removed. Swarm withdraws a task it is about to stop (DisableService: its name leaves the embedded DNS)
// 2 s before it signals the container, so that no new connection reaches a task that is shutting down;
// but the engine's verbose network view lists the task until its endpoint is gone (libnetwork's
// Network.Services ignores the record's ServiceDisabled). The embedded DNS, asked from a local container
// of the network for tasks.<service>, answers only the tasks still in service. When it cannot be asked,
// or for a service too large for one answer, every listed task stays.
func (b *Balancer) enabledOnly(netID string, svcs []engine.Service) []engine.Service {
	b.mu.Lock()
	nsPath := b.nsOf[netID]
	b.mu.Unlock()
	if nsPath == "" {
		return svcs
	}
	out := make([]engine.Service, 0, len(svcs))
	for _, s := range svcs {
		if s.VIP == nil || len(s.Backends) == 0 {
			out = append(out, s)
			continue
		}
		ips, err := b.cfg.Kernel.ResolveIn(nsPath, "tasks."+s.Name, dataplane.EmbeddedDNS, dnsTimeout)
		if err != nil {
			b.log.WithError(err).WithField("network", netID).Debug("asking the embedded DNS which tasks are in service")
			out = append(out, s)
			continue
		}
		in := map[string]bool{}
		for _, ip := range ips {
			in[ip.String()] = true
		}
		kept := s
		kept.Backends = nil
		for _, ip := range s.Backends {
			if in[ip.String()] {
				kept.Backends = append(kept.Backends, ip)
			}
		}
		out = append(out, kept)
	}
	return out
}

// hasVIPs reports whether network netID is known to have a service with a VIP.
func (b *Balancer) hasVIPs(netID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.services[netID] {
		if s.VIP != nil {
			return true
		}
	}
	return false
}

// settle is how long after its first local Join a network is first read.
const settle = 300 * time.Millisecond

// dnsTimeout bounds one question to the embedded DNS.
const dnsTimeout = 300 * time.Millisecond

func isNotFound(err error) bool { return err != nil && strings.Contains(err.Error(), "404 Not Found") }

// desired is the table of network netID: its VIPs and their reachable tasks.
func (b *Balancer) desired(netID string) []dataplane.Service {
	b.mu.Lock()
	svcs := b.services[netID]
	b.mu.Unlock()
	var reach map[string]bool
	if b.cfg.Reachable != nil && len(svcs) > 0 {
		reach = b.cfg.Reachable(netID)
	}
	return toDataplane(svcs, reach)
}

// toDataplane keeps the services with a VIP, and of their tasks those in reach (all when reach is nil).
func toDataplane(svcs []engine.Service, reach map[string]bool) []dataplane.Service {
	var out []dataplane.Service
	for _, s := range svcs {
		if s.VIP == nil {
			continue // dnsrr
		}
		d := dataplane.Service{VIP: s.VIP}
		for _, ip := range s.Backends {
			if reach == nil || reach[ip.String()] {
				d.Backends = append(d.Backends, ip)
			}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].VIP, out[j].VIP) < 0 })
	return out
}

// fingerprint identifies a table's content.
func fingerprint(svcs []dataplane.Service) string {
	var sb strings.Builder
	for _, s := range svcs {
		fmt.Fprintf(&sb, "%s=%v;", s.VIP, s.Backends)
	}
	return sb.String()
}

// sync removes the tables of sandboxes that left and brings every other sandbox's table to what its
// network's services are. It reports whether a recently joined sandbox is still waiting for its
// namespace.
func (b *Balancer) sync() (pending bool) {
	b.mu.Lock()
	left := b.left
	b.left = nil
	var live []*sandbox
	liveKeys := map[string]bool{}
	for _, sb := range b.sandbox {
		live = append(live, sb)
		liveKeys[sb.netID+" "+sb.key] = true
	}
	read := map[string]bool{}
	for id, ok := range b.read {
		read[id] = ok
	}
	b.mu.Unlock()

	for _, sb := range left {
		if liveKeys[sb.netID+" "+sb.key] {
			continue // another endpoint of the network is in that sandbox now
		}
		if sb.programmed == "" && !b.hasVIPs(sb.netID) {
			continue // nothing programmed there, nor to be: do not enter a namespace being torn down
		}
		if sb.path == "" {
			// Never programmed here, but a plugin that restarted may not know what its predecessor did.
			p, ok := b.cfg.Kernel.SandboxPath(sb.key)
			if !ok {
				continue // the sandbox is gone, and its table with it
			}
			sb.path = p
		}
		if err := b.cfg.Kernel.RemoveServices(sb.path, sb.netID); err != nil && !errors.Is(err, dataplane.ErrDeviceGone) {
			b.log.WithError(err).WithFields(logrus.Fields{"network": sb.netID, "endpoint": sb.epID}).Warn("removing the service table of a container that left")
		}
	}
	tables := map[string][]dataplane.Service{}
	now := time.Now()
	for _, sb := range live {
		if !read[sb.netID] {
			continue // nothing known yet: after a restart, what the kernel holds stays until the first read
		}
		if sb.path == "" {
			p, ok := b.cfg.Kernel.SandboxPath(sb.key)
			if !ok {
				if now.Sub(sb.joined) < pendingFast {
					pending = true
				}
				continue
			}
			b.setPath(sb, p)
		}
		want, ok := tables[sb.netID]
		if !ok {
			want = b.desired(sb.netID)
			tables[sb.netID] = want
		}
		fp := fingerprint(want)
		if fp == sb.programmed {
			continue
		}
		log := b.log.WithFields(logrus.Fields{"network": sb.netID, "endpoint": sb.epID, "sandbox": sb.key})
		var err error
		if len(want) == 0 {
			err = b.cfg.Kernel.RemoveServices(sb.path, sb.netID)
		} else {
			err = b.cfg.Kernel.ProgramServices(sb.path, sb.netID, want)
		}
		if errors.Is(err, dataplane.ErrDeviceGone) {
			b.setPath(sb, "") // the key names another namespace now, or none: look again
			continue
		}
		if err != nil {
			if msg := err.Error(); msg != sb.failed {
				sb.failed = msg
				log.WithError(err).Warnf("programming the service VIPs of network %s for endpoint %s", netconfig.ShortID(sb.netID), netconfig.ShortID(sb.epID))
			}
			continue
		}
		sb.failed = ""
		b.forget(sb, want, log)
		b.setProgrammed(sb, fp)
		sb.table = want
		log.WithFields(logrus.Fields{"services": len(want), "table": fp}).Debug("service VIPs programmed")
	}
	// A namespace per network to ask the embedded DNS in: any live sandbox's.
	b.mu.Lock()
	b.nsOf = map[string]string{}
	for _, sb := range b.sandbox {
		if sb.path != "" {
			b.nsOf[sb.netID] = sb.path
		}
	}
	b.mu.Unlock()
	return pending
}

// forget ends, in sb's namespace, the UDP flows to the backends its table had and want no longer has.
func (b *Balancer) forget(sb *sandbox, want []dataplane.Service, log *logrus.Entry) {
	kept := map[string]bool{}
	for _, s := range want {
		for _, ip := range s.Backends {
			kept[s.VIP.String()+" "+ip.String()] = true
		}
	}
	for _, s := range sb.table {
		var gone []net.IP
		for _, ip := range s.Backends {
			if !kept[s.VIP.String()+" "+ip.String()] {
				gone = append(gone, ip)
			}
		}
		if len(gone) == 0 {
			continue
		}
		if n, err := b.cfg.Kernel.ForgetBackends(sb.path, s.VIP, gone); err != nil {
			log.WithError(err).Debug("ending UDP flows to removed tasks")
		} else if n > 0 {
			log.WithFields(logrus.Fields{"vip": s.VIP.String(), "tasks": fmt.Sprint(gone), "flows": n}).Debug("ended UDP flows to removed tasks")
		}
	}
}

func (b *Balancer) setPath(sb *sandbox, p string) {
	b.mu.Lock()
	sb.path = p
	if p == "" {
		sb.programmed, sb.table = "", nil
	}
	b.mu.Unlock()
}

func (b *Balancer) setProgrammed(sb *sandbox, fp string) {
	b.mu.Lock()
	sb.programmed = fp
	b.mu.Unlock()
}
