package dataplane

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Namespace is a network namespace found on the host.
type Namespace struct {
	Path string // a path that opens it (ProcRoot/<pid>/ns/net or ProcRoot/1/root/<mount point>)
	Ino  uint64 // nsfs inode: the namespace's identity
	Desc string // how an operator finds it: "host namespace", "netns mounted at /run/docker/netns/1-ab12",
	// "netns of pid 812 (sleep)"
	Mount string // bind mount point, when it is pinned by one
	Host  bool   // the Manager's own namespace
}

// Namespaces lists every network namespace visible through ProcRoot: those pinned by a bind mount (as
// docker's sandboxes and `ip netns` are) in PID 1's, this process's or any other process's mount namespace,
// and those of running processes. The host namespace comes first.
func (m *Manager) Namespaces() []Namespace {
	out := []Namespace{{Path: "", Ino: m.nsIno, Desc: "host namespace", Host: true}}
	seen := map[uint64]bool{m.nsIno: true}
	ents, _ := os.ReadDir(m.procRoot)
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	// Bind-mounted namespaces, as PID 1 sees them (the plugin has a mount namespace of its own, so its own
	// view lacks the host's /run/netns and docker's sandboxes), then as this process sees them.
	type mountSource struct{ mountinfo, root string }
	sources := []mountSource{
		{filepath.Join(m.procRoot, "1", "mountinfo"), filepath.Join(m.procRoot, "1", "root")},
		{filepath.Join(m.procRoot, "self", "mountinfo"), "/"},
	}
	// dockerd need not share PID 1's mount namespace (an init of its own, a daemon started in another
	// mount namespace): look through every other process's mount namespace too, once per namespace.
	seenMnt := map[uint64]bool{}
	for _, dir := range []string{filepath.Join(m.procRoot, "1"), filepath.Join(m.procRoot, "self")} {
		if ino, err := nsInode(filepath.Join(dir, "ns", "mnt")); err == nil {
			seenMnt[ino] = true
		}
	}
	for _, pid := range pids {
		dir := filepath.Join(m.procRoot, strconv.Itoa(pid))
		ino, err := nsInode(filepath.Join(dir, "ns", "mnt"))
		if err != nil || seenMnt[ino] {
			continue
		}
		seenMnt[ino] = true
		sources = append(sources, mountSource{filepath.Join(dir, "mountinfo"), filepath.Join(dir, "root")})
	}
	for _, src := range sources {
		for _, mnt := range nsfsMounts(src.mountinfo) {
			p := filepath.Join(src.root, mnt)
			ino, err := nsInode(p)
			if err != nil || seen[ino] {
				continue
			}
			seen[ino] = true
			out = append(out, Namespace{Path: p, Ino: ino, Desc: "netns mounted at " + mnt, Mount: mnt})
		}
	}
	for _, pid := range pids {
		p := filepath.Join(m.procRoot, strconv.Itoa(pid), "ns", "net")
		ino, err := nsInode(p)
		if err != nil || seen[ino] {
			continue
		}
		seen[ino] = true
		comm, _ := os.ReadFile(filepath.Join(m.procRoot, strconv.Itoa(pid), "comm"))
		out = append(out, Namespace{Path: p, Ino: ino,
			Desc: fmt.Sprintf("netns of pid %d (%s)", pid, strings.TrimSpace(string(comm)))})
	}
	return out
}

func nsfsMounts(mountinfo string) []string {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if mnt, ok := parseNsfsMount(sc.Text()); ok {
			out = append(out, mnt)
		}
	}
	return out
}

// parseNsfsMount returns the mount point of a network-namespace bind mount in a mountinfo line.
func parseNsfsMount(line string) (string, bool) {
	// 36 35 0:4 net:[4026532300] /run/netns/x rw shared:1 - nsfs nsfs rw
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 || fields[sep+1] != "nsfs" {
		return "", false
	}
	if !strings.HasPrefix(fields[3], "net:[") {
		return "", false
	}
	return UnescapeMountPath(fields[4]), true
}

