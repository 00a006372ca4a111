package dataplane

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SandboxExists reports whether the path a container's sandbox key names (libnetwork's bind mount of the
// container's network namespace, as the host's PID 1 sees it) still exists. known is false when it cannot
// tell (no key, not an absolute path, no access).
func (m *Manager) SandboxExists(key string) (exists, known bool) {
	if key == "" || !filepath.IsAbs(key) {
		return false, false
	}
	var st unix.Stat_t
	err := unix.Stat(filepath.Join(m.procRoot, "1", "root", key), &st)
	switch {
	case err == nil:
		return true, true
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return false, true
	}
	return false, false
}

// EndpointInterfaces finds the endpoint interfaces of vxsafe in every visible network namespace (the
// host's and the containers'), by their alias. The answer maps "<network id>/<endpoint id>" to a
// description of where the interface is. It costs one netlink dump per namespace.
func (m *Manager) EndpointInterfaces() (map[string]string, error) {
	out := map[string]string{}
	for _, ns := range m.Namespaces() {
		h := m.h
		if !ns.Host {
			fd, err := netns.GetFromPath(ns.Path)
			if err != nil {
				continue // gone meanwhile
			}
			h, err = netlink.NewHandleAt(fd)
			fd.Close()
			if err != nil {
				continue
			}
		}
		links, err := listLinks(h)
		if !ns.Host {
			h.Close()
		}
		if err != nil {
			if ns.Host {
				return nil, fmt.Errorf("listing interfaces of the host namespace: %w", err)
			}
			continue
		}
		for _, l := range links {
			if netID, epID, ok := ParseAlias(l.Attrs().Alias); ok && epID != "" {
				out[netID+"/"+epID] = fmt.Sprintf("%q in %s", l.Attrs().Name, ns.Desc)
			}
		}
	}
	return out, nil
}
