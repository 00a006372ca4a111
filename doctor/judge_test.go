package doctor

import (
	"strings"
	"testing"

	"github.com/vxsafe/overlay/dataplane"
)

var (
	hostNS  = dataplane.Namespace{Ino: 1, Desc: "host namespace", Host: true}
	otherNS = dataplane.Namespace{Ino: 2, Path: "/run/netns/x", Desc: "netns mounted at /run/netns/x", Mount: "/run/netns/x"}
)

func dev(name string, vni uint32, ns dataplane.Namespace, sock uint64, mods ...func(*dataplane.SocketDevice)) dataplane.SocketDevice {
	s := dataplane.SocketDevice{Device: dataplane.Device{Name: name, Index: len(name), VNI: vni, Port: 4789, Up: true, NS: ns,
		HostSock: sock == 1, Addrs: []string{"10.0.0.1/24"}}, SockIno: sock, SockDesc: "ns " + string(rune('0'+sock))}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func down(s *dataplane.SocketDevice) { s.Up, s.Addrs = false, nil }

func byName(es []Entry) map[string]Entry {
	m := map[string]Entry{}
	for _, e := range es {
		m[e.Name] = e
	}
	return m
}

func TestDuplicateVNIOnOneSocketNamespace(t *testing.T) {
	es := byName(judge([]dataplane.SocketDevice{
		dev("a", 7000, hostNS, 1),
		dev("b", 7000, otherNS, 1),      // moved away, socket still in the host namespace
		dev("c", 7000, otherNS, 2),      // its own socket namespace: no conflict
		dev("d", 7000, hostNS, 1, down), // stale, and says it duplicates
		dev("e", 7000, otherNS, 0),      // socket unknown: never grouped
		dev("f", 7001, hostNS, 1),       // other VNI
		dev("g", 7000, hostNS, 1, func(s *dataplane.SocketDevice) { s.Port = 8472 }), // other port
	}, nil, false, nil))
	for _, n := range []string{"a", "b"} {
		if e := es[n]; e.Verdict != VerdictConflict || !strings.Contains(e.Reason, "on the same socket namespace") ||
			!strings.Contains(e.Reason, "and it is up and has addresses") {
			t.Errorf("%s: %s: %s", n, e.Verdict, e.Reason)
		}
	}
	if e := es["d"]; e.Verdict != VerdictStale || !strings.HasPrefix(e.Reason, "is down; it also holds VNI 7000") {
		t.Errorf("d: %s: %s", e.Verdict, e.Reason)
	}
	for _, n := range []string{"c", "e", "f", "g"} {
		if e := es[n]; e.Verdict != VerdictLive {
			t.Errorf("%s: %s: %s", n, e.Verdict, e.Reason)
		}
	}
}

func TestKnownNetworkNeeds(t *testing.T) {
	nets := []Network{
		{ID: "abcde12345fghij67890klmno", Name: "web", Driver: "overlay", VNIs: []uint32{4097}, Port: 4789},
		{ID: "vxsaf12345fghij67890klmno", Name: "app", Driver: "myrepo/vxsafe:1.2", VNIs: []uint32{0x100002}, Port: 4789},
	}
	alias := func(id string) func(*dataplane.SocketDevice) {
		return func(s *dataplane.SocketDevice) { s.Alias = dataplane.NetworkAlias(id) }
	}
	es := byName(judge([]dataplane.SocketDevice{
		// web's own host-side device: no conflict with web.
		dev("vx-001001-abcde", 4097, hostNS, 1),
		// web's name, wrong VNI.
		dev("vx-001001-abcdf", 1, hostNS, 1, func(s *dataplane.SocketDevice) { s.Name = "vx-001001-abcde"; s.Index = 99 }),
		// app's device without vxsafe's alias, and with it.
		dev("vx-100002-vxsaf", 0x100002, hostNS, 1),
		dev("vxsafe-own", 0x100002, otherNS, 2, alias(nets[1].ID)),
		// web's sandbox device in 1-<id10>.
		dev("vxlan0", 4097, dataplane.Namespace{Ino: 3, Path: "/p", Desc: "sb", Mount: "/run/docker/netns/1-abcde12345"}, 4,
			func(s *dataplane.SocketDevice) {
				s.Master, s.SandboxBridge, s.SandboxPorts = "br0", "br0", []string{"veth0"}
			}),
	}, nets, true, nil))
	if e := es["vx-001001-abcde"]; e.Verdict != VerdictConflict || !strings.Contains(e.Reason, `has the device name for VNI 4097 that overlay network "web"`) {
		t.Errorf("wrong-VNI device with web's name: %s: %s", e.Verdict, e.Reason)
	}
	if e := es["vx-100002-vxsaf"]; e.Verdict != VerdictConflict || !strings.Contains(e.Reason, `vxsafe network "app"`) ||
		e.Owner.Kind != kindVxsafe || e.Owner.NetworkName != "app" || e.Owner.Via != "device name" {
		t.Errorf("un-aliased device with app's name: %s: %s, owner %+v", e.Verdict, e.Reason, e.Owner)
	}
	if e := es["vxsafe-own"]; e.Owner.String() != `vxsafe "app" (vxsaf12345fg)` {
		t.Errorf("vxsafe device owner: %v", e.Owner)
	}
	if e := es["vxlan0"]; e.Verdict != VerdictLive || e.Owner.NetworkName != "web" || e.Owner.Via != "namespace name" {
		t.Errorf("web's sandbox device: %s: %s, owner %+v", e.Verdict, e.Reason, e.Owner)
	}
}

func TestOwnerNotes(t *testing.T) {
	nets := []Network{{ID: "abcde1", Name: "one", Driver: "overlay"}, {ID: "abcde2", Name: "two", Driver: "overlay"}}
	o := ownerOf(dataplane.Device{Name: "vx-000001-abcde"}, nets, true)
	if o.NetworkName != "" || !strings.Contains(o.Note, "several networks") || o.String() != "overlay abcde*" {
		t.Errorf("ambiguous: %+v %q", o, o)
	}
	o = ownerOf(dataplane.Device{Name: "vx-000001-zzzzz"}, nets, true)
	if o.Note != "not listed by the Docker API" {
		t.Errorf("missing network: %+v", o)
	}
	if o := ownerOf(dataplane.Device{Name: "vxlan0", NS: otherNS}, nets, true); o.Kind != kindUnknown || o.String() != "unknown" {
		t.Errorf("unknown: %+v", o)
	}
}

func TestDockerHostAndParsing(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if h := dockerHost("", env(nil)); h != DefaultDockerHost {
		t.Errorf("default: %s", h)
	}
	if h := dockerHost("", env(map[string]string{"DOCKER_HOST": "unix:///x.sock"})); h != "unix:///x.sock" {
		t.Errorf("env: %s", h)
	}
	if h := dockerHost("unix:///f.sock", env(map[string]string{"DOCKER_HOST": "unix:///x.sock"})); h != "unix:///f.sock" {
		t.Errorf("flag: %s", h)
	}
	if _, err := newDockerAPI("tcp://1.2.3.4:2376", env(map[string]string{"DOCKER_TLS_VERIFY": "1"})); err == nil {
		t.Error("TLS accepted")
	}
	if _, err := newDockerAPI("ssh://h", env(nil)); err == nil {
		t.Error("ssh accepted")
	}
	if a, err := newDockerAPI("tcp://127.0.0.1:2375", env(nil)); err != nil || !a.c.TCP() || a.c.Host() != "tcp://127.0.0.1:2375" {
		t.Errorf("tcp: %v %v", a, err)
	}
	if got := parseVNIList(" 4097,4098,x,0,16777216"); len(got) != 2 || got[0] != 4097 || got[1] != 4098 {
		t.Errorf("parseVNIList: %v", got)
	}
	for d, want := range map[string]string{"overlay": kindOverlay, "vxsafe/overlay:latest": kindVxsafe,
		"localhost:5000/vxsafe/overlay:1": kindVxsafe, "bridge": "", "macvlan": ""} {
		if got := (Network{Driver: d}).kind(); got != want {
			t.Errorf("kind(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestVxsafeDeviceLiveness(t *testing.T) {
	nets := []Network{{ID: "busy", Name: "busy", Driver: "vxsafe/overlay:latest"}, {ID: "idle", Name: "idle", Driver: "vxsafe/overlay:latest"}}
	live := func(id string) bool { return id == "busy" }
	mk := func(name, id string) dataplane.SocketDevice {
		return dev(name, 1, hostNS, 0, func(s *dataplane.SocketDevice) { s.Alias, s.Addrs = dataplane.NetworkAlias(id), nil })
	}
	es := byName(judge([]dataplane.SocketDevice{mk("vx-busy", "busy"), mk("vx-idle", "idle")}, nets, true, live))
	if e := es["vx-busy"]; e.Verdict != VerdictLive || !strings.Contains(e.Reason, "has endpoints on this host") {
		t.Errorf("busy: %s: %s", e.Verdict, e.Reason)
	}
	if e := es["vx-idle"]; e.Verdict != VerdictStale || !strings.Contains(e.Reason, "has no endpoint on this host") {
		t.Errorf("idle: %s: %s", e.Verdict, e.Reason)
	}
}
