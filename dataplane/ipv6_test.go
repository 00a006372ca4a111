package dataplane

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/vxsafe/overlay/internal/nstest"
	"golang.org/x/sys/unix"
)

// sysctlIn reads a /proc/sys/net file as namespace ns sees it.
func sysctlIn(t *testing.T, ns netns.NsHandle, path string) string {
	t.Helper()
	var out string
	if err := inNetNS(ns, func() error {
		b, err := os.ReadFile(path)
		out = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestVXLANIPv6: a network with IPv6 gets a device with IPv6 on (even where new devices have it off)
// and no address of its own; its IPv6 neighbour entries are programmed, listed with the IPv4 ones,
// replaced and removed; an IPv6 entry left without an IPv4 one is listed on its own, so that a resync
// removes it.
func TestVXLANIPv6(t *testing.T) {
	m, host, _ := newManager(t)
	// New devices in this namespace start with IPv6 off, as on a host that turned it off.
	if err := inNetNS(host.Handle, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	s := spec(1048600)
	s.IPv6 = true
	idx, _, err := m.EnsureVXLAN(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := sysctlIn(t, host.Handle, "/proc/sys/net/ipv6/conf/"+s.Name+"/disable_ipv6"); v != "0" {
		t.Fatalf("disable_ipv6 on %s = %s, want 0", s.Name, v)
	}
	l, _ := host.NL.LinkByName(s.Name)
	if addrs, err := host.NL.AddrList(l, unix.AF_INET6); err != nil || len(addrs) != 0 {
		t.Fatalf("IPv6 addresses on %s: %v %v, want none (addrgenmode none)", s.Name, addrs, err)
	}
	// A device of a network without IPv6 is left as the namespace makes it.
	plain := spec(1048601)
	if _, _, err := m.EnsureVXLAN(plain, nil); err != nil {
		t.Fatal(err)
	}
	if v := sysctlIn(t, host.Handle, "/proc/sys/net/ipv6/conf/"+plain.Name+"/disable_ipv6"); v != "1" {
		t.Fatalf("disable_ipv6 on %s = %s, want 1 (untouched)", plain.Name, v)
	}

	p := Peer{IP: net.ParseIP("10.0.9.3").To4(), IPv6: net.ParseIP("fd00:9::a00:903"), MAC: net.HardwareAddr{2, 0x42, 10, 0, 9, 3},
		VTEP: net.ParseIP("192.168.50.2").To4()}
	if err := m.AddPeer(idx, p); err != nil {
		t.Fatal(err)
	}
	p2 := p
	p2.VTEP = net.ParseIP("192.168.50.3").To4()
	if err := m.AddPeer(idx, p2); err != nil { // replace: the endpoint moved
		t.Fatal(err)
	}
	peers, err := m.Peers(idx)
	if err != nil || len(peers) != 1 || !peers[0].IPv6.Equal(p.IPv6) || !peers[0].IP.Equal(p.IP) || !peers[0].VTEP.Equal(p2.VTEP) {
		t.Fatalf("peers %v err %v", peers, err)
	}
	nbs, _ := host.NL.NeighList(idx, unix.AF_INET6)
	if len(nbs) != 1 || nbs[0].State&netlink.NUD_PERMANENT == 0 || nbs[0].HardwareAddr.String() != p.MAC.String() {
		t.Fatalf("IPv6 neighbours %+v", nbs)
	}
	if err := m.DelPeer(idx, p2); err != nil {
		t.Fatal(err)
	}
	if peers, _ := m.Peers(idx); len(peers) != 0 {
		t.Fatalf("peers left: %v", peers)
	}
	// A stray IPv6 entry (its IPv4 entry and FDB entry gone, as after a crash between the steps).
	stray := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET6, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("fd00:9::a00:909"), HardwareAddr: net.HardwareAddr{2, 0x42, 10, 0, 9, 9}}
	if err := host.NL.NeighSet(stray); err != nil {
		t.Fatal(err)
	}
	peers, err = m.Peers(idx)
	if err != nil || len(peers) != 1 || peers[0].IP != nil || !peers[0].IPv6.Equal(stray.IP) {
		t.Fatalf("peers %v err %v, want the stray IPv6 entry alone", peers, err)
	}
	if err := m.DelPeer(idx, peers[0]); err != nil {
		t.Fatal(err)
	}
	if nbs, _ := host.NL.NeighList(idx, unix.AF_INET6); len(nbs) != 0 {
		t.Fatalf("IPv6 neighbours left: %+v", nbs)
	}
}

// TestNDProxy: an endpoint in a container namespace that sends to a remote endpoint's IPv6 address
// learns its MAC from the VXLAN device, which answers the neighbour solicitation from its permanent
// entry (nothing leaves the test's namespaces: the remote VTEP has no route).
func TestNDProxy(t *testing.T) {
	m, host, _ := newManager(t)
	ctr := nstest.New(t, "vxsdpc")
	s := spec(1048602)
	s.IPv6 = true
	idx, _, err := m.EnsureVXLAN(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	ep := EndpointSpec{NetworkID: testNet, EndpointID: "0123456789abcdef", Name: "vxe-0123456789", ParentIndex: idx,
		MAC: net.HardwareAddr{2, 0x42, 10, 0, 9, 2}, MTU: 1450}
	if _, err := m.CreateEndpointIf(ep); err != nil {
		t.Fatal(err)
	}
	l, err := host.NL.LinkByName(ep.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := host.NL.LinkSetNsFd(l, int(ctr.Handle)); err != nil {
		t.Fatal(err)
	}
	if l, err = ctr.NL.LinkByName(ep.Name); err != nil {
		t.Fatal(err)
	}
	local, _ := netlink.ParseIPNet("fd00:9::a00:902/64")
	if err := ctr.NL.AddrAdd(l, &netlink.Addr{IPNet: local, Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	if err := ctr.NL.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	remote := Peer{IP: net.ParseIP("10.0.9.3").To4(), IPv6: net.ParseIP("fd00:9::a00:903"), MAC: net.HardwareAddr{2, 0x42, 10, 0, 9, 3},
		VTEP: net.ParseIP("192.168.50.3").To4()}
	if err := m.AddPeer(idx, remote); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Each datagram makes the container's kernel resolve the address (a solicitation while none is known).
		if err := inNetNS(ctr.Handle, func() error {
			c, err := net.Dial("udp6", "[fd00:9::a00:903]:9")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("x"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		nbs, err := ctr.NL.NeighList(l.Attrs().Index, unix.AF_INET6)
		if err != nil {
			t.Fatal(err)
		}
		for _, nb := range nbs {
			if nb.IP.Equal(remote.IPv6) && nb.HardwareAddr.String() == remote.MAC.String() &&
				nb.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0 {
				t.Logf("the container resolved %s to %s (state %#x)", nb.IP, nb.HardwareAddr, nb.State)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container did not resolve %s through the device's ND proxy: %+v", remote.IPv6, nbs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
