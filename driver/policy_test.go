package driver

// Tests of the driver's policy on a fakeDataplane: they need neither root nor a kernel, and run in
// `make unit` (go test -run '^TestUnit' ./driver/).

import (
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/netconfig"
)

func peer(ip, mac, vtep string) dataplane.Peer {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	return dataplane.Peer{IP: net.ParseIP(ip).To4(), MAC: hw, VTEP: net.ParseIP(vtep).To4()}
}

func remote(i int, ip, mac, vtep string) gossip.Endpoint {
	return gossip.Endpoint{Network: netID, EndpointID: epID(100 + i), IP: ip, MAC: mac, VTEP: vtep}
}

func TestUnitRemoteRefusal(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	if err := u.join(netID, 1, "/run/docker/netns/a"); err != nil { // 10.0.1.11, MAC from its IP
		t.Fatal(err)
	}
	ep, _, _ := u.st.GetEndpoint(netID, epID(1))
	ns.mu.Lock()
	local := u.drv.localAddrsLocked(ns)
	ns.mu.Unlock()
	for _, c := range []struct {
		name  string
		p     dataplane.Peer
		local map[string]bool
		want  string // a word of the refusal; "" for none
	}{
		{"fine", peer("10.0.1.50", "02:42:0a:00:01:32", "192.0.2.2"), local, ""},
		{"multicast MAC", peer("10.0.1.50", "03:00:00:00:00:01", "192.0.2.2"), local, "not a unicast MAC"},
		{"zero MAC", peer("10.0.1.50", "00:00:00:00:00:00", "192.0.2.2"), local, "VXLAN default destination"},
		{"IPv6 address", dataplane.Peer{IP: net.ParseIP("fd00::1"), MAC: peer("10.0.1.50", "02:42:0a:00:01:32", "192.0.2.2").MAC,
			VTEP: net.ParseIP("192.0.2.2")}, local, "not a unicast IPv4"},
		{"loopback VTEP", peer("10.0.1.50", "02:42:0a:00:01:32", "127.0.0.1"), local, "VTEP 127.0.0.1"},
		{"broadcast VTEP", peer("10.0.1.50", "02:42:0a:00:01:32", "255.255.255.255"), local, "not a unicast address"},
		{"local IP", peer("10.0.1.11", "02:42:0a:00:01:32", "192.0.2.2"), local, "belongs to an endpoint on this host"},
		{"local MAC", peer("10.0.1.50", ep.MAC, "192.0.2.2"), local, "MAC " + ep.MAC + " belongs"},
		{"outside the subnets", peer("10.9.0.5", "02:42:0a:00:01:32", "192.0.2.2"), local, "outside the network's subnets"},
		{"gateway", peer("10.0.1.1", "02:42:0a:00:01:32", "192.0.2.2"), local, "gateway address"},
	} {
		ns.mu.Lock()
		got := u.drv.remoteRefusal(ns, c.p, c.local)
		ns.mu.Unlock()
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: remoteRefusal(%s) = %q, want one saying %q", c.name, c.p, got, c.want)
		}
	}
}

func TestUnitProgramPeersDiff(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	u.ctl.set(netID,
		remote(1, "10.0.1.51", "02:42:0a:00:01:33", "192.0.2.2"),
		remote(2, "10.0.1.52", "02:42:0a:00:01:34", "192.0.2.3"),
		remote(3, "10.0.1.53", "02:42:0a:00:01:35", unitVTEP),    // ours: never programmed
		remote(4, "10.0.1.1", "02:42:0a:00:01:36", "192.0.2.4"),  // the gateway: refused
		remote(5, "not an IP", "02:42:0a:00:01:37", "192.0.2.4"), // malformed: skipped
	)
	if err := u.join(netID, 1, "/run/docker/netns/a"); err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.1.51 02:42:0a:00:01:33 192.0.2.2", "10.0.1.52 02:42:0a:00:01:34 192.0.2.3"}
	if got := u.dp.peerList(ns.spec); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the first join: peers %q, want %q", got, want)
	}
	// The control plane's view changes: endpoint 1 moves to another host, 2 goes, 6 comes.
	u.ctl.set(netID,
		remote(1, "10.0.1.51", "02:42:0a:00:01:33", "192.0.2.9"),
		remote(6, "10.0.1.56", "02:42:0a:00:01:38", "192.0.2.3"),
	)
	ns.mu.Lock()
	u.drv.programPeersLocked(ns, false) // as after a start: add and replace, remove nothing
	ns.mu.Unlock()
	want = []string{"10.0.1.51 02:42:0a:00:01:33 192.0.2.9", "10.0.1.52 02:42:0a:00:01:34 192.0.2.3", "10.0.1.56 02:42:0a:00:01:38 192.0.2.3"}
	if got := u.dp.peerList(ns.spec); !reflect.DeepEqual(got, want) {
		t.Fatalf("without prune: peers %q, want %q", got, want)
	}
	ns.mu.Lock()
	u.drv.programPeersLocked(ns, true)
	ns.mu.Unlock()
	want = []string{"10.0.1.51 02:42:0a:00:01:33 192.0.2.9", "10.0.1.56 02:42:0a:00:01:38 192.0.2.3"}
	if got := u.dp.peerList(ns.spec); !reflect.DeepEqual(got, want) {
		t.Fatalf("with prune: peers %q, want %q", got, want)
	}
	// Nothing changed: no kernel write.
	adds, dels := u.dp.count("AddPeer"), u.dp.count("DelPeer")
	ns.mu.Lock()
	u.drv.programPeersLocked(ns, true)
	ns.mu.Unlock()
	if u.dp.count("AddPeer") != adds || u.dp.count("DelPeer") != dels {
		t.Errorf("a resync with nothing to change wrote to the kernel: %d adds, %d deletes",
			u.dp.count("AddPeer")-adds, u.dp.count("DelPeer")-dels)
	}
}

