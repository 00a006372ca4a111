package driver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/netconfig"
)

// gate makes the fake's DeleteEndpointIf wait for the test.
func (u *unit) gate() chan error {
	u.dp.mu.Lock()
	defer u.dp.mu.Unlock()
	u.dp.deleteGate = make(chan error)
	return u.dp.deleteGate
}

func (u *unit) ungate() {
	u.dp.mu.Lock()
	defer u.dp.mu.Unlock()
	u.dp.deleteGate = nil
}

func (u *unit) hasIf(name string) bool {
	u.dp.mu.Lock()
	defer u.dp.mu.Unlock()
	_, ok := u.dp.ifs[name]
	return ok
}

func (u *unit) hasDevice(ns *netState) bool {
	_, ok := u.dp.VXLANIndex(ns.spec)
	return ok
}

func (u *unit) leaveDelete(nid, ep string) {
	u.t.Helper()
	if err := u.drv.Leave(&network.LeaveRequest{NetworkID: nid, EndpointID: ep}); err != nil {
		u.t.Fatal(err)
	}
	if err := u.drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: nid, EndpointID: ep}); err != nil {
		u.t.Fatal(err)
	}
}

func (u *unit) pendingCount(ns *netState) int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return len(ns.pending)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// DeleteEndpoint answers before the interface is deleted; the sweep leaves a pending interface alone;
// the interface goes once the background delete runs, and the device stays while another endpoint is
// joined.
func TestUnitDeleteEndpointInBackground(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	for i := 1; i <= 2; i++ {
		if err := u.join(netID, i, "/var/run/docker/netns/x"); err != nil {
			t.Fatal(err)
		}
	}
	if1 := netconfig.EndpointIfName(epID(1))
	gate := u.gate()
	done := make(chan struct{})
	go func() { u.leaveDelete(netID, epID(1)); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("DeleteEndpoint waited for the interface's deletion")
	}
	if _, ok, _ := u.st.GetEndpoint(netID, epID(1)); ok {
		t.Fatal("record kept after DeleteEndpoint answered")
	}
	if !u.hasIf(if1) || u.pendingCount(ns) != 1 {
		t.Fatalf("before the background delete: interface %v, pending %d", u.hasIf(if1), u.pendingCount(ns))
	}
	if n := u.drv.sweepInterfaces(); n != 0 {
		t.Fatalf("the sweep removed %d while a delete was pending", n)
	}
	gate <- nil
	u.ungate()
	u.flush()
	if u.hasIf(if1) || u.pendingCount(ns) != 0 {
		t.Fatalf("after the background delete: interface %v, pending %d", u.hasIf(if1), u.pendingCount(ns))
	}
	if !u.hasDevice(ns) {
		t.Fatal("device released with an endpoint still joined")
	}
	u.leaveDelete(netID, epID(2))
	u.flush()
	if u.hasDevice(ns) || ns.vxIndex != 0 {
		t.Fatal("device outlived the last endpoint")
	}
	if u.met.stale["sweep"] != 0 || u.logged(logrus.WarnLevel, "deleted") != 0 {
		t.Errorf("the background delete was reported as a stale removal: %v", u.met.stale)
	}
}

// The device is not released while the last endpoint's interface delete is pending, and not at all when
// a Join came meanwhile, which uses the device as it is.
func TestUnitReleaseAfterPendingDeletes(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	if err := u.join(netID, 1, "/var/run/docker/netns/x"); err != nil {
		t.Fatal(err)
	}
	gate := u.gate()
	u.leaveDelete(netID, epID(1))
	if !u.hasDevice(ns) {
		t.Fatal("device released while a macvlan on it was still being deleted")
	}
	ensures := u.dp.count("EnsureVXLAN")
	if err := u.join(netID, 3, "/var/run/docker/netns/y"); err != nil {
		t.Fatal(err)
	}
	if u.dp.count("EnsureVXLAN") != ensures {
		t.Error("a Join with the device in place made it again")
	}
	gate <- nil
	u.ungate()
	u.flush()
	if !u.hasDevice(ns) || ns.vxIndex == 0 {
		t.Fatal("device released under a joined endpoint")
	}
	if !u.hasIf(netconfig.EndpointIfName(epID(3))) || u.hasIf(netconfig.EndpointIfName(epID(1))) {
		t.Fatal("wrong interfaces after the background delete")
	}
}

