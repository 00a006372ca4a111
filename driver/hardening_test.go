package driver

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/internal/nstest"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
	"golang.org/x/sys/unix"
)

// fakeControl is a control plane whose view of remote endpoints the test sets.
type fakeControl struct {
	mu        sync.Mutex
	remote    map[string][]gossip.Endpoint
	published map[string]gossip.Endpoint
	synced    bool
}

func newFakeControl() *fakeControl {
	return &fakeControl{remote: map[string][]gossip.Endpoint{}, published: map[string]gossip.Endpoint{}, synced: true}
}

func (f *fakeControl) Synced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced
}

func (f *fakeControl) SetVTEP(string) {}
func (f *fakeControl) AddSeed(string) {}
func (f *fakeControl) Publish(ep gossip.Endpoint) {
	f.mu.Lock()
	f.published[ep.Network+"/"+ep.EndpointID] = ep
	f.mu.Unlock()
}
func (f *fakeControl) Withdraw(netID, epID string) {
	f.mu.Lock()
	delete(f.published, netID+"/"+epID)
	f.mu.Unlock()
}
func (f *fakeControl) Remote(netID string) []gossip.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]gossip.Endpoint(nil), f.remote[netID]...)
}
func (f *fakeControl) set(netID string, eps ...gossip.Endpoint) {
	f.mu.Lock()
	f.remote[netID] = eps
	f.mu.Unlock()
}

// deadGrace is the DeadEndpointGrace of startWith's drivers.
var deadGrace = -1 * time.Nanosecond

// startWith is startHarness with a control plane and a VTEP.
func startWith(t *testing.T, host *nstest.NS, dir string, hooks *dataplane.Hooks, ctl Control, vtep string) *harness {
	t.Helper()
	return startConfig(t, host, dir, hooks, Config{Control: ctl, VTEP: vtep, DeadEndpointGrace: deadGrace})
}

// crash stops a harness's driver as a killed process would: nothing is cleaned, the store's lock is
// released (the kernel does that for a dead process).
func (h *harness) crash() {
	h.st.Close()
	h.dp.Close()
}

func (h *harness) createEndpoint(nid string, i int) {
	h.t.Helper()
	h.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: nid, EndpointID: epID(i),
		Interface: &network.EndpointInterface{Address: fmt.Sprintf("10.0.1.%d/24", 10+i)}}, nil)
}

func (h *harness) link(name string) netlink.Link {
	h.t.Helper()
	l, err := h.host.NL.LinkByName(name)
	if err != nil {
		return nil
	}
	return l
}

