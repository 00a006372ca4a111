package dataplane

import (
	"errors"
	"fmt"
	"net"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/netconfig"
	"golang.org/x/sys/unix"
)

// ErrParentGone is wrapped by CreateEndpointIf's error when the kernel refused the interface because of
// its parent (EndpointSpec.ParentIndex): no such device (ENODEV), or not one a macvlan can sit on
// (EINVAL). The caller's idea of the network's device is out of date.
var ErrParentGone = errors.New("the parent device is gone or unsuitable")

// EndpointSpec is the interface of one endpoint: a macvlan (bridge mode) on the network's VXLAN device,
// created in the host namespace and handed to libnetwork, which moves it into the container.
type EndpointSpec struct {
	NetworkID   string
	EndpointID  string
	Name        string // vxe-<endpoint id 10>
	ParentIndex int
	MAC         net.HardwareAddr
	MTU         int
}

func (s EndpointSpec) String() string {
	return fmt.Sprintf("endpoint interface %q (endpoint %s)", s.Name, netconfig.ShortID(s.EndpointID))
}

// CreateEndpointIf creates the endpoint's interface. An interface already holding the name is deleted
// when provably unused (vxsafe's own, or down with no master and no address) and named in the error
// otherwise.
func (m *Manager) CreateEndpointIf(spec EndpointSpec) ([]Removed, error) {
	log := m.log.WithFields(logrus.Fields{"network": spec.NetworkID, "endpoint": spec.EndpointID, "interface": spec.Name})
	var removed []Removed
	if l, err := m.h.LinkByName(spec.Name); err == nil {
		reason, err := m.staleEndpointIf(l, spec)
		if err != nil {
			return nil, err
		}
		if err := m.hooks.check(StepDeleteStale); err != nil {
			return nil, fmt.Errorf("deleting stale interface %q: %w", spec.Name, err)
		}
		if err := m.h.LinkDel(l); err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("deleting stale %s interface %q (ifindex %d, host namespace): %w", l.Type(), spec.Name, l.Attrs().Index, err)
		}
		d := Device{Name: spec.Name, Index: l.Attrs().Index, NS: Namespace{Desc: "host namespace", Host: true}}
		log.WithFields(logrus.Fields{"ifindex": d.Index, "namespace": "host namespace", "reason": reason}).
			Warnf("deleted stale %s interface %q (ifindex %d, host namespace): it %s", l.Type(), spec.Name, d.Index, reason)
		removed = append(removed, Removed{Device: d, Reason: reason})
	}
	if err := m.hooks.check(StepCreateEndpoint); err != nil {
		return removed, fmt.Errorf("creating %s: %w", spec, err)
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: spec.Name, ParentIndex: spec.ParentIndex, MTU: spec.MTU, HardwareAddr: spec.MAC},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := m.h.LinkAdd(mv); err != nil {
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
			return removed, fmt.Errorf("creating %s on ifindex %d: %w: %w", spec, spec.ParentIndex, ErrParentGone, err)
		}
		return removed, fmt.Errorf("creating %s on ifindex %d: %w", spec, spec.ParentIndex, err)
	}
	// The kernel ignores an alias in the create request (IFLA_IFALIAS is applied only to existing links),
	// so it is set right after. LinkAdd has already looked the new link up to fill in its ifindex.
	var err error
	if mv.Index == 0 {
		err = fmt.Errorf("interface %q not found after creating it", spec.Name)
	} else {
		err = m.h.LinkSetAlias(mv, EndpointAlias(spec.NetworkID, spec.EndpointID))
	}
	if err != nil {
		if mv.Index != 0 {
			_ = m.h.LinkDel(mv)
		}
		return removed, fmt.Errorf("configuring new %s: %w", spec, err)
	}
	return removed, nil
}

// staleEndpointIf says why an interface holding an endpoint's name may be deleted, or why not.
func (m *Manager) staleEndpointIf(l netlink.Link, spec EndpointSpec) (string, error) {
	a := l.Attrs()
	desc := fmt.Sprintf("%s interface %q (ifindex %d, host namespace)", l.Type(), a.Name, a.Index)
	if _, _, ours := ParseAlias(a.Alias); ours {
		// Ours and in the host namespace: no container holds it (libnetwork moves it into the sandbox).
		return "is a leftover vxsafe endpoint interface that no container holds", nil
	}
	if a.Flags&net.FlagUp != 0 {
		return "", fmt.Errorf("%s is up and holds the name of %s: not deleting a live interface; delete or rename it", desc, spec)
	}
	if a.MasterIndex > 0 {
		return "", fmt.Errorf("%s is enslaved (master ifindex %d) and holds the name of %s: not deleting a live interface; delete or rename it", desc, a.MasterIndex, spec)
	}
	if addrs, _ := m.h.AddrList(l, netlink.FAMILY_ALL); len(addrs) > 0 {
		return "", fmt.Errorf("%s has addresses and holds the name of %s: not deleting a live interface; delete or rename it", desc, spec)
	}
	return "is down with no master and no address", nil
}

// DeleteEndpointIf removes the endpoint's interface if it is in the host namespace and ours. One that
// libnetwork has not moved back from a container is left to the kernel, which deletes it with the
// container's namespace.
func (m *Manager) DeleteEndpointIf(netID, epID, name string) error {
	l, err := m.h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up endpoint interface %q: %w", name, err)
	}
	if l.Attrs().Alias != EndpointAlias(netID, epID) {
		return nil
	}
	if err := m.hooks.check(StepDeleteEndpoint); err != nil {
		return fmt.Errorf("deleting endpoint interface %q: %w", name, err)
	}
	if err := m.h.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting endpoint interface %q (ifindex %d): %w", name, l.Attrs().Index, err)
	}
	return nil
}
