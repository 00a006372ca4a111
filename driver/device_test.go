package driver

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/netconfig"
)

// Join trusts the cached ifindex of the network's device (no lookup); when the device was deleted behind
// vxsafe's back, the kernel's refusal makes Join re-create it (with EnsureVXLAN's checks) and retry.
func TestUnitJoinTrustsCachedDevice(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	if err := u.join(netID, 1, "/x"); err != nil {
		t.Fatal(err)
	}
	if err := u.join(netID, 2, "/x"); err != nil {
		t.Fatal(err)
	}
	if n := u.dp.count("EnsureVXLAN"); n != 1 {
		t.Fatalf("EnsureVXLAN called %d times for two Joins, want 1", n)
	}
	first := ns.vxIndex
	u.dp.mu.Lock()
	delete(u.dp.devices, ns.spec.Name) // someone deleted it
	u.dp.mu.Unlock()
	if err := u.join(netID, 3, "/x"); err != nil {
		t.Fatalf("Join after the device was deleted: %v", err)
	}
	if n := u.dp.count("EnsureVXLAN"); n != 2 {
		t.Fatalf("EnsureVXLAN called %d times, want 2 (once more after the refusal)", n)
	}
	idx, ok := u.dp.VXLANIndex(ns.spec)
	if !ok || idx == first || ns.vxIndex != idx {
		t.Fatalf("device index %d (ok %v), cached %d, first %d", idx, ok, ns.vxIndex, first)
	}
	u.dp.mu.Lock()
	parent := u.dp.ifs[netconfig.EndpointIfName(epID(3))].spec.ParentIndex
	u.dp.mu.Unlock()
	if parent != idx {
		t.Errorf("the new interface's parent is %d, want the new device %d", parent, idx)
	}
	if u.logged(logrus.WarnLevel, "vxlan interface is gone") != 1 {
		t.Error("the re-creation is not logged")
	}
	// A refusal that persists fails the Join and undoes it.
	u.dp.mu.Lock()
	delete(u.dp.devices, ns.spec.Name)
	u.dp.ensureErr = errors.New("injected: cannot make the device")
	u.dp.mu.Unlock()
	if err := u.join(netID, 4, "/x"); err == nil || !strings.Contains(err.Error(), "cannot make the device") {
		t.Fatalf("Join with no device to be had: %v", err)
	}
	if ep, _, _ := u.st.GetEndpoint(netID, epID(4)); ep.Joined {
		t.Error("failed Join left its record joined")
	}
}

// The kernel side of TestUnitJoinTrustsCachedDevice: the network's device deleted behind vxsafe's back
// is made again by the next Join; a foreign device holding its name then is refused, not used.
func TestJoinRemakesDeletedDevice(t *testing.T) {
	h := newHarness(t)
	vni := h.createNetwork(netID, nil)
	h.join(netID, 1)
	dev := netconfig.DeviceName(vni, netID)
	before := h.link(dev)
	if err := h.host.NL.LinkDel(before); err != nil { // takes endpoint 1's macvlan with it
		t.Fatal(err)
	}
	h.join(netID, 2)
	after := h.link(dev)
	if after == nil || after.Attrs().Index == before.Attrs().Index {
		t.Fatalf("device after the Join: %+v", after)
	}
	mv := h.link(netconfig.EndpointIfName(epID(2)))
	if mv == nil || mv.Attrs().ParentIndex != after.Attrs().Index {
		t.Fatalf("endpoint 2's interface %+v is not on the new device (ifindex %d)", mv, after.Attrs().Index)
	}
	if !h.logHas(logrus.WarnLevel, "vxlan interface is gone", dev) {
		t.Error("the re-creation is not logged")
	}
	// Someone replaces the device with one of their own, in use (up, with an address).
	if err := h.host.NL.LinkDel(after); err != nil {
		t.Fatal(err)
	}
	foreign := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: dev}, VxlanId: 4242, Port: 4790}
	if err := h.host.NL.LinkAdd(foreign); err != nil {
		t.Fatal(err)
	}
	if err := h.host.NL.LinkSetUp(foreign); err != nil {
		t.Fatal(err)
	}
	if err := h.host.NL.AddrAdd(foreign, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 99), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	h.createEndpoint(netID, 3)
	e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(3)}, nil)
	h.wantErr(e, dev)
	if l := h.link(dev); l == nil || l.Attrs().Index != foreign.Index {
		t.Fatalf("the foreign device was touched: %+v", l)
	}
	if ep, _ := h.endpoint(netID, 3); ep.Joined {
		t.Error("refused Join left its record joined")
	}
	if h.link(netconfig.EndpointIfName(epID(3))) != nil {
		t.Error("an interface was made on the foreign device")
	}
	_ = h.host.NL.LinkDel(foreign)
}
