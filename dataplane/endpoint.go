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
//
// The creation is tried first, and the holder of the name looked up only when the kernel answers EEXIST:
// on the common path two netlink requests (create, with the new ifindex echoed back; set the alias), each
// of which waits on the kernel's rtnl lock behind every link change on the machine.
func (m *Manager) CreateEndpointIf(spec EndpointSpec) ([]Removed, error) {
	var removed []Removed
	index, err := m.createEndpointIf(spec)
	if errors.Is(err, unix.EEXIST) {
		var r *Removed
		if r, err = m.removeStaleEndpointIf(spec); err != nil {
			return nil, err
		}
		if r != nil {
			removed = append(removed, *r)
		}
		index, err = m.createEndpointIf(spec)
	}
	if err != nil {
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
			return removed, fmt.Errorf("creating %s on ifindex %d: %w: %w", spec, spec.ParentIndex, ErrParentGone, err)
		}
		return removed, fmt.Errorf("creating %s on ifindex %d: %w", spec, spec.ParentIndex, err)
	}
	// The kernel ignores an alias in the create request (IFLA_IFALIAS is applied only to existing links),
	// so it is set right after, by the ifindex the creation answered.
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: spec.Name, Index: index}}
	if err := m.h.LinkSetAlias(mv, EndpointAlias(spec.NetworkID, spec.EndpointID)); err != nil {
		_ = m.h.LinkDel(mv)
		return removed, fmt.Errorf("configuring new %s (ifindex %d): %w", spec, index, err)
	}
	return removed, nil
}

// createEndpointIf makes the macvlan (after the injected-failure hook) and returns its ifindex.
func (m *Manager) createEndpointIf(spec EndpointSpec) (int, error) {
	if err := m.hooks.check(StepCreateEndpoint); err != nil {
		return 0, err
	}
	return m.addMacvlan(&netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: spec.Name, ParentIndex: spec.ParentIndex, MTU: spec.MTU, HardwareAddr: spec.MAC},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	})
}

// removeStaleEndpointIf judges the interface holding spec's name (the creation answered EEXIST) and
// deletes it if provably unused, or names it in the error. nil, nil: the name was free again when looked
// up.
func (m *Manager) removeStaleEndpointIf(spec EndpointSpec) (*Removed, error) {
	l, err := m.h.LinkByName(spec.Name)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("looking up the interface %q holding the name of %s: %w", spec.Name, spec, err)
	}
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
	m.log.WithFields(logrus.Fields{"network": spec.NetworkID, "endpoint": spec.EndpointID, "interface": spec.Name,
		"ifindex": d.Index, "namespace": "host namespace", "reason": reason}).
		Warnf("deleted stale %s interface %q (ifindex %d, host namespace): it %s", l.Type(), spec.Name, d.Index, reason)
	return &Removed{Device: d, Reason: reason}, nil
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