func TestUnitControlSyncedDecidesPrune(t *testing.T) {
	u := newUnit(t)
	if !u.drv.controlSynced() {
		t.Fatal("a synced control plane is reported unsynced")
	}
	u.ctl.mu.Lock()
	u.ctl.synced = false
	u.ctl.mu.Unlock()
	if u.drv.controlSynced() {
		t.Fatal("an unsynced control plane is reported synced")
	}
}

func TestUnitRemoteChange(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	old := remote(1, "10.0.1.60", "02:42:0a:00:01:3c", "192.0.2.2")
	// Before the device exists, a change is dropped (the device is programmed from Remote when made).
	u.drv.RemoteChange(old, false)
	if u.dp.count("AddPeer") != 0 {
		t.Fatal("a remote change was programmed on a network without a device")
	}
	if err := u.join(netID, 1, "/run/docker/netns/a"); err != nil {
		t.Fatal(err)
	}
	u.drv.RemoteChange(old, false)
	u.drv.RemoteChange(remote(2, "10.0.1.61", "02:42:0a:00:01:3d", unitVTEP), false)    // ours
	u.drv.RemoteChange(remote(3, "10.0.1.11", "02:42:0a:00:01:3e", "192.0.2.2"), false) // a local IP
	u.drv.RemoteChange(gossip.Endpoint{Network: "unknown", EndpointID: epID(9), IP: "10.0.1.62"}, false)
	if got, want := u.dp.peerList(ns.spec), []string{"10.0.1.60 02:42:0a:00:01:3c 192.0.2.2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("peers %q, want %q", got, want)
	}
	if u.met.errs["remote_refused"] != 1 || u.logged(logrus.WarnLevel, "10.0.1.11", "belongs to an endpoint on this host") != 1 {
		t.Errorf("the refused endpoint was not counted and logged once: %v", u.met.errs)
	}
	// The address moves to a container on another host; the old record's removal arrives after the new one.
	moved := remote(4, "10.0.1.60", "02:42:0a:00:01:3f", "192.0.2.3")
	u.ctl.set(netID, old, moved)
	u.drv.RemoteChange(moved, false)
	u.ctl.set(netID, moved)
	u.drv.RemoteChange(old, true)
	if got, want := u.dp.peerList(ns.spec), []string{"10.0.1.60 02:42:0a:00:01:3f 192.0.2.3"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after the address moved: peers %q, want %q", got, want)
	}
}

