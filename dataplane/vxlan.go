package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vxsafe/overlay/netconfig"
	"golang.org/x/sys/unix"
)

// VXLANSpec is the VXLAN device of one network on this host.
type VXLANSpec struct {
	NetworkID string
	Name      string // vx-<vni 6 hex>-<net id 5>
	VNI       uint32
	Port      int
	MTU       int
	// IPv6: the network has IPv6 (netconfig.OptIPv6). The device then has IPv6 on, so that it holds the
	// IPv6 neighbour entries of remote endpoints and answers neighbour solicitations from them, and no
	// address of its own (addrgenmode none: it sends nothing itself).
	IPv6 bool
}

func (s VXLANSpec) want() Want {
	return Want{NetworkID: s.NetworkID, Name: s.Name, VNI: s.VNI, Port: s.Port}
}

func (s VXLANSpec) String() string {
	return fmt.Sprintf("vxlan interface %q (VNI %d, port %d)", s.Name, s.VNI, s.Port)
}

// Removed records a stale device that vxsafe deleted, and why.
type Removed struct {
	Device Device
	Reason string
}

// EnsureVXLAN makes the network's VXLAN device exist and be up, and returns its ifindex. A conflicting
// device is judged by Classify: reused when it is ours and current, deleted when stale (each deletion is
// logged at warn and returned), and a live one makes EnsureVXLAN fail with a *ConflictError naming it.
//
// The host namespace is checked before the create. Devices hidden in other namespaces are searched only
// when the kernel still refuses with EEXIST (the kernel is the final judge of what conflicts, and a scan
// of every namespace is too costly to make on every first join); after a cleanup the create is retried
// once, and a second refusal is reported with whatever a fresh scan finds.
func (m *Manager) EnsureVXLAN(spec VXLANSpec, liveNetwork func(netID string) bool) (int, []Removed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	log := m.log.WithFields(logrus.Fields{"network": spec.NetworkID, "interface": spec.Name, "vni": spec.VNI})

	// Fast path: our own device is already there.
	if l, err := m.h.LinkByName(spec.Name); err == nil {
		if vx, ok := l.(*netlink.Vxlan); ok && vx.Alias == NetworkAlias(spec.NetworkID) &&
			uint32(vx.VxlanId) == spec.VNI && vx.Port == spec.Port {
			if err := m.up(vx, spec); err != nil {
				return 0, nil, err
			}
			return vx.Index, nil, nil
		}
	}

	var removed []Removed
	idx, rm, err := m.clearAndCreate(spec, false, liveNetwork, log)
	removed = append(removed, rm...)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return idx, removed, err
	}
	// The kernel knows a holder the host namespace does not show: search everywhere, then retry once.
	log.WithError(err).Info("kernel refused the device; searching every network namespace for the holder")
	idx, rm, err = m.clearAndCreate(spec, true, liveNetwork, log)
	removed = append(removed, rm...)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return idx, removed, err
	}
	// A race with another creator, or a holder in a namespace we cannot see.
	if c := m.conflicts(spec, true, liveNetwork); c != nil {
		return 0, removed, c
	}
	return 0, removed, fmt.Errorf("creating %s: the kernel reports that a device already holds this name or VNI, "+
		"but none is visible in the host namespace, in any bind-mounted network namespace or in any process's: "+
		"run `vxsafe doctor` on this host, or give the network another VNI with -o %s=N: %w",
		spec, netconfig.OptVNIList, err)
}

