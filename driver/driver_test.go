package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/internal/nstest"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

// harness runs a Driver on a unix socket, with its "host" a fresh namespace, and talks to it as dockerd does.
type harness struct {
	t      *testing.T
	host   *nstest.NS
	drv    *Driver
	dp     *dataplane.Manager
	st     *store.Store
	hooks  *dataplane.Hooks
	client *http.Client
	log    *test.Hook
	dir    string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	host := nstest.New(t, "vxsdrv")
	// An underlay with MTU 1500 and a default route, as on a host.
	dir := t.TempDir()
	return startHarness(t, host, dir, &dataplane.Hooks{})
}

func startHarness(t *testing.T, host *nstest.NS, dir string, hooks *dataplane.Hooks) *harness {
	t.Helper()
	return startConfig(t, host, dir, hooks, Config{})
}

// startConfig runs a Driver configured by cfg (its Store, Dataplane, VNI range and Log are filled in here)
// on a socket in dir, its state in dir and its "host" namespace host, and closes it when the test ends.
func startConfig(t *testing.T, host *nstest.NS, dir string, hooks *dataplane.Hooks, cfg Config) *harness {
	t.Helper()
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	log := logrus.NewEntry(logger)
	st, err := store.Open(filepath.Join(dir, "vxsafe.db"))
	if err != nil {
		t.Fatal(err)
	}
	dp, err := dataplane.New(dataplane.Options{NS: host.Handle, Log: log, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.Dataplane, cfg.VNIMin, cfg.VNIMax, cfg.Log = st, dp, 1048576, 1048676, log
	drv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	drv.Reconcile()
	sock := filepath.Join(dir, "vxsafe.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go Serve(l, Handler(drv, log, nil), nil)
	h := &harness{t: t, host: host, drv: drv, dp: dp, st: st, hooks: hooks, log: hook, dir: dir,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}}}}
	t.Cleanup(func() {
		l.Close()
		if err := h.drv.Flush(flushContext(t)); err != nil {
			t.Error(err)
		}
		dp.Close()
		st.Close()
	})
	return h
}

// flushContext bounds a wait for the driver's background deletes.
func flushContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call posts req to method and decodes the answer into resp; it returns the plugin's error text. After a
// DeleteEndpoint that succeeded it waits for the background deletes (the interface, the device), so that
// tests see the kernel as it settles; raw does not.
func (h *harness) call(method string, req, resp any) string {
	h.t.Helper()
	body, _ := json.Marshal(req)
	e := h.raw(method, bytes.NewReader(body), resp)
	if method == "DeleteEndpoint" && e == "" {
		h.flush()
	}
	return e
}

