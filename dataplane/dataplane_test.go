package dataplane

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/internal/nstest"
	"golang.org/x/sys/unix"
)

const testNet = "abcde1234567890fedcba"

func newManager(t *testing.T) (*Manager, *nstest.NS, *test.Hook) {
	t.Helper()
	return newManagerWith(t, nil)
}

func newManagerWith(t *testing.T, hooks *Hooks) (*Manager, *nstest.NS, *test.Hook) {
	t.Helper()
	host := nstest.New(t, "vxsdp")
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	m, err := New(Options{NS: host.Handle, Log: logrus.NewEntry(logger), Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, host, hook
}

func spec(vni uint32) VXLANSpec {
	return VXLANSpec{NetworkID: testNet, Name: "vx-" + hex6(vni) + "-abcde", VNI: vni, Port: 4789, MTU: 1450}
}

func hex6(v uint32) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 6)
	for i := 5; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b)
}

// plant creates a VXLAN device in ns directly (as another program would).
func plant(t *testing.T, ns *nstest.NS, name string, vni, port int, up bool) netlink.Link {
	t.Helper()
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name}, VxlanId: vni, Port: port}
	if err := ns.NL.LinkAdd(vx); err != nil {
		t.Fatalf("planting %s: %v", name, err)
	}
	l, err := ns.NL.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if up {
		if err := ns.NL.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func exists(ns *nstest.NS, name string) bool {
	_, err := ns.NL.LinkByName(name)
	return err == nil
}

func TestEnsureCreatesAndReuses(t *testing.T) {
	m, host, _ := newManager(t)
	s := spec(1048577)
	idx, removed, err := m.EnsureVXLAN(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 0 {
		t.Fatalf("removed %v on a clean namespace", removed)
	}
	l, err := host.NL.LinkByName(s.Name)
	if err != nil {
		t.Fatal(err)
	}
	vx := l.(*netlink.Vxlan)
	if vx.Index != idx || uint32(vx.VxlanId) != s.VNI || vx.Port != 4789 || vx.Learning || !vx.Proxy ||
		vx.MTU != 1450 || vx.Alias != NetworkAlias(testNet) || vx.Flags&net.FlagUp == 0 {
		t.Fatalf("device not as wanted: %+v", vx)
	}
	idx2, _, err := m.EnsureVXLAN(s, nil)
	if err != nil || idx2 != idx {
		t.Fatalf("second ensure: idx %d (want %d), err %v", idx2, idx, err)
	}
	if err := m.DeleteVXLAN(s); err != nil {
		t.Fatal(err)
	}
	if exists(host, s.Name) {
		t.Fatal("device still there after DeleteVXLAN")
	}
}

func TestStaleSameName(t *testing.T) {
	m, host, hook := newManager(t)
	s := spec(1048578)
	old := plant(t, host, s.Name, 4242, 4789, false) // DOWN, other VNI, as the seed found it
	idx, removed, err := m.EnsureVXLAN(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].Device.Index != old.Attrs().Index || removed[0].Reason != "is down" {
		t.Fatalf("removed = %+v", removed)
	}
	if idx == old.Attrs().Index {
		t.Fatal("stale device reused")
	}
	if !strings.Contains(lastWarn(hook), s.Name) {
		t.Fatalf("warn log does not name the device: %q", lastWarn(hook))
	}
}

func lastWarn(h *test.Hook) string {
	for i := len(h.AllEntries()) - 1; i >= 0; i-- {
		e := h.AllEntries()[i]
		if e.Level == logrus.WarnLevel {
			return e.Message
		}
	}
	return ""
}

func TestStaleSameVNIOtherName(t *testing.T) {
	m, host, _ := newManager(t)
	s := spec(1048579)
	plant(t, host, "vxsold0", int(s.VNI), 4789, false)
	if _, removed, err := m.EnsureVXLAN(s, nil); err != nil || len(removed) != 1 || removed[0].Device.Name != "vxsold0" {
		t.Fatalf("removed %+v, err %v", removed, err)
	}
	if exists(host, "vxsold0") {
		t.Fatal("stale device still there")
	}
}

func TestSameVNIOtherPortIsNoConflict(t *testing.T) {
	m, host, _ := newManager(t)
	s := spec(1048580)
	plant(t, host, "vxsport0", int(s.VNI), 4790, true)
	if _, removed, err := m.EnsureVXLAN(s, nil); err != nil || len(removed) != 0 {
		t.Fatalf("removed %+v, err %v", removed, err)
	}
	if !exists(host, "vxsport0") {
		t.Fatal("a device on another port was deleted")
	}
}

func TestStaleHiddenInOtherNamespace(t *testing.T) {
	m, host, _ := newManager(t)
	other := nstest.New(t, "vxsdpo")
	s := spec(1048581)
	l := plant(t, host, "vxshide0", int(s.VNI), 4789, false)
	if err := host.NL.LinkSetNsFd(l, int(other.Handle)); err != nil {
		t.Fatal(err)
	}
	if exists(host, "vxshide0") || !exists(other, "vxshide0") {
		t.Fatal("device was not moved")
	}
	// The kernel refuses a second holder even though the host namespace shows none.
	probe := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxsprobe0"}, VxlanId: int(s.VNI), Port: 4789}
	if err := host.NL.LinkAdd(probe); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("kernel premise: want EEXIST for a hidden holder, got %v", err)
	}
	_, removed, err := m.EnsureVXLAN(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || !strings.Contains(removed[0].Device.NS.Desc, other.Name) {
		t.Fatalf("removed = %+v", removed)
	}
	if exists(other, "vxshide0") {
		t.Fatal("hidden stale device still there")
	}
}

func TestLiveConflictRefused(t *testing.T) {
	m, host, _ := newManager(t)
	s := spec(1048582)
	live := plant(t, host, "vxlive1", int(s.VNI), 4789, true)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "brlive"}}
	if err := host.NL.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := host.NL.LinkSetMaster(live, br); err != nil {
		t.Fatal(err)
	}
	_, _, err := m.EnsureVXLAN(s, nil)
	var ce *ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("want a ConflictError, got %v", err)
	}
	msg := err.Error()
	for _, w := range []string{`"vxlive1"`, "ifindex", "VNI 1048582", "port 4789", "host namespace", `enslaved to "brlive"`, "not deleting a live interface"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q lacks %q", msg, w)
		}
	}
	if !exists(host, "vxlive1") {
		t.Fatal("live device was deleted")
	}
	if exists(host, s.Name) {
		t.Fatal("our device was created despite the conflict")
	}
}

