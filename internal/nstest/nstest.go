// Package nstest gives kernel tests fresh network namespaces of their own, removed when the test ends.
package nstest

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

var seq atomic.Int64

// NS is a named network namespace owned by a test.
type NS struct {
	Name   string         // name under /var/run/netns
	Handle netns.NsHandle // open handle
	NL     *netlink.Handle
}

// Path is the bind mount that pins the namespace.
func (n *NS) Path() string { return "/var/run/netns/" + n.Name }

// RequireRoot skips (or, under CI, fails) a test that needs root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("kernel tests need root")
		}
		t.Skip("kernel tests need root")
	}
}

// New creates a fresh named namespace "<prefix>-<pid>-<n>" with lo up; t.Cleanup deletes it.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
	h, err := create(name)
	if err != nil {
		t.Fatalf("creating network namespace %s: %v", name, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		_ = netns.DeleteNamed(name)
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	n := &NS{Name: name, Handle: h, NL: nl}
	t.Cleanup(func() {
		nl.Close()
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("deleting network namespace %s: %v", name, err)
		}
	})
	if lo, err := nl.LinkByName("lo"); err == nil {
		_ = nl.LinkSetUp(lo)
	}
	return n
}

func create(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", serr))
	}
	return h, err
}