// flush waits for the driver's background deletes.
func (h *harness) flush() {
	h.t.Helper()
	if err := h.drv.Flush(flushContext(h.t)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) raw(method string, body io.Reader, resp any) string {
	h.t.Helper()
	r, err := h.client.Post("http://plugin/NetworkDriver."+method, "application/json", body)
	if err != nil {
		h.t.Fatalf("%s: %v", method, err)
	}
	defer r.Body.Close()
	data, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK {
		var e network.ErrorResponse
		if err := json.Unmarshal(data, &e); err != nil || e.Err == "" {
			h.t.Fatalf("%s: status %d with body %q", method, r.StatusCode, data)
		}
		return e.Err
	}
	if resp != nil {
		if err := json.Unmarshal(data, resp); err != nil {
			h.t.Fatalf("%s: decoding %q: %v", method, data, err)
		}
	}
	return ""
}

func (h *harness) must(method string, req, resp any) {
	h.t.Helper()
	if e := h.call(method, req, resp); e != "" {
		h.t.Fatalf("%s: %s", method, e)
	}
}

const netID = "n3tw0rk1d00000000000000000000000000000000000000000000000000000aa"

// createNetwork runs AllocateNetwork (as a manager) and CreateNetwork with its result (as a node).
func (h *harness) createNetwork(id string, opts map[string]string) uint32 {
	h.t.Helper()
	var alloc network.AllocateNetworkResponse
	h.must("AllocateNetwork", network.AllocateNetworkRequest{NetworkID: id, Options: opts,
		IPv4Data: []network.IPAMData{{Pool: "10.0.1.0/24", Gateway: "10.0.1.1/24"}}}, &alloc)
	generic := map[string]any{}
	for k, v := range alloc.Options {
		generic[k] = v
	}
	h.must("CreateNetwork", network.CreateNetworkRequest{NetworkID: id,
		Options:  map[string]any{netconfig.GenericKey: generic},
		IPv4Data: []*network.IPAMData{{Pool: "10.0.1.0/24", Gateway: "10.0.1.1/24"}}}, nil)
	v, err := netconfig.ParseVNI(alloc.Options[netconfig.OptVNIList])
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}

func epID(i int) string {
	return fmt.Sprintf("e%03d0000000000000000000000000000000000000000000000000000000000", i)
}

func (h *harness) join(nid string, i int) (network.CreateEndpointResponse, network.JoinResponse) {
	h.t.Helper()
	var ce network.CreateEndpointResponse
	h.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: nid, EndpointID: epID(i),
		Interface: &network.EndpointInterface{Address: fmt.Sprintf("10.0.1.%d/24", 10+i)}}, &ce)
	var jr network.JoinResponse
	h.must("Join", network.JoinRequest{NetworkID: nid, EndpointID: epID(i), SandboxKey: "/var/run/docker/netns/test"}, &jr)
	return ce, jr
}

func (h *harness) leave(nid string, i int) {
	h.t.Helper()
	h.must("Leave", network.LeaveRequest{NetworkID: nid, EndpointID: epID(i)}, nil)
	h.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: nid, EndpointID: epID(i)}, nil)
}

func (h *harness) links() []string {
	links, err := h.host.NL.LinkList()
	if err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

func TestCapabilities(t *testing.T) {
	h := newHarness(t)
	var caps network.CapabilitiesResponse
	h.must("GetCapabilities", struct{}{}, &caps)
	if caps.Scope != "global" || caps.ConnectivityScope != "global" {
		t.Fatalf("caps = %+v", caps)
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t)
	vni := h.createNetwork(netID, map[string]string{"user.option": "x"})
	if vni < 1048576 || vni > 1048676 {
		t.Fatalf("VNI %d outside the configured range", vni)
	}
	dev := netconfig.DeviceName(vni, netID)
	if names := h.links(); len(names) != 0 {
		t.Fatalf("CreateNetwork made devices: %v", names)
	}
	ce, jr := h.join(netID, 1)
	if ce.Interface == nil || ce.Interface.MacAddress != "02:42:0a:00:01:0b" || ce.Interface.Address != "" {
		t.Fatalf("CreateEndpoint answer %+v: want the IP-derived MAC and no address", ce.Interface)
	}
	if jr.InterfaceName.SrcName != netconfig.EndpointIfName(epID(1)) || jr.InterfaceName.DstPrefix != "eth" {
		t.Fatalf("Join answer %+v", jr)
	}
	vx, err := h.host.NL.LinkByName(dev)
	if err != nil {
		t.Fatalf("device %s not made on Join: %v", dev, err)
	}
	mv, err := h.host.NL.LinkByName(jr.InterfaceName.SrcName)
	if err != nil || mv.Attrs().ParentIndex != vx.Attrs().Index || mv.Attrs().HardwareAddr.String() != "02:42:0a:00:01:0b" {
		t.Fatalf("endpoint interface %+v, err %v", mv, err)
	}
	// libnetwork moves it into the container.
	ctr := nstest.New(t, "vxsdrvc")
	if err := h.host.NL.LinkSetNsFd(mv, int(ctr.Handle)); err != nil {
		t.Fatal(err)
	}
	// A user-set MAC is not echoed.
	var ce2 network.CreateEndpointResponse
	h.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(2),
		Interface: &network.EndpointInterface{Address: "10.0.1.50/24", MacAddress: "02:00:00:00:00:32"}}, &ce2)
	if ce2.Interface != nil {
		t.Fatalf("CreateEndpoint echoed %+v", ce2.Interface)
	}
	h.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(2)}, nil)
	var info network.InfoResponse
	h.must("EndpointOperInfo", network.InfoRequest{NetworkID: netID, EndpointID: epID(1)}, &info)
	if info.Value["vxlan"] != dev {
		t.Fatalf("info %v", info.Value)
	}
	// Leave, libnetwork moves it back, DeleteEndpoint: everything gone.
	h.must("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	l, _ := ctr.NL.LinkByName(jr.InterfaceName.SrcName)
	if err := ctr.NL.LinkSetNsFd(l, int(h.host.Handle)); err != nil {
		t.Fatal(err)
	}
	h.must("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	if names := h.links(); len(names) != 0 {
		t.Fatalf("left behind: %v", names)
	}
	h.must("DeleteNetwork", network.DeleteNetworkRequest{NetworkID: netID}, nil)
	h.must("FreeNetwork", network.FreeNetworkRequest{NetworkID: netID}, nil)
	if nets, _ := h.st.ListNetworks(); len(nets) != 0 {
		t.Fatalf("records left: %v", nets)
	}
}