// clearAndCreate removes stale conflicting devices (searching every namespace when all is set) and
// creates the device.
func (m *Manager) clearAndCreate(spec VXLANSpec, all bool, liveNetwork func(string) bool, log *logrus.Entry) (int, []Removed, error) {
	devs, err := m.ScanVXLAN(all, false)
	if err != nil {
		return 0, nil, fmt.Errorf("scanning for devices that conflict with %s: %w", spec, err)
	}
	if !all && anyStale(devs, spec, liveNetwork) {
		// The host namespace alone does not show the uppers that containers hold in their own
		// namespaces (a macvlan on the device, moved into a container): look everywhere before
		// deleting anything.
		if devs, err = m.ScanVXLAN(true, false); err != nil {
			return 0, nil, fmt.Errorf("scanning for devices that conflict with %s: %w", spec, err)
		}
	}
	var confirmed map[deviceKey]bool
	if anyForeignStale(devs, spec, liveNetwork) {
		if devs, confirmed, err = m.confirmStale(devs, spec, liveNetwork); err != nil {
			return 0, nil, err
		}
	}
	var removed []Removed
	for _, d := range devs {
		conflicts, byName := spec.want().Conflict(d)
		if !conflicts {
			continue
		}
		j := Classify(d, spec.want(), liveNetwork)
		if j.Verdict == Stale && foreign(d) && !confirmed[keyOf(d)] {
			// Judged stale by the second scan only: it may be another program's device in the making
			// too. Left for the retry after EEXIST, which looks twice again.
			log.WithFields(logrus.Fields{"interface_seen": d.Name, "ifindex": d.Index, "namespace": d.NS.Desc, "reason": j.Reason}).
				Info("a conflicting device was judged stale by one scan only; not deleting it yet")
			continue
		}
		switch j.Verdict {
		case Reuse:
			l, err := m.h.LinkByIndex(d.Index)
			if err != nil {
				return 0, removed, fmt.Errorf("reading %s: %w", d, err)
			}
			if err := m.up(l, spec); err != nil {
				return 0, removed, err
			}
			return d.Index, removed, nil
		case Live:
			return 0, removed, &ConflictError{Device: d, Reason: j.Reason, Want: spec.want(), ByName: byName}
		case Stale:
			if err := m.deleteDevice(d); err != nil {
				return 0, removed, fmt.Errorf("deleting stale %s (it %s): %w", d, j.Reason, err)
			}
			log.WithFields(logrus.Fields{"stale_interface": d.Name, "ifindex": d.Index, "stale_vni": d.VNI,
				"port": d.Port, "namespace": d.NS.Desc, "reason": j.Reason}).
				Warnf("deleted stale %s: it %s", d, j.Reason)
			removed = append(removed, Removed{Device: d, Reason: j.Reason})
		}
	}
	// A non-VXLAN link with our name.
	if l, err := m.h.LinkByName(spec.Name); err == nil {
		if _, isVX := l.(*netlink.Vxlan); !isVX {
			r, err := m.clearForeignName(l)
			if err != nil {
				return 0, removed, err
			}
			log.WithFields(logrus.Fields{"stale_interface": spec.Name, "ifindex": l.Attrs().Index, "reason": r}).
				Warnf("deleted stale interface %q (ifindex %d, host namespace): it %s", spec.Name, l.Attrs().Index, r)
		}
	}
	idx, err := m.create(spec)
	return idx, removed, err
}

// anyStale reports whether a device in devs conflicts with spec and would be judged stale.
func anyStale(devs []Device, spec VXLANSpec, liveNetwork func(string) bool) bool {
	return len(staleKeys(devs, spec, liveNetwork, false)) > 0
}

// anyForeignStale reports whether a device in devs that is not vxsafe's conflicts with spec and would be
// judged stale.
func anyForeignStale(devs []Device, spec VXLANSpec, liveNetwork func(string) bool) bool {
	return len(staleKeys(devs, spec, liveNetwork, true)) > 0
}

// staleKeys returns the devices of devs (only those that are not vxsafe's, with onlyForeign) that
// conflict with spec and would be judged stale.
func staleKeys(devs []Device, spec VXLANSpec, liveNetwork func(string) bool, onlyForeign bool) map[deviceKey]bool {
	keys := map[deviceKey]bool{}
	for _, d := range devs {
		if onlyForeign && !foreign(d) {
			continue
		}
		if conflicts, _ := spec.want().Conflict(d); conflicts && Classify(d, spec.want(), liveNetwork).Verdict == Stale {
			keys[keyOf(d)] = true
		}
	}
	return keys
}

// StaleSettle is how long a device that is not vxsafe's must stay stale, in two scans of every
// namespace, before EnsureVXLAN deletes it.
//
// Another program's device passes through states that Classify calls stale while that program builds
// it. Docker's overlay, joining its first container on a host, creates its vxlan down in the host
// namespace, moves it into the sandbox, enslaves it to the sandbox's br0, and only then attaches the
// container's veth: for that moment the device is "down", then "a sandbox leftover whose bridge has no
// container". Such a device only conflicts with a vxsafe network that asks for the same VNI (an
// operator's error), but deleting it would break overlay's join. vxsafe's own devices are judged from
// vxsafe's state and need no second look. The cost falls only on a join that meets a foreign stale
// device: a quarter of a second, once.
const StaleSettle = 250 * time.Millisecond

// deviceKey identifies a scanned device across two scans: its namespace, ifindex and name.
type deviceKey struct {
	ns    uint64
	index int
	name  string
}

func keyOf(d Device) deviceKey { return deviceKey{d.NS.Ino, d.Index, d.Name} }

