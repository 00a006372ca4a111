package driver

import (
	"context"
	"net"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/dataplane"
)

// RemoteChange applies a change of a remote endpoint reported by the control plane. Changes for networks
// without a device on this host are dropped: the device is programmed from Control.Remote when made.
func (d *Driver) RemoteChange(ep RemoteEndpoint, removed bool) {
	if ep.VTEP == d.VTEP() && ep.VTEP != "" {
		return
	}
	d.mu.Lock()
	ns, ok := d.networks[ep.Network]
	d.mu.Unlock()
	if !ok {
		return
	}
	p, err := toPeer(ep)
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
		return
	}
	if err := d.dp.AddPeer(ns.vxIndex, p); err != nil {
		d.cfg.Metrics.Error("peer")
		log.WithError(err).Warn("programming remote endpoint")
		return
	}
	log.Debug("remote endpoint programmed")
}

func toPeer(ep RemoteEndpoint) (dataplane.Peer, error) {
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil {
		return dataplane.Peer{}, err
	}
	ip := net.ParseIP(ep.IP).To4()
	vtep := net.ParseIP(ep.VTEP)
	if ip == nil || vtep == nil {
		return dataplane.Peer{}, &net.ParseError{Type: "IP address", Text: ep.IP + " / " + ep.VTEP}
	}
	if v4 := vtep.To4(); v4 != nil {
		vtep = v4
	}
	return dataplane.Peer{IP: ip, MAC: mac, VTEP: vtep}, nil
}

// programPeersLocked makes the device's FDB and neighbour entries match the control plane's view of the
// network: missing ones added, changed ones replaced, extra ones removed. ns.mu is held.
func (d *Driver) programPeersLocked(ns *netState) {
	if d.cfg.Control == nil || ns.vxIndex == 0 {
		return
	}
	self := d.VTEP()
	want := map[string]dataplane.Peer{}
	for _, ep := range d.cfg.Control.Remote(ns.rec.ID) {
		if ep.VTEP == self {
			continue
		}
		p, err := toPeer(ep)
		if err != nil {
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
		if !ok || !w.IP.Equal(p.IP) {
			if err := d.dp.DelPeer(ns.vxIndex, p); err != nil {
				d.log.WithError(err).WithField("network", ns.rec.ID).Warn("removing a stale remote endpoint")
			}
			delete(haveBy, p.MAC.String())
		}
	}
	for mac, p := range want {
		if h, ok := haveBy[mac]; ok && h.VTEP.Equal(p.VTEP) && h.IP.Equal(p.IP) {
			continue
		}
		if err := d.dp.AddPeer(ns.vxIndex, p); err != nil {
			d.cfg.Metrics.Error("peer")
			d.log.WithError(err).WithFields(logrus.Fields{"network": ns.rec.ID, "peer": p.String()}).Warn("programming remote endpoint")
		}
	}
}

// Reconcile brings the kernel in line with the state after a start: the devices of networks with joined
// endpoints are re-made if missing (a reboot, or someone deleted them) and re-programmed, local endpoints
// are re-published, and whatever vxsafe made that nothing needs is removed.
func (d *Driver) Reconcile() {
	start := time.Now()
	d.mu.Lock()
	nets := make([]*netState, 0, len(d.networks))
	for _, ns := range d.networks {
		nets = append(nets, ns)
	}
	d.mu.Unlock()
	rebuilt := 0
	for _, ns := range nets {
		ns.mu.Lock()
		log := d.log.WithFields(logrus.Fields{"network": ns.rec.ID, "interface": ns.spec.Name, "vni": ns.spec.VNI})
		if len(ns.joined) > 0 {
			_, present := d.dp.VXLANIndex(ns.spec)
			if err := d.ensureDeviceLocked(ns, log); err != nil {
				log.WithError(err).Error("reconcile: cannot restore the network's vxlan interface")
			} else if !present {
				rebuilt++
				log.Warn("reconcile: re-created the network's missing vxlan interface")
			}
			d.republishLocked(ns)
		}
		ns.mu.Unlock()
	}
	swept := d.Sweep()
	d.log.WithFields(logrus.Fields{"networks": len(nets), "rebuilt": rebuilt, "swept": swept, "took": time.Since(start).String()}).Info("reconciled state with the kernel")
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
		ip, _, err := net.ParseCIDR(ep.IP)
		if err != nil {
			continue
		}
		d.cfg.Control.Publish(RemoteEndpoint{Network: ep.NetworkID, EndpointID: ep.EndpointID, IP: ip.String(), MAC: ep.MAC, VTEP: d.VTEP()})
	}
}

// Sweep removes what vxsafe created and no longer needs: devices of networks with no joined endpoint on
// this host (or unknown networks), and endpoint interfaces left in the host namespace by endpoints that
// are not joined. It never touches a device without a vxsafe alias. It returns how many it removed.
func (d *Driver) Sweep() int {
	nets, eps, err := d.dp.Owned()
	if err != nil {
		d.log.WithError(err).Warn("sweep: listing vxsafe's interfaces")
		return 0
	}
	removed := 0
	for _, l := range nets {
		netID, _, _ := dataplane.ParseAlias(l.Attrs().Alias)
		d.mu.Lock()
		ns, known := d.networks[netID]
		d.mu.Unlock()
		if known {
			ns.mu.Lock()
			if len(ns.joined) == 0 && d.sweepLink(l, "its network has no endpoint joined on this host") {
				ns.vxIndex = 0
				removed++
			}
			ns.mu.Unlock()
			continue
		}
		if d.sweepLink(l, "its network is unknown to vxsafe on this host") {
			removed++
		}
	}
	for _, l := range eps {
		netID, epID, _ := dataplane.ParseAlias(l.Attrs().Alias)
		d.mu.Lock()
		ns, known := d.networks[netID]
		d.mu.Unlock()
		if !known {
			if d.sweepLink(l, "its network is unknown to vxsafe on this host") {
				removed++
			}
			continue
		}
		ns.mu.Lock()
		if !ns.joined[epID] && d.sweepLink(l, "its endpoint is not joined to any container") {
			removed++
		}
		ns.mu.Unlock()
	}
	return removed
}

func (d *Driver) sweepLink(l netlink.Link, reason string) bool {
	a := l.Attrs()
	if err := d.dp.DeleteOwned(l); err != nil {
		d.log.WithError(err).WithFields(logrus.Fields{"interface": a.Name, "ifindex": a.Index}).Warn("sweep: could not delete")
		return false
	}
	d.cfg.Metrics.StaleRemoved("sweep")
	d.log.WithFields(logrus.Fields{"interface": a.Name, "ifindex": a.Index, "namespace": "host namespace", "reason": reason}).
		Warnf("sweep: deleted %s interface %q (ifindex %d): %s", l.Type(), a.Name, a.Index, reason)
	return true
}

// Run sweeps and re-programs remote endpoints every interval until ctx ends.
func (d *Driver) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.Sweep()
		d.mu.Lock()
		nets := make([]*netState, 0, len(d.networks))
		for _, ns := range d.networks {
			nets = append(nets, ns)
		}
		d.mu.Unlock()
		for _, ns := range nets {
			ns.mu.Lock()
			d.programPeersLocked(ns)
			ns.mu.Unlock()
		}
	}
}