func TestRequestedVNIAndDuplicates(t *testing.T) {
	h := newHarness(t)
	v := h.createNetwork(netID, map[string]string{netconfig.OptVNIList: "4100"})
	if v != 4100 {
		t.Fatalf("VNI %d, want 4100", v)
	}
	e := h.call("AllocateNetwork", network.AllocateNetworkRequest{NetworkID: "other0000000", Options: map[string]string{netconfig.OptVNIList: "4100"},
		IPv4Data: []network.IPAMData{{Pool: "10.0.2.0/24", Gateway: "10.0.2.1/24"}}}, nil)
	if !strings.Contains(e, "4100") || !strings.Contains(e, netID[:12]) {
		t.Fatalf("duplicate VNI error %q", e)
	}
	for _, bad := range []string{"0", "16777216", "-1", "abc"} {
		e := h.call("AllocateNetwork", network.AllocateNetworkRequest{NetworkID: "bad000000000", Options: map[string]string{netconfig.OptVNIList: bad}}, nil)
		if !strings.Contains(e, netconfig.OptVNIList) {
			t.Errorf("VNI %q: error %q does not name the option", bad, e)
		}
	}
}

// The seed's failure: a DOWN vx-<vni>-<id> from an earlier run holds the name and the VNI.
func TestSeedStaleDeviceDoesNotBlockJoin(t *testing.T) {
	h := newHarness(t)
	vni := h.createNetwork(netID, nil)
	dev := netconfig.DeviceName(vni, netID)
	plant := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: dev}, VxlanId: int(vni), Port: 4789}
	if err := h.host.NL.LinkAdd(plant); err != nil {
		t.Fatal(err)
	}
	old, _ := h.host.NL.LinkByName(dev)
	h.join(netID, 1)
	now, err := h.host.NL.LinkByName(dev)
	if err != nil || now.Attrs().Index == old.Attrs().Index {
		t.Fatalf("stale device not replaced: %v", err)
	}
	found := false
	for _, e := range h.log.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, dev) && strings.Contains(e.Message, "is down") {
			found = true
		}
	}
	if !found {
		t.Fatal("no warning names the removed device")
	}
}

func TestLiveConflictNamedInError(t *testing.T) {
	h := newHarness(t)
	vni := h.createNetwork(netID, nil)
	live := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxlive1"}, VxlanId: int(vni), Port: 4789}
	if err := h.host.NL.LinkAdd(live); err != nil {
		t.Fatal(err)
	}
	l, _ := h.host.NL.LinkByName("vxlive1")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "brlive"}}
	_ = h.host.NL.LinkAdd(br)
	_ = h.host.NL.LinkSetMaster(l, br)
	_ = h.host.NL.LinkSetUp(l)
	h.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(1),
		Interface: &network.EndpointInterface{Address: "10.0.1.11/24"}}, nil)
	e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	for _, w := range []string{`"vxlive1"`, fmt.Sprintf("VNI %d", vni), `enslaved to "brlive"`, "not deleting a live interface"} {
		if !strings.Contains(e, w) {
			t.Errorf("error %q lacks %q", e, w)
		}
	}
	if _, err := h.host.NL.LinkByName("vxlive1"); err != nil {
		t.Fatal("live device deleted")
	}
	if _, err := h.host.NL.LinkByName(netconfig.DeviceName(vni, netID)); err == nil {
		t.Fatal("half-built device left")
	}
}

