package dataplane

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// SandboxExists reports whether the path a container's sandbox key names (libnetwork's bind mount of the
// container's network namespace, in dockerd's mount namespace) is still a network namespace. The path is looked up under
// the root of PID 1, then of any process whose mount namespace has the key's directory (dockerd need not
// share PID 1's). known is false when no mount namespace within reach has that directory: a missing
// sandbox is only reported on positive evidence.
func (m *Manager) SandboxExists(key string) (exists, known bool) {
	if key == "" || !filepath.IsAbs(key) {
		return false, false
	}
	// The key names a network namespace while the sandbox lives; dockerd unmounts it when the sandbox
	// goes and may leave the empty file behind.
	try := func(root string) (exists, dirSeen bool) {
		var fs unix.Statfs_t
		if unix.Statfs(filepath.Join(root, key), &fs) == nil {
			return fs.Type == unix.NSFS_MAGIC, true
		}
		var st unix.Stat_t
		return false, unix.Stat(filepath.Join(root, filepath.Dir(key)), &st) == nil
	}
	roots := m.sandboxRoots()
	for _, root := range roots {
		if ex, seen := try(root); seen {
			return ex, true
		}
	}
	// Scan the mount namespaces of the other processes, once each.
	ents, _ := os.ReadDir(m.procRoot)
	seenMnt := map[uint64]bool{}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := filepath.Join(m.procRoot, e.Name())
		ino, err := nsInode(filepath.Join(dir, "ns", "mnt"))
		if err != nil || seenMnt[ino] {
			continue
		}
		seenMnt[ino] = true
		root := filepath.Join(dir, "root")
		if ex, seen := try(root); seen {
			m.rootMu.Lock()
			m.sandboxRoot = root
			m.rootMu.Unlock()
			return ex, true
		}
	}
	return false, false
}

// SetEnginePID tells the Manager the PID of the dockerd that sends the plugin its requests (the peer of
// the plugin socket): sandbox keys are paths in that daemon's mount namespace, which need not be PID 1's
// (several engines on one machine, each with a /run of its own). 0 forgets it.
func (m *Manager) SetEnginePID(pid int) {
	root := ""
	if pid > 0 {
		root = filepath.Join(m.procRoot, strconv.Itoa(pid), "root")
	}
	m.rootMu.Lock()
	m.engineRoot = root
	m.rootMu.Unlock()
}

// sandboxRoots are the roots a sandbox key is looked up under, the likeliest first: the engine's (when
// known), where keys resolved last, then PID 1's.
func (m *Manager) sandboxRoots() []string {
	m.rootMu.Lock()
	engine, cached := m.engineRoot, m.sandboxRoot
	m.rootMu.Unlock()
	var roots []string
	for _, r := range []string{engine, cached, filepath.Join(m.procRoot, "1", "root")} {
		if r != "" && (len(roots) == 0 || roots[len(roots)-1] != r) {
			roots = append(roots, r)
		}
	}
	return roots
}

// SandboxPath returns a path that opens the network namespace a container's sandbox key names, once it
// is one: libnetwork hands the key to the driver in Join, before the container's namespace is bound
// there (at the container's start), so ok is false until then, and again once the sandbox is gone.
func (m *Manager) SandboxPath(key string) (path string, ok bool) {
	if key == "" || !filepath.IsAbs(key) {
		return "", false
	}
	for _, root := range m.sandboxRoots() {
		p := filepath.Join(root, key)
		var fs unix.Statfs_t
		if unix.Statfs(p, &fs) == nil && fs.Type == unix.NSFS_MAGIC {
			return p, true
		}
	}
	return "", false
}

// EndpointInterfaces finds the endpoint interfaces of vxsafe in every visible network namespace (the
// host's and the containers'), by their alias. The answer maps "<network id>/<endpoint id>" to a
// description of where the interface is. It costs one netlink dump per namespace.
func (m *Manager) EndpointInterfaces() (map[string]string, error) {
	out := map[string]string{}
	for _, ns := range m.Namespaces() {
		h, release, err := m.handleIn(ns)
		if err != nil {
			continue // gone meanwhile
		}
		links, err := listLinks(h)
		release()
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
