package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted (as iproute2 does).
const NetnsDir = "/var/run/netns"

func netnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// nsRef is a named network namespace created by the cluster, with an open handle.
type nsRef struct {
	name string
	h    netns.NsHandle
}

func (r *nsRef) close() error {
	if r == nil {
		return nil
	}
	if r.h.IsOpen() {
		r.h.Close()
		r.h = netns.None()
	}
	if err := netns.DeleteNamed(r.name); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete netns %s: %w", r.name, err)
	}
	os.Remove(netnsPath(r.name))
	return nil
}

// onLockedThread runs f on a fresh OS thread that may switch namespaces. If f
// reports the thread could not be restored (tainted), the thread stays locked
// and exits with the goroutine, so no other goroutine ever runs in the wrong
// namespace.
func onLockedThread(f func() (tainted bool, err error)) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		tainted, err := f()
		if !tainted {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// newNamedNetns creates the network namespace /var/run/netns/NAME without
// moving the caller's thread.
func newNamedNetns(name string) (*nsRef, error) {
	if _, err := os.Lstat(netnsPath(name)); err == nil {
		return nil, fmt.Errorf("create netns %s: %w", name, os.ErrExist)
	}
	ref := &nsRef{name: name, h: netns.None()}
	err := onLockedThread(func() (bool, error) {
		orig, err := netns.Get()
		if err != nil {
			return false, fmt.Errorf("create netns %s: current netns: %w", name, err)
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			if err == nil {
				h.Close()
				netns.DeleteNamed(name)
			}
			return true, fmt.Errorf("create netns %s: restore thread netns: %w", name, serr)
		}
		if err != nil {
			// NewNamed leaves the file behind when the bind mount fails.
			if !errors.Is(err, os.ErrExist) {
				os.Remove(netnsPath(name))
			}
			return false, fmt.Errorf("create netns %s: %w", name, err)
		}
		ref.h = h
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return ref, nil
}

// newUTSNamespace creates a UTS namespace whose hostname is hostname and
// bind-mounts it on path (a new empty file), so that nsenter --uts=PATH can
// enter it. The caller's thread is not moved.
func newUTSNamespace(path, hostname string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("uts namespace file %s: %w", path, err)
	}
	f.Close()
	return onLockedThread(func() (bool, error) {
		self := fmt.Sprintf("/proc/self/task/%d/ns/uts", unix.Gettid())
		orig, err := os.Open(self)
		if err != nil {
			return false, fmt.Errorf("uts namespace %s: %w", path, err)
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			return false, fmt.Errorf("uts namespace %s: unshare: %w", path, err)
		}
		err = unix.Sethostname([]byte(hostname))
		if err == nil {
			err = unix.Mount(self, path, "", unix.MS_BIND, "")
		}
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWUTS); serr != nil {
			return true, fmt.Errorf("uts namespace %s: restore thread: %w", path, serr)
		}
		if err != nil {
			return false, fmt.Errorf("uts namespace %s (hostname %s): %w", path, hostname, err)
		}
		return false, nil
	})
}

// buildUnderlay creates the switch namespace with its bridge and, per node, a
// network namespace, a UTS namespace and a veth pair to the bridge.
func (c *Cluster) buildUnderlay() error {
	sw, err := newNamedNetns(c.switchName())
	if err != nil {
		return err
	}
	c.sw = sw
	h, err := netlink.NewHandleAt(sw.h)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", sw.name, err)
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return fmt.Errorf("switch netns %s: %w", sw.name, err)
	}
	brName := c.opts.Prefix + "br"
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: brName}}); err != nil {
		return fmt.Errorf("switch netns %s: add bridge %s: %w", sw.name, brName, err)
	}
	if err := linkUp(h, brName); err != nil {
		return fmt.Errorf("switch netns %s: %w", sw.name, err)
	}
	br, err := h.LinkByName(brName)
	if err != nil {
		return fmt.Errorf("switch netns %s: bridge %s: %w", sw.name, brName, err)
	}

	for i := 1; i <= c.opts.Nodes; i++ {
		n := c.newNode(i)
		c.nodes = append(c.nodes, n) // before creating anything: Close cleans up partial nodes
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return fmt.Errorf("node %s: dir: %w", n.Name, err)
		}
		ns, err := newNamedNetns(n.NetNS)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		n.ns = ns
		if err := newUTSNamespace(n.utsPath, n.Hostname); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		// The switch-side end is named after the node; the node side is eth0.
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: n.Name, MasterIndex: br.Attrs().Index},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(ns.h),
		}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("node %s: add veth %s/eth0: %w", n.Name, n.Name, err)
		}
		if err := linkUp(h, n.Name); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := n.configureUnderlay(); err != nil {
			return err
		}
	}
	return nil
}

// Host is a namespace on the cluster's underlay that runs no dockerd: a machine that is not part of the
// swarm (for tests of what such a host can do to the cluster). Close removes it with the cluster.
type Host struct {
	Name string
	Addr string // its underlay address
	ns   *nsRef
}

// NetnsPath is the bind-mount path of the host's network namespace, for nsenter --net=PATH.
func (h *Host) NetnsPath() string { return netnsPath(h.ns.name) }

// AddHost puts a namespace named <cluster>-<name> on the underlay, with address 192.168.<net>.<octet>
// (octet above the nodes' numbers) and a veth called name on the switch.
func (c *Cluster) AddHost(name string, octet int) (*Host, error) {
	if octet <= c.opts.Nodes || octet > 254 {
		return nil, fmt.Errorf("host %s: address octet %d is a node's or out of range", name, octet)
	}
	hostNS := c.name + "-" + name
	ns, err := newNamedNetns(hostNS)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	host := &Host{Name: name, Addr: fmt.Sprintf("192.168.%d.%d", c.subnet3, octet), ns: ns}
	c.mu.Lock()
	c.hosts = append(c.hosts, host)
	c.mu.Unlock()
	h, err := netlink.NewHandleAt(c.sw.h)
	if err != nil {
		return nil, fmt.Errorf("host %s: netlink handle in %s: %w", name, c.sw.name, err)
	}
	defer h.Close()
	br, err := h.LinkByName(c.opts.Prefix + "br")
	if err != nil {
		return nil, fmt.Errorf("host %s: bridge: %w", name, err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns.h)}
	if err := h.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("host %s: add veth %s/eth0: %w", name, name, err)
	}
	if err := linkUp(h, name); err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	return host, configureAddr(ns.h, name, host.Addr)
}

func (n *Node) configureUnderlay() error {
	return configureAddr(n.ns.h, n.Name, n.Addr)
}

// configureAddr brings lo and eth0 up in namespace ns and gives eth0 addr/24.
func configureAddr(ns netns.NsHandle, name, ip string) error {
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("%s: netlink handle: %w", name, err)
	}
	defer nh.Close()
	if err := linkUp(nh, "lo"); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	eth, err := nh.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("%s: eth0: %w", name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip).To4(), Mask: net.CIDRMask(24, 32)}}
	if err := nh.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("%s: add %s to eth0: %w", name, addr, err)
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s: set eth0 up: %w", name, err)
	}
	return nil
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
