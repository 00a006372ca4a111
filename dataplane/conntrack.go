package dataplane

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ForgetBackends deletes, in the network namespace at nsPath ("" for the Manager's own), the UDP
// conntrack entries that send vip to one of gone. A UDP flow has no end the kernel sees: without this,
// a client that keeps sending from one socket (a DNS resolver, a metrics agent) would go on sending to a
// removed task until the entry times out (30 s to 2 min), as kube-proxy also knows. TCP entries are left
// alone: a connection to a task that is gone fails on its own, and one to a task that stays must keep
// its entry. It returns how many entries it deleted.
func (m *Manager) ForgetBackends(nsPath string, vip net.IP, gone []net.IP) (int, error) {
	if len(gone) == 0 {
		return 0, nil
	}
	h := m.h
	if nsPath != "" {
		fd, err := openNetNS(nsPath)
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		if h, err = netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_NETFILTER); err != nil {
			return 0, fmt.Errorf("conntrack netlink in %s: %w", nsDesc(nsPath), err)
		}
		defer h.Close()
	}
	var filters []netlink.CustomConntrackFilter
	for _, b := range gone {
		f := &netlink.ConntrackFilter{}
		if err := f.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return 0, err
		}
		if err := f.AddIP(netlink.ConntrackOrigDstIP, vip); err != nil {
			return 0, err
		}
		if err := f.AddIP(netlink.ConntrackReplySrcIP, b); err != nil {
			return 0, err
		}
		filters = append(filters, f)
	}
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...)
	if err != nil {
		return int(n), fmt.Errorf("deleting the UDP conntrack entries of VIP %s to %v in %s: %w", vip, gone, nsDesc(nsPath), err)
	}
	return int(n), nil
}
