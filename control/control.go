// Package control is the control-plane adapter: it connects the driver to the gossip agent. It runs the
// agent's lifecycle (started once this node's data-path address is known), seeds it from every source
// there is, keeps the local endpoints to publish, and applies the agent's events to the driver in order.
package control

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/driver"
	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/store"
)

// Config is the gossip and discovery settings of a Plane.
type Config struct {
	GossipPort  int
	GossipKey   []byte
	GossipLabel string
	// BindAddr is where the agent listens; default "0.0.0.0".
	BindAddr string
	// Peers are other nodes' addresses given by the operator (host or host:port).
	Peers []string
	// DockerSocket is the engine API's unix socket, asked for the swarm managers.
	DockerSocket string
	// NodeGoneGrace and PluginDownGrace are gossip.Config's GracePeriod and HostUpGrace, with 0 meaning
	// no grace (gossip.NoGracePeriod).
	NodeGoneGrace   time.Duration
	PluginDownGrace time.Duration
	// ProbeInterval and ProbeTimeout are gossip.Config's (0: its defaults).
	ProbeInterval, ProbeTimeout time.Duration
}

// Applier is what a Plane applies remote changes to (the driver).
type Applier interface {
	RemoteChange(ep gossip.Endpoint, removed bool)
}

// Plane connects the driver to the gossip agent. The agent starts once this node's data-path address
// is known (the VTEP setting, or DiscoverNew with Self), and is seeded from every source there is:
// DiscoverNew for other nodes, the peers remembered from the last run, the PEERS setting, and the swarm
// managers listed by the Docker API (asked asynchronously, never during startup or inside a request).
type Plane struct {
	ctx    context.Context
	s      Config
	st     *store.Store
	log    *logrus.Entry
	docker *engine.Client // nil: no swarm managers asked

	mu    sync.Mutex
	agent *gossip.Agent
	drv   Applier
	seeds map[string]bool
	local map[string]gossip.Endpoint
	// events from the agent are applied in order by one goroutine
	events chan gossip.Event

	nets  map[string]*netKeys              // declared networks' keys
	auths map[string]store.AuthorityRecord // networks whose key authority this node holds
	asked map[string]time.Time             // when this node last asked the managers for a network's keys
	rotMu sync.Mutex                       // one rotation at a time
}

// New starts a Plane's background work (applying events, re-seeding); the agent itself starts on SetVTEP.
// It runs until ctx ends; Close leaves the cluster.
func New(ctx context.Context, s Config, st *store.Store, log *logrus.Entry) (*Plane, error) {
	if s.BindAddr == "" {
		s.BindAddr = "0.0.0.0"
	}
	c := &Plane{ctx: ctx, s: s, st: st, log: log.WithField("component", "gossip"),
		seeds: map[string]bool{}, local: map[string]gossip.Endpoint{}, events: make(chan gossip.Event, 4096),
		nets: map[string]*netKeys{}, auths: map[string]store.AuthorityRecord{}, asked: map[string]time.Time{}}
	auths, err := st.Authorities()
	if err != nil {
		return nil, err
	}
	for id, rec := range auths {
		c.Authority(id, rec)
	}
	if s.DockerSocket != "" {
		// Managers are asked at most every few seconds, never inside a request: a client without
		// keep-alive (no connection left behind), bounded by a timeout.
		docker, err := engine.New("unix://"+s.DockerSocket, 3*time.Second)
		if err != nil {
			return nil, fmt.Errorf("the Docker API client for %s: %w", s.DockerSocket, err)
		}
		c.docker = docker
	}
	for _, p := range s.Peers {
		c.seeds[c.withPort(p)] = true
	}
	if old, err := st.Peers(); err == nil {
		for _, p := range old {
			c.seeds[c.withPort(p)] = true
		}
	}
	go c.apply()
	go c.maintain()
	go c.rememberPeers()
	return c, nil
}

// peerCheckInterval is how often rememberPeers looks at the gossip members.
const peerCheckInterval = time.Second