// A Join whose interface name is that of an endpoint deleted a moment ago (the name is the ID's first
// characters) deletes the old interface itself, first, and the background delete leaves the new one alone.
func TestUnitJoinSameNameWhileDeletePending(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	a := "abcdef0123" + strings.Repeat("a", 54)
	b := "abcdef0123" + strings.Repeat("b", 54)
	if netconfig.EndpointIfName(a) != netconfig.EndpointIfName(b) {
		t.Fatal("test endpoints do not share an interface name")
	}
	name := netconfig.EndpointIfName(a)
	for _, ep := range []string{a} {
		if _, err := u.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: ep,
			Interface: &network.EndpointInterface{Address: "10.0.1.20/24"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := u.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: ep, SandboxKey: "/x"}); err != nil {
			t.Fatal(err)
		}
	}
	gate := u.gate()
	u.leaveDelete(netID, a)
	// Both the Join's delete and the background one pass the gate.
	go func() { gate <- nil; gate <- nil }()
	if _, err := u.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: b,
		Interface: &network.EndpointInterface{Address: "10.0.1.21/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: b, SandboxKey: "/y"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both deletes", func() bool { return u.dp.count("DeleteEndpointIf") >= 2 })
	u.ungate()
	u.flush()
	u.dp.mu.Lock()
	got, ok := u.dp.ifs[name]
	u.dp.mu.Unlock()
	if !ok || got.spec.EndpointID != b {
		t.Fatalf("interface %s after the delete: %+v %v; want endpoint b's", name, got.spec, ok)
	}
	if u.pendingCount(ns) != 0 || !u.hasDevice(ns) {
		t.Fatalf("pending %d, device %v", u.pendingCount(ns), u.hasDevice(ns))
	}
}

// A background delete that fails is logged and counted, and the sweep deletes the interface later.
func TestUnitBackgroundDeleteFailure(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	for i := 1; i <= 2; i++ {
		if err := u.join(netID, i, "/var/run/docker/netns/x"); err != nil {
			t.Fatal(err)
		}
	}
	gate := u.gate()
	u.leaveDelete(netID, epID(1))
	gate <- errors.New("injected: netlink said no")
	u.ungate()
	u.flush()
	if1 := netconfig.EndpointIfName(epID(1))
	if !u.hasIf(if1) {
		t.Fatal("interface gone although its delete failed")
	}
	if u.logged(logrus.WarnLevel, "could not delete the interface of a deleted endpoint") != 1 || u.met.errs["delete_endpoint"] != 1 {
		t.Fatalf("failure not reported: errors %v", u.met.errs)
	}
	if n := u.drv.sweepInterfaces(); n != 1 || u.hasIf(if1) {
		t.Fatalf("sweep removed %d; interface still there: %v", n, u.hasIf(if1))
	}
	if !u.hasDevice(ns) {
		t.Fatal("device gone with an endpoint joined")
	}
}

// A network deleted (and created again, with a new device) while a delete of its old endpoint is pending:
// the background job does not release the new network's device.
func TestUnitPendingDeleteOfDeletedNetwork(t *testing.T) {
	u := newUnit(t)
	old := u.createNetwork(netID)
	if err := u.join(netID, 1, "/x"); err != nil {
		t.Fatal(err)
	}
	gate := u.gate()
	u.leaveDelete(netID, epID(1))
	if err := u.drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netID}); err != nil {
		t.Fatal(err)
	}
	ns := u.createNetwork(netID)
	if ns == old {
		t.Fatal("the new network kept the old state")
	}
	if err := u.join(netID, 2, "/y"); err != nil {
		t.Fatal(err)
	}
	gate <- nil
	u.ungate()
	u.flush()
	if !u.hasDevice(ns) {
		t.Fatal("the old network's background job released the new network's device")
	}
}

// Flush gives up when its context ends, naming what it waited for.
func TestUnitFlushBounded(t *testing.T) {
	u := newUnit(t)
	u.createNetwork(netID)
	if err := u.join(netID, 1, "/x"); err != nil {
		t.Fatal(err)
	}
	gate := u.gate()
	u.leaveDelete(netID, epID(1))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := u.drv.Flush(ctx); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with a pending delete and an ended context: %v", err)
	}
	gate <- nil
	u.ungate()
	u.flush()
}
