package driver

import (
	"errors"
	"net"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/netconfig"
)

// releaseDeviceLocked deletes the network's device when no endpoint is joined. ns.mu is held.
func (d *Driver) releaseDeviceLocked(ns *netState) {
	if len(ns.joined) > 0 {
		return
	}
	if err := d.dp.DeleteVXLAN(ns.spec); err != nil {
		d.cfg.Metrics.Error("delete_vxlan")
		d.log.WithError(err).WithFields(logrus.Fields{"network": ns.rec.ID, "interface": ns.spec.Name}).
			Warn("could not delete the network's vxlan interface; the sweep will retry")
		return
	}
	ns.vxIndex = 0
}

// ensureDeviceLocked makes sure the network's VXLAN device is there; ns.mu is held.
func (d *Driver) ensureDeviceLocked(ns *netState, log *logrus.Entry) error {
	if ns.vxIndex != 0 {
		if idx, ok := d.dp.VXLANIndex(ns.spec); ok && idx == ns.vxIndex {
			return nil
		}
		ns.vxIndex = 0
	}
	spec := ns.spec
	if spec.MTU == 0 {
		spec.MTU = d.cfg.MTU
	}
	if spec.MTU == 0 {
		spec.MTU = d.dp.UnderlayMTU(net.ParseIP(d.VTEP())) - netconfig.VXLANOverhead
	}
	ns.spec.MTU = spec.MTU
	idx, removed, err := d.dp.EnsureVXLAN(spec, d.liveNetwork)
	d.countRemoved(removed)
	if err != nil {
		var ce *dataplane.ConflictError
		if errors.As(err, &ce) {
			d.cfg.Metrics.ConflictRefused()
			log.WithField("conflict", ce.Device.Name).Error(err.Error())
		} else {
			d.cfg.Metrics.Error("ensure_vxlan")
		}
		return err
	}
	ns.vxIndex = idx
	d.programPeersLocked(ns, false)
	return nil
}

func (d *Driver) countRemoved(removed []dataplane.Removed) {
	for _, r := range removed {
		d.cfg.Metrics.StaleRemoved(r.Reason)
	}
}
