package doctor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/internal/nstest"
	"golang.org/x/sys/unix"
)

// Network IDs of the fake Docker API. Swarm network IDs are 25 lowercase alphanumerics.
const (
	seedID    = "clblt6x0q8w1doctorseed000" // the seed's network: its device vx-00106c-clblt was left DOWN
	sandboxID = "sbnet00001docsandbox00000" // a Docker overlay sandbox left without containers
	confID    = "confnet001doctorconf00000" // needs VNI 4300, which a live foreign device holds
	appID     = "vxsafenet0doctorappnet000" // a vxsafe network with an endpoint
)

// fixture is a "host" namespace with one device of each kind, and an overlay-sandbox-like namespace.
type fixture struct {
	host *nstest.NS
	sb   *netlink.Handle // in the sandbox namespace
	api  string          // unix:// address of the fake Docker API
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{host: nstest.New(t, "vxsdoc")}
	h := f.host.NL

	// The seed: Docker overlay's host-side device, DOWN.
	plant(t, h, "vx-00106c-clblt", 0x106c, false)

	// A live device: up and enslaved to a bridge.
	live := plant(t, h, "vxdoclive", 5000, true)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "brdoclive"}}
	must(t, h.LinkAdd(br))
	must(t, h.LinkSetMaster(live, br))
	must(t, h.LinkSetUp(br))

	// A live foreign device holding the VNI that network confnet needs.
	sq := plant(t, h, "vxdocsqt", 4300, true)
	must(t, h.AddrAdd(sq, mustAddr(t, "10.99.0.1/24")))

	// vxsafe's device for appnet, with an endpoint (macvlan) on it.
	app := plant(t, h, "vx-100001-vxsaf", 0x100001, true)
	must(t, h.LinkSetAlias(app, dataplane.NetworkAlias(appID)))
	must(t, h.LinkAdd(&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "vxe-doctest", ParentIndex: app.Attrs().Index},
		Mode: netlink.MACVLAN_MODE_BRIDGE}))

	// Docker overlay sandbox: created in the host namespace, moved into 1-<net id 10>, renamed vxlan0, on br0,
	// no container (no veth).
	sbNS, sbH := sandboxNamespace(t, filepath.Join(t.TempDir(), "netns", "1-"+sandboxID[:10]))
	f.sb = sbH
	vx := plant(t, h, "vxdocsb", 4205, false)
	must(t, h.LinkSetNsFd(vx, int(sbNS)))
	l, err := sbH.LinkByName("vxdocsb")
	must(t, err)
	must(t, sbH.LinkSetName(l, "vxlan0"))
	sbr := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	must(t, sbH.LinkAdd(sbr))
	l, err = sbH.LinkByName("vxlan0")
	must(t, err)
	must(t, sbH.LinkSetMaster(l, sbr))
	must(t, sbH.LinkSetUp(l))
	must(t, sbH.LinkSetUp(sbr))

	f.api = fakeDocker(t)
	return f
}

// sandboxNamespace makes a fresh namespace pinned by a bind mount at target (as dockerd pins its sandboxes),
// removed when the test ends.
func sandboxNamespace(t *testing.T, target string) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(target), 0o755))
	must(t, os.WriteFile(target, nil, 0o644))
	ns, err := func() (netns.NsHandle, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return 0, err
		}
		defer orig.Close()
		ns, err := netns.New()
		if serr := netns.Set(orig); serr != nil {
			panic(fmt.Sprintf("cannot return to the original network namespace: %v", serr))
		}
		return ns, err
	}()
	if err != nil {
		t.Fatalf("creating a network namespace: %v", err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", int(ns)), target, "", unix.MS_BIND, ""); err != nil {
		ns.Close()
		t.Fatalf("bind-mounting a network namespace at %s: %v", target, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		ns.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", target, err)
		}
		ns.Close()
	})
	return ns, h
}

