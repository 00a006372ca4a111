package cluster

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// SetNodeLink takes a node's port on the underlay switch down or up: a network partition, which the
// other nodes see as the loss of that node (its daemon and containers keep running).
func (c *Cluster) SetNodeLink(n *Node, up bool) error {
	fd, err := netns.GetFromPath(c.SwitchNetnsPath())
	if err != nil {
		return fmt.Errorf("opening the switch namespace: %w", err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return fmt.Errorf("netlink in the switch namespace: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(n.Name)
	if err != nil {
		return fmt.Errorf("switch port of node %s: %w", n.Name, err)
	}
	if up {
		return h.LinkSetUp(l)
	}
	return h.LinkSetDown(l)
}
