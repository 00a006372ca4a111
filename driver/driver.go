// Package driver is vxsafe's libnetwork remote network driver: it answers dockerd's NetworkDriver calls
// (served by go-plugins-helpers) with real kernel work through the dataplane package, keeps its state in
// the store, and learns remote endpoints through the gossip control plane.
package driver

import (
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
	"github.com/vxsafe/overlay/vni"
)

// Config configures a Driver.
type Config struct {
	Store     *store.Store
	Dataplane Dataplane // a *dataplane.Manager
	VNIMin    uint32
	VNIMax    uint32
	Port      int // default VXLAN UDP port (4789)
	MTU       int // 0: underlay MTU - 50
	// VTEP is this node's data-path address. Empty: taken from DiscoverNew (Self) when it arrives.
	VTEP string
	// Control is the control plane; nil runs single-host (no remote endpoints).
	Control Control
	Log     *logrus.Entry
	Metrics Metrics
	// Services is told where local endpoints join and leave, to give their containers the swarm
	// services' VIPs (a *vip.Balancer); nil: no VIPs.
	Services Services
	// DeadEndpointGrace: a joined endpoint whose container died without a Leave is marked left once it has
	// been joined this long and its interface has been missing from every namespace for a third of it.
	// 0: 30s; negative: at once (tests).
	DeadEndpointGrace time.Duration
}

// Dataplane is the kernel work the driver asks for; *dataplane.Manager does it. The driver's policy
// (which peers to program, what to sweep and reap) is tested against a fake of it, without root.
type Dataplane interface {
	// The network's VXLAN device.
	EnsureVXLAN(spec dataplane.VXLANSpec, liveNetwork func(netID string) bool) (int, []dataplane.Removed, error)
	DeleteVXLAN(spec dataplane.VXLANSpec) error
	VXLANIndex(spec dataplane.VXLANSpec) (int, bool)
	UnderlayMTU(addr net.IP) int
	// The endpoints' interfaces.
	CreateEndpointIf(spec dataplane.EndpointSpec) ([]dataplane.Removed, error)
	DeleteEndpointIf(netID, epID, name string) error
	// Remote endpoints on a device.
	AddPeer(vxIndex int, p dataplane.Peer) error
	DelPeer(vxIndex int, p dataplane.Peer) error
	Peers(vxIndex int) ([]dataplane.Peer, error)
	// What the sweep and the reaping of dead endpoints look at.
	SandboxExists(key string) (exists, known bool)
	EndpointInterfaces() (map[string]string, error)
	Owned() (networks, endpoints []dataplane.Link, err error)
	DeleteOwned(l dataplane.Link) error
	HostUppers() (map[int][]string, error)
}

var _ Dataplane = (*dataplane.Manager)(nil)

// Control is what the driver needs of the control plane (the gossip agent implements it).
type Control interface {
	// SetVTEP tells the control plane this node's data-path address (it may start gossiping then).
	SetVTEP(addr string)
	// AddSeed hands an address of another node to the control plane (never blocks).
	AddSeed(addr string)
	Publish(ep gossip.Endpoint)
	Withdraw(netID, epID string)
	Remote(netID string) []gossip.Endpoint
}

// KeyedControl is what a control plane implements to sign and check its records per network: Declare
// gives it a network of this node (its keys are in the record's options, or in Keys once they rotated),
// Forget takes it away.
type KeyedControl interface {
	Declare(rec store.NetworkRecord)
	Forget(netID string)
	// Authority: this manager allocated the network and holds its key authority.
	Authority(netID string, a store.AuthorityRecord)
}

func (d *Driver) declare(rec store.NetworkRecord) {
	if k, ok := d.cfg.Control.(KeyedControl); ok {
		k.Declare(rec)
	}
}

func (d *Driver) forget(netID string) {
	if k, ok := d.cfg.Control.(KeyedControl); ok {
		k.Forget(netID)
	}
}

