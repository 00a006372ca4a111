package driver

// What changed for remote network drivers between Docker 20.10 and the current engine (moby v2), as
// the engine sends it: docs/engines.md. Root-free; part of `make unit`.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/netconfig"
)

// post sends body to /NetworkDriver.<method> (or path, when method starts with "/") of the handler.
func (u *unit) post(method, body string) (int, string) {
	u.t.Helper()
	path := method
	if !strings.HasPrefix(path, "/") {
		path = "/NetworkDriver." + method
	}
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	w := httptest.NewRecorder()
	Handler(u.drv, logrus.NewEntry(logrus.New()), nil).ServeHTTP(w, req)
	return w.Code, strings.TrimSpace(w.Body.String())
}

// errOf is the Err of an error answer, "" for a success.
func (u *unit) errOf(code int, body string) string {
	t := u.t
	t.Helper()
	if code == http.StatusOK {
		return ""
	}
	var e network.ErrorResponse
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Err == "" {
		t.Fatalf("status %d without an error message: %q", code, body)
	}
	return e.Err
}

// GwAllocChecker: not declared, so the engine never sends GwAllocCheck (remote driver.go
// GetSkipGwAlloc); answered anyway with "reserve the gateways", the engine's default.
func TestUnitEngineGwAllocCheck(t *testing.T) {
	u := newUnit(t)
	code, body := u.post("GetCapabilities", "")
	var caps map[string]any
	if err := json.Unmarshal([]byte(body), &caps); code != http.StatusOK || err != nil {
		t.Fatalf("GetCapabilities: %d %q", code, body)
	}
	if v, ok := caps["GwAllocChecker"]; ok && v != false {
		t.Fatalf("GetCapabilities declares GwAllocChecker: %q", body)
	}
	if caps["Scope"] != "global" || caps["ConnectivityScope"] != "global" {
		t.Fatalf("GetCapabilities: %q", body)
	}
	// The body the current engine sends (api.GwAllocCheckerRequest: the network's generic options).
	code, body = u.post("GwAllocCheck", `{"Options":{"com.docker.network.enable_ipv4":true,"com.docker.network.enable_ipv6":false,`+
		`"com.docker.network.internal":false,"com.docker.network.generic":{"com.docker.network.driver.overlay.vxlanid_list":"1048576"}}}`)
	var resp struct {
		Err                string
		SkipIPv4, SkipIPv6 bool
	}
	if err := json.Unmarshal([]byte(body), &resp); code != http.StatusOK || err != nil || resp.SkipIPv4 || resp.SkipIPv6 || resp.Err != "" {
		t.Fatalf("GwAllocCheck: %d %q, want 200 and both gateways reserved", code, body)
	}
}

// enable_ipv4=false or no IPv4 pool: refused at AllocateNetwork and CreateNetwork, naming the network
// and what to do, before a VNI is taken or anything is stored.
func TestUnitEngineIPv4Required(t *testing.T) {
	u := newUnit(t)
	const id = "n0ipv4000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	// Swarm with only IPv6 subnets: the manager's cnmallocator gives the driver no IPv4 pool.
	code, body := u.post("AllocateNetwork", `{"NetworkID":"`+id+`","Options":{},"IPv4Data":[],`+
		`"IPv6Data":[{"AddressSpace":"GlobalDefault","Pool":"fd00:1::/64","Gateway":"fd00:1::1/64"}]}`)
	e := u.errOf(code, body)
	for _, w := range []string{id[:12], "no IPv4 subnet", "--subnet"} {
		if !strings.Contains(e, w) {
			t.Errorf("AllocateNetwork without IPv4: error %q does not say %q", e, w)
		}
	}
	// No VNI was taken: the next network gets the lowest of the range.
	ns := u.createNetwork(netID)
	if ns.rec.VNI != 1048576 {
		t.Errorf("VNI %d after a refused allocation, want 1048576", ns.rec.VNI)
	}
	generic := `"com.docker.network.generic":{"com.docker.network.driver.overlay.vxlanid_list":"1048600"}`
	for _, c := range []struct {
		name, body string
		wants      []string
	}{
		// As the current engine sends a network created with --ipv4=false (controller.go addNetwork:
		// n.generic carries netlabel.EnableIPv4 as a bool; getIPData(4) is empty).
		{"ipv4 disabled", `{"NetworkID":"` + id + `","Options":{"com.docker.network.enable_ipv4":false,"com.docker.network.enable_ipv6":true,` + generic + `},` +
			`"IPv4Data":[],"IPv6Data":[{"AddressSpace":"LocalDefault","Pool":"fd00:2::/64","Gateway":"fd00:2::1/64"}]}`,
			[]string{id[:12], "IPv4 disabled", "--ipv4=false"}},
		{"no pool", `{"NetworkID":"` + id + `","Options":{"com.docker.network.enable_ipv4":true,` + generic + `}}`,
			[]string{id[:12], "no IPv4 subnet"}},
	} {
		e := u.errOf(u.post("CreateNetwork", c.body))
		for _, w := range c.wants {
			if !strings.Contains(e, w) {
				t.Errorf("CreateNetwork %s: error %q does not say %q", c.name, e, w)
			}
		}
		if _, ok := u.drv.lookup(id); ok {
			t.Errorf("CreateNetwork %s: the network was recorded", c.name)
		}
		if _, ok, _ := u.st.GetNetwork(id); ok {
			t.Errorf("CreateNetwork %s: the network was stored", c.name)
		}
	}
	// The current engine's options of an IPv4 network (bools at the top level) are accepted.
	code, body = u.post("CreateNetwork", `{"NetworkID":"`+id+`","Options":{"com.docker.network.enable_ipv4":true,`+
		`"com.docker.network.enable_ipv6":false,"com.docker.network.internal":false,`+generic+`},`+
		`"IPv4Data":[{"AddressSpace":"GlobalDefault","Pool":"10.0.9.0/24","Gateway":"10.0.9.1/24","AuxAddresses":{}}],"IPv6Data":[]}`)
	if e := u.errOf(code, body); e != "" {
		t.Fatalf("CreateNetwork of an IPv4 network: %s", e)
	}
}