func TestLiveNameConflictWithAddress(t *testing.T) {
	m, host, _ := newManager(t)
	s := spec(1048583)
	l := plant(t, host, s.Name, 77, 4789, true)
	if err := host.NL.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 9, 8, 7), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	_, _, err := m.EnsureVXLAN(s, nil)
	if err == nil || !strings.Contains(err.Error(), "10.9.8.7/24") || !strings.Contains(err.Error(), "has the name vxsafe needs") {
		t.Fatalf("err = %v", err)
	}
}

// A Docker overlay sandbox: br0 + vxlan0 in a namespace of its own, the vxlan's socket in the host one.
func overlaySandbox(t *testing.T, host *nstest.NS, vni int, withContainer bool) *nstest.NS {
	t.Helper()
	sb := nstest.New(t, "vxsdpsb")
	l := plant(t, host, "vx-sb", vni, 4789, false)
	if err := host.NL.LinkSetNsFd(l, int(sb.Handle)); err != nil {
		t.Fatal(err)
	}
	l, _ = sb.NL.LinkByName("vx-sb")
	_ = sb.NL.LinkSetName(l, "vxlan0")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := sb.NL.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	l, _ = sb.NL.LinkByName("vxlan0")
	if err := sb.NL.LinkSetMaster(l, br); err != nil {
		t.Fatal(err)
	}
	_ = sb.NL.LinkSetUp(l)
	_ = sb.NL.LinkSetUp(br)
	if withContainer {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "veth1"}
		if err := sb.NL.LinkAdd(v); err != nil {
			t.Fatal(err)
		}
		vl, _ := sb.NL.LinkByName("veth0")
		if err := sb.NL.LinkSetMaster(vl, br); err != nil {
			t.Fatal(err)
		}
	}
	return sb
}