// UnescapeMountPath undoes the octal escapes (\040 for a space, \011, \012, \134 ...) with which the
// kernel writes paths in /proc/*/mountinfo; other text is returned as it is.
func UnescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func nsInode(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Device is a VXLAN device found by a scan, with what is needed to judge whether it is in use.
type Device struct {
	Name     string
	Index    int
	VNI      uint32
	Port     int
	Up       bool
	Alias    string
	NS       Namespace
	HostSock bool     // its UDP socket belongs to the Manager's namespace (so it blocks our VNIs)
	Master   string   // device it is enslaved to
	Uppers   []string // devices stacked on it (macvlan, vlan), "name (namespace)"
	Addrs    []string // addresses configured on it
	// SandboxBridge is set when the device is enslaved to a bridge in a non-host namespace, as in a Docker
	// overlay sandbox (br0 + vxlan0); SandboxPorts are the bridge's other ports (containers' veths).
	SandboxBridge string
	SandboxPorts  []string
}

// Where describes the device's namespace for messages.
func (d Device) Where() string { return d.NS.Desc }

func (d Device) String() string {
	return fmt.Sprintf("vxlan interface %q (ifindex %d, VNI %d, port %d, %s)", d.Name, d.Index, d.VNI, d.Port, d.NS.Desc)
}

// ScanVXLAN lists the VXLAN devices whose UDP socket belongs to the host namespace. With all set, every
// visible namespace is searched (a device moved into another namespace still holds its VNI here);
// otherwise only the host namespace. Devices of other hosts' namespaces (sockets elsewhere) are left out
// unless foreign is true (the doctor shows them).
func (m *Manager) ScanVXLAN(all, foreign bool) ([]Device, error) {
	hostLinks, err := listLinks(m.h)
	if err != nil {
		return nil, fmt.Errorf("listing interfaces of the host namespace: %w", err)
	}
	hostNS := Namespace{Ino: m.nsIno, Desc: "host namespace", Host: true}
	devs := m.vxlanIn(m.h, hostLinks, hostNS, -1)
	if !all {
		return devs, nil
	}
	// Uppers of host devices that live in other namespaces (a macvlan moved into a container).
	hostIdx := map[int]int{}
	for i, d := range devs {
		hostIdx[d.Index] = i
	}
	for _, ns := range m.Namespaces() {
		if ns.Host {
			continue
		}
		func() {
			h, release, err := m.handleIn(ns)
			if err != nil {
				return
			}
			defer release()
			links, err := listLinks(h)
			if err != nil {
				return
			}
			hostID, err := h.GetNetNsIdByFd(int(m.ns))
			if err != nil {
				hostID = -2
			}
			for _, d := range m.vxlanIn(h, links, ns, hostID) {
				if d.HostSock || foreign {
					devs = append(devs, d)
				}
			}
			if hostID < 0 {
				return
			}
			for _, l := range links {
				a := l.Attrs()
				if a.NetNsID == hostID && a.ParentIndex > 0 && stacksOnParent(l) {
					if i, ok := hostIdx[a.ParentIndex]; ok {
						devs[i].Uppers = append(devs[i].Uppers, fmt.Sprintf("%s (%s)", a.Name, ns.Desc))
					}
				}
			}
		}()
	}
	return devs, nil
}

// vxlanIn extracts the VXLAN devices among links of one namespace. hostID is the id this namespace gives
// the Manager's namespace (-1 when it is the Manager's namespace itself).
func (m *Manager) vxlanIn(h *netlink.Handle, links []netlink.Link, ns Namespace, hostID int) []Device {
	byIdx := map[int]netlink.Link{}
	for _, l := range links {
		byIdx[l.Attrs().Index] = l
	}
	var out []Device
	for _, l := range links {
		vx, ok := l.(*netlink.Vxlan)
		if !ok {
			continue
		}
		a := vx.Attrs()
		d := Device{
			Name: a.Name, Index: a.Index, VNI: uint32(vx.VxlanId), Port: vx.Port, Alias: a.Alias,
			Up: a.Flags&net.FlagUp != 0, NS: ns,
		}
		if ns.Host {
			d.HostSock = a.NetNsID < 0
		} else {
			d.HostSock = hostID >= 0 && a.NetNsID == hostID
		}
		if a.MasterIndex > 0 {
			if master, ok := byIdx[a.MasterIndex]; ok {
				d.Master = master.Attrs().Name
				if !ns.Host && master.Type() == "bridge" {
					d.SandboxBridge = master.Attrs().Name
					for _, p := range links {
						if p.Attrs().MasterIndex == a.MasterIndex && p.Attrs().Index != a.Index {
							d.SandboxPorts = append(d.SandboxPorts, p.Attrs().Name)
						}
					}
				}
			} else {
				d.Master = fmt.Sprintf("ifindex %d", a.MasterIndex)
			}
		}
		for _, u := range links {
			ua := u.Attrs()
			if ua.ParentIndex == a.Index && ua.NetNsID < 0 && ua.Index != a.Index && stacksOnParent(u) {
				d.Uppers = append(d.Uppers, ua.Name)
			}
		}
		if addrs, err := h.AddrList(l, netlink.FAMILY_ALL); err == nil {
			for _, ad := range addrs {
				if ad.IP.IsLinkLocalUnicast() {
					continue
				}
				d.Addrs = append(d.Addrs, ad.IPNet.String())
			}
		}
		out = append(out, d)
	}
	return out
}

// stacksOnParent reports whether a link's IFLA_LINK names a lower device it sits on (macvlan, vlan, ...).
// For other kinds it means something else — a veth's peer, a VXLAN device's own index after a move — and
// must not be read as "upper of".
func stacksOnParent(l netlink.Link) bool {
	switch l.Type() {
	case "macvlan", "macvtap", "vlan", "ipvlan", "ipvtap":
		return true
	}
	return false
}

// ErrDeviceGone: a device found by a scan disappeared, or its ifindex or its namespace now belongs to
// another, before it could be deleted.
var ErrDeviceGone = errors.New("no longer there")

// DeleteDevice removes a device found by a scan, after checking that its namespace is still the same one
// (by inode) and that its ifindex still carries its name. It returns an error wrapping ErrDeviceGone when
// there was nothing left to delete.
func (m *Manager) DeleteDevice(d Device) error {
	if !d.NS.Host {
		ino, err := nsInode(d.NS.Path)
		if err != nil || ino != d.NS.Ino {
			return fmt.Errorf("%s: its namespace is gone or was replaced: %w", d, ErrDeviceGone)
		}
	}
	gone, err := m.deleteLink(d)
	if err == nil && gone {
		return fmt.Errorf("%s: %w", d, ErrDeviceGone)
	}
	return err
}

// deleteDevice removes a device found by a scan, in whatever namespace it sits; a device already gone is
// not an error.
func (m *Manager) deleteDevice(d Device) error {
	_, err := m.deleteLink(d)
	return err
}

// deleteLink deletes the device and reports whether it was gone already (or its ifindex reused).
func (m *Manager) deleteLink(d Device) (gone bool, err error) {
	if err := m.hooks.check(StepDeleteStale); err != nil {
		return false, err
	}
	h, release, err := m.handleIn(d.NS)
	if errors.Is(err, ErrDeviceGone) {
		return true, nil // its namespace was replaced
	}
	if err != nil {
		return false, err
	}
	defer release()
	l, err := h.LinkByIndex(d.Index)
	if err != nil {
		if isNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("looking up %s: %w", d, err)
	}
	if l.Attrs().Name != d.Name {
		return true, nil // gone, and the index reused
	}
	if err := h.LinkDel(l); err != nil {
		if isNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("deleting %s: %w", d, err)
	}
	return false, nil
}
