package driver

import (
	"bytes"
	"fmt"
	"net"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/netconfig"
)

// RemoteChange applies a change of a remote endpoint reported by the control plane. Changes for networks
// without a device on this host are dropped: the device is programmed from Control.Remote when made.
func (d *Driver) RemoteChange(ep gossip.Endpoint, removed bool) {
	if ep.VTEP == d.VTEP() && ep.VTEP != "" {
		return
	}
	ns, ok := d.lookup(ep.Network)
	if !ok {
		return
	}
	p, err := toPeer(ep, ns.ipv6())
	if err != nil {
		d.log.WithError(err).WithFields(logrus.Fields{"network": ep.Network, "endpoint": ep.EndpointID}).Warn("ignoring malformed remote endpoint")
		return
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.vxIndex == 0 {
		return
	}
	log := d.log.WithFields(logrus.Fields{"network": ep.Network, "endpoint": ep.EndpointID, "interface": ns.spec.Name, "peer": p.String()})
	if removed {
		if err := d.dp.DelPeer(ns.vxIndex, p); err != nil {
			d.cfg.Metrics.Error("peer")
			log.WithError(err).Warn("removing remote endpoint")
		} else {
			log.Debug("remote endpoint removed")
		}
		d.restoreSharedLocked(ns, ep, p)
		d.cfg.Services.Changed(ep.Network)
		return
	}
	if why := d.remoteRefusal(ns, p, d.localAddrsLocked(ns)); why != "" {
		d.cfg.Metrics.Error("remote_refused")
		log.Warnf("ignoring remote endpoint %s of network %s: %s", p, netconfig.ShortID(ep.Network), why)
		return
	}
	if err := d.dp.AddPeer(ns.vxIndex, p); err != nil {
		d.cfg.Metrics.Error("peer")
		log.WithError(err).Warn("programming remote endpoint")
		return
	}
	log.Debug("remote endpoint programmed")
	d.cfg.Services.Changed(ep.Network)
}

// restoreSharedLocked re-programs the remote endpoints that share the IP or MAC of one just removed.
// The control plane reports endpoints of different hosts in no particular order: when an address moves
// from one host to another (a container stopped there, its address given to a container elsewhere), the
// removal of the old endpoint may arrive after the new one was programmed, and DelPeer's neighbour
// deletion (keyed by IP) would take the new one's entry with it. ns.mu is held.
func (d *Driver) restoreSharedLocked(ns *netState, gone gossip.Endpoint, p dataplane.Peer) {
	if d.cfg.Control == nil {
		return
	}
	self := d.VTEP()
	var local map[string]bool
	for _, ep := range d.cfg.Control.Remote(gone.Network) {
		if ep.EndpointID == gone.EndpointID || ep.VTEP == self {
			continue
		}
		q, err := toPeer(ep, ns.ipv6())
		if err != nil || !(q.IP.Equal(p.IP) || q.MAC.String() == p.MAC.String()) {
			continue
		}
		if local == nil {
			local = d.localAddrsLocked(ns)
		}
		if d.remoteRefusal(ns, q, local) != "" {
			continue
		}
		if err := d.dp.AddPeer(ns.vxIndex, q); err != nil {
			d.cfg.Metrics.Error("peer")
			d.log.WithError(err).WithFields(logrus.Fields{"network": gone.Network, "peer": q.String()}).Warn("re-programming remote endpoint")
		}
	}
}

// localAddrsLocked returns the IPs and MACs of the endpoints joined on this host in ns's network, as
// keys "ip:<addr>" and "mac:<addr>". ns.mu is held.
func (d *Driver) localAddrsLocked(ns *netState) map[string]bool {
	out := map[string]bool{}
	for _, l := range ns.joined {
		if l.ip != nil {
			out["ip:"+l.ip.String()] = true
		}
		if l.mac != nil {
			out["mac:"+l.mac.String()] = true
		}
	}
	return out
}

// remoteRefusal says why a remote endpoint reported by the control plane must not be programmed on the
// network's device, or "" when it may be. A record may be forged or replayed (gossip without a key, a
// compromised node): it must never take over an address of an endpoint on this host, flood the network's
// broadcast traffic somewhere (an all-zero or multicast MAC is an FDB default or group entry), or carry an
// address outside the network. local is localAddrsLocked's answer. ns.mu is held.
func (d *Driver) remoteRefusal(ns *netState, p dataplane.Peer, local map[string]bool) string {
	if len(p.MAC) != 6 || p.MAC[0]&1 != 0 {
		return fmt.Sprintf("MAC %s is not a unicast MAC", p.MAC)
	}
	if bytes.Equal(p.MAC, make(net.HardwareAddr, 6)) {
		return "MAC 00:00:00:00:00:00 is the VXLAN default destination"
	}
	if p.IP.To4() == nil || !p.IP.IsGlobalUnicast() {
		return fmt.Sprintf("IP %s is not a unicast IPv4 address", p.IP)
	}
	if p.VTEP == nil || p.VTEP.IsUnspecified() || p.VTEP.IsLoopback() || p.VTEP.IsMulticast() || p.VTEP.Equal(net.IPv4bcast) {
		return fmt.Sprintf("VTEP %s is not a unicast address", p.VTEP)
	}
	if local["ip:"+p.IP.String()] {
		return fmt.Sprintf("IP %s belongs to an endpoint on this host", p.IP)
	}
	if local["mac:"+p.MAC.String()] {
		return fmt.Sprintf("MAC %s belongs to an endpoint on this host", p.MAC)
	}
	if len(ns.rec.IPv4) > 0 {
		inside := false
		for _, sub := range ns.rec.IPv4 {
			_, pool, err := net.ParseCIDR(sub.Pool)
			if err != nil || !pool.Contains(p.IP) {
				continue
			}
			inside = true
			gw := net.ParseIP(sub.Gateway)
			if gw == nil {
				gw, _, _ = net.ParseCIDR(sub.Gateway)
			}
			if gw != nil && gw.Equal(p.IP) {
				return fmt.Sprintf("IP %s is the gateway address of the network", p.IP)
			}
		}
		if !inside {
			return fmt.Sprintf("IP %s is outside the network's subnets", p.IP)
		}
	}
	return ""
}

// toPeer is the remote endpoint ep as the data plane programs it. On a network with IPv6 (v6 is its
// prefix, nil without) the endpoint's IPv6 address is derived from its IPv4 one, as its own host did in
// CreateEndpoint: records carry only the IPv4 address, which is signed and checked (remoteRefusal), so
// the IPv6 one is inside the prefix and never a local endpoint's by construction.
func toPeer(ep gossip.Endpoint, v6 *net.IPNet) (dataplane.Peer, error) {
	ip, mac, vtep, err := ep.Addrs()
	if err != nil {
		return dataplane.Peer{}, err
	}
	return dataplane.Peer{IP: ip, IPv6: netconfig.IPv6For(v6, ip), MAC: mac, VTEP: vtep}, nil
}

// Synced is what a control plane may implement to say whether its view of remote endpoints is complete
// (it has exchanged state with the cluster since it started). Without it the driver prunes only in the
// periodic resync, never right after a start.
type Synced interface {
	Synced() bool
}

// controlSynced reports whether remote entries the control plane does not list may be removed.
func (d *Driver) controlSynced() bool {
	if s, ok := d.cfg.Control.(Synced); ok {
		return s.Synced()
	}
	return true
}

// programPeersLocked makes the device's FDB and neighbour entries match the control plane's view of the
// network: missing ones added, changed ones replaced, and — with prune — extra ones removed. A plugin that
// has just (re)started knows no remote endpoint until its gossip has synced: pruning then would cut every
// running container off the other hosts until it has, so a start only adds. ns.mu is held.
func (d *Driver) programPeersLocked(ns *netState, prune bool) {
	if d.cfg.Control == nil || ns.vxIndex == 0 {
		return
	}
	self := d.VTEP()
	local := d.localAddrsLocked(ns)
	v6 := ns.ipv6()
	want := map[string]dataplane.Peer{}
	for _, ep := range d.cfg.Control.Remote(ns.rec.ID) {
		if ep.VTEP == self {
			continue
		}
		p, err := toPeer(ep, v6)
		if err != nil {
			continue
		}
		if why := d.remoteRefusal(ns, p, local); why != "" {
			d.log.WithFields(logrus.Fields{"network": ns.rec.ID, "endpoint": ep.EndpointID, "peer": p.String()}).
				Debugf("not programming remote endpoint: %s", why)
			continue
		}
		want[p.MAC.String()] = p
	}
	have, err := d.dp.Peers(ns.vxIndex)
	if err != nil {
		d.log.WithError(err).WithField("network", ns.rec.ID).Warn("reading programmed remote endpoints")
		return
	}
	haveBy := map[string]dataplane.Peer{}
	for _, p := range have {
		haveBy[p.MAC.String()] = p
		w, ok := want[p.MAC.String()]
		if !ok && !prune {
			continue
		}
		if !ok || !w.IP.Equal(p.IP) || !w.IPv6.Equal(p.IPv6) {
			if err := d.dp.DelPeer(ns.vxIndex, p); err != nil {
				d.log.WithError(err).WithField("network", ns.rec.ID).Warn("removing a stale remote endpoint")
			}
			delete(haveBy, p.MAC.String())
		}
	}
	for mac, p := range want {
		if h, ok := haveBy[mac]; ok && h.VTEP.Equal(p.VTEP) && h.IP.Equal(p.IP) && h.IPv6.Equal(p.IPv6) {
			continue
		}
		if err := d.dp.AddPeer(ns.vxIndex, p); err != nil {
			d.cfg.Metrics.Error("peer")
			d.log.WithError(err).WithFields(logrus.Fields{"network": ns.rec.ID, "peer": p.String()}).Warn("programming remote endpoint")
		}
	}
}

func (d *Driver) republishLocked(ns *netState) {
	if d.cfg.Control == nil {
		return
	}
	eps, err := d.st.ListEndpoints(ns.rec.ID)
	if err != nil {
		return
	}
	for _, ep := range eps {
		if !ep.Joined {
			continue
		}
		if _, _, err := net.ParseCIDR(ep.IP); err != nil {
			continue
		}
		d.cfg.Control.Publish(d.published(ep))
	}
}

// reapDeadEndpoints finds endpoints recorded as joined whose container is gone without a Leave — dockerd
