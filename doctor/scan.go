package doctor

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/vxsafe/overlay/dataplane"
	"golang.org/x/sys/unix"
)

// errGone: the device disappeared (or its ifindex now names another device) before it could be deleted.
var errGone = dataplane.ErrDeviceGone

// scan lists the VXLAN devices through the dataplane's scanner and finds, for each, the namespace that
// holds its UDP socket: a device moved into another namespace keeps its VNI in the one it was created in.
// With foreign false, devices of other namespaces are kept only when their socket is in the host one.
// hostFD is the host namespace (the Manager's).
func scan(m *dataplane.Manager, hostFD netns.NsHandle, foreign bool) ([]scanned, error) {
	devs, err := m.ScanVXLAN(true, foreign)
	if err != nil {
		return nil, fmt.Errorf("scanning for vxlan interfaces: %w", err)
	}
	r := &sockResolver{m: m, handles: map[uint64]*netlink.Handle{}}
	defer r.close()
	out := make([]scanned, len(devs))
	for i, d := range devs {
		out[i] = scanned{Device: d}
		out[i].SockIno, out[i].SockDesc = r.socketOf(d)
	}
	r.crossUppers(out, hostFD)
	return out, nil
}

// crossUppers recomputes the upper devices (macvlan, vlan) that sit in another namespace than their VXLAN
// device, e.g. an endpoint moved into a container. ScanVXLAN looks for them only for the host namespace's
// devices, and takes a VXLAN device moved out of the host namespace for an upper of the host device that
// has the same ifindex (a moved device reports its own ifindex as IFLA_LINK, with a link-netnsid); so the
// cross-namespace uppers ScanVXLAN found are dropped and searched again, for every device, VXLAN links
// excluded. Same-namespace uppers (plain names) are kept.
func (r *sockResolver) crossUppers(devs []scanned, hostFD netns.NsHandle) {
	byNS := map[uint64][]int{} // namespace inode -> devices in it
	for i := range devs {
		kept := devs[i].Uppers[:0:0]
		for _, u := range devs[i].Uppers {
			if !strings.Contains(u, " (") {
				kept = append(kept, u)
			}
		}
		devs[i].Uppers = kept
		byNS[devs[i].NS.Ino] = append(byNS[devs[i].NS.Ino], i)
	}
	if len(devs) == 0 {
		return
	}
	// Open every namespace holding a scanned device, to ask other namespaces which id they give it.
	fds := map[uint64]netns.NsHandle{}
	for ino, idx := range byNS {
		ns := devs[idx[0]].NS
		if ns.Host {
			fds[ino] = hostFD
			continue
		}
		if fd, err := openNS(ns); err == nil {
			fds[ino] = fd
		}
	}
	defer func() {
		for _, fd := range fds {
			if fd != hostFD {
				fd.Close()
			}
		}
	}()
	for _, k := range r.namespaces() {
		func() {
			h := r.m.Handle()
			if !k.Host {
				fd, err := openNS(k)
				if err != nil {
					return
				}
				defer fd.Close()
				if h, err = netlink.NewHandleAt(fd); err != nil {
					return
				}
				defer h.Close()
			}
			links, err := h.LinkList()
			if err != nil {
				return
			}
			ids := map[uint64]int{} // id namespace k gives each device namespace
			for _, l := range links {
				a := l.Attrs()
				if _, isVX := l.(*netlink.Vxlan); isVX || a.NetNsID < 0 || a.ParentIndex <= 0 {
					continue
				}
				for ino, fd := range fds {
					if ino == k.Ino {
						continue
					}
					id, ok := ids[ino]
					if !ok {
						if id, err = h.GetNetNsIdByFd(int(fd)); err != nil {
							id = -1
						}
						ids[ino] = id
					}
					if id < 0 || id != a.NetNsID {
						continue
					}
					for _, i := range byNS[ino] {
						if devs[i].Index == a.ParentIndex {
							devs[i].Uppers = append(devs[i].Uppers, fmt.Sprintf("%s (%s)", a.Name, k.Desc))
						}
					}
				}
			}
		}()
	}
}

func (r *sockResolver) namespaces() []dataplane.Namespace {
	if !r.listed {
		r.nss, r.listed = r.m.Namespaces(), true
	}
	return r.nss
}

// sockResolver maps a device's link-netnsid to a namespace among those the Manager sees.
type sockResolver struct {
	m       *dataplane.Manager
	nss     []dataplane.Namespace
	listed  bool
	handles map[uint64]*netlink.Handle
}

func (r *sockResolver) close() {
	for ino, h := range r.handles {
		if ino != 0 {
			h.Close()
		}
	}
}

// handle opens netlink in ns (cached; the host's is the Manager's).
func (r *sockResolver) handle(ns dataplane.Namespace) (*netlink.Handle, error) {
	if ns.Host {
		return r.m.Handle(), nil
	}
	if h, ok := r.handles[ns.Ino]; ok {
		return h, nil
	}
	fd, err := openNS(ns)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns.Desc, err)
	}
	r.handles[ns.Ino] = h
	return h, nil
}

func (r *sockResolver) socketOf(d dataplane.Device) (uint64, string) {
	host := "host namespace"
	if d.HostSock {
		if d.NS.Host {
			return d.NS.Ino, host
		}
		return r.hostIno(d), host
	}
	h, err := r.handle(d.NS)
	if err != nil {
		return 0, ""
	}
	l, err := h.LinkByIndex(d.Index)
	if err != nil || l.Attrs().Name != d.Name {
		return 0, ""
	}
	id := l.Attrs().NetNsID
	if id < 0 {
		return d.NS.Ino, d.NS.Desc // created where it sits
	}
	for _, ns := range r.namespaces() {
		if ns.Host || ns.Ino == d.NS.Ino {
			continue
		}
		fd, err := openNS(ns)
		if err != nil {
			continue
		}
		got, err := h.GetNetNsIdByFd(int(fd))
		fd.Close()
		if err == nil && got == id {
			return ns.Ino, ns.Desc
		}
	}
	return 0, fmt.Sprintf("unknown (nsid %d of %s)", id, d.NS.Desc)
}

func (r *sockResolver) hostIno(dataplane.Device) uint64 {
	for _, ns := range r.namespaces() {
		if ns.Host {
			return ns.Ino
		}
	}
	return 0
}

// openNS opens a scanned namespace and checks it is still the same one (a PID may have been reused).
func openNS(ns dataplane.Namespace) (netns.NsHandle, error) {
	fd, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", ns.Desc, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		fd.Close()
		return 0, fmt.Errorf("stat of %s: %w", ns.Desc, err)
	}
	if st.Ino != ns.Ino {
		fd.Close()
		return 0, fmt.Errorf("%s: %w (another namespace is there now)", ns.Desc, errGone)
	}
	return fd, nil
}