// joinResponse is the current engine's api.JoinResponse (remote/api/api.go), with DstName.
type joinResponse struct {
	Err           string
	InterfaceName *struct{ SrcName, DstName, DstPrefix string }
}

// CreateEndpoint as the current engine sends it (driver options such as ifname and sysctls among the
// endpoint's generic options, as daemon/network.go puts them), Join naming the interface.
func TestUnitEngineEndpointOptions(t *testing.T) {
	u := newUnit(t)
	u.createNetwork(netID)
	create := func(i int, opts string) (int, string) {
		return u.post("CreateEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"Interface":{"Address":"10.0.1.%d/24",`+
			`"AddressIPv6":"","MacAddress":""},"Options":{%s}}`, netID, epID(i), 10+i, opts))
	}
	engineOpts := `"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}],"com.docker.network.portmap":[],` +
		`"com.docker.network.endpoint.dnsnames":["web","1a2b3c4d"],"com.docker.network.endpoint.sysctls":"net.ipv4.conf.IFNAME.log_martians=1",` +
		`"com.docker.network.endpoint.macaddress":"AkIKAAELdw=="`
	join := func(i int) joinResponse {
		code, body := u.post("Join", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"SandboxKey":"/var/run/docker/netns/c%d",`+
			`"Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}],"com.docker.network.portmap":[]}}`, netID, epID(i), i))
		var jr joinResponse
		if err := json.Unmarshal([]byte(body), &jr); code != http.StatusOK || err != nil || jr.InterfaceName == nil {
			t.Fatalf("Join %d: %d %q", i, code, body)
		}
		return jr
	}
	// With ifname: Join hands it back as DstName.
	if e := u.errOf(create(1, engineOpts+`,"com.docker.network.endpoint.ifname":"data0"`)); e != "" {
		t.Fatalf("CreateEndpoint with the engine's options: %s", e)
	}
	jr := join(1)
	if n := jr.InterfaceName; n.DstName != "data0" || n.DstPrefix != "eth" || n.SrcName != netconfig.EndpointIfName(epID(1)) {
		t.Errorf("Join with ifname: InterfaceName %+v, want DstName data0, DstPrefix eth", *n)
	}
	// Without ifname: DstPrefix only, and no DstName in the answer (Docker 20.10's shape).
	if e := u.errOf(create(2, engineOpts)); e != "" {
		t.Fatalf("CreateEndpoint without ifname: %s", e)
	}
	if n := join(2).InterfaceName; n.DstName != "" || n.DstPrefix != "eth" {
		t.Errorf("Join without ifname: InterfaceName %+v", *n)
	}
	if _, body := u.post("Join", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"SandboxKey":"/var/run/docker/netns/c2"}`, netID, epID(2))); strings.Contains(body, "DstName") {
		t.Errorf("Join without ifname answers a DstName: %q", body)
	}
	// go-plugins-helpers' Join (the network.Driver interface) still answers, without DstName.
	if r, err := u.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID(1), SandboxKey: "/var/run/docker/netns/c1"}); err != nil ||
		r.InterfaceName.SrcName != netconfig.EndpointIfName(epID(1)) || r.InterfaceName.DstPrefix != "eth" {
		t.Errorf("Join: %+v, %v", r, err)
	}
	// A name the kernel would refuse is refused at CreateEndpoint, naming the option, the endpoint and
	// the rule; nothing is stored.
	for i, bad := range []string{`"eth0/1"`, `"a name"`, `".."`, `"sixteen-chars-xx"`, `"a:b"`, `7`} {
		e := u.errOf(create(10+i, `"com.docker.network.endpoint.ifname":`+bad))
		for _, w := range []string{netconfig.OptIfName, netconfig.ShortID(epID(10 + i))} {
			if !strings.Contains(e, w) {
				t.Errorf("ifname %s: error %q does not say %q", bad, e, w)
			}
		}
		if _, ok, _ := u.st.GetEndpoint(netID, epID(10+i)); ok {
			t.Errorf("ifname %s: the endpoint was stored", bad)
		}
	}
	// The name is kept across a restart of the plugin (it is in the endpoint's record).
	ep, ok, err := u.st.GetEndpoint(netID, epID(1))
	if err != nil || !ok || ep.DstName != "data0" {
		t.Errorf("record of endpoint 1: %+v %v %v", ep, ok, err)
	}
}

// ProgramExternalConnectivity and RevokeExternalConnectivity are no-ops whenever and however often the
// engine calls them (the current engine: only when the endpoint becomes or stops being the gateway).
func TestUnitEngineExternalConnectivity(t *testing.T) {
	u := newUnit(t)
	ns := u.createNetwork(netID)
	if err := u.join(netID, 1, "/var/run/docker/netns/c1"); err != nil {
		t.Fatal(err)
	}
	before, _, _ := u.st.GetEndpoint(netID, epID(1))
	dpCalls := fmt.Sprint(u.dp.calls)
	published := u.ctl.publishedString()
	ep := fmt.Sprintf(`"NetworkID":%q,"EndpointID":%q`, netID, epID(1))
	for _, c := range []struct{ method, body string }{
		{"ProgramExternalConnectivity", `{` + ep + `,"Options":{"com.docker.network.portmap":[],"com.docker.network.driver.private.no_proxy_6to4":true}}`},
		{"RevokeExternalConnectivity", `{` + ep + `}`},
		{"ProgramExternalConnectivity", `{` + ep + `,"Options":null}`},
		{"RevokeExternalConnectivity", `{"NetworkID":"unknown00000","EndpointID":"unknown00000"}`},
	} {
		if e := u.errOf(u.post(c.method, c.body)); e != "" {
			t.Errorf("%s: %s", c.method, e)
		}
	}
	after, _, _ := u.st.GetEndpoint(netID, epID(1))
	if !reflect.DeepEqual(before, after) || fmt.Sprint(u.dp.calls) != dpCalls || u.ctl.publishedString() != published {
		t.Errorf("external connectivity calls changed state: record %+v -> %+v, data plane %s -> %v", before, after, dpCalls, u.dp.calls)
	}
	if _, ok := ns.joined[epID(1)]; !ok {
		t.Error("endpoint no longer joined")
	}
	// Leave and DeleteEndpoint need neither call.
	if err := u.drv.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: epID(1)}); err != nil {
		t.Fatal(err)
	}
	if err := u.drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID(1)}); err != nil {
		t.Fatal(err)
	}
}

// The Host header of the engine's plugin client: "plugin.moby.localhost" on the current engine
// (pkg/plugins/client.go newTransport, dummyHost); on 20.10 the URL's host is the socket path
// (pkg/plugins/transport/http.go), which Go's client never sends as is: Go before 1.20.6 cut it at the
// first '/', Go since 1.20.7 sends an empty Host for an invalid one (golang/go#61431) — both an empty
// Host. (Go's server would answer 400 to the raw path.) The server accepts each, over a unix socket.
func TestUnitEngineHostHeader(t *testing.T) {
	u := newUnit(t)
	dir, err := os.MkdirTemp("", "vxs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "vxsafe.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go Serve(l, Handler(u.drv, logrus.NewEntry(logrus.New()), nil), nil)
	t.Cleanup(func() { l.Close() })
	for _, host := range []string{"plugin.moby.localhost", "", "localhost"} {
		for _, path := range []string{"/Plugin.Activate", "/NetworkDriver.GetCapabilities"} {
			c, err := net.DialTimeout("unix", sock, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n"+
				"Content-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", path, host)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("Host %q, %s: %v", host, path, err)
			}
			var v map[string]any
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			c.Close()
			if resp.StatusCode != http.StatusOK || err != nil || len(v) == 0 {
				t.Errorf("Host %q, %s: %s, %v %v", host, path, resp.Status, v, err)
			}
		}
	}
	// 20.10's transport as it builds the request (pkg/plugins/transport/http.go: URL.Host = the
	// socket path), sent by Go's own client.
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Dial: func(string, string) (net.Conn, error) { return net.Dial("unix", sock) }}}
	req, err := http.NewRequest(http.MethodPost, "/NetworkDriver.GetCapabilities", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host = "http", sock
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("20.10-style request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("20.10-style request: %s", resp.Status)
	}
}

// publishedString is what the fake control plane publishes, printed.
func (f *fakeControl) publishedString() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprint(f.published)
}