// Services keeps the service VIP tables of local containers. Its methods never block.
type Services interface {
	Joined(netID, epID, sandboxKey string)
	Left(epID string)
	// Changed: the endpoints reachable on network netID changed.
	Changed(netID string)
}

// Metrics receives counters; nil records nothing.
type Metrics interface {
	StaleRemoved(reason string)
	ConflictRefused()
	Error(kind string)
}

type netState struct {
	mu      sync.Mutex // serialises Join, Leave, DeleteEndpoint and sweeps on this network
	rec     store.NetworkRecord
	spec    dataplane.VXLANSpec
	vxIndex int                      // 0 while the device is not there (as far as the driver knows: see JoinNamed)
	joined  map[string]localEndpoint // endpoints joined on this host (from their record's write on)
	pending map[string]string        // endpoint ID -> interface name: deletes DeleteEndpoint left to the background
}

// ipv6 returns the network's IPv6 prefix (netconfig.OptIPv6), nil for a network without IPv6. The
// option was checked when the network was created.
func (ns *netState) ipv6() *net.IPNet {
	s, ok := ns.rec.Options[netconfig.OptIPv6]
	if !ok {
		return nil
	}
	p, err := netconfig.ParseIPv6Prefix(s)
	if err != nil {
		return nil
	}
	return p
}

// isJoined reports whether endpoint epID is joined on this host. ns.mu is held.
func (ns *netState) isJoined(epID string) bool {
	_, ok := ns.joined[epID]
	return ok
}

// localEndpoint is what the driver keeps of an endpoint joined on this host: its addresses, which no
// remote endpoint may take (nil when its record holds none that parses).
type localEndpoint struct {
	ip  net.IP
	mac net.HardwareAddr
}

func localOf(ep store.EndpointRecord) localEndpoint {
	var l localEndpoint
	if ip, _, err := net.ParseCIDR(ep.IP); err == nil {
		l.ip = ip
	}
	if mac, err := net.ParseMAC(ep.MAC); err == nil {
		l.mac = mac
	}
	return l
}

// published is a local endpoint as the control plane announces it.
func (d *Driver) published(ep store.EndpointRecord) gossip.Endpoint {
	ip, _, _ := net.ParseCIDR(ep.IP)
	return gossip.Endpoint{Network: ep.NetworkID, EndpointID: ep.EndpointID, IP: ip.String(), MAC: ep.MAC, VTEP: d.VTEP()}
}

// Driver implements network.Driver.
type Driver struct {
	cfg   Config
	log   *logrus.Entry
	dp    Dataplane
	st    *store.Store
	alloc *vni.Allocator

	sweep   *sweepState
	cleanup cleaner

	mu       sync.Mutex
	networks map[string]*netState
	vtep     string
}

