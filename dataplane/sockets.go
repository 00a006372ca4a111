package dataplane

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// SocketDevice is a VXLAN device found by ScanSockets, with the namespace that holds its UDP socket (and
// so its VNI): a device moved into another namespace keeps its VNI in the one it was created in.
type SocketDevice struct {
	Device
	SockIno  uint64 // 0: unknown
	SockDesc string
}

// ScanSockets is the operator's scan (the doctor's): the VXLAN devices of every visible namespace, each
// with the namespace of its UDP socket, and with the upper devices of every device (not only the host
// namespace's) wherever they sit. With foreign false, devices of other namespaces are kept only when
// their socket is in the host one.
func (m *Manager) ScanSockets(foreign bool) ([]SocketDevice, error) {
	devs, err := m.ScanVXLAN(true, foreign)
	if err != nil {
		return nil, fmt.Errorf("scanning for vxlan interfaces: %w", err)
	}
	r := &sockResolver{m: m, handles: map[uint64]*netlink.Handle{}}
	defer r.close()
	out := make([]SocketDevice, len(devs))
	for i, d := range devs {
		out[i] = SocketDevice{Device: d}
		out[i].SockIno, out[i].SockDesc = r.socketOf(d)
	}
	r.crossUppers(out)
	return out, nil
}

// crossUppers recomputes the upper devices (macvlan, vlan) that sit in another namespace than their VXLAN
// device, e.g. an endpoint moved into a container. ScanVXLAN looks for them only for the host namespace's
// devices, and takes a VXLAN device moved out of the host namespace for an upper of the host device that
// has the same ifindex (a moved device reports its own ifindex as IFLA_LINK, with a link-netnsid); so the
// cross-namespace uppers ScanVXLAN found are dropped and searched again, for every device, VXLAN links
// excluded. Same-namespace uppers (plain names) are kept.
func (r *sockResolver) crossUppers(devs []SocketDevice) {
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
			fds[ino] = r.m.ns
			continue
		}
		if fd, err := openNS(ns); err == nil {
			fds[ino] = fd
		}
	}
	defer func() {
		for _, fd := range fds {
			if fd != r.m.ns {
				fd.Close()
			}
		}
	}()
	for _, k := range r.namespaces() {
		func() {
			h, release, err := r.m.handleIn(k)
			if err != nil {
				return
			}
			defer release()
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

// sockResolver maps a device's link-netnsid to a namespace among those the Manager sees.
type sockResolver struct {
	m        *Manager
	nss      []Namespace
	listed   bool
	handles  map[uint64]*netlink.Handle
	releases []func()
}

func (r *sockResolver) namespaces() []Namespace {
	if !r.listed {
		r.nss, r.listed = r.m.Namespaces(), true
	}
	return r.nss
}

func (r *sockResolver) close() {
	for _, release := range r.releases {
		release()
	}
}

// handle is handleIn, cached for the scan.
func (r *sockResolver) handle(ns Namespace) (*netlink.Handle, error) {
	if h, ok := r.handles[ns.Ino]; ok {
		return h, nil
	}
	h, release, err := r.m.handleIn(ns)
	if err != nil {
		return nil, err
	}
	r.handles[ns.Ino] = h
	r.releases = append(r.releases, release)
	return h, nil
}

func (r *sockResolver) socketOf(d Device) (uint64, string) {
	host := "host namespace"
	if d.HostSock {
		if d.NS.Host {
			return d.NS.Ino, host
		}
		return r.m.nsIno, host
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
