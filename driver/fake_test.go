package driver

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/internal/storetest"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

// fakeDataplane is an in-memory Dataplane: devices, endpoint interfaces and peers are map entries, so
// the driver's policy runs without root and without a kernel.
type fakeDataplane struct {
	mu        sync.Mutex
	next      int
	devices   map[string]fakeDevice    // by name
	ifs       map[string]fakeIf        // endpoint interfaces, by name
	peers     map[int][]dataplane.Peer // by device ifindex
	sandboxes map[string]bool          // sandbox key -> exists; a key not listed is unknown
	ensureErr error                    // returned by the next EnsureVXLAN
	calls     map[string]int
	// deleteGate, when set, holds every DeleteEndpointIf until a value is received from it (the value
	// is what it returns).
	deleteGate chan error
}

type fakeDevice struct {
	spec  dataplane.VXLANSpec
	index int
}

type fakeIf struct {
	spec        dataplane.EndpointSpec
	index       int
	inContainer bool // moved into a container: not in the host namespace, still an upper of its device
}

func newFakeDataplane() *fakeDataplane {
	return &fakeDataplane{next: 10, devices: map[string]fakeDevice{}, ifs: map[string]fakeIf{},
		peers: map[int][]dataplane.Peer{}, sandboxes: map[string]bool{}, calls: map[string]int{}}
}

func (f *fakeDataplane) called(name string) {
	f.calls[name]++
}

// count returns how often method name was called.
func (f *fakeDataplane) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func (f *fakeDataplane) EnsureVXLAN(spec dataplane.VXLANSpec, _ func(string) bool) (int, []dataplane.Removed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("EnsureVXLAN")
	if err := f.ensureErr; err != nil {
		f.ensureErr = nil
		return 0, nil, err
	}
	if d, ok := f.devices[spec.Name]; ok {
		return d.index, nil, nil
	}
	f.next++
	f.devices[spec.Name] = fakeDevice{spec: spec, index: f.next}
	return f.next, nil, nil
}

func (f *fakeDataplane) DeleteVXLAN(spec dataplane.VXLANSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("DeleteVXLAN")
	if d, ok := f.devices[spec.Name]; ok {
		delete(f.peers, d.index)
	}
	delete(f.devices, spec.Name)
	return nil
}

func (f *fakeDataplane) VXLANIndex(spec dataplane.VXLANSpec) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[spec.Name]
	return d.index, ok
}

func (f *fakeDataplane) UnderlayMTU(net.IP) int { return 1500 }

func (f *fakeDataplane) CreateEndpointIf(spec dataplane.EndpointSpec) ([]dataplane.Removed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("CreateEndpointIf")
	parent := false
	for _, d := range f.devices {
		parent = parent || d.index == spec.ParentIndex
	}
	if !parent {
		return nil, fmt.Errorf("creating %s on ifindex %d: %w: no such device", spec, spec.ParentIndex, dataplane.ErrParentGone)
	}
	f.next++
	f.ifs[spec.Name] = fakeIf{spec: spec, index: f.next}
	return nil, nil
}

func (f *fakeDataplane) DeleteEndpointIf(netID, epID, name string) error {
	f.mu.Lock()
	gate := f.deleteGate
	f.called("DeleteEndpointIf")
	f.mu.Unlock()
	if gate != nil {
		if err := <-gate; err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if i, ok := f.ifs[name]; ok && !i.inContainer && i.spec.NetworkID == netID && i.spec.EndpointID == epID {
		delete(f.ifs, name)
	}
	return nil
}

func (f *fakeDataplane) AddPeer(vxIndex int, p dataplane.Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("AddPeer")
	f.peers[vxIndex] = append(without(f.peers[vxIndex], p), p) // NeighSet replaces by MAC (FDB) and IP (neighbour)
	return nil
}

func (f *fakeDataplane) DelPeer(vxIndex int, p dataplane.Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("DelPeer")
	f.peers[vxIndex] = without(f.peers[vxIndex], p)
	return nil
}

// without returns the peers of ps that share neither MAC nor IP with p.
func without(ps []dataplane.Peer, p dataplane.Peer) []dataplane.Peer {
	out := ps[:0:0]
	for _, q := range ps {
		if q.MAC.String() != p.MAC.String() && !q.IP.Equal(p.IP) {
			out = append(out, q)
		}
	}
	return out
}

func (f *fakeDataplane) Peers(vxIndex int) ([]dataplane.Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]dataplane.Peer(nil), f.peers[vxIndex]...), nil
}