// rememberPeers keeps the gossip members in the state, for the seeds of the next start, within a second
// of a change (a write only when the set changed). A plugin replaced soon after it started (an upgrade
// right after an install) must still find its peers: libnetwork does not replay DiscoverNew for the other
// nodes to a new plugin, and an engine that does not listen on the mounted socket names no managers.
func (c *Plane) rememberPeers() {
	t := time.NewTicker(peerCheckInterval)
	defer t.Stop()
	var saved string
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		a := c.agent
		c.mu.Unlock()
		if a == nil {
			continue
		}
		members := a.Members()
		if len(members) <= 1 {
			continue // alone: keep what an earlier run remembered
		}
		sort.Strings(members)
		if key := strings.Join(members, ","); key != saved {
			if err := c.st.PutPeers(members); err != nil {
				c.log.WithError(err).Debug("remembering gossip peers")
				continue
			}
			saved = key
		}
	}
}

func (c *Plane) withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(c.s.GossipPort))
}

// Control is the driver's view.
func (c *Plane) Control() driver.Control { return c }

var (
	_ driver.HostWatcher = (*Plane)(nil)
	_ driver.Synced      = (*Plane)(nil)
)

// Synced: the gossip agent runs and has merged another node's full state since this plugin started.
// Until then the driver adds and replaces remote entries but removes none (a plugin that has just
// restarted knows no remote endpoint yet, and its containers' entries in the kernel are still right).
func (c *Plane) Synced() bool {
	c.mu.Lock()
	a := c.agent
	c.mu.Unlock()
	return a != nil && a.Synced()
}

// Attach gives the control plane the driver to apply remote changes to.
func (c *Plane) Attach(d Applier) {
	c.mu.Lock()
	c.drv = d
	c.mu.Unlock()
}

func (c *Plane) apply() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case ev := <-c.events:
			c.mu.Lock()
			d := c.drv
			c.mu.Unlock()
			if d == nil {
				continue
			}
			d.RemoteChange(ev.Endpoint, ev.Kind == gossip.Removed)
		}
	}
}

// SetVTEP starts the gossip agent on this node's data-path address.
func (c *Plane) SetVTEP(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent != nil {
		return
	}
	host, _ := os.Hostname()
	a, err := gossip.New(gossip.Config{
		NodeName:      fmt.Sprintf("%s/%s", host, addr),
		BindAddr:      c.s.BindAddr,
		BindPort:      c.s.GossipPort,
		AdvertiseAddr: addr,
		Key:           c.s.GossipKey,
		Label:         c.s.GossipLabel,
		GracePeriod:   graceSetting(c.s.NodeGoneGrace),
		HostUpGrace:   graceSetting(c.s.PluginDownGrace),
		ProbeInterval: c.s.ProbeInterval,
		ProbeTimeout:  c.s.ProbeTimeout,
		VTEPCheck:     true,
		OnNetworkKeys: c.keysChanged,
		OnKeyRequest:  c.serveKeys,
		OnBehind: func(netID string) {
			go c.behind(netID, "a record was signed with a key this node does not hold")
		},
		Log: c.log,
	}, func(ev gossip.Event) {
		select {
		case c.events <- ev:
		case <-c.ctx.Done():
		}
	})
	if err != nil {
		c.log.WithError(err).WithField("address", addr).Error("cannot start the gossip agent; remote endpoints will not be learned")
		return
	}
	c.agent = a
	c.log.WithFields(logrus.Fields{"address": addr, "port": c.s.GossipPort}).Info("gossip agent started")
	for id, nk := range c.nets {
		c.setAgentKeys(a, id, nk.keys)
	}
	for _, ep := range c.local {
		a.Publish(ep)
	}
	seeds := c.seedListLocked()
	go c.join(a, seeds)
}

