package driver

import (
	"reflect"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/netconfig"
)

func TestUnitIPv6Endpoints(t *testing.T) {
	u := newUnit(t)
	ns, err := u.createNetworkWith(netID, map[string]string{netconfig.OptIPv6: "fd00:1::/64"})
	if err != nil {
		t.Fatal(err)
	}
	if !ns.spec.IPv6 || ns.ipv6().String() != "fd00:1::/64" {
		t.Fatalf("network spec %+v, prefix %v", ns.spec, ns.ipv6())
	}
	// The address is derived from the IPv4 one and returned without a gateway, with the MAC.
	resp, err := u.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(1),
		Interface: &network.EndpointInterface{Address: "10.0.1.11/24"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Interface == nil || resp.Interface.AddressIPv6 != "fd00:1::a00:10b/64" || resp.Interface.MacAddress != "02:42:0a:00:01:0b" {
		t.Fatalf("CreateEndpoint answered %+v", resp.Interface)
	}
	if rec, ok, _ := u.st.GetEndpoint(netID, epID(1)); !ok || rec.IPv6 != "fd00:1::a00:10b/64" {
		t.Fatalf("stored endpoint %+v", rec)
	}
	info, err := u.drv.EndpointInfo(&network.InfoRequest{NetworkID: netID, EndpointID: epID(1)})
	if err != nil || info.Value["address_ipv6"] != "fd00:1::a00:10b/64" {
		t.Fatalf("EndpointInfo %v %v", info, err)
	}
	// A MAC given by the engine: the IPv6 address is still returned.
	resp, err = u.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(2),
		Interface: &network.EndpointInterface{Address: "10.0.1.12/24", MacAddress: "02:00:00:00:00:0c"}})
	if err != nil || resp.Interface == nil || resp.Interface.AddressIPv6 != "fd00:1::a00:10c/64" || resp.Interface.MacAddress != "" {
		t.Fatalf("CreateEndpoint with a MAC answered %+v, %v", resp.Interface, err)
	}
	// An address the engine gives (--ip6): the derived one is accepted, another refused with the one to use.
	if _, err := u.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(3),
		Interface: &network.EndpointInterface{Address: "10.0.1.13/24", AddressIPv6: "fd00:1::a00:10d/64"}}); err != nil {
		t.Fatalf("the derived address given by the engine: %v", err)
	}
	_, err = u.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(4),
		Interface: &network.EndpointInterface{Address: "10.0.1.14/24", AddressIPv6: "fd00:1::99/64"}})
	if err == nil || !strings.Contains(err.Error(), "fd00:1::a00:10e/64") || !strings.Contains(err.Error(), "--ip6") {
		t.Fatalf("another IPv6 address given: %v", err)
	}

	// Remote endpoints get their IPv6 entries, derived the same way; a device programmed before (no
	// IPv6 entries) is completed by the resync.
	if _, err := u.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID(1), SandboxKey: "/run/docker/netns/a"}); err != nil {
		t.Fatal(err)
	}
	u.drv.RemoteChange(remote(1, "10.0.1.51", "02:42:0a:00:01:33", "192.0.2.2"), false)
	want := []string{"10.0.1.51 02:42:0a:00:01:33 192.0.2.2 fd00:1::a00:133"}
	if got := u.dp.peerList(ns.spec); !reflect.DeepEqual(got, want) {
		t.Fatalf("peers %q, want %q", got, want)
	}
	u.ctl.set(netID, remote(1, "10.0.1.51", "02:42:0a:00:01:33", "192.0.2.2"), remote(2, "10.0.1.52", "02:42:0a:00:01:34", "192.0.2.3"))
	u.dp.mu.Lock()
	u.dp.peers[ns.vxIndex] = append(u.dp.peers[ns.vxIndex], dataplane.Peer{IP: []byte{10, 0, 1, 52},
		MAC: []byte{2, 0x42, 10, 0, 1, 0x34}, VTEP: []byte{192, 0, 2, 3}})
	u.dp.mu.Unlock()
	ns.mu.Lock()
	u.drv.programPeersLocked(ns, true)
	ns.mu.Unlock()
	want = append(want, "10.0.1.52 02:42:0a:00:01:34 192.0.2.3 fd00:1::a00:134")
	if got := u.dp.peerList(ns.spec); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the resync: peers %q, want %q", got, want)
	}
	u.drv.RemoteChange(remote(2, "10.0.1.52", "02:42:0a:00:01:34", "192.0.2.3"), true)
	if got := u.dp.peerList(ns.spec); !reflect.DeepEqual(got, want[:1]) {
		t.Fatalf("after a removal: peers %q, want %q", got, want[:1])
	}
}

func TestUnitIPv6Refusals(t *testing.T) {
	u := newUnit(t)
	// A bad prefix is refused by AllocateNetwork, naming the option, before a VNI is taken.
	for _, bad := range []string{"10.0.0.0/8", "fd00:1::/112", "fd00:1::1/64", "fe80::/64", "nonsense"} {
		_, err := u.createNetworkWith(netID, map[string]string{netconfig.OptIPv6: bad})
		if err == nil || !strings.Contains(err.Error(), "vxsafe.ipv6") || !strings.Contains(err.Error(), "fd00:1::/64") {
			t.Errorf("prefix %q: %v", bad, err)
		}
	}
	if ns, err := u.createNetworkWith(netID, nil); err != nil || ns.rec.VNI != 1048576 || ns.spec.IPv6 {
		t.Fatalf("after the refusals: %v, %+v", err, ns)
	}
	// Without the option, an IPv6 address from the engine is refused.
	_, err := u.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(1),
		Interface: &network.EndpointInterface{Address: "10.0.1.11/24", AddressIPv6: "fd00:9::2/64"}})
	if err == nil || !strings.Contains(err.Error(), "vxsafe.ipv6") {
		t.Fatalf("an engine's IPv6 address on a network without the option: %v", err)
	}
	// Docker's own --ipv6, as each engine sends it: IPv6 pools, or the flag alone (20.10: a string).
	const id = "v6d0cker0000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	generic := `"com.docker.network.generic":{"com.docker.network.driver.overlay.vxlanid_list":"1048600"}`
	v4 := `"IPv4Data":[{"AddressSpace":"GlobalDefault","Pool":"10.0.9.0/24","Gateway":"10.0.9.1/24"}]`
	for name, body := range map[string]string{
		"pools": `{"NetworkID":"` + id + `","Options":{` + generic + `},` + v4 +
			`,"IPv6Data":[{"AddressSpace":"LocalDefault","Pool":"fd00:2::/64","Gateway":"fd00:2::1/64"}]}`,
		"flag (bool)":   `{"NetworkID":"` + id + `","Options":{"com.docker.network.enable_ipv6":true,` + generic + `},` + v4 + `}`,
		"flag (string)": `{"NetworkID":"` + id + `","Options":{"com.docker.network.enable_ipv6":"true",` + generic + `},` + v4 + `}`,
	} {
		e := u.errOf(u.post("CreateNetwork", body))
		for _, w := range []string{id[:12], "--ipv6", "moby/moby#48116", "-o vxsafe.ipv6=PREFIX"} {
			if !strings.Contains(e, w) {
				t.Errorf("CreateNetwork with --ipv6 (%s): error %q does not say %q", name, e, w)
			}
		}
		if _, ok := u.drv.lookup(id); ok {
			t.Errorf("CreateNetwork with --ipv6 (%s): the network was recorded", name)
		}
	}
}