func TestOverlaySandboxLeftoverIsStale(t *testing.T) {
	m, host, _ := newManager(t)
	s := spec(1048584)
	sb := overlaySandbox(t, host, int(s.VNI), false)
	_, removed, err := m.EnsureVXLAN(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || !strings.Contains(removed[0].Reason, "overlay sandbox") {
		t.Fatalf("removed = %+v", removed)
	}
	if exists(sb, "vxlan0") {
		t.Fatal("sandbox vxlan0 still there")
	}
}

func TestOverlaySandboxWithContainerIsLive(t *testing.T) {
	m, host, _ := newManager(t)
	s := spec(1048585)
	sb := overlaySandbox(t, host, int(s.VNI), true)
	_, _, err := m.EnsureVXLAN(s, nil)
	if err == nil || !strings.Contains(err.Error(), `"vxlan0"`) || !strings.Contains(err.Error(), "veth0") ||
		!strings.Contains(err.Error(), sb.Name) {
		t.Fatalf("err = %v", err)
	}
	if !exists(sb, "vxlan0") {
		t.Fatal("live sandbox device deleted")
	}
}

// attachVeth attaches a new veth to bridge br0 of sb, as overlay does for a container joining.
func attachVeth(t *testing.T, sb *nstest.NS, name string) {
	t.Helper()
	br, err := sb.NL.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := sb.NL.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	vl, err := sb.NL.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.NL.LinkSetMaster(vl, br); err != nil {
		t.Fatal(err)
	}
}

// Docker's overlay attaches its first container's veth to a sandbox it has just built: a device that
// looked like a leftover in one scan is live in the next, and must not be deleted.
func TestOverlaySandboxBeingBuiltIsLive(t *testing.T) {
	hooks := &Hooks{}
	m, host, _ := newManagerWith(t, hooks)
	s := spec(1048592)
	sb := overlaySandbox(t, host, int(s.VNI), false)
	ran := false
	hooks.Before(StepConfirmStale, func() { ran = true; attachVeth(t, sb, "veth0") })
	_, removed, err := m.EnsureVXLAN(s, nil)
	if !ran {
		t.Fatal("EnsureVXLAN deleted or refused without a second look")
	}
	wantRefusedKept(t, err, removed, sb, "vxlan0", "veth0", "still has containers attached")
}

// wantRefusedKept fails t unless err is a ConflictError containing every word of words and device dev
// is still in ns.
func wantRefusedKept(t *testing.T, err error, removed []Removed, ns *nstest.NS, dev string, words ...string) {
	t.Helper()
	var ce *ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("want a ConflictError, got %v (removed %+v)", err, removed)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if !exists(ns, dev) {
		t.Fatalf("%s was deleted while its owner was building it", dev)
	}
}

// Overlay's own sequence from the start: the device is created down in the host namespace (stale by the
// rules), then moved into a sandbox, enslaved to br0 and given a container, before vxsafe looks again.
func TestOverlayDeviceMovedIntoSandboxIsLive(t *testing.T) {
	hooks := &Hooks{}
	m, host, _ := newManagerWith(t, hooks)
	s := spec(1048593)
	l := plant(t, host, "vx-ovl", int(s.VNI), 4789, false)
	sb := nstest.New(t, "vxsdpsb")
	hooks.Before(StepConfirmStale, func() {
		if err := host.NL.LinkSetNsFd(l, int(sb.Handle)); err != nil {
			t.Fatal(err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := sb.NL.LinkAdd(br); err != nil {
			t.Fatal(err)
		}
		vl, err := sb.NL.LinkByName("vx-ovl")
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.NL.LinkSetMaster(vl, br); err != nil {
			t.Fatal(err)
		}
		attachVeth(t, sb, "veth0")
	})
	_, removed, err := m.EnsureVXLAN(s, nil)
	wantRefusedKept(t, err, removed, sb, "vx-ovl", `"vx-ovl"`, "veth0")
}

// A stale device whose owner deletes it during the second look: nothing to delete, the create goes on.
func TestStaleDeviceGoneBeforeSecondLook(t *testing.T) {
	hooks := &Hooks{}
	m, host, _ := newManagerWith(t, hooks)
	s := spec(1048594)
	l := plant(t, host, "vxsgone0", int(s.VNI), 4789, false)
	hooks.Before(StepConfirmStale, func() {
		if err := host.NL.LinkDel(l); err != nil {
			t.Fatal(err)
		}
	})
	_, removed, err := m.EnsureVXLAN(s, nil)
	if err != nil || len(removed) != 0 {
		t.Fatalf("removed %+v, err %v", removed, err)
	}
	if !exists(host, s.Name) {
		t.Fatal("the network's device was not created")
	}
}

func TestOursOfOtherNetwork(t *testing.T) {
	m, host, _ := newManager(t)
	a := spec(1048586)
	if _, _, err := m.EnsureVXLAN(a, nil); err != nil {
		t.Fatal(err)
	}
	b := a
	b.NetworkID, b.Name = "fffff0000", "vx-"+hex6(a.VNI)+"-fffff"
	live := func(id string) bool { return id == testNet }
	if _, _, err := m.EnsureVXLAN(b, live); err == nil || !strings.Contains(err.Error(), "has endpoints on this host") {
		t.Fatalf("err = %v", err)
	}
	if _, removed, err := m.EnsureVXLAN(b, func(string) bool { return false }); err != nil || len(removed) != 1 {
		t.Fatalf("removed %+v err %v", removed, err)
	}
	if exists(host, a.Name) || !exists(host, b.Name) {
		t.Fatal("wrong device left")
	}
}

func TestEndpointInterfaces(t *testing.T) {
	m, host, _ := newManager(t)
	s := spec(1048587)
	idx, _, err := m.EnsureVXLAN(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	ep := EndpointSpec{NetworkID: testNet, EndpointID: "0123456789abcdef", Name: "vxe-0123456789", ParentIndex: idx,
		MAC: net.HardwareAddr{2, 0x42, 10, 0, 1, 5}, MTU: 1450}
	// A leftover down veth with the name is stale.
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.Name}, PeerName: "vxsdppeer"}
	if err := host.NL.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	removed, err := m.CreateEndpointIf(ep)
	if err != nil || len(removed) != 1 {
		t.Fatalf("removed %+v err %v", removed, err)
	}
	l, err := host.NL.LinkByName(ep.Name)
	if err != nil {
		t.Fatal(err)
	}
	mv, ok := l.(*netlink.Macvlan)
	if !ok || mv.Mode != netlink.MACVLAN_MODE_BRIDGE || mv.ParentIndex != idx || mv.HardwareAddr.String() != ep.MAC.String() ||
		mv.Alias != EndpointAlias(testNet, ep.EndpointID) {
		t.Fatalf("endpoint interface not as wanted: %+v", l)
	}
	// Our own leftover is replaced.
	if removed, err := m.CreateEndpointIf(ep); err != nil || len(removed) != 1 {
		t.Fatalf("removed %+v err %v", removed, err)
	}
	if err := m.DeleteEndpointIf(testNet, ep.EndpointID, ep.Name); err != nil || exists(host, ep.Name) {
		t.Fatalf("delete: %v", err)
	}
	// A live foreign interface with the name is named in the error and kept.
	v = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.Name}, PeerName: "vxsdppeer"}
	if err := host.NL.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	l, _ = host.NL.LinkByName(ep.Name)
	_ = host.NL.LinkSetUp(l)
	if _, err := m.CreateEndpointIf(ep); err == nil || !strings.Contains(err.Error(), `"vxe-0123456789"`) || !strings.Contains(err.Error(), "is up") {
		t.Fatalf("err = %v", err)
	}
	if !exists(host, ep.Name) {
		t.Fatal("live interface deleted")
	}
}