// logHas reports whether a log record at level or above contains every one of words (in its message or
// fields).
func (h *harness) logHas(level logrus.Level, words ...string) bool {
	for _, e := range h.log.AllEntries() {
		if e.Level > level {
			continue
		}
		text := e.Message
		for k, v := range e.Data {
			text += fmt.Sprintf(" %s=%v", k, v)
		}
		all := true
		for _, w := range words {
			if !strings.Contains(text, w) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func (h *harness) wantErr(e string, words ...string) {
	h.t.Helper()
	if e == "" {
		h.t.Fatalf("no error; want one containing %q", words)
	}
	for _, w := range words {
		if !strings.Contains(e, w) {
			h.t.Fatalf("error %q does not contain %q", e, w)
		}
	}
}

func (h *harness) wantLinks(want ...string) {
	h.t.Helper()
	got := h.links()
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		h.t.Fatalf("links %v, want %v", got, want)
	}
}

func (h *harness) endpoint(nid string, i int) (store.EndpointRecord, bool) {
	h.t.Helper()
	ep, ok, err := h.st.GetEndpoint(nid, epID(i))
	if err != nil {
		h.t.Fatal(err)
	}
	return ep, ok
}

// TestFailureCreateEndpoint: a failed state write records nothing and names the endpoint and the step.
func TestFailureCreateEndpoint(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(netID, nil)
	h.st.FailNext("PutEndpoint")
	e := h.call("CreateEndpoint", network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(1),
		Interface: &network.EndpointInterface{Address: "10.0.1.11/24"}}, nil)
	h.wantErr(e, "PutEndpoint", epID(1)[:12], "saving endpoint")
	if _, ok := h.endpoint(netID, 1); ok {
		t.Fatal("record written despite the failure")
	}
	h.wantLinks()
	h.join(netID, 1)
	h.wantLinks(netconfig.DeviceName(h.vni(netID), netID), netconfig.EndpointIfName(epID(1)))
}

func (h *harness) vni(nid string) uint32 {
	h.t.Helper()
	rec, ok, err := h.st.GetNetwork(nid)
	if err != nil || !ok {
		h.t.Fatalf("network %s: %v %v", nid, ok, err)
	}
	return rec.VNI
}

// TestFailureLeave: a failed state write in Leave keeps the endpoint joined (state and kernel agree), and
// the retry succeeds.
func TestFailureLeave(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(netID, nil)
	h.join(netID, 1)
	dev := netconfig.DeviceName(h.vni(netID), netID)
	ifName := netconfig.EndpointIfName(epID(1))
	h.st.FailNext("PutEndpoint")
	e := h.call("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	h.wantErr(e, "PutEndpoint", "leave of endpoint "+epID(1)[:12])
	if ep, _ := h.endpoint(netID, 1); !ep.Joined {
		t.Fatal("record changed by a failed leave")
	}
	h.wantLinks(dev, ifName)
	h.must("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	if ep, _ := h.endpoint(netID, 1); ep.Joined {
		t.Fatal("still joined after the retried leave")
	}
	h.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	h.wantLinks()
}

// TestFailureDeleteEndpoint: each step of DeleteEndpoint failing.
func TestFailureDeleteEndpoint(t *testing.T) {
	t.Run("interface", func(t *testing.T) {
		h := newHarness(t)
		h.createNetwork(netID, nil)
		h.join(netID, 1)
		h.join(netID, 2)
		dev := netconfig.DeviceName(h.vni(netID), netID)
		if1, if2 := netconfig.EndpointIfName(epID(1)), netconfig.EndpointIfName(epID(2))
		before := h.link(if1).Attrs().Index
		h.must("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		// The interface is deleted in the background, after DeleteEndpoint answered: its failure does not
		// fail DeleteEndpoint (the record is gone, dockerd is done with the endpoint); it is logged with
		// the step and the interface, and the sweep deletes the interface.
		h.hooks.FailNext(dataplane.StepDeleteEndpoint, 1)
		h.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		if !h.logHas(logrus.WarnLevel, if1, dataplane.StepDeleteEndpoint, "the sweep will retry") {
			t.Fatal("no warning names the interface and the failed step")
		}
		if _, ok := h.endpoint(netID, 1); ok {
			t.Fatal("record kept after DeleteEndpoint answered")
		}
		l := h.link(if1)
		if l == nil || l.Attrs().Index != before || l.Attrs().Alias != dataplane.EndpointAlias(netID, epID(1)) {
			t.Fatalf("interface after the failed delete: %+v", l)
		}
		if n := h.drv.Sweep(); n != 1 {
			t.Fatalf("sweep removed %d, want 1 (the interface)", n)
		}
		h.wantLinks(dev, if2)
		h.leave(netID, 2)
		h.wantLinks()
	})
	t.Run("record", func(t *testing.T) {
		h := newHarness(t)
		h.createNetwork(netID, nil)
		h.join(netID, 1)
		h.must("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h.st.FailNext("DeleteEndpoint")
		e := h.call("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h.wantErr(e, "store DeleteEndpoint", epID(1)[:12])
		if ep, ok := h.endpoint(netID, 1); !ok || ep.Joined {
			t.Fatalf("record %+v %v: want it kept, not joined", ep, ok)
		}
		h.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		if _, ok := h.endpoint(netID, 1); ok {
			t.Fatal("record left after the retry")
		}
		h.wantLinks()
	})
	t.Run("device", func(t *testing.T) {
		// The network's device failing to go with the last endpoint does not fail DeleteEndpoint (dockerd
		// would keep the endpoint forever); it is logged with the step and the device, and swept.
		h := newHarness(t)
		h.createNetwork(netID, nil)
		h.join(netID, 1)
		dev := netconfig.DeviceName(h.vni(netID), netID)
		h.must("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h.hooks.FailNext(dataplane.StepDeleteVXLAN, 1)
		h.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		if !h.logHas(logrus.WarnLevel, dev, dataplane.StepDeleteVXLAN) {
			t.Fatal("no warning names the device and the failed step")
		}
		h.wantLinks(dev)
		if n := h.drv.Sweep(); n != 1 {
			t.Fatalf("sweep removed %d, want 1", n)
		}
		h.wantLinks()
		// And the network is usable again.
		h.join(netID, 2)
		h.leave(netID, 2)
		h.wantLinks()
	})
}

// TestFailureDeleteStale: the deletion of a stale interface in the way fails; the join fails naming the
// step and the interface, the stale interface is untouched (not half-deleted), no device of ours is left,
// and the next attempt replaces it.
func TestFailureDeleteStale(t *testing.T) {
	t.Run("vxlan", func(t *testing.T) {
		h := newHarness(t)
		vni := h.createNetwork(netID, nil)
		dev := netconfig.DeviceName(vni, netID)
		if err := h.host.NL.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: dev}, VxlanId: int(vni), Port: 4789}); err != nil {
			t.Fatal(err)
		}
		stale := h.link(dev).Attrs().Index
		h.createEndpoint(netID, 1)
		h.hooks.FailNext(dataplane.StepDeleteStale, 1)
		e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h.wantErr(e, dataplane.StepDeleteStale, `"`+dev+`"`, epID(1)[:12], "is down")
		if l := h.link(dev); l == nil || l.Attrs().Index != stale {
			t.Fatal("the stale device was changed by the failed attempt")
		}
		h.wantLinks(dev)
		if ep, _ := h.endpoint(netID, 1); ep.Joined {
			t.Fatal("record says joined after a failed join")
		}
		h.must("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		if l := h.link(dev); l == nil || l.Attrs().Index == stale || l.Attrs().Alias != dataplane.NetworkAlias(netID) {
			t.Fatalf("device after the retry: %+v", l)
		}
	})
	t.Run("endpoint", func(t *testing.T) {
		h := newHarness(t)
		h.createNetwork(netID, nil)
		ifName := netconfig.EndpointIfName(epID(1))
		if err := h.host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifName}, PeerName: "vxhpeer0"}); err != nil {
			t.Fatal(err)
		}
		stale := h.link(ifName).Attrs().Index
		h.createEndpoint(netID, 1)
		h.hooks.FailNext(dataplane.StepDeleteStale, 1)
		e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h.wantErr(e, dataplane.StepDeleteStale, `"`+ifName+`"`, epID(1)[:12])
		if l := h.link(ifName); l == nil || l.Attrs().Index != stale {
			t.Fatal("the stale interface was changed by the failed attempt")
		}
		// The network's device made for this join went with it.
		h.wantLinks(ifName, "vxhpeer0")
		if ep, _ := h.endpoint(netID, 1); ep.Joined {
			t.Fatal("record says joined after a failed join")
		}
		h.must("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		if l := h.link(ifName); l == nil || l.Type() != "macvlan" {
			t.Fatalf("endpoint interface after the retry: %+v", l)
		}
		h.leave(netID, 1)
		h.wantLinks()
	})
	t.Run("program peer", func(t *testing.T) {
		// A remote endpoint that cannot be programmed is retried by the periodic resync.
		host := nstest.New(t, "vxhdrv")
		ctl := newFakeControl()
		h := startWith(t, host, t.TempDir(), &dataplane.Hooks{}, ctl, "192.0.2.1")
		vni := h.createNetwork(netID, nil)
		remote := gossip.Endpoint{Network: netID, EndpointID: "r1", IP: "10.0.1.50", MAC: "02:42:0a:00:01:32", VTEP: "192.0.2.2"}
		ctl.set(netID, remote)
		h.hooks.FailNext(dataplane.StepAddPeer, 1)
		h.join(netID, 1)
		idx := h.link(netconfig.DeviceName(vni, netID)).Attrs().Index
		if peers, _ := h.dp.Peers(idx); len(peers) != 0 {
			t.Fatalf("peers %v despite the injected failure", peers)
		}
		if !h.logHas(logrus.WarnLevel, dataplane.StepAddPeer, "10.0.1.50") {
			t.Fatal("no warning names the failed step and the peer")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { h.drv.Run(ctx, 50*time.Millisecond); close(done) }()
		defer func() { cancel(); <-done }()
		waitUntil(t, 5*time.Second, "the peer re-programmed by the resync", func() bool {
			peers, _ := h.dp.Peers(idx)
			return len(peers) == 1 && peers[0].IP.String() == "10.0.1.50"
		})
	})
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrashBetweenSteps: the process dies between two steps of a request; a new driver on the same
// state and namespace reconciles, and the next attempt (what dockerd does next) succeeds.
func TestCrashBetweenSteps(t *testing.T) {
	t.Run("join recorded, nothing made", func(t *testing.T) {
		// Join writes the record first; the process dies before any kernel work.
		host := nstest.New(t, "vxhdrv")
		dir := t.TempDir()
		h := startHarness(t, host, dir, &dataplane.Hooks{})
		vni := h.createNetwork(netID, nil)
		h.createEndpoint(netID, 1)
		ep, _ := h.endpoint(netID, 1)
		ep.Joined, ep.SandboxKey = true, "/var/run/docker/netns/test"
		if err := h.st.PutEndpoint(ep); err != nil {
			t.Fatal(err)
		}
		h.crash()
		h2 := startHarness(t, host, dir, &dataplane.Hooks{})
		dev := netconfig.DeviceName(vni, netID)
		// Reconcile rebuilt what the joined endpoint needs, and said so.
		h2.wantLinks(dev)
		if !h2.logHas(logrus.WarnLevel, "re-created the network's missing vxlan interface", dev) {
			t.Fatal("reconcile did not log the rebuilt device")
		}
		h2.must("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h2.wantLinks(dev, netconfig.EndpointIfName(epID(1)))
		h2.leave(netID, 1)
		h2.wantLinks()
	})
	t.Run("join recorded, dockerd gives up", func(t *testing.T) {
		// Same crash; dockerd answers a failed join with DeleteEndpoint: nothing is left.
		host := nstest.New(t, "vxhdrv")
		dir := t.TempDir()
		h := startHarness(t, host, dir, &dataplane.Hooks{})
		h.createNetwork(netID, nil)
		h.createEndpoint(netID, 1)
		ep, _ := h.endpoint(netID, 1)
		ep.Joined = true
		if err := h.st.PutEndpoint(ep); err != nil {
			t.Fatal(err)
		}
		h.crash()
		h2 := startHarness(t, host, dir, &dataplane.Hooks{})
		h2.must("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h2.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h2.wantLinks()
		if eps, _ := h2.st.ListEndpoints(""); len(eps) != 0 {
			t.Fatalf("records left: %+v", eps)
		}
	})
	t.Run("interface without a record", func(t *testing.T) {
		// The interface and device exist, the record is gone (state behind the kernel): the new driver
		// sweeps both, logging each, and the endpoint can be made again.
		host := nstest.New(t, "vxhdrv")
		dir := t.TempDir()
		h := startHarness(t, host, dir, &dataplane.Hooks{})
		vni := h.createNetwork(netID, nil)
		h.join(netID, 1)
		if err := h.st.DeleteEndpoint(netID, epID(1)); err != nil {
			t.Fatal(err)
		}
		h.crash()
		h2 := startHarness(t, host, dir, &dataplane.Hooks{})
		dev, ifName := netconfig.DeviceName(vni, netID), netconfig.EndpointIfName(epID(1))
		h2.wantLinks()
		if !h2.logHas(logrus.WarnLevel, "sweep: deleted", ifName, "not joined") ||
			!h2.logHas(logrus.WarnLevel, "sweep: deleted", dev, "no endpoint joined") {
			t.Fatal("the sweep did not log what it deleted and why")
		}
		h2.join(netID, 1)
		h2.wantLinks(dev, ifName)
		h2.leave(netID, 1)
		h2.wantLinks()
	})
	t.Run("joined, interface not yet moved", func(t *testing.T) {
		// Join finished but the process died before answering: the interface is still in the host
		// namespace with a joined record. The new driver keeps both; dockerd's DeleteEndpoint removes them.
		host := nstest.New(t, "vxhdrv")
		dir := t.TempDir()
		h := startHarness(t, host, dir, &dataplane.Hooks{})
		vni := h.createNetwork(netID, nil)
		h.join(netID, 1)
		dev, ifName := netconfig.DeviceName(vni, netID), netconfig.EndpointIfName(epID(1))
		devIdx, ifIdx := h.link(dev).Attrs().Index, h.link(ifName).Attrs().Index
		h.crash()
		h2 := startHarness(t, host, dir, &dataplane.Hooks{})
		if h2.link(dev) == nil || h2.link(dev).Attrs().Index != devIdx || h2.link(ifName) == nil || h2.link(ifName).Attrs().Index != ifIdx {
			t.Fatalf("restart touched a joined endpoint: links %v", h2.links())
		}
		h2.leave(netID, 1)
		h2.wantLinks()
	})
	t.Run("delete endpoint half done", func(t *testing.T) {
		// DeleteEndpoint removed the interface, then the process died before the record went.
		host := nstest.New(t, "vxhdrv")
		dir := t.TempDir()
		h := startHarness(t, host, dir, &dataplane.Hooks{})
		vni := h.createNetwork(netID, nil)
		h.join(netID, 1)
		h.must("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		if err := h.dp.DeleteEndpointIf(netID, epID(1), netconfig.EndpointIfName(epID(1))); err != nil {
			t.Fatal(err)
		}
		h.crash()
		h2 := startHarness(t, host, dir, &dataplane.Hooks{})
		// The device nothing needs is swept at start.
		h2.wantLinks()
		if !h2.logHas(logrus.WarnLevel, "sweep: deleted", netconfig.DeviceName(vni, netID)) {
			t.Fatal("the sweep did not log the device it deleted")
		}
		h2.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		if eps, _ := h2.st.ListEndpoints(""); len(eps) != 0 {
			t.Fatalf("records left: %+v", eps)
		}
		h2.must("DeleteNetwork", network.DeleteNetworkRequest{NetworkID: netID}, nil)
		if nets, _ := h2.st.ListNetworks(); len(nets) != 0 {
			t.Fatalf("network records left: %+v", nets)
		}
	})
}

// TestRemoteRecordsCannotHijack: records from the control plane (which an attacker may forge or replay
// when gossip runs without a key) never take over an address of a local endpoint, never install
// default-destination or group FDB entries, never touch networks this host does not carry, and never
// delete an interface.
func TestRemoteRecordsCannotHijack(t *testing.T) {
	host := nstest.New(t, "vxhdrv")
	ctl := newFakeControl()
	h := startWith(t, host, t.TempDir(), &dataplane.Hooks{}, ctl, "192.0.2.1")
	vni := h.createNetwork(netID, nil)
	h.join(netID, 1) // 10.0.1.11, 02:42:0a:00:01:0b
	dev := netconfig.DeviceName(vni, netID)
	ifName := netconfig.EndpointIfName(epID(1))
	idx := h.link(dev).Attrs().Index
	legit := gossip.Endpoint{Network: netID, EndpointID: "r1", IP: "10.0.1.50", MAC: "02:42:0a:00:01:32", VTEP: "192.0.2.2"}
	h.drv.RemoteChange(legit, false)
	forged := map[string]gossip.Endpoint{
		"local IP":            {Network: netID, EndpointID: "f1", IP: "10.0.1.11", MAC: "02:42:66:66:66:01", VTEP: "192.0.2.66"},
		"local MAC":           {Network: netID, EndpointID: "f2", IP: "10.0.1.77", MAC: "02:42:0a:00:01:0b", VTEP: "192.0.2.66"},
		"zero MAC":            {Network: netID, EndpointID: "f3", IP: "10.0.1.78", MAC: "00:00:00:00:00:00", VTEP: "192.0.2.66"},
		"broadcast MAC":       {Network: netID, EndpointID: "f4", IP: "10.0.1.79", MAC: "ff:ff:ff:ff:ff:ff", VTEP: "192.0.2.66"},
		"multicast MAC":       {Network: netID, EndpointID: "f5", IP: "10.0.1.80", MAC: "01:00:5e:00:00:01", VTEP: "192.0.2.66"},
		"outside the subnet":  {Network: netID, EndpointID: "f6", IP: "10.9.9.9", MAC: "02:42:0a:09:09:09", VTEP: "192.0.2.66"},
		"gateway":             {Network: netID, EndpointID: "f7", IP: "10.0.1.1", MAC: "02:42:0a:00:01:01", VTEP: "192.0.2.66"},
		"broadcast IP":        {Network: netID, EndpointID: "f8", IP: "255.255.255.255", MAC: "02:42:ff:ff:ff:ff", VTEP: "192.0.2.66"},
		"loopback VTEP":       {Network: netID, EndpointID: "f9", IP: "10.0.1.81", MAC: "02:42:0a:00:01:51", VTEP: "127.0.0.1"},
		"unspecified VTEP":    {Network: netID, EndpointID: "fa", IP: "10.0.1.82", MAC: "02:42:0a:00:01:52", VTEP: "0.0.0.0"},
		"multicast VTEP":      {Network: netID, EndpointID: "fb", IP: "10.0.1.83", MAC: "02:42:0a:00:01:53", VTEP: "239.1.1.1"},
		"this host's VTEP":    {Network: netID, EndpointID: "fc", IP: "10.0.1.84", MAC: "02:42:0a:00:01:54", VTEP: "192.0.2.1"},
		"malformed":           {Network: netID, EndpointID: "fd", IP: "10.0.1.85", MAC: "banana", VTEP: "192.0.2.66"},
		"unknown network":     {Network: "unknown0000000000000000000000000000000000000000000000000000000000", EndpointID: "fe", IP: "10.0.1.86", MAC: "02:42:0a:00:01:56", VTEP: "192.0.2.66"},
		"path-like network":   {Network: "../../../proc/self", EndpointID: "ff", IP: "10.0.1.87", MAC: "02:42:0a:00:01:57", VTEP: "192.0.2.66"},
		"network not carried": {Network: "n0tcarr1ed000000000000000000000000000000000000000000000000000000", EndpointID: "fg", IP: "10.0.1.88", MAC: "02:42:0a:00:01:58", VTEP: "192.0.2.66"},
	}
	// A second network known here but without an endpoint on this host (so without a device).
	h.createNetwork("n0tcarr1ed000000000000000000000000000000000000000000000000000000", map[string]string{netconfig.OptVNIList: "4242"})
	onlyLegit := func(what string) {
		t.Helper()
		peers, err := h.dp.Peers(idx)
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) != 1 || peers[0].IP.String() != "10.0.1.50" || peers[0].VTEP.String() != "192.0.2.2" {
			t.Fatalf("%s: programmed peers %v, want only the legitimate one", what, peers)
		}
		fdb, _ := h.host.NL.NeighList(idx, unix.AF_BRIDGE)
		for _, f := range fdb {
			if f.HardwareAddr.String() != "02:42:0a:00:01:32" && f.State&netlink.NUD_PERMANENT != 0 {
				t.Fatalf("%s: FDB entry %s -> %s", what, f.HardwareAddr, f.IP)
			}
		}
		h.wantLinks(dev, ifName)
		if l := h.link(ifName); l.Attrs().HardwareAddr.String() != "02:42:0a:00:01:0b" {
			t.Fatalf("%s: local endpoint interface changed: %+v", what, l.Attrs())
		}
	}
	onlyLegit("legitimate record")
	for what, ep := range forged {
		h.drv.RemoteChange(ep, false)
		onlyLegit("forged record with " + what)
	}
	if !h.logHas(logrus.WarnLevel, "ignoring remote endpoint", "10.0.1.11", "belongs to an endpoint on this host") ||
		!h.logHas(logrus.WarnLevel, "ignoring remote endpoint", "00:00:00:00:00:00") {
		t.Fatal("refused records are not logged with the reason")
	}
	// The same records through the full resync (what a sweep interval or a new device does).
	all := []gossip.Endpoint{legit}
	for _, ep := range forged {
		if ep.Network == netID { // the control plane answers per network
			all = append(all, ep)
		}
	}
	ctl.set(netID, all...)
	h.resync(netID)
	onlyLegit("resync with forged records")
	// An entry a forged record could have installed before (an older version) is removed by the resync.
	bad := dataplane.Peer{IP: net.ParseIP("10.0.1.11").To4(), MAC: net.HardwareAddr{2, 0x42, 0x66, 0x66, 0x66, 1}, VTEP: net.ParseIP("192.0.2.66").To4()}
	if err := h.dp.AddPeer(idx, bad); err != nil {
		t.Fatal(err)
	}
	h.resync(netID)
	onlyLegit("resync after a planted hijack")
	// Forged removals may drop remote entries (that is what a key is for) but never an interface.
	for _, ep := range forged {
		h.drv.RemoteChange(ep, true)
	}
	h.drv.RemoteChange(gossip.Endpoint{Network: netID, EndpointID: epID(1), IP: "10.0.1.11", MAC: "02:42:0a:00:01:0b", VTEP: "192.0.2.66"}, true)
	onlyLegit("forged removals")
	// Nothing appeared for the network without a device.
	h.wantLinks(dev, ifName)
}

func (h *harness) resync(nid string) {
	h.drv.mu.Lock()
	ns := h.drv.networks[nid]
	h.drv.mu.Unlock()
	ns.mu.Lock()
	h.drv.programPeersLocked(ns, true)
	ns.mu.Unlock()
}

// TestRemoteAddressMovesBetweenHosts: an address moves from a container on one host to a container on
// another; the control plane reports the new endpoint before the removal of the old one (the two come
// from different hosts, in no particular order). The new endpoint must stay reachable.
func TestRemoteAddressMovesBetweenHosts(t *testing.T) {
	host := nstest.New(t, "vxhdrv")
	ctl := newFakeControl()
	h := startWith(t, host, t.TempDir(), &dataplane.Hooks{}, ctl, "192.0.2.1")
	vni := h.createNetwork(netID, nil)
	h.join(netID, 1)
	idx := h.link(netconfig.DeviceName(vni, netID)).Attrs().Index
	old := gossip.Endpoint{Network: netID, EndpointID: "old", IP: "10.0.1.60", MAC: "02:42:0a:00:01:3c", VTEP: "192.0.2.2"}
	moved := gossip.Endpoint{Network: netID, EndpointID: "new", IP: "10.0.1.60", MAC: "02:42:0a:00:01:3c", VTEP: "192.0.2.3"}
	ctl.set(netID, old)
	h.drv.RemoteChange(old, false)
	ctl.set(netID, old, moved)
	h.drv.RemoteChange(moved, false)
	ctl.set(netID, moved)
	h.drv.RemoteChange(old, true)
	peers, err := h.dp.Peers(idx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].IP.String() != "10.0.1.60" || peers[0].VTEP.String() != "192.0.2.3" {
		t.Fatalf("after the address moved: peers %v, want 10.0.1.60 at 192.0.2.3", peers)
	}
}

// TestHostileInputMore adds to TestHostileInput: negative numbers as JSON numbers, path-like and
// oversized IDs on every method that takes one, unknown IDs on every method, and wrong JSON types. Each
// is refused with an error naming the field, or (for idempotent deletes) accepted without changing
// anything; the kernel and the state are unchanged afterwards.
func TestHostileInputMore(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(netID, nil)
	h.join(netID, 1)
	linksBefore := h.links()
	sort.Strings(linksBefore)
	unknownNet := "0000000000000000000000000000000000000000000000000000000000000bad"
	unknownEp := "0000000000000000000000000000000000000000000000000000000000000bad"
	gen := func(kv string) string {
		return `{"NetworkID": "n2", "Options": {"com.docker.network.generic": {` + kv + `}}, "IPv4Data": [{"Pool": "10.0.9.0/24"}]}`
	}
	cases := []struct {
		method, body, want string
	}{
		// negative numbers, as JSON numbers and strings
		{"CreateNetwork", gen(`"com.docker.network.driver.overlay.vxlanid_list": -5`), netconfig.OptVNIList},
		{"CreateNetwork", gen(`"com.docker.network.driver.overlay.vxlanid_list": 5, "com.docker.network.driver.mtu": -1500`), netconfig.OptMTU},
		{"CreateNetwork", gen(`"com.docker.network.driver.overlay.vxlanid_list": 5, "vxsafe.port": -1`), netconfig.OptPort},
		{"CreateNetwork", gen(`"com.docker.network.driver.overlay.vxlanid_list": 5, "vxsafe.port": "-4789"`), netconfig.OptPort},
		{"CreateNetwork", gen(`"com.docker.network.driver.overlay.vxlanid_list": 4294967297`), netconfig.OptVNIList},
		{"CreateNetwork", gen(`"com.docker.network.driver.overlay.vxlanid_list": 16777215.5`), netconfig.OptVNIList},
		{"AllocateNetwork", `{"NetworkID": "n2", "Options": {"com.docker.network.driver.mtu": "-1"}}`, netconfig.OptMTU},
		{"AllocateNetwork", `{"NetworkID": "n2", "Options": {"vxsafe.port": "-1"}}`, netconfig.OptPort},
		{"AllocateNetwork", `{"NetworkID": "n2", "Options": {"com.docker.network.driver.overlay.vxlanid_list": "0"}}`, netconfig.OptVNIList},
		{"AllocateNetwork", `{"NetworkID": "n2", "Options": {"com.docker.network.driver.overlay.vxlanid_list": "16777216"}}`, netconfig.OptVNIList},
		{"AllocateNetwork", `{"NetworkID": "n2", "Options": {"com.docker.network.driver.mtu": "67"}}`, netconfig.OptMTU},
		{"AllocateNetwork", `{"NetworkID": "n2", "Options": {"com.docker.network.driver.mtu": "65536"}}`, netconfig.OptMTU},
		// path-like and oversized IDs on every method taking one
		{"AllocateNetwork", `{"NetworkID": "../../etc/passwd"}`, "network ID"},
		{"FreeNetwork", `{"NetworkID": "/var/lib/vxsafe/vxsafe.db"}`, "network ID"},
		{"DeleteNetwork", `{"NetworkID": "../` + netID + `"}`, "network ID"},
		{"CreateEndpoint", `{"NetworkID": "` + netID + `", "EndpointID": "../../x", "Interface": {"Address": "10.0.1.99/24"}}`, "endpoint ID"},
		{"Join", `{"NetworkID": "` + netID + `", "EndpointID": "..", "SandboxKey": "/proc/1/ns/net"}`, "endpoint ID"},
		{"Join", `{"NetworkID": "a\u0000b", "EndpointID": "` + epID(1) + `"}`, "network ID"},
		{"Leave", `{"NetworkID": "` + netID + `", "EndpointID": "x/../../` + epID(1) + `"}`, "endpoint ID"},
		{"DeleteEndpoint", `{"NetworkID": "` + netID + `", "EndpointID": "` + epID(1) + `/.."}`, "endpoint ID"},
		{"EndpointOperInfo", `{"NetworkID": "` + netID + `", "EndpointID": "/etc"}`, "endpoint ID"},
		{"CreateNetwork", `{"NetworkID": "` + strings.Repeat("a", 5000) + `"}`, "network ID"},
		{"Join", `{"NetworkID": "` + netID + `", "EndpointID": "` + strings.Repeat("e", 5000) + `"}`, "endpoint ID"},
		// unknown IDs
		{"CreateEndpoint", `{"NetworkID": "` + unknownNet + `", "EndpointID": "e9", "Interface": {"Address": "10.0.1.99/24"}}`, "not known"},
		{"Join", `{"NetworkID": "` + unknownNet + `", "EndpointID": "` + epID(1) + `"}`, "not known"},
		{"Leave", `{"NetworkID": "` + unknownNet + `", "EndpointID": "` + epID(1) + `"}`, "not known"},
		{"DeleteEndpoint", `{"NetworkID": "` + unknownNet + `", "EndpointID": "` + epID(1) + `"}`, "not known"},
		{"EndpointOperInfo", `{"NetworkID": "` + unknownNet + `", "EndpointID": "` + epID(1) + `"}`, "not known"},
		{"EndpointOperInfo", `{"NetworkID": "` + netID + `", "EndpointID": "` + unknownEp + `"}`, "not known"},
		{"Join", `{"NetworkID": "` + netID + `", "EndpointID": "` + unknownEp + `"}`, "no CreateEndpoint"},
		// wrong types
		{"CreateNetwork", `{"NetworkID": "n2", "Options": "vxlanid_list=5"}`, `"Options"`},
		{"CreateNetwork", `{"NetworkID": "n2", "Options": {"com.docker.network.generic": [5]}}`, "com.docker.network.generic"},
		{"CreateNetwork", `{"NetworkID": "n2", "IPv4Data": {"Pool": "10.0.9.0/24"}}`, `"IPv4Data"`},
		{"CreateNetwork", gen(`"com.docker.network.driver.overlay.vxlanid_list": true`), netconfig.OptVNIList},
		{"CreateNetwork", gen(`"com.docker.network.driver.overlay.vxlanid_list": {"a": 1}`), netconfig.OptVNIList},
		{"AllocateNetwork", `{"NetworkID": "n2", "Options": {"com.docker.network.driver.overlay.vxlanid_list": 5}}`, `"Options`},
		{"CreateEndpoint", `{"NetworkID": "` + netID + `", "EndpointID": "e9", "Interface": "10.0.1.99/24"}`, `"Interface"`},
		{"CreateEndpoint", `{"NetworkID": "` + netID + `", "EndpointID": "e9", "Interface": {"Address": 167772515}}`, `Address`},
		{"CreateEndpoint", `{"NetworkID": "` + netID + `", "EndpointID": "e9", "Interface": {"Address": "10.0.1.99/24", "MacAddress": "zz"}}`, `MacAddress`},
		{"CreateEndpoint", `{"NetworkID": "` + netID + `", "EndpointID": "e9", "Interface": {"Address": "fd00::9/64"}}`, `IPv4`},
		{"Join", `{"NetworkID": "` + netID + `", "EndpointID": "` + epID(1) + `", "SandboxKey": 7}`, `"SandboxKey"`},
		{"Join", `{"NetworkID": ["` + netID + `"], "EndpointID": "` + epID(1) + `"}`, `"NetworkID"`},
		{"DiscoverNew", `{"DiscoveryType": "one", "DiscoveryData": {}}`, `"DiscoveryType"`},
		{"EndpointOperInfo", `{"NetworkID": null, "EndpointID": null}`, "ID"},
		{"CreateNetwork", `"just a string"`, "CreateNetwork"},
		{"CreateNetwork", `{"NetworkID": "n2"} trailing`, ""},
	}
	for _, c := range cases {
		e := h.raw(c.method, strings.NewReader(c.body), nil)
		body := c.body
		if len(body) > 120 {
			body = body[:120] + "..."
		}
		if c.want == "" {
			continue // only that it does not break anything
		}
		if e == "" || !strings.Contains(e, c.want) {
			t.Errorf("%s %s: error %q, want it to contain %q", c.method, body, e, c.want)
		}
	}
	// Idempotent operations on unknown IDs succeed without effect.
	h.must("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: unknownEp}, nil)
	h.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: unknownEp}, nil)
	h.must("DeleteNetwork", network.DeleteNetworkRequest{NetworkID: unknownNet}, nil)
	h.must("FreeNetwork", network.FreeNetworkRequest{NetworkID: unknownNet}, nil)
	h.must("DiscoverNew", network.DiscoveryNotification{DiscoveryType: 1, DiscoveryData: map[string]any{"Address": "../../x"}}, nil)
	h.must("DiscoverNew", network.DiscoveryNotification{DiscoveryType: -1}, nil)
	// Nothing changed: same interfaces, the joined endpoint still joined, no other record.
	after := h.links()
	sort.Strings(after)
	if strings.Join(after, ",") != strings.Join(linksBefore, ",") {
		t.Fatalf("links changed by hostile input: %v -> %v", linksBefore, after)
	}
	nets, _ := h.st.ListNetworks()
	eps, _ := h.st.ListEndpoints("")
	if len(nets) != 1 || len(eps) != 1 || !eps[0].Joined {
		t.Fatalf("state changed by hostile input: networks %+v endpoints %+v", nets, eps)
	}
	allocs, _ := h.st.Allocations()
	if len(allocs) != 1 {
		t.Fatalf("allocations changed by hostile input: %v", allocs)
	}
}

// TestRestartKeepsRemotePeers: a restarted plugin knows no remote endpoint until its gossip has synced;
// the entries programmed by the previous run stay (running containers keep reaching the other hosts)
// until the control plane says it has a complete view without them.
func TestRestartKeepsRemotePeers(t *testing.T) {
	host := nstest.New(t, "vxhdrv")
	dir := t.TempDir()
	ctl := newFakeControl()
	h := startWith(t, host, dir, &dataplane.Hooks{}, ctl, "192.0.2.1")
	vni := h.createNetwork(netID, nil)
	r1 := gossip.Endpoint{Network: netID, EndpointID: "r1", IP: "10.0.1.50", MAC: "02:42:0a:00:01:32", VTEP: "192.0.2.2"}
	ctl.set(netID, r1)
	h.join(netID, 1)
	dev := netconfig.DeviceName(vni, netID)
	idx := h.link(dev).Attrs().Index
	one := func(what string, want int) {
		t.Helper()
		peers, err := h.dp.Peers(idx)
		if err != nil || len(peers) != want {
			t.Fatalf("%s: peers %v (err %v), want %d", what, peers, err, want)
		}
	}
	one("before the restart", 1)
	h.crash()
	// The new run's control plane has not synced yet: it knows nothing.
	ctl2 := newFakeControl()
	ctl2.synced = false
	h2 := startWith(t, host, dir, &dataplane.Hooks{}, ctl2, "192.0.2.1")
	h = h2
	one("after the restart", 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h2.drv.Run(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(200 * time.Millisecond) // several resyncs while not synced
	one("resyncs before the control plane synced", 1)
	// Synced, and the endpoint is really gone: pruned.
	ctl2.mu.Lock()
	ctl2.synced = true
	ctl2.mu.Unlock()
	waitUntil(t, 5*time.Second, "the gone remote endpoint pruned", func() bool {
		peers, _ := h2.dp.Peers(idx)
		return len(peers) == 0
	})
}

// TestDeadEndpointReaped: an endpoint whose container died without a Leave (dockerd crashed, or the host
// rebooted, and dockerd removed the stale sandbox without telling the driver) is marked left and
// withdrawn once its sandbox and its interface are both gone — and only then.
func TestDeadEndpointReaped(t *testing.T) {
	host := nstest.New(t, "vxhdrv")
	ctl := newFakeControl()
	h := startWith(t, host, t.TempDir(), &dataplane.Hooks{}, ctl, "192.0.2.1")
	// A network ID of its own: the check looks for the endpoint's interface in every namespace.
	nid := fmt.Sprintf("dead%060x", time.Now().UnixNano())
	vni := h.createNetwork(nid, nil)
	dev := netconfig.DeviceName(vni, nid)
	// The sandbox key, as libnetwork makes it: a file with the container's namespace bind-mounted on it.
	ctr := nstest.New(t, "vxhdead")
	sandbox := filepath.Join(t.TempDir(), "sandbox")
	if err := os.WriteFile(sandbox, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(ctr.Path(), sandbox, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(sandbox, unix.MNT_DETACH) })
	h.createEndpoint(nid, 1)
	var jr network.JoinResponse
	h.must("Join", network.JoinRequest{NetworkID: nid, EndpointID: epID(1), SandboxKey: sandbox}, &jr)
	if err := host.NL.LinkSetNsFd(h.link(jr.InterfaceName.SrcName), int(ctr.Handle)); err != nil {
		t.Fatal(err)
	}
	// A second endpoint whose sandbox cannot be judged (its directory is nowhere to be seen): never
	// reaped, even once its interface is gone.
	h.createEndpoint(nid, 2)
	h.must("Join", network.JoinRequest{NetworkID: nid, EndpointID: epID(2), SandboxKey: "/nonexistent/vxh/sandbox"}, nil)
	joined := func(i int) bool {
		ep, _ := h.endpoint(nid, i)
		return ep.Joined
	}
	published := func(i int) bool {
		ctl.mu.Lock()
		defer ctl.mu.Unlock()
		_, ok := ctl.published[nid+"/"+epID(i)]
		return ok
	}
	h.drv.Sweep()
	if !joined(1) || !joined(2) || !published(1) || !published(2) {
		t.Fatal("a live endpoint was reaped")
	}
	// Sandbox gone (unmounted, the file left behind as dockerd does), interface still in the container:
	// alive.
	if err := unix.Unmount(sandbox, 0); err != nil {
		t.Fatal(err)
	}
	h.drv.Sweep()
	if !joined(1) {
		t.Fatal("endpoint reaped while its interface is still in its container")
	}
	// The container's namespace goes with its interface: dead.
	if err := ctr.NL.LinkDel(mustLink(t, ctr.NL, jr.InterfaceName.SrcName)); err != nil {
		t.Fatal(err)
	}
	h.drv.Sweep()
	if joined(1) || published(1) {
		t.Fatal("dead endpoint still joined or published")
	}
	if !joined(2) || !published(2) {
		t.Fatal("the live endpoint was reaped with the dead one")
	}
	if err := host.NL.LinkDel(h.link(netconfig.EndpointIfName(epID(2)))); err != nil {
		t.Fatal(err)
	}
	h.drv.Sweep()
	if !joined(2) {
		t.Fatal("an endpoint was reaped without proof that its sandbox is gone")
	}
	if !h.logHas(logrus.WarnLevel, "its sandbox", "gone", epID(1)[:12]) {
		t.Fatal("the reap is not logged")
	}
	if h.link(dev) == nil {
		t.Fatal("device removed while an endpoint is joined")
	}
	// dockerd may still send Leave and DeleteEndpoint for it later: both succeed.
	h.leave(nid, 1)
	h.leave(nid, 2)
	h.wantLinks()
}

// TestDeadEndpointGrace: with the default grace, an endpoint that was just joined is never reaped, even
// when no interface of it is visible (a container being started may hold it in a namespace no process
// pins yet).
func TestDeadEndpointGrace(t *testing.T) {
	h := newHarness(t) // default DeadEndpointGrace
	nid := fmt.Sprintf("grace%059x", time.Now().UnixNano())
	h.createNetwork(nid, nil)
	h.createEndpoint(nid, 1)
	var jr network.JoinResponse
	// A sandbox that is provably gone (its directory exists, it does not).
	gone := filepath.Join(t.TempDir(), "sandbox")
	h.must("Join", network.JoinRequest{NetworkID: nid, EndpointID: epID(1), SandboxKey: gone}, &jr)
	if err := h.host.NL.LinkDel(h.link(jr.InterfaceName.SrcName)); err != nil {
		t.Fatal(err)
	}
	h.drv.Sweep()
	h.drv.Sweep()
	if ep, _ := h.endpoint(nid, 1); !ep.Joined {
		t.Fatal("an endpoint joined a moment ago was reaped")
	}
}
