package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/internal/nstest"
	"github.com/vxsafe/overlay/netconfig"
)

// Safety of deletion: the plugin never deletes an interface it cannot prove stale. Each case plants
// another program's interface (or a container's), then drives joins, a restart (reconcile) and sweeps,
// and checks the interface is still there, unchanged.

func addrAdd(t *testing.T, nl *netlink.Handle, l netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
}

func mustLink(t *testing.T, nl *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := nl.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return l
}

// kept fails unless the link called name is in nl with the same ifindex as before.
func kept(t *testing.T, nl *netlink.Handle, name string, index int, what string) {
	t.Helper()
	l, err := nl.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: %s was deleted: %v", what, name, err)
	}
	if l.Attrs().Index != index {
		t.Fatalf("%s: %s was replaced (ifindex %d, was %d)", what, name, l.Attrs().Index, index)
	}
}

// TestSafetyForeignVXLANWithOurVNI: a live VXLAN device of another program holding the network's VNI —
// in the host namespace with a macvlan that a container holds, or hidden in a container's namespace, up
// with an address — is refused with an error naming it and where it is, and survives joins, a restart
// and sweeps.
func TestSafetyForeignVXLANWithOurVNI(t *testing.T) {
	t.Run("upper in a container", func(t *testing.T) {
		host := nstest.New(t, "vxhsaf")
		dir := t.TempDir()
		h := startHarness(t, host, dir, &dataplane.Hooks{})
		vni := h.createNetwork(netID, nil)
		if err := host.NL.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "othervx0"}, VxlanId: int(vni), Port: 4789}); err != nil {
			t.Fatal(err)
		}
		vx := mustLink(t, host.NL, "othervx0")
		// Down (so a stale-looking device), but a running container holds a macvlan on it.
		if err := host.NL.LinkAdd(&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "othermv0", ParentIndex: vx.Attrs().Index}, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
			t.Fatal(err)
		}
		ctr := nstest.New(t, "vxhsafc")
		if err := host.NL.LinkSetNsFd(mustLink(t, host.NL, "othermv0"), int(ctr.Handle)); err != nil {
			t.Fatal(err)
		}
		mv := mustLink(t, ctr.NL, "othermv0")
		h.createEndpoint(netID, 1)
		e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h.wantErr(e, `"othervx0"`, "carries upper devices", "othermv0", ctr.Name, "not deleting a live interface")
		kept(t, host.NL, "othervx0", vx.Attrs().Index, "after the join")
		kept(t, ctr.NL, "othermv0", mv.Attrs().Index, "after the join")
		h.crash()
		h2 := startHarness(t, host, dir, &dataplane.Hooks{})
		h2.drv.Sweep()
		kept(t, host.NL, "othervx0", vx.Attrs().Index, "after a restart and a sweep")
		kept(t, ctr.NL, "othermv0", mv.Attrs().Index, "after a restart and a sweep")
	})
	t.Run("hidden in a container, up with an address", func(t *testing.T) {
		host := nstest.New(t, "vxhsaf")
		h := startHarness(t, host, t.TempDir(), &dataplane.Hooks{})
		vni := h.createNetwork(netID, nil)
		if err := host.NL.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-hidden0"}, VxlanId: int(vni), Port: 4789}); err != nil {
			t.Fatal(err)
		}
		ctr := nstest.New(t, "vxhsafc")
		if err := host.NL.LinkSetNsFd(mustLink(t, host.NL, "vx-hidden0"), int(ctr.Handle)); err != nil {
			t.Fatal(err)
		}
		l := mustLink(t, ctr.NL, "vx-hidden0")
		addrAdd(t, ctr.NL, l, "10.77.0.1/24")
		if err := ctr.NL.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		h.createEndpoint(netID, 1)
		e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		h.wantErr(e, `"vx-hidden0"`, ctr.Name, "10.77.0.1/24", "not deleting a live interface")
		kept(t, ctr.NL, "vx-hidden0", l.Attrs().Index, "after the join")
		h.wantLinks()
		h.drv.Reconcile()
		kept(t, ctr.NL, "vx-hidden0", l.Attrs().Index, "after a reconcile")
	})
}