func TestUnitJoinLeaveLifecycle(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	if err := u.join(netID, 1, "/run/docker/netns/a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := u.dp.VXLANIndex(ns.spec); !ok || ns.vxIndex == 0 {
		t.Fatal("join made no device")
	}
	if ns.spec.MTU != 1500-50 {
		t.Errorf("device MTU %d, want the underlay's less the VXLAN overhead (1450)", ns.spec.MTU)
	}
	pub, ok := u.ctl.published[netID+"/"+epID(1)]
	if !ok || pub.IP != "10.0.1.11" || pub.VTEP != unitVTEP {
		t.Fatalf("join published %+v (%v)", pub, ok)
	}
	if err := u.drv.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := u.ctl.published[netID+"/"+epID(1)]; ok {
		t.Error("leave did not withdraw the endpoint")
	}
	if ep, _, _ := u.st.GetEndpoint(netID, epID(1)); ep.Joined || ep.SandboxKey != "" {
		t.Errorf("after leave the record is %+v", ep)
	}
	if err := u.drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}); err != nil {
		t.Fatal(err)
	}
	u.flush()
	if _, ok := u.dp.VXLANIndex(ns.spec); ok || ns.vxIndex != 0 {
		t.Error("the device outlived the network's last endpoint")
	}
	if n, eps := u.drv.Counts(); n != 1 || eps != 0 {
		t.Errorf("Counts() = %d, %d; want 1, 0", n, eps)
	}
}

func TestUnitJoinConflictCountedAndUndone(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	ce := &dataplane.ConflictError{Device: dataplane.Device{Name: "vxlan0", Index: 7, VNI: ns.spec.VNI, Port: 4789,
		NS: dataplane.Namespace{Desc: "host namespace", Host: true}}, Reason: "is up and has addresses 10.9.0.1/24",
		Want: dataplane.Want{NetworkID: netID, Name: ns.spec.Name, VNI: ns.spec.VNI, Port: 4789}}
	u.dp.ensureErr = ce
	err := u.join(netID, 1, "/run/docker/netns/a")
	if !errors.As(err, new(*dataplane.ConflictError)) || !strings.Contains(err.Error(), ce.Error()) {
		t.Fatalf("join error %v does not carry the conflict", err)
	}
	if u.met.conflicts != 1 {
		t.Errorf("%d conflicts counted, want 1", u.met.conflicts)
	}
	if ep, _, _ := u.st.GetEndpoint(netID, epID(1)); ep.Joined {
		t.Error("a failed join left the endpoint recorded as joined")
	}
	if _, ok := u.ctl.published[netID+"/"+epID(1)]; ok || len(ns.joined) != 0 {
		t.Error("a failed join published the endpoint or counted it joined")
	}
}

func TestUnitSweep(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	if err := u.join(netID, 1, "/run/docker/netns/a"); err != nil {
		t.Fatal(err)
	}
	u.dp.sandboxes["/run/docker/netns/a"] = true
	// A joined network's device and endpoint are kept.
	if n := u.drv.Sweep(); n != 0 {
		t.Fatalf("sweep removed %d interfaces of a joined endpoint", n)
	}
	// Leave without DeleteEndpoint, the interface back in the host namespace: the interface goes, then
	// the device, which nothing carries any more.
	if err := u.drv.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}); err != nil {
		t.Fatal(err)
	}
	if n := u.drv.Sweep(); n != 2 {
		t.Fatalf("sweep removed %d interfaces, want the endpoint's and the device", n)
	}
	if ns.vxIndex != 0 || u.met.stale["sweep"] != 2 {
		t.Errorf("after the sweep: vxIndex %d, %v removals counted", ns.vxIndex, u.met.stale)
	}
	// A device whose endpoint interface sits in a container is kept, and said so at info once.
	if err := u.join(netID, 2, "/run/docker/netns/b"); err != nil {
		t.Fatal(err)
	}
	u.dp.sandboxes["/run/docker/netns/b"] = true
	u.dp.mu.Lock()
	i := u.dp.ifs[netconfig.EndpointIfName(epID(2))]
	i.inContainer = true
	u.dp.ifs[netconfig.EndpointIfName(epID(2))] = i
	u.dp.mu.Unlock()
	ns.mu.Lock()
	delete(ns.joined, epID(2)) // the state lost the join
	ns.mu.Unlock()
	u.drv.Sweep()
	u.drv.Sweep()
	if _, ok := u.dp.VXLANIndex(ns.spec); !ok {
		t.Fatal("sweep deleted a device that carries a container's interface")
	}
	if n := u.logged(logrus.InfoLevel, "sweep: keeping vxlan interface", "netns of a container"); n != 1 {
		t.Errorf("the kept device was reported %d times at info, want once", n)
	}
	if n := u.logged(logrus.DebugLevel, "sweep: keeping vxlan interface"); n != 1 {
		t.Errorf("the kept device was reported %d times at debug, want once (the second sweep)", n)
	}
	// A device of a network unknown here goes.
	u.dp.mu.Lock()
	u.dp.devices["vx-unknown"] = fakeDevice{spec: dataplane.VXLANSpec{NetworkID: "unknown", Name: "vx-unknown"}, index: 99}
	u.dp.mu.Unlock()
	if n := u.drv.Sweep(); n != 1 {
		t.Errorf("sweep removed %d interfaces, want the unknown network's device", n)
	}
}

