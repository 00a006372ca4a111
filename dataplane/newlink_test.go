package dataplane

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestMacvlanEcho: the creation request answers the new ifindex itself (NLM_F_ECHO), so CreateEndpointIf
// needs no lookup after it; a taken name answers EEXIST; the socket stays in step after an error.
func TestMacvlanEcho(t *testing.T) {
	m, host, _ := newManager(t)
	idx, _, err := m.EnsureVXLAN(spec(1048590), nil)
	if err != nil {
		t.Fatal(err)
	}
	mv := func(name string) *netlink.Macvlan {
		return &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: idx, MTU: 1400,
			HardwareAddr: net.HardwareAddr{2, 0x42, 10, 0, 9, 1}}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	for i, name := range []string{"vxe-echo00000", "vxe-echo00001"} {
		got, err := m.echo.execute(newMacvlanRequest(mv(name)), unix.RTM_NEWLINK)
		if err != nil {
			t.Fatalf("creating %s: %v", name, err)
		}
		l, err := host.NL.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if got != l.Attrs().Index {
			t.Fatalf("%s: echoed ifindex %d, the kernel has %d (kernel %s: NLM_F_ECHO for RTM_NEWLINK needs 6.1)",
				name, got, l.Attrs().Index, unix.ByteSliceToString(uts.Release[:]))
		}
		v, ok := l.(*netlink.Macvlan)
		if !ok || v.Mode != netlink.MACVLAN_MODE_BRIDGE || v.ParentIndex != idx || v.MTU != 1400 ||
			v.HardwareAddr.String() != "02:42:0a:00:09:01" {
			t.Fatalf("%s not as asked: %+v", name, l)
		}
		if i == 0 {
			if _, err := m.addMacvlan(mv(name)); !errors.Is(err, unix.EEXIST) {
				t.Fatalf("creating %s again: %v, want EEXIST", name, err)
			}
		}
	}
}

// TestCreateEndpointIfNameTaken: CreateEndpointIf tries the creation first; when the name is taken it
// makes the stale-safe judgement of the holder: deletes a leftover of ours or a down, unenslaved,
// address-less interface and creates its own, and refuses a live one (up, enslaved or addressed), naming
// it and leaving it as it was.
func TestCreateEndpointIfNameTaken(t *testing.T) {
	m, host, _ := newManager(t)
	idx, _, err := m.EnsureVXLAN(spec(1048591), nil)
	if err != nil {
		t.Fatal(err)
	}
	ep := EndpointSpec{NetworkID: testNet, EndpointID: "0123456789abcdef", Name: "vxe-0123456789", ParentIndex: idx,
		MAC: net.HardwareAddr{2, 0x42, 10, 0, 1, 5}, MTU: 1450}
	wantOurs := func(removed []Removed, n int) {
		t.Helper()
		if len(removed) != n {
			t.Fatalf("removed %+v, want %d", removed, n)
		}
		l, err := host.NL.LinkByName(ep.Name)
		if err != nil {
			t.Fatal(err)
		}
		if l.Type() != "macvlan" || l.Attrs().Alias != EndpointAlias(testNet, ep.EndpointID) {
			t.Fatalf("endpoint interface not ours: %+v", l)
		}
	}
	// Free: nothing removed.
	removed, err := m.CreateEndpointIf(ep)
	if err != nil {
		t.Fatal(err)
	}
	wantOurs(removed, 0)
	// Our own leftover, even up: replaced.
	old, _ := host.NL.LinkByName(ep.Name)
	_ = host.NL.LinkSetUp(old)
	removed, err = m.CreateEndpointIf(ep)
	if err != nil {
		t.Fatal(err)
	}
	wantOurs(removed, 1)
	if removed[0].Device.Index != old.Attrs().Index || !strings.Contains(removed[0].Reason, "leftover vxsafe") {
		t.Fatalf("removed %+v, want ifindex %d as a leftover", removed[0], old.Attrs().Index)
	}
	if l, _ := host.NL.LinkByName(ep.Name); l.Attrs().Index == old.Attrs().Index {
		t.Fatal("the leftover was kept")
	}
	if err := m.DeleteEndpointIf(testNet, ep.EndpointID, ep.Name); err != nil || exists(host, ep.Name) {
		t.Fatalf("delete: %v", err)
	}
	// A down veth with no master and no address: stale.
	if err := host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.Name}, PeerName: "vxsdppeer"}); err != nil {
		t.Fatal(err)
	}
	removed, err = m.CreateEndpointIf(ep)
	if err != nil {
		t.Fatal(err)
	}
	wantOurs(removed, 1)
	if !strings.Contains(removed[0].Reason, "down with no master and no address") {
		t.Fatalf("reason %q", removed[0].Reason)
	}
	if err := m.DeleteEndpointIf(testNet, ep.EndpointID, ep.Name); err != nil {
		t.Fatal(err)
	}
	// Live ones: refused, named, kept.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "vxsdpbr0"}}
	if err := host.NL.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		make func(l netlink.Link) error
	}{
		{"is up", func(l netlink.Link) error { return host.NL.LinkSetUp(l) }},
		{"is enslaved", func(l netlink.Link) error { return host.NL.LinkSetMaster(l, br) }},
		{"has addresses", func(l netlink.Link) error {
			a, _ := netlink.ParseAddr("192.0.2.7/32")
			return host.NL.AddrAdd(l, a)
		}},
	} {
		if err := host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.Name}, PeerName: "vxsdppeer"}); err != nil {
			t.Fatal(err)
		}
		l, err := host.NL.LinkByName(ep.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.make(l); err != nil {
			t.Fatal(err)
		}
		removed, err := m.CreateEndpointIf(ep)
		if err == nil || !strings.Contains(err.Error(), `"`+ep.Name+`"`) || !strings.Contains(err.Error(), c.what) ||
			!strings.Contains(err.Error(), "not deleting a live interface") || len(removed) != 0 {
			t.Fatalf("%s: removed %+v, err = %v", c.what, removed, err)
		}
		after, err := host.NL.LinkByName(ep.Name)
		if err != nil || after.Attrs().Index != l.Attrs().Index || after.Type() != "veth" {
			t.Fatalf("%s: the live interface was changed: %+v %v", c.what, after, err)
		}
		if err := host.NL.LinkDel(after); err != nil {
			t.Fatal(err)
		}
	}
}