// foreign reports whether d is not one of vxsafe's network devices.
func foreign(d Device) bool {
	_, ep, ours := ParseAlias(d.Alias)
	return !ours || ep != ""
}

// confirmStale waits StaleSettle and scans every namespace again. It returns the new scan and the foreign
// devices that both scans judge stale: only those may be deleted.
func (m *Manager) confirmStale(first []Device, spec VXLANSpec, liveNetwork func(string) bool) ([]Device, map[deviceKey]bool, error) {
	before := staleKeys(first, spec, liveNetwork, true)
	if err := m.hooks.check(StepConfirmStale); err != nil {
		return nil, nil, fmt.Errorf("confirming that the devices conflicting with %s are stale: %w", spec, err)
	}
	time.Sleep(StaleSettle)
	devs, err := m.ScanVXLAN(true, false)
	if err != nil {
		return nil, nil, fmt.Errorf("scanning again for devices that conflict with %s: %w", spec, err)
	}
	confirmed := map[deviceKey]bool{}
	for k := range staleKeys(devs, spec, liveNetwork, true) {
		if before[k] {
			confirmed[k] = true
		}
	}
	return devs, confirmed, nil
}

// clearForeignName deletes a non-VXLAN link that holds a name we need, when it is provably unused.
func (m *Manager) clearForeignName(l netlink.Link) (string, error) {
	a := l.Attrs()
	desc := fmt.Sprintf("%s interface %q (ifindex %d, host namespace)", l.Type(), a.Name, a.Index)
	if a.Flags&net.FlagUp != 0 || a.MasterIndex > 0 {
		return "", fmt.Errorf("%s is up or enslaved and holds the name vxsafe needs: not deleting a live interface; rename or delete it", desc)
	}
	if addrs, _ := m.h.AddrList(l, netlink.FAMILY_ALL); len(addrs) > 0 {
		return "", fmt.Errorf("%s has addresses and holds the name vxsafe needs: not deleting a live interface; rename or delete it", desc)
	}
	if err := m.hooks.check(StepDeleteStale); err != nil {
		return "", err
	}
	if err := m.h.LinkDel(l); err != nil && !isNotFound(err) {
		return "", fmt.Errorf("deleting stale %s: %w", desc, err)
	}
	return "is down with no master and no address", nil
}

// conflicts returns the first live or unresolvable holder after a failed retry.
func (m *Manager) conflicts(spec VXLANSpec, all bool, liveNetwork func(string) bool) error {
	devs, err := m.ScanVXLAN(all, false)
	if err != nil {
		return nil
	}
	for _, d := range devs {
		conflicts, byName := spec.want().Conflict(d)
		if !conflicts {
			continue
		}
		j := Classify(d, spec.want(), liveNetwork)
		return &ConflictError{Device: d, Reason: j.Reason + " (still there after a cleanup: another program re-creates it)", Want: spec.want(), ByName: byName}
	}
	return nil
}

func (m *Manager) create(spec VXLANSpec) (int, error) {
	if err := m.hooks.check(StepCreateVXLAN); err != nil {
		return 0, fmt.Errorf("creating %s: %w", spec, err)
	}
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: spec.Name, MTU: spec.MTU},
		VxlanId:   int(spec.VNI),
		Port:      spec.Port,
		Learning:  false,
		Proxy:     true,
	}
	if err := m.h.LinkAdd(vx); err != nil {
		return 0, fmt.Errorf("creating %s: %w", spec, err)
	}
	l, err := m.h.LinkByName(spec.Name)
	if err == nil {
		err = m.h.LinkSetAlias(l, NetworkAlias(spec.NetworkID))
	}
	if err == nil {
		err = m.up(l, spec)
	}
	if err != nil {
		if l != nil {
			_ = m.h.LinkDel(l) // no half-built device
		}
		return 0, fmt.Errorf("configuring new %s: %w", spec, err)
	}
	m.log.WithFields(logrus.Fields{"network": spec.NetworkID, "interface": spec.Name, "vni": spec.VNI, "ifindex": l.Attrs().Index}).
		Info("created vxlan interface")
	return l.Attrs().Index, nil
}

