package dataplane

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Peer is a remote endpoint of a network: its address and MAC, and the VTEP of the host it is on.
type Peer struct {
	IP   net.IP
	IPv6 net.IP // nil on a network without IPv6
	MAC  net.HardwareAddr
	VTEP net.IP
}

func (p Peer) String() string {
	if p.IPv6 != nil {
		return fmt.Sprintf("%s %s (%s) at %s", p.IP, p.IPv6, p.MAC, p.VTEP)
	}
	return fmt.Sprintf("%s (%s) at %s", p.IP, p.MAC, p.VTEP)
}

// AddPeer programs a remote endpoint on the VXLAN device: a permanent FDB entry MAC -> VTEP and a
// permanent neighbour entry IP -> MAC that the device answers ARP from (proxy); with an IPv6 address,
// a permanent IPv6 neighbour entry too, which the device answers neighbour solicitations from. All
// replace any entry.
func (m *Manager) AddPeer(vxIndex int, p Peer) error {
	if err := m.hooks.check(StepAddPeer); err != nil {
		return fmt.Errorf("programming peer %s: %w", p, err)
	}
	fdb := &netlink.Neigh{LinkIndex: vxIndex, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, HardwareAddr: p.MAC, IP: p.VTEP}
	if err := m.h.NeighSet(fdb); err != nil {
		return fmt.Errorf("adding FDB entry %s -> %s on ifindex %d: %w", p.MAC, p.VTEP, vxIndex, err)
	}
	nb := &netlink.Neigh{LinkIndex: vxIndex, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: p.IP, HardwareAddr: p.MAC}
	if err := m.h.NeighSet(nb); err != nil {
		return fmt.Errorf("adding neighbour entry %s -> %s on ifindex %d: %w", p.IP, p.MAC, vxIndex, err)
	}
	if p.IPv6 != nil {
		nb6 := &netlink.Neigh{LinkIndex: vxIndex, Family: unix.AF_INET6, State: netlink.NUD_PERMANENT,
			IP: p.IPv6, HardwareAddr: p.MAC}
		if err := m.h.NeighSet(nb6); err != nil {
			return fmt.Errorf("adding IPv6 neighbour entry %s -> %s on ifindex %d: %w", p.IPv6, p.MAC, vxIndex, err)
		}
	}
	return nil
}

// DelPeer removes what AddPeer programmed; entries already gone are not an error.
func (m *Manager) DelPeer(vxIndex int, p Peer) error {
	var errs []error
	if p.IP != nil {
		nb := &netlink.Neigh{LinkIndex: vxIndex, Family: unix.AF_INET, IP: p.IP, HardwareAddr: p.MAC}
		if err := m.h.NeighDel(nb); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting neighbour entry %s on ifindex %d: %w", p.IP, vxIndex, err))
		}
	}
	if p.IPv6 != nil {
		nb6 := &netlink.Neigh{LinkIndex: vxIndex, Family: unix.AF_INET6, IP: p.IPv6, HardwareAddr: p.MAC}
		if err := m.h.NeighDel(nb6); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting IPv6 neighbour entry %s on ifindex %d: %w", p.IPv6, vxIndex, err))
		}
	}
	if p.VTEP != nil { // Peers lists a neighbour entry without an FDB entry with no VTEP
		fdb := &netlink.Neigh{LinkIndex: vxIndex, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, HardwareAddr: p.MAC, IP: p.VTEP}
		if err := m.h.NeighDel(fdb); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting FDB entry %s on ifindex %d: %w", p.MAC, vxIndex, err))
		}
	}
	return errors.Join(errs...)
}

func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH)
}

// Peers lists the remote endpoints programmed on a VXLAN device: permanent FDB entries with a
// destination, joined by MAC with the permanent IPv4 and IPv6 neighbour entries that point at them. A
// neighbour entry whose MAC has no FDB entry, or an IPv6 entry whose MAC has no IPv4 one, is a peer of
// its own, so that a resync removes it.
func (m *Manager) Peers(vxIndex int) ([]Peer, error) {
	fdbs, err := m.h.NeighList(vxIndex, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("listing FDB of ifindex %d: %w", vxIndex, err)
	}
	nbs, err := m.h.NeighList(vxIndex, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours of ifindex %d: %w", vxIndex, err)
	}
	nb6s, err := m.h.NeighList(vxIndex, unix.AF_INET6)
	if err != nil && !gone(err) {
		return nil, fmt.Errorf("listing IPv6 neighbours of ifindex %d: %w", vxIndex, err)
	}
	vtep := map[string]net.IP{}
	for _, f := range fdbs {
		if f.State&netlink.NUD_PERMANENT != 0 && f.IP != nil && f.HardwareAddr != nil {
			vtep[f.HardwareAddr.String()] = f.IP
		}
	}
	var out []Peer
	byMAC := map[string]int{} // index in out of the first peer with an IPv4 entry for the MAC
	for _, n := range nbs {
		if n.State&netlink.NUD_PERMANENT == 0 || n.HardwareAddr == nil {
			continue
		}
		mac := n.HardwareAddr.String()
		if _, ok := byMAC[mac]; !ok {
			byMAC[mac] = len(out)
		}
		out = append(out, Peer{IP: n.IP, MAC: n.HardwareAddr, VTEP: vtep[mac]})
	}
	for _, n := range nb6s {
		if n.State&netlink.NUD_PERMANENT == 0 || n.HardwareAddr == nil {
			continue
		}
		mac := n.HardwareAddr.String()
		if i, ok := byMAC[mac]; ok && out[i].IPv6 == nil {
			out[i].IPv6 = n.IP
			continue
		}
		out = append(out, Peer{IPv6: n.IP, MAC: n.HardwareAddr, VTEP: vtep[mac]})
	}
	seen := map[string]bool{}
	for _, p := range out {
		seen[p.MAC.String()] = true
	}
	for mac, ip := range vtep {
		if !seen[mac] {
			hw, _ := net.ParseMAC(mac)
			out = append(out, Peer{MAC: hw, VTEP: ip})
		}
	}
	return out, nil
}