func TestConcurrentJoinsAndLeaves(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(netID, nil)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan string, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if e := h.call("CreateEndpoint", network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(i),
				Interface: &network.EndpointInterface{Address: fmt.Sprintf("10.0.1.%d/24", 10+i)}}, nil); e != "" {
				errs <- e
				return
			}
			if e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(i)}, nil); e != "" {
				errs <- e
				return
			}
			if e := h.call("Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID(i)}, nil); e != "" {
				errs <- e
			}
			if e := h.call("DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(i)}, nil); e != "" {
				errs <- e
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if names := h.links(); len(names) != 0 {
		t.Fatalf("left behind after %d concurrent joins and leaves: %v", n, names)
	}
	if eps, _ := h.st.ListEndpoints(""); len(eps) != 0 {
		t.Fatalf("%d endpoint records left", len(eps))
	}
}

func TestRestartKeepsDataPlaneAndReconciles(t *testing.T) {
	host := nstest.New(t, "vxsdrvr")
	dir := t.TempDir()
	h := startHarness(t, host, dir, &dataplane.Hooks{})
	vni := h.createNetwork(netID, nil)
	h.join(netID, 1)
	h.join(netID, 2)
	dev := netconfig.DeviceName(vni, netID)
	before, _ := host.NL.LinkByName(dev)
	// An orphan of ours: an endpoint interface whose endpoint is not joined.
	h.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(3),
		Interface: &network.EndpointInterface{Address: "10.0.1.40/24"}}, nil)
	if _, err := h.dp.CreateEndpointIf(dataplane.EndpointSpec{NetworkID: netID, EndpointID: epID(3), Name: "vxe-orphan0",
		ParentIndex: before.Attrs().Index, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}}); err != nil {
		t.Fatal(err)
	}
	h.st.Close()
	h.dp.Close()
	// "Restart": a new driver on the same state and namespace.
	h2 := startHarness(t, host, dir, &dataplane.Hooks{})
	after, err := host.NL.LinkByName(dev)
	if err != nil || after.Attrs().Index != before.Attrs().Index {
		t.Fatalf("restart touched the device: %v", err)
	}
	if _, err := host.NL.LinkByName("vxe-orphan0"); err == nil {
		t.Fatal("orphaned endpoint interface not swept")
	}
	// A "reboot": the kernel objects are gone; reconcile re-creates the device.
	_ = host.NL.LinkDel(after)
	h2.drv.Reconcile()
	if _, err := host.NL.LinkByName(dev); err != nil {
		t.Fatalf("device not rebuilt: %v", err)
	}
	h2.leave(netID, 1)
	h2.leave(netID, 2)
	if names := h2.links(); len(names) != 0 {
		t.Fatalf("left behind: %v", names)
	}
}

