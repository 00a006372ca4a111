package dataplane

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	host := Namespace{Desc: "host namespace", Host: true}
	other := Namespace{Desc: "netns mounted at /run/docker/netns/1-abcdef", Mount: "/run/docker/netns/1-abcdef"}
	want := Want{NetworkID: "net1", Name: "vx-100000-net1", VNI: 1048576, Port: 4789}
	live := func(id string) bool { return id == "busy" }
	cases := []struct {
		name   string
		d      Device
		v      Verdict
		reason string
	}{
		{"ours and current", Device{Name: want.Name, VNI: want.VNI, Port: 4789, Alias: NetworkAlias("net1"), NS: host}, Reuse, "vxsafe's device"},
		{"ours, down, current", Device{Name: want.Name, VNI: want.VNI, Port: 4789, Alias: NetworkAlias("net1"), NS: host, Up: false}, Reuse, ""},
		{"ours but moved away", Device{Name: want.Name, VNI: want.VNI, Port: 4789, Alias: NetworkAlias("net1"), NS: other}, Stale, "earlier, down device"},
		{"foreign down", Device{Name: want.Name, VNI: 7, Port: 4789, NS: host}, Stale, "is down"},
		{"foreign up, enslaved", Device{Name: "vxlive1", VNI: want.VNI, Port: 4789, Up: true, Master: "brlive", NS: host}, Live, `enslaved to "brlive"`},
		{"foreign down, enslaved", Device{Name: "vxold", VNI: want.VNI, Port: 4789, Master: "br9", NS: host}, Stale, "is down"},
		{"foreign up with address", Device{Name: "flannel.1", VNI: want.VNI, Port: 4789, Up: true, Addrs: []string{"10.244.0.0/32"}, NS: host}, Live, "10.244.0.0/32"},
		{"foreign up, nothing attached", Device{Name: "vxidle", VNI: want.VNI, Port: 4789, Up: true, NS: host}, Stale, "carries nothing"},
		{"uppers, even when down", Device{Name: "vxm", VNI: want.VNI, Port: 4789, Uppers: []string{"mv0 (netns of pid 9 (sleep))"}, NS: host}, Live, "upper devices"},
		{"overlay sandbox without containers", Device{Name: "vxlan0", VNI: want.VNI, Port: 4789, Up: true, Master: "br0", SandboxBridge: "br0", NS: other}, Stale, "leftover of a Docker overlay sandbox"},
		{"overlay sandbox with containers", Device{Name: "vxlan0", VNI: want.VNI, Port: 4789, Up: true, Master: "br0", SandboxBridge: "br0", SandboxPorts: []string{"veth0"}, NS: other}, Live, "veth0"},
		{"ours of a live network", Device{Name: "vx-100000-busy0", VNI: want.VNI, Port: 4789, Up: true, Alias: NetworkAlias("busy"), NS: host}, Live, "has endpoints on this host"},
		{"ours of a dead network", Device{Name: "vx-100000-dead0", VNI: want.VNI, Port: 4789, Up: true, Alias: NetworkAlias("dead"), NS: host}, Stale, "no endpoint on this host"},
		{"endpoint alias is not a network device", Device{Name: "vxq", VNI: want.VNI, Port: 4789, Up: true, Master: "x", Alias: EndpointAlias("net1", "e1"), NS: host}, Live, "enslaved"},
	}
	for _, c := range cases {
		j := Classify(c.d, want, live)
		if j.Verdict != c.v || !strings.Contains(j.Reason, c.reason) {
			t.Errorf("%s: got %s %q, want %s containing %q", c.name, j.Verdict, j.Reason, c.v, c.reason)
		}
	}
}

func TestConflictErrorText(t *testing.T) {
	e := &ConflictError{
		Device: Device{Name: "vxlive1", Index: 41, VNI: 4100, Port: 4789, NS: Namespace{Desc: "host namespace", Host: true}},
		Reason: `is up and enslaved to "brlive"`, Want: Want{VNI: 4100},
	}
	want := `vxlan interface "vxlive1" (ifindex 41, VNI 4100, port 4789, host namespace) holds VNI 4100 and is up and enslaved to "brlive": not deleting a live interface; delete it, or give this network another VNI with -o com.docker.network.driver.overlay.vxlanid_list=N`
	if e.Error() != want {
		t.Fatalf("got  %s\nwant %s", e.Error(), want)
	}
}

func TestParseAlias(t *testing.T) {
	if n, e, ok := ParseAlias(EndpointAlias("n1", "e1")); !ok || n != "n1" || e != "e1" {
		t.Fatal("endpoint alias")
	}
	if n, e, ok := ParseAlias(NetworkAlias("n1")); !ok || n != "n1" || e != "" {
		t.Fatal("network alias")
	}
	if _, _, ok := ParseAlias("flannel"); ok {
		t.Fatal("foreign alias taken as ours")
	}
}

func TestParseNsfsMount(t *testing.T) {
	mnt, ok := parseNsfsMount(`42 41 0:4 net:[4026532176] /run/netns/with\040space rw shared:2 - nsfs nsfs rw`)
	if !ok || mnt != "/run/netns/with space" {
		t.Fatalf("got %q %v", mnt, ok)
	}
	if _, ok := parseNsfsMount(`22 1 0:21 / /proc rw - proc proc rw`); ok {
		t.Fatal("proc taken as nsfs")
	}
	if _, ok := parseNsfsMount(`43 41 0:4 mnt:[4026532177] /run/x rw - nsfs nsfs rw`); ok {
		t.Fatal("mount namespace taken as a network namespace")
	}
}
