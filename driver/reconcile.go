package driver

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
)

// Reconcile brings the kernel in line with the state after a start: the devices of networks with joined
// endpoints are re-made if missing (a reboot, or someone deleted them) and re-programmed, local endpoints
// are re-published, and whatever vxsafe made that nothing needs is removed.
func (d *Driver) Reconcile() {
	start := time.Now()
	nets := d.snapshot()
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
			d.rejoinServicesLocked(ns, log)
		}
		ns.mu.Unlock()
	}
	swept := d.sweepInterfaces() // the dead endpoints were reaped above
	d.log.WithFields(logrus.Fields{"networks": len(nets), "rebuilt": rebuilt, "reaped": reaped, "swept": swept, "took": time.Since(start).String()}).Info("reconciled state with the kernel")
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
		for _, ns := range d.snapshot() {
			ns.mu.Lock()
			d.programPeersLocked(ns, d.controlSynced())
			ns.mu.Unlock()
		}
	}
}

// rejoinServicesLocked hands the joined endpoints' sandboxes to the service VIPs after a start: their
// tables are re-programmed from the engine's services once read. ns.mu is held.
func (d *Driver) rejoinServicesLocked(ns *netState, log *logrus.Entry) {
	eps, err := d.st.ListEndpoints(ns.rec.ID)
	if err != nil {
		log.WithError(err).Warn("reconcile: reading the endpoints for service VIPs")
		return
	}
	for _, ep := range eps {
		if ep.Joined && ns.isJoined(ep.EndpointID) {
			d.cfg.Services.Joined(ep.NetworkID, ep.EndpointID, ep.SandboxKey)
		}
	}
}
