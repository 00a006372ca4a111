// Package dataplane does all of vxsafe's kernel work through netlink: the per-network VXLAN device, the
// per-endpoint macvlan interfaces handed to libnetwork, the FDB and neighbour entries for remote endpoints,
// and the scan that finds whatever would make the kernel refuse a device (a stale or foreign VXLAN device
// holding our name or our VNI, in this namespace or hidden in another one).
//
// Layout: the VXLAN device of a network lives in the host network namespace (the plugin runs with
// network "host"), with learning off and proxy ARP on. Every endpoint is a macvlan (bridge mode) on it,
// which libnetwork moves into the container. Kernel objects therefore outlive the plugin process: a plugin
// restart, disable/enable or upgrade does not touch running containers' traffic.
package dataplane

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func init() {
	// Put the kernel's extended ack text ("A VXLAN device with the specified VNI already exists") into
	// netlink errors: it is what tells a VNI conflict from a name conflict.
	nl.EnableErrorMessageReporting = true
}

// Markers written into IFLA_IFALIAS of every device vxsafe creates. They survive plugin restarts and
// moves between namespaces, and are how vxsafe recognises its own devices.
const (
	NetworkAliasPrefix  = "vxsafe:net="
	EndpointAliasPrefix = "vxsafe:ep="
)

// NetworkAlias is the alias of the VXLAN device of network netID.
func NetworkAlias(netID string) string { return NetworkAliasPrefix + netID }

// EndpointAlias is the alias of the endpoint interface of endpoint epID of network netID.
func EndpointAlias(netID, epID string) string { return EndpointAliasPrefix + netID + "/" + epID }

// ParseAlias returns the network and endpoint IDs named by a vxsafe alias (endpoint empty for a network
// device); ok is false for an alias that is not ours.
func ParseAlias(alias string) (netID, epID string, ok bool) {
	switch {
	case strings.HasPrefix(alias, NetworkAliasPrefix):
		return strings.TrimPrefix(alias, NetworkAliasPrefix), "", true
	case strings.HasPrefix(alias, EndpointAliasPrefix):
		rest := strings.TrimPrefix(alias, EndpointAliasPrefix)
		n, e, found := strings.Cut(rest, "/")
		return n, e, found
	}
	return "", "", false
}

// Options configure a Manager.
type Options struct {
	// NS is the "host" namespace the Manager works in. Zero (or negative): the calling process's namespace.
	// Tests pass a fresh namespace of their own.
	NS netns.NsHandle
	// NSPath, when set, names the host namespace instead of NS: the network namespace at that path (e.g. a
	// swarm node that is a namespace, for the doctor).
	NSPath string
	// ProcRoot is where the host's /proc is visible (default "/proc"). Namespaces are discovered through
	// ProcRoot/*/ns/net and the nsfs mounts listed in ProcRoot/1/mountinfo, opened through ProcRoot/1/root.
	ProcRoot string
	// Log receives structured records; default logrus.StandardLogger().
	Log *logrus.Entry
	// Hooks inject failures into kernel steps (tests only).
	Hooks *Hooks
}

// Manager performs kernel operations in one host namespace. It is safe for concurrent use; callers
// serialise operations on the same network themselves.
type Manager struct {
	ns       netns.NsHandle
	ownNS    bool
	nsIno    uint64
	h        *netlink.Handle
	echo     *echoSocket // link creations that return the new ifindex (newlink.go)
	procRoot string
	log      *logrus.Entry
	hooks    *Hooks

	mu sync.Mutex // serialises scans that may delete devices

	rootMu      sync.Mutex
	sandboxRoot string // a /proc/<pid>/root where sandbox keys resolved last (SandboxExists)
	engineRoot  string // /proc/<pid>/root of the dockerd that talks to the plugin (SetEnginePID)
}

// New opens a Manager on opts.NS (or the current namespace).
func New(opts Options) (*Manager, error) {
	m := &Manager{procRoot: opts.ProcRoot, log: opts.Log, hooks: opts.Hooks}
	if m.procRoot == "" {
		m.procRoot = "/proc"
	}
	if m.log == nil {
		m.log = logrus.NewEntry(logrus.StandardLogger())
	}
	if m.hooks == nil {
		m.hooks = &Hooks{}
	}
	ns := opts.NS
	given := ns > 0 // the zero value means "not set" (fd 0 is stdin, never a namespace)
	switch {
	case opts.NSPath != "":
		fd, err := netns.GetFromPath(opts.NSPath)
		if err != nil {
			return nil, fmt.Errorf("opening network namespace %s: %w", opts.NSPath, err)
		}
		ns, m.ownNS, given = fd, true, true
	case !given:
		cur, err := netns.Get()
		if err != nil {
			return nil, fmt.Errorf("opening the current network namespace: %w", err)
		}
		ns, m.ownNS = cur, true
	default:
		dup, err := unix.Dup(int(ns))
		if err != nil {
			return nil, fmt.Errorf("duplicating the namespace handle: %w", err)
		}
		ns, m.ownNS = netns.NsHandle(dup), true
	}
	m.ns = ns
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		ns.Close()
		return nil, fmt.Errorf("stat of the host network namespace: %w", err)
	}
	m.nsIno = st.Ino
	var h *netlink.Handle
	var err error
	if given {
		h, err = netlink.NewHandleAt(ns)
	} else {
		h, err = netlink.NewHandle() // this process's namespace: no setns needed
	}
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink handle in the host network namespace: %w", err)
	}
	echo, err := newEchoSocket(ns, given)
	if err != nil {
		h.Close()
		ns.Close()
		return nil, fmt.Errorf("netlink socket in the host network namespace: %w", err)
	}
	m.h, m.echo = h, echo
	return m, nil
}

// Close releases the Manager's handles.
func (m *Manager) Close() {
	m.h.Close()
	m.echo.close()
	if m.ownNS {
		m.ns.Close()
	}
}

// UnderlayMTU returns the MTU of the interface that carries VXLAN traffic: the one holding addr when
// given, else the one of the default route, else 1500.
func (m *Manager) UnderlayMTU(addr net.IP) int {
	if addr != nil {
		links, _ := listLinks(m.h)
		for _, l := range links {
			addrs, err := m.h.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if a.IP.Equal(addr) {
					return l.Attrs().MTU
				}
			}
		}
	}
	routes, err := m.h.RouteList(nil, netlink.FAMILY_V4)
	if err == nil {
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				if l, err := m.h.LinkByIndex(r.LinkIndex); err == nil {
					return l.Attrs().MTU
				}
			}
		}
	}
	return 1500
}

// listLinks dumps links, retrying a dump the kernel interrupted (links changed while it ran).
func listLinks(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for i := 0; i < 5; i++ {
		var links []netlink.Link
		links, err = h.LinkList()
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
	}
	return nil, err
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