// New builds a Driver and loads its state. Call Reconcile before serving.
func New(cfg Config) (*Driver, error) {
	if cfg.Port == 0 {
		cfg.Port = netconfig.DefaultPort
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.Services == nil {
		cfg.Services = noServices{}
	}
	switch {
	case cfg.DeadEndpointGrace == 0:
		cfg.DeadEndpointGrace = 30 * time.Second
	case cfg.DeadEndpointGrace < 0:
		cfg.DeadEndpointGrace = 0
	}
	alloc, err := vni.New(cfg.Store, cfg.VNIMin, cfg.VNIMax)
	if err != nil {
		return nil, fmt.Errorf("loading VNI allocations: %w", err)
	}
	d := &Driver{cfg: cfg, log: cfg.Log, dp: cfg.Dataplane, st: cfg.Store, alloc: alloc, sweep: newSweepState(),
		networks: map[string]*netState{}, vtep: cfg.VTEP}
	nets, err := cfg.Store.ListNetworks()
	if err != nil {
		return nil, fmt.Errorf("loading networks from %s: %w", cfg.Store.Path(), err)
	}
	for _, rec := range nets {
		ns := d.newNetState(rec)
		eps, err := cfg.Store.ListEndpoints(rec.ID)
		if err != nil {
			return nil, fmt.Errorf("loading endpoints of network %s: %w", rec.ID, err)
		}
		for _, ep := range eps {
			if ep.Joined {
				ns.joined[ep.EndpointID] = localOf(ep)
			}
		}
		d.networks[rec.ID] = ns
		d.declare(rec)
	}
	if d.vtep != "" && cfg.Control != nil {
		cfg.Control.SetVTEP(d.vtep)
	}
	return d, nil
}

func (d *Driver) newNetState(rec store.NetworkRecord) *netState {
	port := int(rec.Port)
	if port == 0 {
		port = d.cfg.Port
	}
	return &netState{rec: rec, joined: map[string]localEndpoint{}, pending: map[string]string{}, spec: dataplane.VXLANSpec{
		NetworkID: rec.ID, Name: netconfig.DeviceName(rec.VNI, rec.ID), VNI: rec.VNI, Port: port, MTU: rec.MTU,
		IPv6: rec.Options[netconfig.OptIPv6] != "",
	}}
}

type noMetrics struct{}

type noServices struct{}

func (noServices) Joined(string, string, string) {}
func (noServices) Left(string)                   {}
func (noServices) Changed(string)                {}

func (noMetrics) StaleRemoved(string) {}
func (noMetrics) ConflictRefused()    {}
func (noMetrics) Error(string)        {}

// lookup returns the state of network id, if known.
func (d *Driver) lookup(id string) (*netState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ns, ok := d.networks[id]
	return ns, ok
}

// snapshot returns the states of the known networks, taken under d.mu; each is locked by its own mu.
func (d *Driver) snapshot() []*netState {
	d.mu.Lock()
	defer d.mu.Unlock()
	nets := make([]*netState, 0, len(d.networks))
	for _, ns := range d.networks {
		nets = append(nets, ns)
	}
	return nets
}

func (d *Driver) network(id string) (*netState, error) {
	ns, ok := d.lookup(id)
	if !ok {
		return nil, fmt.Errorf("network %s is not known to vxsafe on this host (no CreateNetwork for it): "+
			"if the plugin's state directory was lost, remove and re-create the network", netconfig.ShortID(id))
	}
	return ns, nil
}

// liveNetwork reports whether a vxsafe network has joined endpoints on this host. It must not take the
// network's own lock (it is called while another network's lock is held).
func (d *Driver) liveNetwork(id string) bool {
	ns, ok := d.lookup(id)
	if !ok {
		return false
	}
	eps, err := d.st.ListEndpoints(ns.rec.ID)
	if err != nil {
		return true // cannot prove it is dead
	}
	for _, ep := range eps {
		if ep.Joined {
			return true
		}
	}
	return false
}

// VTEP is this node's data-path address, or "" while unknown.
func (d *Driver) VTEP() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vtep
}

// Networks returns the IDs of known networks, sorted (for status and tests).
func (d *Driver) Networks() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]string, 0, len(d.networks))
	for id := range d.networks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Counts returns the networks known and the endpoints joined on this host (for metrics).
func (d *Driver) Counts() (networks, endpoints int) {
	nets := d.snapshot()
	for _, ns := range nets {
		ns.mu.Lock()
		endpoints += len(ns.joined)
		ns.mu.Unlock()
	}
	return len(nets), endpoints
}

// Reachable returns the addresses of network netID's endpoints this node reaches: its own joined ones
// and the remote ones the control plane knows. Nil when the control plane has not synced since the start
// (its view of remote endpoints is not complete yet) or the network is unknown.
func (d *Driver) Reachable(netID string) map[string]bool {
	ns, ok := d.lookup(netID)
	if !ok || (d.cfg.Control != nil && !d.controlSynced()) {
		return nil
	}
	out := map[string]bool{}
	ns.mu.Lock()
	for _, l := range ns.joined {
		if l.ip != nil {
			out[l.ip.String()] = true
		}
	}
	ns.mu.Unlock()
	if d.cfg.Control != nil {
		for _, ep := range d.cfg.Control.Remote(netID) {
			out[ep.IP] = true
		}
	}
	return out
}