// joinDeadAndAlive joins endpoint 0, whose container died without a Leave (its sandbox and its interface
// are gone), endpoint 1, alive, and endpoints 2.. in the sandboxes named by more (unseen by the data plane).
func (u *unit) joinDeadAndAlive(more ...string) {
	u.t.Helper()
	u.createNetwork(netID)
	for i, key := range append([]string{"/run/docker/netns/gone", "/run/docker/netns/alive"}, more...) {
		if err := u.join(netID, i, key); err != nil {
			u.t.Fatal(err)
		}
	}
	u.dp.sandboxes["/run/docker/netns/gone"] = false
	u.dp.sandboxes["/run/docker/netns/alive"] = true
	u.dp.mu.Lock()
	delete(u.dp.ifs, netconfig.EndpointIfName(epID(0)))
	u.dp.mu.Unlock()
}

func TestUnitReapDeadEndpoints(t *testing.T) {
	u := newUnit(t)
	u.joinDeadAndAlive("/unseen/netns/x")
	if n := u.drv.reapDeadEndpoints(); n != 1 {
		t.Fatalf("reaped %d endpoints, want 1", n)
	}
	for i, wantJoined := range []bool{false, true, true} {
		ep, _, _ := u.st.GetEndpoint(netID, epID(i))
		_, published := u.ctl.published[netID+"/"+epID(i)]
		if ep.Joined != wantJoined || published != wantJoined {
			t.Errorf("endpoint %d: joined %v, published %v; want %v", i, ep.Joined, published, wantJoined)
		}
	}
	if u.logged(logrus.WarnLevel, "its sandbox /run/docker/netns/gone and its interface are gone") != 1 {
		t.Error("the reaped endpoint was not logged")
	}
}

func TestUnitReconcileReapsOnce(t *testing.T) {
	u := newUnit(t)
	u.joinDeadAndAlive()
	u.drv.Reconcile()
	// One reaping looks at each joined endpoint's sandbox once; a second would look at the live one again.
	if n := u.dp.count("SandboxExists"); n != 2 {
		t.Errorf("Reconcile looked at sandboxes %d times, want 2 (one reaping)", n)
	}
	if ep, _, _ := u.st.GetEndpoint(netID, epID(0)); ep.Joined {
		t.Error("Reconcile did not reap the dead endpoint")
	}
	if e := u.log.LastEntry(); e == nil || e.Data["reaped"] != 1 || e.Data["rebuilt"] != 0 {
		t.Errorf("Reconcile's summary: %v", e)
	}
}

func TestUnitSnapshot(t *testing.T) {
	u := newUnit(t)
	if len(u.drv.snapshot()) != 0 {
		t.Fatal("a new driver has networks")
	}
	other := strings.Repeat("b", 64)
	u.createNetwork(netID)
	u.createNetwork(other)
	if got := len(u.drv.snapshot()); got != 2 {
		t.Fatalf("snapshot has %d networks, want 2", got)
	}
	if got := u.drv.Networks(); !reflect.DeepEqual(got, []string{other, netID}) && !reflect.DeepEqual(got, []string{netID, other}) {
		t.Errorf("Networks() = %q", got)
	}
}

// A remote event is judged against the local endpoints the driver keeps, without reading the state, and
// an endpoint being joined counts as local from its record's write on.
func TestUnitLocalAddressesFromMemory(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	hijack := remote(1, "10.0.1.11", "02:42:0a:00:01:40", "192.0.2.2") // endpoint 1's IP
	u.ctl.set(netID, hijack)
	if err := u.join(netID, 1, "/run/docker/netns/a"); err != nil { // programs Remote while joining
		t.Fatal(err)
	}
	if got := u.dp.peerList(ns.spec); len(got) != 0 {
		t.Fatalf("the first join programmed a remote endpoint holding the joining endpoint's IP: %q", got)
	}
	for range 10 {
		u.st.FailNext("ListEndpoints")
	}
	u.drv.RemoteChange(hijack, false)
	u.drv.RemoteChange(remote(2, "10.0.1.52", "02:42:0a:00:01:41", "192.0.2.2"), false)
	if got, want := u.dp.peerList(ns.spec), []string{"10.0.1.52 02:42:0a:00:01:41 192.0.2.2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("peers %q, want %q", got, want)
	}
}
