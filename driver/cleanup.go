package driver

import (
	"context"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"
)

// DeleteEndpoint answers once the endpoint's record is gone; its interface is deleted afterwards, here.
// Deleting a macvlan costs the kernel an RCU grace period (16-17 ms, more on a busy host) that no caller
// needs to wait for: the container is already stopped, and nothing reuses the interface (its name derives
// from the endpoint ID, which is unique). Crash safety does not depend on it either: an interface of
// vxsafe's left in the host namespace with no record of a joined endpoint is removed by the sweep (at
// every start and every SWEEP_INTERVAL), and a CreateEndpointIf that finds one under its name deletes it.
//
// The deletes run one at a time, in the order DeleteEndpoint queued them, in a goroutine that exists only
// while some are pending. A network's VXLAN device is released (deleted when no endpoint is joined) after
// the network's last pending delete, by the same goroutine: not while a macvlan on it is being deleted,
// and not at all if a Join came meanwhile.

// pendingDelete is an endpoint interface DeleteEndpoint left to the background.
type pendingDelete struct {
	ns          *netState
	netID, epID string
	name        string
}

// cleaner is the queue of pending deletes.
type cleaner struct {
	mu      sync.Mutex
	queue   []pendingDelete
	running bool
	idle    chan struct{} // closed when the running goroutine finds the queue empty
}

// deleteLater queues the deletion of endpoint epID's interface name, then the release of the network's
// device. ns.mu is held.
func (d *Driver) deleteLater(ns *netState, netID, epID, name string) {
	ns.pending[epID] = name
	c := &d.cleanup
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, pendingDelete{ns: ns, netID: netID, epID: epID, name: name})
	if !c.running {
		c.running = true
		c.idle = make(chan struct{})
		go d.drainDeletes()
	}
}

func (d *Driver) drainDeletes() {
	c := &d.cleanup
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.running = false
			close(c.idle)
			c.mu.Unlock()
			return
		}
		j := c.queue[0]
		c.queue[0] = pendingDelete{}
		c.queue = c.queue[1:]
		c.mu.Unlock()
		d.finishDelete(j)
	}
}

// finishDelete deletes one endpoint interface without the network's lock (Joins of the network go on
// meanwhile), then, with it, releases the network's device if nothing else is pending or joined on it.
//
// A Join that reuses the name meanwhile is safe: DeleteEndpointIf deletes only an interface with this
// endpoint's alias, by ifindex, so the new endpoint's interface is never touched.
func (d *Driver) finishDelete(j pendingDelete) {
	err := d.dp.DeleteEndpointIf(j.netID, j.epID, j.name)
	ns := j.ns
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.pending[j.epID] == j.name {
		delete(ns.pending, j.epID)
	}
	if err != nil {
		d.cfg.Metrics.Error("delete_endpoint")
		d.log.WithError(err).WithFields(logrus.Fields{"network": j.netID, "endpoint": j.epID, "interface": j.name}).
			Warn("could not delete the interface of a deleted endpoint; the sweep will retry")
	}
	if len(ns.pending) == 0 && d.current(ns) {
		d.releaseDeviceLocked(ns)
	}
}

// current reports whether ns is still the state of its network (not deleted, and not replaced by a new
// network of the same ID, whose device must not be released on the old one's behalf).
func (d *Driver) current(ns *netState) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.networks[ns.rec.ID] == ns
}

// takePendingNamed deletes now, in the caller, a pending delete of an interface named name: a Join whose
// interface name is that of an endpoint deleted a moment ago (two endpoint IDs with the same first
// characters) deletes the old interface itself rather than have CreateEndpointIf remove it as a leftover.
// ns.mu is held.
func (d *Driver) takePendingNamed(ns *netState, name string) error {
	for epID, n := range ns.pending {
		if n != name {
			continue
		}
		if err := d.dp.DeleteEndpointIf(ns.rec.ID, epID, name); err != nil {
			return fmt.Errorf("deleting the interface %q of deleted endpoint %s first: %w", name, epID, err)
		}
		delete(ns.pending, epID)
	}
	return nil
}

// Flush waits until the deletes DeleteEndpoint left to the background are done (and the devices they
// released), or ctx ends. The plugin calls it on shutdown; tests call it to see the kernel settle.
func (d *Driver) Flush(ctx context.Context) error {
	c := &d.cleanup
	c.mu.Lock()
	if !c.running {
		c.mu.Unlock()
		return nil
	}
	idle := c.idle
	pending := len(c.queue) + 1
	c.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for about %d endpoint interface deletions: %w", pending, ctx.Err())
	}
}
