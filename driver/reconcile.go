package driver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/store"
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
		d.restoreSharedLocked(ns, ep, p)
		return
	}
	if why := d.remoteRefusal(ns, p, d.localAddrsLocked(ns)); why != "" {
		d.cfg.Metrics.Error("remote_refused")
		log.Warnf("ignoring remote endpoint %s of network %s: %s", p, short(ep.Network), why)
		return
	}
	if err := d.dp.AddPeer(ns.vxIndex, p); err != nil {
		d.cfg.Metrics.Error("peer")
		log.WithError(err).Warn("programming remote endpoint")
		return
	}
	log.Debug("remote endpoint programmed")
}

// restoreSharedLocked re-programs the remote endpoints that share the IP or MAC of one just removed.
// The control plane reports endpoints of different hosts in no particular order: when an address moves
// from one host to another (a container stopped there, its address given to a container elsewhere), the
// removal of the old endpoint may arrive after the new one was programmed, and DelPeer's neighbour
// deletion (keyed by IP) would take the new one's entry with it. ns.mu is held.
func (d *Driver) restoreSharedLocked(ns *netState, gone RemoteEndpoint, p dataplane.Peer) {
	if d.cfg.Control == nil {
		return
	}
	self := d.VTEP()
	var local map[string]bool
	for _, ep := range d.cfg.Control.Remote(gone.Network) {
		if ep.EndpointID == gone.EndpointID || ep.VTEP == self {
			continue
		}
		q, err := toPeer(ep)
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
	eps, err := d.st.ListEndpoints(ns.rec.ID)
	if err != nil {
		return nil // unknown: remoteRefusal refuses everything
	}
	for _, ep := range eps {
		if !ep.Joined {
			continue
		}
		if ip, _, err := net.ParseCIDR(ep.IP); err == nil {
			out["ip:"+ip.String()] = true
		}
		if mac, err := net.ParseMAC(ep.MAC); err == nil {
			out["mac:"+mac.String()] = true
		}
	}
	return out
}

// remoteRefusal says why a remote endpoint reported by the control plane must not be programmed on the
// network's device, or "" when it may be. A record may be forged or replayed (gossip without a key, a
// compromised node): it must never take over an address of an endpoint on this host, flood the network's
// broadcast traffic somewhere (an all-zero or multicast MAC is an FDB default or group entry), or carry an
// address outside the network. local is localAddrsLocked's answer (nil: unknown). ns.mu is held.
func (d *Driver) remoteRefusal(ns *netState, p dataplane.Peer, local map[string]bool) string {
	if local == nil {
		return "the endpoints of this host could not be read from the state"
	}
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
	want := map[string]dataplane.Peer{}
	for _, ep := range d.cfg.Control.Remote(ns.rec.ID) {
		if ep.VTEP == self {
			continue
		}
		p, err := toPeer(ep)
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
	reaped := d.reapDeadEndpoints()
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
	d.log.WithFields(logrus.Fields{"networks": len(nets), "rebuilt": rebuilt, "reaped": reaped, "swept": swept, "took": time.Since(start).String()}).Info("reconciled state with the kernel")
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

// reapDeadEndpoints finds endpoints recorded as joined whose container is gone without a Leave — dockerd
// crashed or the host rebooted, and dockerd removed the stale sandbox without telling the driver — and
// marks them left: withdrawn from the other hosts, and no longer holding the network's device. Such an
// endpoint would otherwise stay published forever, keep its network's device, and make this host refuse
// its address when a container elsewhere gets it.
//
// An endpoint is dead only when it has been joined for DeadEndpointGrace, its sandbox (the network
// namespace path libnetwork gave in Join) is known to be gone (the directory holding it is visible, the
// path is not), and no interface carrying its alias has been seen in any namespace for a third of
// DeadEndpointGrace. Without the means to see the sandboxes (fewer privileges), nothing is reaped. It
// returns how many it reaped.
func (d *Driver) reapDeadEndpoints() int {
	d.mu.Lock()
	nets := make([]*netState, 0, len(d.networks))
	for _, ns := range d.networks {
		nets = append(nets, ns)
	}
	d.mu.Unlock()
	grace := d.cfg.DeadEndpointGrace
	now := time.Now()
	type candidate struct {
		ns *netState
		ep store.EndpointRecord
	}
	var cands []candidate
	// Sandbox keys share a few directories (dockerd's netns directory); when one key of a directory
	// cannot be judged (the directory is visible in no mount namespace), none of that directory can: one
	// scan of every process's mount namespace per directory, not per endpoint.
	unknownDir := map[string]bool{}
	for _, ns := range nets {
		ns.mu.Lock()
		if len(ns.joined) > 0 {
			eps, err := d.st.ListEndpoints(ns.rec.ID)
			if err != nil {
				d.log.WithError(err).WithField("network", ns.rec.ID).Warn("checking joined endpoints: reading the state")
			}
			for _, ep := range eps {
				if !ep.Joined || !ns.joined[ep.EndpointID] || now.Sub(ep.Updated) < grace {
					continue
				}
				dir := filepath.Dir(ep.SandboxKey)
				if unknownDir[dir] {
					continue
				}
				exists, known := d.dp.SandboxExists(ep.SandboxKey)
				if !known {
					unknownDir[dir] = true
				}
				if !known || exists {
					continue // alive, or no proof it is gone
				}
				cands = append(cands, candidate{ns, ep})
			}
		}
		ns.mu.Unlock()
	}
	d.mu.Lock()
	if len(cands) == 0 {
		clear(d.missingSince)
	}
	d.mu.Unlock()
	if len(cands) == 0 {
		return 0
	}
	found, err := d.dp.EndpointInterfaces()
	if err != nil {
		d.log.WithError(err).Warn("checking joined endpoints: listing endpoint interfaces")
		return 0
	}
	reaped := 0
	seen := map[string]bool{}
	for _, c := range cands {
		key := c.ep.NetworkID + "/" + c.ep.EndpointID
		if _, alive := found[key]; alive {
			continue
		}
		seen[key] = true
		d.mu.Lock()
		since, ok := d.missingSince[key]
		if !ok {
			since = now
			d.missingSince[key] = now
		}
		d.mu.Unlock()
		if now.Sub(since) < grace/3 {
			continue
		}
		c.ns.mu.Lock()
		cur, ok, err := d.st.GetEndpoint(c.ep.NetworkID, c.ep.EndpointID)
		if err == nil && ok && cur.Joined && cur.Updated.Equal(c.ep.Updated) {
			cur.Joined, cur.SandboxKey, cur.Updated = false, "", time.Now()
			if err := d.st.PutEndpoint(cur); err != nil {
				d.log.WithError(err).WithField("endpoint", cur.EndpointID).Warn("marking a dead endpoint as left")
			} else {
				delete(c.ns.joined, cur.EndpointID)
				if d.cfg.Control != nil {
					d.cfg.Control.Withdraw(cur.NetworkID, cur.EndpointID)
				}
				reaped++
				d.log.WithFields(logrus.Fields{"network": cur.NetworkID, "endpoint": cur.EndpointID, "address": cur.IP,
					"sandbox": c.ep.SandboxKey}).Warnf("endpoint %s (%s) of network %s was joined, but its sandbox %s and its interface are gone "+
					"(its container died without a Leave: dockerd crashed or the host rebooted): marked left and withdrawn",
					short(cur.EndpointID), cur.IP, short(cur.NetworkID), c.ep.SandboxKey)
			}
		}
		c.ns.mu.Unlock()
	}
	d.mu.Lock()
	for key := range d.missingSince {
		if !seen[key] {
			delete(d.missingSince, key)
		}
	}
	d.mu.Unlock()
	return reaped
}

// Sweep marks dead endpoints left (reapDeadEndpoints), then removes what vxsafe created and no longer
// needs: endpoint interfaces left in the host namespace by endpoints that are not joined, and devices of
// networks with no joined endpoint on this host (or unknown networks) that carry no upper device in any
// namespace. It never touches a device without a vxsafe alias. It returns how many interfaces it removed.
func (d *Driver) Sweep() int {
	d.reapDeadEndpoints()
	nets, eps, err := d.dp.Owned()
	if err != nil {
		d.log.WithError(err).Warn("sweep: listing vxsafe's interfaces")
		return 0
	}
	removed := 0
	// Endpoint interfaces first: one left in the host namespace is an upper of its network's device.
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
	// Uppers of the host's devices in every namespace, read once and only when a device is to go: the
	// state may not know an endpoint that a running container still holds (state lost, a record behind),
	// and deleting the device would take the container's interface with it.
	var uppers map[int][]string
	var scanErr error
	carries := func(l netlink.Link) []string {
		if uppers == nil && scanErr == nil {
			var devs []dataplane.Device
			if devs, scanErr = d.dp.ScanVXLAN(true, false); scanErr != nil {
				d.log.WithError(scanErr).Warn("sweep: scanning namespaces for upper devices failed; keeping every device")
			}
			uppers = map[int][]string{}
			for _, dev := range devs {
				if dev.NS.Host {
					uppers[dev.Index] = dev.Uppers
				}
			}
		}
		if scanErr != nil {
			return []string{"upper devices that could not be listed"}
		}
		return uppers[l.Attrs().Index]
	}
	for _, l := range nets {
		netID, _, _ := dataplane.ParseAlias(l.Attrs().Alias)
		d.mu.Lock()
		ns, known := d.networks[netID]
		d.mu.Unlock()
		if known {
			ns.mu.Lock()
			if len(ns.joined) == 0 && d.sweepDevice(l, carries, "its network has no endpoint joined on this host") {
				ns.vxIndex = 0
				removed++
			}
			ns.mu.Unlock()
			continue
		}
		if d.sweepDevice(l, carries, "its network is unknown to vxsafe on this host") {
			removed++
		}
	}
	return removed
}

// sweepDevice deletes a network device of ours unless it carries upper devices (in any namespace).
func (d *Driver) sweepDevice(l netlink.Link, carries func(netlink.Link) []string, reason string) bool {
	if up := carries(l); len(up) > 0 {
		a := l.Attrs()
		key := fmt.Sprintf("%s/%d", a.Name, a.Index)
		d.mu.Lock()
		first := !d.keptReported[key]
		d.keptReported[key] = true
		d.mu.Unlock()
		log := d.log.WithFields(logrus.Fields{"interface": a.Name, "ifindex": a.Index, "uppers": up})
		msg := fmt.Sprintf("sweep: keeping vxlan interface %q (ifindex %d) although %s: it carries %s, which a container may hold",
			a.Name, a.Index, reason, strings.Join(up, ", "))
		if first {
			log.Info(msg)
		} else {
			log.Debug(msg)
		}
		return false
	}
	return d.sweepLink(l, reason)
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
			d.programPeersLocked(ns, d.controlSynced())
			ns.mu.Unlock()
		}
	}
}
