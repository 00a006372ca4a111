package driver

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

// sweepState is the garbage collector's memory between rounds. It has its own lock: it is read and
// written while a network's lock is held.
type sweepState struct {
	mu sync.Mutex
	// kept: devices the sweep kept because they carry uppers, already logged at info.
	kept map[string]bool
	// missingSince: when a joined endpoint was first found without an interface in any namespace.
	missingSince map[string]time.Time
}

func newSweepState() *sweepState {
	return &sweepState{kept: map[string]bool{}, missingSince: map[string]time.Time{}}
}

// missing records that the endpoint key has no interface at now and returns since when it has had none.
func (s *sweepState) missing(key string, now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	since, ok := s.missingSince[key]
	if !ok {
		since = now
		s.missingSince[key] = now
	}
	return since
}

// forgetMissing forgets the endpoints not in still (all of them for a nil still).
func (s *sweepState) forgetMissing(still map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range s.missingSince {
		if !still[key] {
			delete(s.missingSince, key)
		}
	}
}

// firstKept reports whether the device key is kept for the first time (and remembers it).
func (s *sweepState) firstKept(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !s.kept[key]
	s.kept[key] = true
	return first
}

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
	nets := d.snapshot()
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
				if !ep.Joined || !ns.isJoined(ep.EndpointID) || now.Sub(ep.Updated) < grace {
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
	if len(cands) == 0 {
		d.sweep.forgetMissing(nil)
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
		if now.Sub(d.sweep.missing(key, now)) < grace/3 {
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
				d.cfg.Services.Left(cur.EndpointID)
				if d.cfg.Control != nil {
					d.cfg.Control.Withdraw(cur.NetworkID, cur.EndpointID)
				}
				reaped++
				d.log.WithFields(logrus.Fields{"network": cur.NetworkID, "endpoint": cur.EndpointID, "address": cur.IP,
					"sandbox": c.ep.SandboxKey}).Warnf("endpoint %s (%s) of network %s was joined, but its sandbox %s and its interface are gone "+
					"(its container died without a Leave: dockerd crashed or the host rebooted): marked left and withdrawn",
					netconfig.ShortID(cur.EndpointID), cur.IP, netconfig.ShortID(cur.NetworkID), c.ep.SandboxKey)
			}
		}
		c.ns.mu.Unlock()
	}
	d.sweep.forgetMissing(seen)
	return reaped
}

// Sweep marks dead endpoints left (reapDeadEndpoints), then removes what vxsafe created and no longer
// needs (sweepInterfaces). It returns how many interfaces it removed.
func (d *Driver) Sweep() int {
	d.reapDeadEndpoints()
	return d.sweepInterfaces()
}

// sweepInterfaces removes endpoint interfaces left in the host namespace by endpoints that are not
// joined, and devices of networks with no joined endpoint on this host (or unknown networks) that carry
// no upper device in any namespace. It never touches a device without a vxsafe alias. It returns how many
// interfaces it removed.
func (d *Driver) sweepInterfaces() int {
	nets, eps, err := d.dp.Owned()
	if err != nil {
		d.log.WithError(err).Warn("sweep: listing vxsafe's interfaces")
		return 0
	}
	removed := 0
	// Endpoint interfaces first: one left in the host namespace is an upper of its network's device.
	for _, l := range eps {
		ns, known := d.lookup(l.NetworkID)
		if !known {
			if d.sweepLink(l, "its network is unknown to vxsafe on this host") {
				removed++
			}
			continue
		}
		ns.mu.Lock()
		_, pending := ns.pending[l.EndpointID] // DeleteEndpoint's background delete is on it
		if !ns.isJoined(l.EndpointID) && !pending && d.sweepLink(l, "its endpoint is not joined to any container") {
			removed++
		}
		ns.mu.Unlock()
	}
	// Uppers of the host's devices in every namespace, read once and only when a device is to go: the
	// state may not know an endpoint that a running container still holds (state lost, a record behind),
	// and deleting the device would take the container's interface with it.
	var uppers map[int][]string
	var scanErr error
	carries := func(l dataplane.Link) []string {
		if uppers == nil && scanErr == nil {
			if uppers, scanErr = d.dp.HostUppers(); scanErr != nil {
				d.log.WithError(scanErr).Warn("sweep: scanning namespaces for upper devices failed; keeping every device")
			}
		}
		if scanErr != nil {
			return []string{"upper devices that could not be listed"}
		}
		return uppers[l.Index]
	}
	for _, l := range nets {
		ns, known := d.lookup(l.NetworkID)
		if known {
			ns.mu.Lock()
			if len(ns.joined) == 0 && len(ns.pending) == 0 && d.sweepDevice(l, carries, "its network has no endpoint joined on this host") {
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
func (d *Driver) sweepDevice(l dataplane.Link, carries func(dataplane.Link) []string, reason string) bool {
	if up := carries(l); len(up) > 0 {
		key := fmt.Sprintf("%s/%d", l.Name, l.Index)
		first := d.sweep.firstKept(key)
		log := d.log.WithFields(logrus.Fields{"interface": l.Name, "ifindex": l.Index, "uppers": up})
		msg := fmt.Sprintf("sweep: keeping vxlan interface %q (ifindex %d) although %s: it carries %s, which a container may hold",
			l.Name, l.Index, reason, strings.Join(up, ", "))
		if first {
			log.Info(msg)
		} else {
			log.Debug(msg)
		}
		return false
	}
	return d.sweepLink(l, reason)
}

func (d *Driver) sweepLink(l dataplane.Link, reason string) bool {
	if err := d.dp.DeleteOwned(l); err != nil {
		d.log.WithError(err).WithFields(logrus.Fields{"interface": l.Name, "ifindex": l.Index}).Warn("sweep: could not delete")
		return false
	}
	d.cfg.Metrics.StaleRemoved("sweep")
	d.log.WithFields(logrus.Fields{"interface": l.Name, "ifindex": l.Index, "namespace": "host namespace", "reason": reason}).
		Warnf("sweep: deleted %s interface %q (ifindex %d): %s", l.Kind, l.Name, l.Index, reason)
	return true
}