func TestInjectedFailures(t *testing.T) {
	for _, step := range []string{dataplane.StepCreateVXLAN, dataplane.StepLinkUp, dataplane.StepCreateEndpoint} {
		t.Run(step, func(t *testing.T) {
			h := newHarness(t)
			h.createNetwork(netID, nil)
			h.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(1),
				Interface: &network.EndpointInterface{Address: "10.0.1.11/24"}}, nil)
			h.hooks.FailNext(step, 1)
			e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
			if !strings.Contains(e, step) || !strings.Contains(e, epID(1)[:12]) {
				t.Fatalf("error %q does not name the step and the endpoint", e)
			}
			if names := h.links(); len(names) != 0 {
				t.Fatalf("half-built: %v", names)
			}
			if ep, _, _ := h.st.GetEndpoint(netID, epID(1)); ep.Joined {
				t.Fatal("record says joined after a failed join")
			}
			h.must("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
		})
	}
	t.Run("store", func(t *testing.T) {
		h := newHarness(t)
		h.createNetwork(netID, nil)
		h.must("CreateEndpoint", network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID(1),
			Interface: &network.EndpointInterface{Address: "10.0.1.11/24"}}, nil)
		h.st.FailNext("PutEndpoint")
		if e := h.call("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil); !strings.Contains(e, "saving its record") {
			t.Fatalf("error %q", e)
		}
		if names := h.links(); len(names) != 0 {
			t.Fatalf("kernel changed before the state was written: %v", names)
		}
		h.must("Join", network.JoinRequest{NetworkID: netID, EndpointID: epID(1)}, nil)
	})
}

func TestHostileInput(t *testing.T) {
	h := newHarness(t)
	h.createNetwork(netID, nil)
	cases := []struct {
		method, body, want string
	}{
		{"CreateNetwork", `{"NetworkID": `, "malformed JSON"},
		{"CreateNetwork", `{"NetworkID": 12}`, `"NetworkID"`},
		{"CreateNetwork", `{"NetworkID": "../../etc"}`, "network ID"},
		{"CreateNetwork", `{"NetworkID": "abc", "Options": {"com.docker.network.generic": {"com.docker.network.driver.overlay.vxlanid_list": "0"}}}`, netconfig.OptVNIList},
		{"CreateNetwork", `{"NetworkID": "abc", "Options": {"com.docker.network.generic": {"com.docker.network.driver.overlay.vxlanid_list": "16777216"}}}`, netconfig.OptVNIList},
		{"CreateNetwork", `{"NetworkID": "abc", "Options": {"com.docker.network.generic": {"com.docker.network.driver.overlay.vxlanid_list": "5", "com.docker.network.driver.mtu": "67"}}}`, netconfig.OptMTU},
		{"CreateNetwork", `{"NetworkID": "abc", "Options": {"com.docker.network.generic": {"com.docker.network.driver.overlay.vxlanid_list": "5", "com.docker.network.driver.mtu": "65536"}}}`, netconfig.OptMTU},
		{"AllocateNetwork", `{"NetworkID": "abc", "Options": {"com.docker.network.driver.overlay.vxlanid_list": "-3"}}`, netconfig.OptVNIList},
		{"CreateEndpoint", `{"NetworkID": "nope", "EndpointID": "e1"}`, "not known"},
		{"CreateEndpoint", `{"NetworkID": "` + netID + `", "EndpointID": "e1", "Interface": {"Address": "banana"}}`, "Interface.Address"},
		{"CreateEndpoint", `{"NetworkID": "` + netID + `", "EndpointID": "a/b"}`, "endpoint ID"},
		{"Join", `{"NetworkID": "` + netID + `", "EndpointID": "unknown1"}`, "no CreateEndpoint"},
		{"Join", `[]`, "field"},
		{"Leave", ``, "empty request"},
	}
	for _, c := range cases {
		e := h.raw(c.method, strings.NewReader(c.body), nil)
		if e == "" || !strings.Contains(e, c.want) {
			t.Errorf("%s %s: error %q, want it to contain %q", c.method, c.body, e, c.want)
		}
	}
	// A 20 MB body is refused without reading it all, in bounded time.
	start := time.Now()
	big := io.MultiReader(strings.NewReader(`{"NetworkID": "`), strings.NewReader(strings.Repeat("a", 20<<20)), strings.NewReader(`"}`))
	if e := h.raw("CreateNetwork", big, nil); !strings.Contains(e, "larger than") {
		t.Errorf("20 MB body: error %q", e)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("20 MB body took %s", took)
	}
	// Still serving.
	var caps network.CapabilitiesResponse
	h.must("GetCapabilities", struct{}{}, &caps)
}