func TestPeers(t *testing.T) {
	m, _, _ := newManager(t)
	idx, _, err := m.EnsureVXLAN(spec(1048588), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := Peer{IP: net.ParseIP("10.0.1.9").To4(), MAC: net.HardwareAddr{2, 0x42, 10, 0, 1, 9}, VTEP: net.ParseIP("192.168.50.2").To4()}
	if err := m.AddPeer(idx, p); err != nil {
		t.Fatal(err)
	}
	p2 := p
	p2.VTEP = net.ParseIP("192.168.50.3").To4()
	if err := m.AddPeer(idx, p2); err != nil { // replace: the endpoint moved
		t.Fatal(err)
	}
	peers, err := m.Peers(idx)
	if err != nil || len(peers) != 1 || !peers[0].VTEP.Equal(p2.VTEP) || !peers[0].IP.Equal(p.IP) {
		t.Fatalf("peers %v err %v", peers, err)
	}
	if err := m.DelPeer(idx, p2); err != nil {
		t.Fatal(err)
	}
	if err := m.DelPeer(idx, p2); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if peers, _ := m.Peers(idx); len(peers) != 0 {
		t.Fatalf("peers left: %v", peers)
	}
}

func TestInjectedFailuresLeaveNothing(t *testing.T) {
	for _, step := range []string{StepCreateVXLAN, StepLinkUp} {
		t.Run(step, func(t *testing.T) {
			hooks := &Hooks{}
			host := nstest.New(t, "vxsdpf")
			m, err := New(Options{NS: host.Handle, Hooks: hooks})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s := spec(1048589)
			hooks.FailNext(step, 1)
			if _, _, err := m.EnsureVXLAN(s, nil); !errors.Is(err, ErrInjected) || !strings.Contains(err.Error(), s.Name) {
				t.Fatalf("err = %v", err)
			}
			if exists(host, s.Name) {
				t.Fatal("half-built device left behind")
			}
			if _, _, err := m.EnsureVXLAN(s, nil); err != nil {
				t.Fatalf("next attempt: %v", err)
			}
		})
	}
}

func TestNamespacesFindsBindMounts(t *testing.T) {
	m, _, _ := newManager(t)
	other := nstest.New(t, "vxsdpn")
	found := false
	for _, ns := range m.Namespaces() {
		if strings.HasSuffix(ns.Mount, other.Name) {
			found = true
		}
	}
	if !found {
		t.Fatalf("namespace %s not found", other.Name)
	}
}

// A VXLAN device moved into another namespace reports its own ifindex as IFLA_LINK; that must not make a
// host device with the same ifindex look like it carries an upper device.
func TestMovedDeviceIsNotAnUpper(t *testing.T) {
	m, host, _ := newManager(t)
	other := nstest.New(t, "vxsdpu")
	s := spec(1048590)
	// The host device to judge, and a moved device whose index in the other namespace we align with it.
	moved := plant(t, host, "vxsmoved0", 4243, 4789, false)
	if err := host.NL.LinkSetNsFd(moved, int(other.Handle)); err != nil {
		t.Fatal(err)
	}
	ml, err := other.NL.LinkByName("vxsmoved0")
	if err != nil {
		t.Fatal(err)
	}
	if ml.Attrs().ParentIndex <= 0 {
		t.Skipf("kernel premise: the moved device reports no IFLA_LINK (%d)", ml.Attrs().ParentIndex)
	}
	// The host device takes exactly the index the moved device reports.
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxsidx0", Index: ml.Attrs().ParentIndex}, VxlanId: int(s.VNI), Port: 4789}
	if err := host.NL.LinkAdd(vx); err != nil {
		t.Fatal(err)
	}
	stale, err := host.NL.LinkByName("vxsidx0")
	if err != nil || stale.Attrs().Index != ml.Attrs().ParentIndex {
		t.Fatalf("could not align ifindex %d: %v", ml.Attrs().ParentIndex, err)
	}
	devs, err := m.ScanVXLAN(true, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Name == "vxsidx0" && len(d.Uppers) > 0 {
			t.Fatalf("%s (ifindex %d) given uppers %v (moved device has ifindex %d, link %d)", d.Name, stale.Attrs().Index, d.Uppers, ml.Attrs().Index, ml.Attrs().ParentIndex)
		}
	}
	if _, removed, err := m.EnsureVXLAN(s, nil); err != nil || len(removed) != 1 {
		t.Fatalf("removed %+v err %v", removed, err)
	}
}