// peerList describes the peers programmed on the device of spec, sorted, as "ip mac vtep" (and " ipv6"
// for a peer with an IPv6 address).
func (f *fakeDataplane) peerList(spec dataplane.VXLANSpec) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.peers[f.devices[spec.Name].index] {
		s := fmt.Sprintf("%s %s %s", p.IP, p.MAC, p.VTEP)
		if p.IPv6 != nil {
			s += " " + p.IPv6.String()
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func (f *fakeDataplane) SandboxExists(key string) (exists, known bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("SandboxExists")
	exists, known = f.sandboxes[key]
	return exists, known
}

func (f *fakeDataplane) EndpointInterfaces() (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("EndpointInterfaces")
	out := map[string]string{}
	for name, i := range f.ifs {
		out[i.spec.NetworkID+"/"+i.spec.EndpointID] = name
	}
	return out, nil
}

func (f *fakeDataplane) Owned() (networks, endpoints []dataplane.Link, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, d := range f.devices {
		networks = append(networks, dataplane.Link{Name: name, Index: d.index, Kind: "vxlan",
			Alias: dataplane.NetworkAlias(d.spec.NetworkID), NetworkID: d.spec.NetworkID})
	}
	for name, i := range f.ifs {
		if !i.inContainer {
			endpoints = append(endpoints, dataplane.Link{Name: name, Index: i.index, Kind: "macvlan",
				Alias:     dataplane.EndpointAlias(i.spec.NetworkID, i.spec.EndpointID),
				NetworkID: i.spec.NetworkID, EndpointID: i.spec.EndpointID})
		}
	}
	return networks, endpoints, nil
}

func (f *fakeDataplane) DeleteOwned(l dataplane.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("DeleteOwned")
	delete(f.devices, l.Name)
	delete(f.ifs, l.Name)
	return nil
}

func (f *fakeDataplane) HostUppers() (map[int][]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("HostUppers")
	out := map[int][]string{}
	for name, i := range f.ifs {
		if i.inContainer {
			name += " (netns of a container)"
		}
		out[i.spec.ParentIndex] = append(out[i.spec.ParentIndex], name)
	}
	return out, nil
}

// fakeMetrics counts what the driver reports.
type fakeMetrics struct {
	mu        sync.Mutex
	stale     map[string]int
	conflicts int
	errs      map[string]int
}

func (m *fakeMetrics) StaleRemoved(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stale[reason]++
}

func (m *fakeMetrics) ConflictRefused() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conflicts++
}

func (m *fakeMetrics) Error(kind string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.errs[kind]++
}

// unit is a Driver on a fakeDataplane, a fakeControl and a store in a temporary directory: no root.
type unit struct {
	t   *testing.T
	drv *Driver
	dp  *fakeDataplane
	ctl *fakeControl
	met *fakeMetrics
	st  *store.Store
	log *test.Hook
}

const unitVTEP = "192.0.2.1"

func newUnit(t *testing.T) *unit {
	t.Helper()
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	st := storetest.Open(t)
	u := &unit{t: t, dp: newFakeDataplane(), ctl: newFakeControl(), st: st, log: hook,
		met: &fakeMetrics{stale: map[string]int{}, errs: map[string]int{}}}
	var err error
	u.drv, err = New(Config{Store: st, Dataplane: u.dp, VNIMin: 1048576, VNIMax: 1048676, VTEP: unitVTEP,
		Control: u.ctl, Log: logrus.NewEntry(logger), Metrics: u.met, DeadEndpointGrace: deadGrace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		u.dp.mu.Lock()
		gate := u.dp.deleteGate
		u.dp.mu.Unlock()
		if gate != nil {
			close(gate) // a test that stopped early: let the background deletes end
		}
		if err := u.drv.Flush(flushContext(t)); err != nil {
			t.Error(err)
		}
	})
	return u
}

// flush waits for the driver's background deletes.
func (u *unit) flush() {
	u.t.Helper()
	if err := u.drv.Flush(flushContext(u.t)); err != nil {
		u.t.Fatal(err)
	}
}

// createNetwork allocates and creates network id with subnet 10.0.1.0/24 (gateway 10.0.1.1).
func (u *unit) createNetwork(id string) *netState {
	u.t.Helper()
	ns, err := u.createNetworkWith(id, nil)
	if err != nil {
		u.t.Fatal(err)
	}
	return ns
}

// createNetworkWith allocates and creates network id (10.0.1.0/24) with the given -o options.
func (u *unit) createNetworkWith(id string, opts map[string]string) (*netState, error) {
	u.t.Helper()
	alloc, err := u.drv.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: id, Options: opts,
		IPv4Data: []network.IPAMData{{Pool: "10.0.1.0/24", Gateway: "10.0.1.1/24"}}})
	if err != nil {
		return nil, err
	}
	generic := map[string]any{}
	for k, v := range alloc.Options {
		generic[k] = v
	}
	if err := u.drv.CreateNetwork(&network.CreateNetworkRequest{NetworkID: id,
		Options:  map[string]any{netconfig.GenericKey: generic},
		IPv4Data: []*network.IPAMData{{Pool: "10.0.1.0/24", Gateway: "10.0.1.1/24"}}}); err != nil {
		return nil, err
	}
	ns, _ := u.drv.lookup(id)
	return ns, nil
}

// join creates and joins endpoint i (address 10.0.1.<10+i>) of network nid in sandbox key.
func (u *unit) join(nid string, i int, key string) error {
	u.t.Helper()
	if _, err := u.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: nid, EndpointID: epID(i),
		Interface: &network.EndpointInterface{Address: fmt.Sprintf("10.0.1.%d/24", 10+i)}}); err != nil {
		u.t.Fatal(err)
	}
	_, err := u.drv.Join(&network.JoinRequest{NetworkID: nid, EndpointID: epID(i), SandboxKey: key})
	return err
}

// logged counts the entries at level whose message contains every word.
func (u *unit) logged(level logrus.Level, words ...string) int {
	n := 0
	for _, e := range u.log.AllEntries() {
		if e.Level != level {
			continue
		}
		all := true
		for _, w := range words {
			if !strings.Contains(e.Message, w) {
				all = false
			}
		}
		if all {
			n++
		}
	}
	return n
}
