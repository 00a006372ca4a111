package migrate

import (
	"net"
	"strings"
	"testing"

	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
)

// A vxsafe network's options carry its gossip key (the allocator's): the plan never prints it, and a twin
// made from such a network never copies it (the new network gets keys of its own).
func TestKeysNeverPrintedNorCopied(t *testing.T) {
	secret := strings.Repeat("ab", 32)
	old := &engine.Network{ID: "n1", Name: "appnet", Attachable: true,
		Options: map[string]string{netconfig.OptKey: secret, netconfig.OptKeyAuthority: secret, netconfig.OptVNIList: "4097",
			"com.docker.network.driver.mtu": "1400"},
		Labels: map[string]string{LabelStack: "app", "team": "web"}}
	if s := kv(old.Options); strings.Contains(s, secret) || !strings.Contains(s, "com.docker.network.driver.mtu=1400") {
		t.Fatalf("options printed as %q", s)
	}
	_, sub, _ := net.ParseCIDR("10.0.21.0/24")
	req := New(nil, Options{}).twinRequest(old, sub)
	for _, k := range []string{netconfig.OptKey, netconfig.OptKeyAuthority, netconfig.OptVNIList} {
		if _, ok := req.Options[k]; ok {
			t.Errorf("twin copies option %s", k)
		}
	}
	if req.Name != "appnet-vxsafe" || req.Options["com.docker.network.driver.mtu"] != "1400" || !req.Attachable ||
		req.Labels["team"] != "web" || req.Labels[LabelFrom] != "appnet" || req.Labels[LabelFromID] != "n1" {
		t.Fatalf("twin request %+v", req)
	}
	if _, ok := req.Labels[LabelStack]; ok {
		t.Error("twin carries the stack label (a stack rm would remove it)")
	}
}