// fakeDocker serves the part of the Docker API the doctor reads, on a unix socket.
func fakeDocker(t *testing.T) string {
	t.Helper()
	nets := []map[string]any{
		{"Id": seedID, "Name": "seednet", "Driver": "overlay", "Options": map[string]string{"com.docker.network.driver.overlay.vxlanid_list": "4204"}},
		{"Id": sandboxID, "Name": "sbnet", "Driver": "overlay", "Options": map[string]string{"com.docker.network.driver.overlay.vxlanid_list": "4205"}},
		{"Id": confID, "Name": "confnet", "Driver": "overlay", "Options": map[string]string{"com.docker.network.driver.overlay.vxlanid_list": "4300"}},
		{"Id": appID, "Name": "appnet", "Driver": "vxsafe/overlay:latest", "Options": map[string]string{"com.docker.network.driver.overlay.vxlanid_list": "1048577"}},
		{"Id": "0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef", "Name": "bridge", "Driver": "bridge"},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /networks", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(nets)
	})
	mux.HandleFunc("GET /networks/{id}", func(w http.ResponseWriter, r *http.Request) {
		for _, n := range nets {
			if n["Id"] == r.PathValue("id") {
				n := map[string]any{"Id": n["Id"], "Name": n["Name"], "Containers": map[string]any{}}
				if n["Id"] == appID {
					n["Containers"] = map[string]any{"c0ffee": map[string]string{"Name": "app.1"}}
				}
				_ = json.NewEncoder(w).Encode(n)
				return
			}
		}
		http.Error(w, `{"message":"network not found"}`, http.StatusNotFound)
	})
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"Swarm":{"LocalNodeState":"active"}}`))
	})
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return "unix://" + sock
}

func plant(t *testing.T, h *netlink.Handle, name string, vni int, up bool) netlink.Link {
	t.Helper()
	must(t, h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name}, VxlanId: vni, Port: 4789}))
	l, err := h.LinkByName(name)
	must(t, err)
	if up {
		must(t, h.LinkSetUp(l))
	}
	return l
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustAddr(t *testing.T, s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	must(t, err)
	return a
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb, strings.NewReader(stdin))
	t.Logf("vxsafe doctor %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return result{code, out.String(), errb.String()}
}

// row returns the table line of device name (unique in the fixture).
func row(t *testing.T, table, name string) string {
	t.Helper()
	for _, l := range strings.Split(table, "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	t.Fatalf("no row for %s in:\n%s", name, table)
	return ""
}

func wantRow(t *testing.T, table, name string, parts ...string) {
	t.Helper()
	r := row(t, table, name)
	for _, p := range parts {
		if !strings.Contains(r, p) {
			t.Errorf("row of %s lacks %q: %s", name, p, r)
		}
	}
}

func (f *fixture) exists(t *testing.T, name string) bool {
	_, err := f.host.NL.LinkByName(name)
	return err == nil
}

func (f *fixture) sandboxVXLAN() bool {
	_, err := f.sb.LinkByName("vxlan0")
	return err == nil
}

func TestTableVerdictsOwnersAndInteractiveFix(t *testing.T) {
	f := newFixture(t)
	args := []string{"--netns", f.host.Path(), "--docker-host", f.api}

	r := run(t, "", args...)
	if r.code != ExitStale {
		t.Fatalf("exit %d with stale devices, want %d", r.code, ExitStale)
	}
	wantRow(t, r.stdout, "vx-00106c-clblt", " 4204 ", " down ", ` overlay "seednet" (clblt6x0q8w1) `, " stale ", "is down")
	wantRow(t, r.stdout, "vxdoclive", " 5000 ", " up ", " unknown ", " live ", `is up and enslaved to "brdoclive"`)
	wantRow(t, r.stdout, "vxlan0", " 4205 ", "/netns/1-sbnet00001 (socket: host)", ` overlay "sbnet" (sbnet00001do) `,
		" stale ", "leftover of a Docker overlay sandbox")
	wantRow(t, r.stdout, "vxdocsqt", " 4300 ", " conflict ", `holds VNI 4300 (port 4789) that overlay network "confnet"`,
		"has addresses 10.99.0.1/24")
	wantRow(t, r.stdout, "vx-100001-vxsaf", " 1048577 ", ` vxsafe "appnet" (vxsafenet0do) `, " live ", `"vxe-doctest"`)
	if !strings.Contains(r.stdout, "5 VXLAN devices") || !strings.Contains(r.stdout, "2 live, 2 stale, 1 conflict") {
		t.Errorf("summary wrong:\n%s", r.stdout)
	}

	// Without the Docker API the owner is the ID prefix the device carries.
	r = run(t, "", "--netns", f.host.Path(), "--docker-host", "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	if r.code != ExitStale {
		t.Fatalf("exit %d without Docker API, want %d", r.code, ExitStale)
	}
	wantRow(t, r.stdout, "vx-00106c-clblt", " overlay clblt* ", " stale ")
	wantRow(t, r.stdout, "vxlan0", " overlay sbnet00001* ", " stale ")
	wantRow(t, r.stdout, "vx-100001-vxsaf", " vxsafe "+appID[:12]+" ", " live ")
	wantRow(t, r.stdout, "vxdocsqt", " live ") // the conflict needs the API to know what confnet needs
	if !strings.Contains(r.stdout, "Docker API not reachable") {
		t.Errorf("no word on the unreachable API:\n%s", r.stdout)
	}

	// --fix, answered "n": nothing removed.
	r = run(t, "n\n", append(args, "--fix")...)
	if r.code != ExitStale || !strings.Contains(r.stdout, "Remove them? [y/N]") || !strings.Contains(r.stdout, "Nothing removed") {
		t.Fatalf("--fix answered n: exit %d", r.code)
	}
	if !f.exists(t, "vx-00106c-clblt") || !f.sandboxVXLAN() {
		t.Fatal("a device was removed although the answer was n")
	}

	// --fix, answered "y": the stale ones go, the others stay.
	r = run(t, "y\n", append(args, "--fix")...)
	if r.code != ExitClean {
		t.Fatalf("--fix answered y: exit %d, want %d", r.code, ExitClean)
	}
	if f.exists(t, "vx-00106c-clblt") || f.sandboxVXLAN() {
		t.Fatal("a stale device is still there after --fix")
	}
	for _, n := range []string{"vxdoclive", "vxdocsqt", "vx-100001-vxsaf"} {
		if !f.exists(t, n) {
			t.Fatalf("--fix removed %s, which is not stale", n)
		}
	}
	if !strings.Contains(r.stdout, "removed vx-00106c-clblt") || !strings.Contains(r.stdout, "removed vxlan0") {
		t.Errorf("--fix does not say what it removed")
	}

	r = run(t, "", args...)
	if r.code != ExitClean || !strings.Contains(r.stdout, "3 VXLAN devices") {
		t.Fatalf("after --fix: exit %d, want %d and 3 devices", r.code, ExitClean)
	}
}

func TestJSONAndFixYes(t *testing.T) {
	f := newFixture(t)
	args := []string{"--netns", f.host.Path(), "--docker-host", f.api, "--json"}

	r := run(t, "", args...)
	if r.code != ExitStale {
		t.Fatalf("exit %d, want %d", r.code, ExitStale)
	}
	var rep Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json output does not parse: %v", err)
	}
	if !rep.Docker.Reachable || rep.Docker.Networks != 5 || rep.Stale != 2 || rep.Live != 2 || rep.Conflict != 1 || len(rep.Devices) != 5 {
		t.Fatalf("report: docker %+v, %d live %d stale %d conflict, %d devices", rep.Docker, rep.Live, rep.Stale, rep.Conflict, len(rep.Devices))
	}
	by := map[string]Entry{}
	for _, e := range rep.Devices {
		by[e.Name] = e
	}
	if e := by["vx-00106c-clblt"]; e.Verdict != VerdictStale || e.Reason != "is down" || e.VNI != 4204 || e.Port != 4789 ||
		e.State != "down" || e.Owner.Kind != kindOverlay || e.Owner.NetworkID != seedID || e.Owner.NetworkName != "seednet" ||
		e.Owner.Via != "device name" || e.Namespace != "host namespace" {
		t.Errorf("seed device: %+v", e)
	}
	if e := by["vxlan0"]; e.Verdict != VerdictStale || e.Owner.NetworkName != "sbnet" || e.Owner.Via != "namespace name" ||
		e.SocketNamespace != "host namespace" || !strings.HasSuffix(e.Namespace, "/netns/1-sbnet00001") {
		t.Errorf("sandbox device: %+v", e)
	}
	if e := by["vx-100001-vxsaf"]; e.Verdict != VerdictLive || e.Owner.Kind != kindVxsafe || e.Owner.NetworkName != "appnet" ||
		e.Owner.Via != "alias" || len(e.Uppers) != 1 {
		t.Errorf("vxsafe device: %+v", e)
	}
	if e := by["vxdocsqt"]; e.Verdict != VerdictConflict || !strings.Contains(e.Reason, `"confnet"`) {
		t.Errorf("conflicting device: %+v", e)
	}
	if e := by["vxdoclive"]; e.Verdict != VerdictLive || e.Master != "brdoclive" {
		t.Errorf("live device: %+v", e)
	}

	r = run(t, "", append(args, "--fix", "--yes")...)
	if r.code != ExitClean {
		t.Fatalf("--fix --yes: exit %d, want %d", r.code, ExitClean)
	}
	rep = Report{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--fix --json output does not parse: %v", err)
	}
	if rep.Fix == nil || !rep.Fix.Confirmed || len(rep.Fix.Removed) != 2 || len(rep.Fix.Failed) != 0 || rep.Fix.StaleAfter != 0 {
		t.Fatalf("fix result: %+v", rep.Fix)
	}
	if f.exists(t, "vx-00106c-clblt") || f.sandboxVXLAN() || !f.exists(t, "vxdoclive") || !f.exists(t, "vxdocsqt") ||
		!f.exists(t, "vx-100001-vxsaf") {
		t.Fatal("--fix --yes did not remove exactly the stale devices")
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"--yes"}, {"extra"}, {"--bogus"}, {"--netns", "/nonexistent/netns"}} {
		var out, errb bytes.Buffer
		if code := Run(args, &out, &errb, nil); code != ExitError {
			t.Errorf("%v: exit %d, want %d", args, code, ExitError)
		}
		if errb.Len() == 0 {
			t.Errorf("%v: nothing on stderr", args)
		}
	}
	var out, errb bytes.Buffer
	if code := Run([]string{"-h"}, &out, &errb, nil); code != ExitClean || !strings.Contains(errb.String(), "--fix") {
		t.Errorf("-h: exit %d, %q", code, errb.String())
	}
}

// Uppers across namespaces: a VXLAN device moved out of the host is no upper of the host device that has
// its ifindex, and a macvlan in a third namespace (a container) keeps a moved VXLAN device live.
func TestCrossNamespaceUppers(t *testing.T) {
	host := nstest.New(t, "vxsdoc")
	b := nstest.New(t, "vxsdocb")
	c := nstest.New(t, "vxsdocc")
	h := host.NL

	// vxdocmoved: created in host with ifindex 40, moved to b (it keeps 40); then vxdochere gets 40 in host.
	must(t, h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxdocmoved", Index: 40}, VxlanId: 4501, Port: 4789}))
	l, err := h.LinkByName("vxdocmoved")
	must(t, err)
	must(t, h.LinkSetNsFd(l, int(b.Handle)))
	must(t, h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxdochere", Index: 40}, VxlanId: 4502, Port: 4789}))
	if l, err := b.NL.LinkByName("vxdocmoved"); err != nil || l.Attrs().Index != 40 {
		t.Fatalf("fixture: moved device %v, %v", l, err)
	}

	// vxdocctr: created in host, moved to b, with a macvlan on it that was moved on into c (a container).
	l = plant(t, h, "vxdocctr", 4503, false)
	must(t, h.LinkSetNsFd(l, int(b.Handle)))
	l, err = b.NL.LinkByName("vxdocctr")
	must(t, err)
	must(t, b.NL.LinkAdd(&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "vxe-docctr", ParentIndex: l.Attrs().Index},
		Mode: netlink.MACVLAN_MODE_BRIDGE}))
	mv, err := b.NL.LinkByName("vxe-docctr")
	must(t, err)
	must(t, b.NL.LinkSetNsFd(mv, int(c.Handle)))

	r := run(t, "", "--netns", host.Path(), "--docker-host", "unix://"+filepath.Join(t.TempDir(), "none.sock"), "--json")
	var rep Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	by := map[string]Entry{}
	for _, e := range rep.Devices {
		by[e.Name] = e
	}
	if e := by["vxdochere"]; e.Verdict != VerdictStale || e.Reason != "is down" || len(e.Uppers) != 0 {
		t.Errorf("vxdochere: %s: %s, uppers %v", e.Verdict, e.Reason, e.Uppers)
	}
	if e := by["vxdocmoved"]; e.Verdict != VerdictStale || e.SocketNamespace != "host namespace" {
		t.Errorf("vxdocmoved: %s: %s, socket %s", e.Verdict, e.Reason, e.SocketNamespace)
	}
	if e := by["vxdocctr"]; e.Verdict != VerdictLive || len(e.Uppers) != 1 || !strings.HasPrefix(e.Uppers[0], "vxe-docctr (netns mounted at ") ||
		!strings.HasSuffix(e.Uppers[0], c.Name+")") {
		t.Errorf("vxdocctr: %s: %s, uppers %v", e.Verdict, e.Reason, e.Uppers)
	}
	if r.code != ExitStale {
		t.Errorf("exit %d, want %d", r.code, ExitStale)
	}
}
