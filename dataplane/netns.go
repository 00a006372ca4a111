package dataplane

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openNS opens a namespace found by Namespaces and checks it is still the same one (a PID may have been
// reused, a bind mount replaced); the error wraps ErrDeviceGone when another namespace is there now.
func openNS(ns Namespace) (netns.NsHandle, error) {
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
		return 0, fmt.Errorf("%s: %w (another namespace is there now)", ns.Desc, ErrDeviceGone)
	}
	return fd, nil
}

// handleIn returns a netlink handle in ns — the Manager's own for the host namespace — and the function
// that releases it.
func (m *Manager) handleIn(ns Namespace) (*netlink.Handle, func(), error) {
	if ns.Host {
		return m.h, func() {}, nil
	}
	fd, err := openNS(ns)
	if err != nil {
		return nil, nil, err
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("netlink in %s: %w", ns.Desc, err)
	}
	return h, h.Close, nil
}

// inNetNS runs fn on a thread in network namespace ns (for what only the namespace's own threads see,
// such as /proc/sys/net). The thread is switched back after; if that fails it stays locked and exits
// with its goroutine.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering the network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("returning from the network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
