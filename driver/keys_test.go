package driver

import (
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/netconfig"
)

// TestUnitAllocateKeys: a new network gets a gossip key and a key authority, whose private half stays in
// the manager's state; a second allocation (a new leader's, with what the first returned) keeps them; a
// network whose options hold a VNI but no key stays unkeyed unless the key is asked for with "auto".
func TestUnitAllocateKeys(t *testing.T) {
	u := newUnit(t)
	pools := []network.IPAMData{{Pool: "10.0.1.0/24", Gateway: "10.0.1.1/24"}}
	alloc := func(id string, opts map[string]string) map[string]string {
		t.Helper()
		r, err := u.drv.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: id, Options: opts, IPv4Data: pools})
		if err != nil {
			t.Fatal(err)
		}
		return r.Options
	}
	first := alloc("net000000001", nil)
	key, auth := first[netconfig.OptKey], first[netconfig.OptKeyAuthority]
	if _, err := netconfig.ParseKey(key); err != nil {
		t.Fatalf("new network's key %q: %v", key, err)
	}
	if _, err := netconfig.ParseKeyAuthority(auth); err != nil {
		t.Fatalf("new network's key authority %q: %v", auth, err)
	}
	held, _ := u.st.Authorities()
	if a, ok := held["net000000001"]; !ok || len(a.Private) != 64 || a.Keys.Primary != key || a.Keys.Authority != auth {
		t.Fatalf("authority record %+v", held)
	}
	again := alloc("net000000001", first)
	if again[netconfig.OptKey] != key || again[netconfig.OptKeyAuthority] != auth {
		t.Fatalf("re-allocation changed the keys: %v -> %v", first, again)
	}
	if other := alloc("net000000002", nil); other[netconfig.OptKey] == key {
		t.Fatal("two networks got one key")
	}
	legacy := alloc("net000000003", map[string]string{netconfig.OptVNIList: "4100"})
	if _, ok := legacy[netconfig.OptKey]; ok {
		t.Fatalf("a network with a VNI option and no key got one: %v", legacy)
	}
	if u.logged(logrus.WarnLevel, "stays unkeyed") != 1 {
		t.Errorf("no warning for the unkeyed network")
	}
	auto := alloc("net000000004", map[string]string{netconfig.OptVNIList: "4101", netconfig.OptKey: netconfig.KeyAuto})
	if _, err := netconfig.ParseKey(auto[netconfig.OptKey]); err != nil {
		t.Fatalf("-o %s=auto: %v", netconfig.OptKey, err)
	}
	if _, err := u.drv.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: "net000000005",
		Options: map[string]string{netconfig.OptKey: "abc"}, IPv4Data: pools}); err == nil || !strings.Contains(err.Error(), netconfig.OptKey) {
		t.Fatalf("a malformed key: %v", err)
	}
	if err := u.drv.FreeNetwork(&network.FreeNetworkRequest{NetworkID: "net000000001"}); err != nil {
		t.Fatal(err)
	}
	if held, _ := u.st.Authorities(); len(held) != 2 {
		t.Fatalf("authorities after FreeNetwork: %d, want 2", len(held))
	}
}