func (c *Plane) seedListLocked() []string {
	out := make([]string, 0, len(c.seeds))
	for s := range c.seeds {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func (c *Plane) join(a *gossip.Agent, seeds []string) {
	if len(seeds) == 0 {
		return
	}
	n, err := a.Join(seeds)
	log := c.log.WithFields(logrus.Fields{"seeds": seeds, "reached": n})
	if err != nil && n == 0 {
		log.WithError(err).Debug("gossip seeds not reached yet")
		return
	}
	log.Info("joined the gossip cluster")
}

// AddSeed hands over another node's address (from DiscoverNew); never blocks.
func (c *Plane) AddSeed(addr string) {
	addr = c.withPort(addr)
	c.mu.Lock()
	known := c.seeds[addr]
	c.seeds[addr] = true
	a := c.agent
	c.mu.Unlock()
	if a != nil && !known {
		go c.join(a, []string{addr})
	}
}

func key(netID, epID string) string { return netID + "/" + epID }

// Publish announces a local endpoint.
func (c *Plane) Publish(ep gossip.Endpoint) {
	c.mu.Lock()
	c.local[key(ep.Network, ep.EndpointID)] = ep
	a := c.agent
	c.mu.Unlock()
	if a != nil {
		a.Publish(ep)
	}
}

// Withdraw announces that a local endpoint is gone.
func (c *Plane) Withdraw(netID, epID string) {
	c.mu.Lock()
	delete(c.local, key(netID, epID))
	a := c.agent
	c.mu.Unlock()
	if a != nil {
		a.Withdraw(netID, epID)
	}
}

// Remote lists the remote endpoints of a network.
func (c *Plane) Remote(netID string) []gossip.Endpoint {
	c.mu.Lock()
	a := c.agent
	c.mu.Unlock()
	if a == nil {
		return nil
	}
	return a.Remote(netID)
}

// stats is the agent's figures, zero while there is no agent.
func (c *Plane) stats() gossip.Stats {
	c.mu.Lock()
	a := c.agent
	c.mu.Unlock()
	if a == nil {
		return gossip.Stats{}
	}
	return a.Stats()
}

// GossipStats is for metrics.
func (c *Plane) GossipStats() (members int, sent, received uint64) {
	st := c.stats()
	return st.Members, st.MessagesSent, st.MessagesReceived
}

// RefusedRecords is for metrics: records the agent refused for their signature, VTEP or as replays.
func (c *Plane) RefusedRecords() uint64 { return c.stats().RefusedRecords }

// MessageBytesSent is for metrics: the bytes of the endpoint changes the agent sent.
func (c *Plane) MessageBytesSent() uint64 { return c.stats().MessageBytesSent }

// maintain re-seeds a lonely agent, remembers the members for the next start, and asks the Docker API
// for the swarm managers (asynchronously, with a timeout: a call to dockerd from inside one of its
// requests, or while it waits for this plugin to start, could deadlock it).
func (c *Plane) maintain() {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	// The first round runs at once: a plugin restarted (disable/enable, upgrade) gets no DiscoverNew for
	// the other nodes, and without remembered peers it would stay alone until the first tick while its
	// peers' grace period for its endpoints runs out.
	for first := true; ; first = false {
		if !first {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
		}
		for _, m := range c.swarmManagers() {
			c.AddSeed(m)
		}
		c.mu.Lock()
		a := c.agent
		seeds := c.seedListLocked()
		c.mu.Unlock()
		if a == nil {
			continue
		}
		if len(a.Members()) <= 1 {
			go c.join(a, seeds)
		}
	}
}

// swarmManagers returns the swarm managers' addresses from the Docker API, or none.
func (c *Plane) swarmManagers() []string {
	if c.docker == nil {
		return nil
	}
	if _, err := os.Stat(c.s.DockerSocket); err != nil {
		return nil
	}
	out, err := c.docker.SwarmManagers()
	if err != nil {
		return nil
	}
	return out
}

// graceSetting maps a grace setting to gossip.Config, where 0 means the default and a negative value none.
func graceSetting(d time.Duration) time.Duration {
	if d == 0 {
		return gossip.NoGracePeriod
	}
	return d
}

// HostGone: libnetwork reports the node with address addr gone (DiscoverDelete); its endpoints go a
// short grace period after its agent is silent, instead of the long one for a plugin restart.
func (c *Plane) HostGone(addr string) int {
	c.mu.Lock()
	a := c.agent
	c.mu.Unlock()
	if a == nil {
		return 0
	}
	return a.HostGone(addr)
}

// HostBack: the node with address addr is back in the swarm (DiscoverNew).
func (c *Plane) HostBack(addr string) {
	c.mu.Lock()
	a := c.agent
	c.mu.Unlock()
	if a != nil {
		a.HostBack(addr)
	}
}

// Close leaves the gossip cluster.
func (c *Plane) Close() {
	c.mu.Lock()
	a := c.agent
	c.agent = nil
	c.mu.Unlock()
	if a != nil {
		_ = a.Close()
	}
}