func (m *Manager) up(l netlink.Link, spec VXLANSpec) error {
	if err := m.hooks.check(StepLinkUp); err != nil {
		return fmt.Errorf("setting %s up: %w", spec, err)
	}
	if spec.MTU > 0 && l.Attrs().MTU != spec.MTU {
		if err := m.h.LinkSetMTU(l, spec.MTU); err != nil {
			return fmt.Errorf("setting MTU %d on %s: %w", spec.MTU, spec, err)
		}
	}
	if spec.IPv6 {
		if err := m.enableIPv6(l); err != nil {
			return fmt.Errorf("%s: %w", spec, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := m.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting %s up: %w", spec, err)
		}
	}
	return nil
}

// DeleteVXLAN removes the network's device, if it is vxsafe's. A device of that name that is not ours is
// left alone and reported.
func (m *Manager) DeleteVXLAN(spec VXLANSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.h.LinkByName(spec.Name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up %s: %w", spec, err)
	}
	if l.Attrs().Alias != NetworkAlias(spec.NetworkID) {
		return fmt.Errorf("%s (ifindex %d) is not vxsafe's device for network %s (alias %q): not deleting it",
			spec, l.Attrs().Index, netconfig.ShortID(spec.NetworkID), l.Attrs().Alias)
	}
	if err := m.hooks.check(StepDeleteVXLAN); err != nil {
		return fmt.Errorf("deleting %s: %w", spec, err)
	}
	if err := m.h.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting %s (ifindex %d): %w", spec, l.Attrs().Index, err)
	}
	m.log.WithFields(logrus.Fields{"network": spec.NetworkID, "interface": spec.Name, "vni": spec.VNI}).Info("deleted vxlan interface")
	return nil
}

// VXLANIndex returns the ifindex of the network's device if it is there and ours.
func (m *Manager) VXLANIndex(spec VXLANSpec) (int, bool) {
	l, err := m.h.LinkByName(spec.Name)
	if err != nil || l.Attrs().Alias != NetworkAlias(spec.NetworkID) {
		return 0, false
	}
	return l.Attrs().Index, true
}

// Link is an interface of the host namespace that carries a vxsafe alias, as Owned found it.
type Link struct {
	Name       string
	Index      int
	Kind       string // the kernel's link kind: "vxlan", "macvlan", ...
	Alias      string
	NetworkID  string
	EndpointID string // empty for a network's VXLAN device
}

// Owned lists the devices of the host namespace that carry a vxsafe alias.
func (m *Manager) Owned() (networks, endpoints []Link, err error) {
	links, err := listLinks(m.h)
	if err != nil {
		return nil, nil, fmt.Errorf("listing interfaces of the host namespace: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		netID, epID, ok := ParseAlias(a.Alias)
		if !ok {
			continue
		}
		o := Link{Name: a.Name, Index: a.Index, Kind: l.Type(), Alias: a.Alias, NetworkID: netID, EndpointID: epID}
		if epID == "" {
			networks = append(networks, o)
		} else {
			endpoints = append(endpoints, o)
		}
	}
	return networks, endpoints, nil
}

// DeleteOwned deletes one of the links Owned returned, checking it is still the same device.
func (m *Manager) DeleteOwned(l Link) error {
	cur, err := m.h.LinkByIndex(l.Index)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	if cur.Attrs().Alias != l.Alias {
		return nil
	}
	if err := m.h.LinkDel(cur); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting %s interface %q (ifindex %d): %w", cur.Type(), cur.Attrs().Name, cur.Attrs().Index, err)
	}
	return nil
}

// HostUppers maps the ifindex of each VXLAN device of the host namespace to the devices stacked on it,
// in any namespace ("name" in the host namespace, "name (namespace)" elsewhere).
func (m *Manager) HostUppers() (map[int][]string, error) {
	devs, err := m.ScanVXLAN(true, false)
	if err != nil {
		return nil, err
	}
	uppers := map[int][]string{}
	for _, dev := range devs {
		if dev.NS.Host {
			uppers[dev.Index] = dev.Uppers
		}
	}
	return uppers, nil
}

// enableIPv6 turns IPv6 on for a device of the Manager's namespace, without an address of its own.
func (m *Manager) enableIPv6(l netlink.Link) error {
	name := l.Attrs().Name
	if err := m.h.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		return fmt.Errorf("setting IPv6 addrgenmode none: %w", err)
	}
	path := filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
	return inNetNS(m.ns, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading %s: %w (the network has %s; is IPv6 disabled on this host's kernel?)", path, err, netconfig.OptIPv6)
		}
		if strings.TrimSpace(string(b)) == "0" {
			return nil
		}
		if err := os.WriteFile(path, []byte("0"), 0o644); err != nil {
			return fmt.Errorf("turning IPv6 on (%s=0): %w", path, err)
		}
		return nil
	})
}