// TestSafetyOtherToolsVxDevices: devices of another tool with names like ours ("vx-...", "vxe-...") and
// no vxsafe alias are never swept, whatever their state; one that holds the name a network needs and is
// up with an address is refused and kept.
func TestSafetyOtherToolsVxDevices(t *testing.T) {
	host := nstest.New(t, "vxhsaf")
	dir := t.TempDir()
	h := startHarness(t, host, dir, &dataplane.Hooks{})
	vni := h.createNetwork(netID, nil)
	dev := netconfig.DeviceName(vni, netID)
	// Not in the way of any network: up with an address, down, and a look-alike endpoint interface.
	if err := host.NL.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-0003e8-tool1"}, VxlanId: 1000, Port: 4789}); err != nil {
		t.Fatal(err)
	}
	upDev := mustLink(t, host.NL, "vx-0003e8-tool1")
	addrAdd(t, host.NL, upDev, "10.66.0.1/24")
	if err := host.NL.LinkSetUp(upDev); err != nil {
		t.Fatal(err)
	}
	if err := host.NL.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-0003e9-tool2"}, VxlanId: 1001, Port: 4789}); err != nil {
		t.Fatal(err)
	}
	downDev := mustLink(t, host.NL, "vx-0003e9-tool2")
	if err := host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vxe-0123456789"}, PeerName: "vxhtoolpeer"}); err != nil {
		t.Fatal(err)
	}
	lookalike := mustLink(t, host.NL, "vxe-0123456789")
	// The network's own name taken by the tool's device, up with an address.
	if err := host.NL.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: dev}, VxlanId: 1002, Port: 4789}); err != nil {
		t.Fatal(err)
	}
	named := mustLink(t, host.NL, dev)
	addrAdd(t, host.NL, named, "10.66.1.1/24")
	if err := host.NL.LinkSetUp(named); err != nil {
		t.Fatal(err)
	}
	h.createEndpoint(netID, 1)
	e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	h.wantErr(e, `"`+dev+`"`, "10.66.1.1/24", "not deleting a live interface")
	check := func(what string) {
		t.Helper()
		kept(t, host.NL, "vx-0003e8-tool1", upDev.Attrs().Index, what)
		kept(t, host.NL, "vx-0003e9-tool2", downDev.Attrs().Index, what)
		kept(t, host.NL, "vxe-0123456789", lookalike.Attrs().Index, what)
		kept(t, host.NL, dev, named.Attrs().Index, what)
	}
	check("after the refused join")
	if n := h.drv.Sweep(); n != 0 {
		t.Fatalf("sweep removed %d interfaces", n)
	}
	check("after a sweep")
	h.crash()
	h2 := startHarness(t, host, dir, &dataplane.Hooks{})
	check("after a restart")
	// Another network's joins and leaves do not touch them either.
	const other = "0th3r00000000000000000000000000000000000000000000000000000000000"
	h2.createNetwork(other, nil)
	for i := 2; i < 5; i++ {
		h2.join(other, i)
	}
	for i := 2; i < 5; i++ {
		h2.leave(other, i)
	}
	h2.drv.Sweep()
	check("after another network's joins, leaves and a sweep")
}

// TestSafetyContainerHoldsOurInterface: a vxsafe device whose endpoint interface is in a running
// container is not swept when the plugin's state no longer knows the network (state directory lost or
// replaced) or no longer lists the endpoint as joined: deleting the device would take the container's
// interface with it.
func TestSafetyContainerHoldsOurInterface(t *testing.T) {
	for _, lose := range []string{"state directory lost", "endpoint record lost"} {
		t.Run(lose, func(t *testing.T) {
			host := nstest.New(t, "vxhsaf")
			dir := t.TempDir()
			h := startHarness(t, host, dir, &dataplane.Hooks{})
			vni := h.createNetwork(netID, nil)
			_, jr := h.join(netID, 1)
			dev := netconfig.DeviceName(vni, netID)
			ctr := nstest.New(t, "vxhsafc")
			if err := host.NL.LinkSetNsFd(mustLink(t, host.NL, jr.InterfaceName.SrcName), int(ctr.Handle)); err != nil {
				t.Fatal(err)
			}
			mv := mustLink(t, ctr.NL, jr.InterfaceName.SrcName)
			vx := mustLink(t, host.NL, dev)
			if lose == "endpoint record lost" {
				if err := h.st.DeleteEndpoint(netID, epID(1)); err != nil {
					t.Fatal(err)
				}
			}
			h.crash()
			if lose == "state directory lost" {
				if err := os.Remove(filepath.Join(dir, "vxsafe.db")); err != nil {
					t.Fatal(err)
				}
			}
			h2 := startHarness(t, host, dir, &dataplane.Hooks{})
			h2.drv.Sweep()
			kept(t, host.NL, dev, vx.Attrs().Index, "after a restart and a sweep")
			kept(t, ctr.NL, jr.InterfaceName.SrcName, mv.Attrs().Index, "after a restart and a sweep")
			if !h2.logHas(logrus.InfoLevel, dev, "carries") {
				t.Fatal("the sweep did not say why it kept the device")
			}
			// Once the container is gone (its namespace with it), the device is provably stale.
			if err := ctr.NL.LinkDel(mv); err != nil {
				t.Fatal(err)
			}
			if n := h2.drv.Sweep(); n != 1 {
				t.Fatalf("sweep removed %d, want the device", n)
			}
			if _, err := host.NL.LinkByName(dev); err == nil {
				t.Fatal("device kept after its last upper went")
			}
		})
	}
}

// TestSafetyDuplicateEndpointName: an up interface of another program with an endpoint's name is refused
// with an error naming it, and kept by the join and by sweeps.
func TestSafetyDuplicateEndpointName(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(netID, nil)
	ifName := netconfig.EndpointIfName(epID(1))
	if err := h.host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifName}, PeerName: "vxhdup0"}); err != nil {
		t.Fatal(err)
	}
	l := mustLink(t, h.host.NL, ifName)
	if err := h.host.NL.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	h.createEndpoint(netID, 1)
	e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	h.wantErr(e, `"`+ifName+`"`, "is up", "not deleting a live interface")
	kept(t, h.host.NL, ifName, l.Attrs().Index, "after the join")
	h.drv.Sweep()
	kept(t, h.host.NL, ifName, l.Attrs().Index, "after a sweep")
	if got := h.links(); len(got) != 2 || !strings.Contains(strings.Join(got, ","), "vxhdup0") {
		t.Fatalf("links %v: want only the veth pair", got)
	}
}
