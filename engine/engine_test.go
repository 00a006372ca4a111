package engine

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// daemon serves h on a unix socket, as dockerd does, and returns the socket's path.
func daemon(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestNewAddresses(t *testing.T) {
	for host, base := range map[string]string{
		"unix:///var/run/docker.sock": "http://docker",
		"tcp://127.0.0.1:2375":        "http://127.0.0.1:2375",
		"http://10.0.0.1:2375":        "http://10.0.0.1:2375",
	} {
		c, err := New(host, time.Second)
		if err != nil || c.base != base || c.Host() != host || c.TCP() != !strings.HasPrefix(host, "unix") {
			t.Errorf("New(%q) = %+v, %v", host, c, err)
		}
	}
	for host, want := range map[string]string{
		"ssh://h":    `scheme "ssh" not supported`,
		"unix://":    "no socket path",
		"%zz://oops": "docker host",
	} {
		if _, err := New(host, time.Second); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q): error %v, want one saying %q", host, err, want)
		}
	}
}

func TestNetworksInfoAndManagers(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/networks", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[{"Name":"web","Id":"abc","Driver":"vxsafe/overlay:latest","Options":{"k":"v"}}]`))
	})
	mux.HandleFunc("/networks/abc", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"Name":"web","Id":"abc","Containers":{"c1":{},"c2":{}}}`))
	})
	mux.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"Swarm":{"Cluster":{"DataPathPort":4790},"RemoteManagers":[{"Addr":"10.0.0.1:2377"},{"Addr":"bad"},{"Addr":"10.0.0.2:2377"}]}}`))
	})
	c, err := New("unix://"+daemon(t, mux), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nets, err := c.Networks()
	if err != nil || len(nets) != 1 || nets[0].ID != "abc" || nets[0].Driver != "vxsafe/overlay:latest" || nets[0].Options["k"] != "v" {
		t.Fatalf("Networks() = %+v, %v", nets, err)
	}
	n, err := c.Network("abc")
	if err != nil || len(n.Containers) != 2 {
		t.Fatalf("Network(abc) = %+v, %v", n, err)
	}
	info, err := c.Info()
	if err != nil || info.Swarm.Cluster == nil || info.Swarm.Cluster.DataPathPort != 4790 {
		t.Fatalf("Info() = %+v, %v", info, err)
	}
	m, err := c.SwarmManagers()
	if err != nil || strings.Join(m, ",") != "10.0.0.1,10.0.0.2" {
		t.Fatalf("SwarmManagers() = %q, %v", m, err)
	}
}

func TestErrorsNameTheDaemon(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/networks/gone", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"message":"network gone not found"}`, http.StatusNotFound)
	})
	mux.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{not json`)) })
	mux.HandleFunc("/networks", func(w http.ResponseWriter, r *http.Request) { time.Sleep(time.Second) })
	sock := daemon(t, mux)
	c, err := New("unix://"+sock, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	host := "unix://" + sock
	if _, err := c.Network("gone"); err == nil || !strings.Contains(err.Error(), "GET /networks/gone from "+host+": 404 Not Found") {
		t.Errorf("a 404: %v", err)
	}
	if _, err := c.Info(); err == nil || !strings.Contains(err.Error(), "GET /info from "+host+": decoding the answer") {
		t.Errorf("bad JSON: %v", err)
	}
	if _, err := c.Networks(); err == nil || !strings.Contains(err.Error(), "GET /networks from "+host) || strings.Contains(err.Error(), "http://docker") {
		t.Errorf("a hung daemon: %v", err)
	}
	none, _ := New("unix://"+filepath.Join(t.TempDir(), "none.sock"), time.Second)
	if _, err := none.Info(); err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("no daemon: %v", err)
	}
}

func TestNetworkServices(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/networks/n1", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("verbose") != "true" {
			http.Error(w, "want verbose", http.StatusBadRequest)
			return
		}
		// As 20.10 and the current engine answer it (tasks of other nodes included; Info names the node).
		w.Write([]byte(`{"Name":"app","Id":"n1","Services":{
			"web":{"VIP":"10.0.1.2","Ports":[],"LocalLBIndex":0,"Tasks":[
				{"Name":"web.2.x","EndpointID":"e2","EndpointIP":"10.0.1.5","Info":{"Host IP":"192.168.9.2"}},
				{"Name":"web.1.x","EndpointID":"e1","EndpointIP":"10.0.1.3/24","Info":{"Host IP":"192.168.9.1"}},
				{"Name":"web.1.x","EndpointID":"e1","EndpointIP":"10.0.1.3","Info":{}}]},
			"db":{"VIP":"","Tasks":[{"Name":"db.1.x","EndpointIP":"10.0.1.9"},{"Name":"bad","EndpointIP":"nope"}]},
			"":{"VIP":"10.0.1.254","Tasks":[]}}}`))
	})
	c, err := New("unix://"+daemon(t, mux), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := c.NetworkServices("n1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range svcs {
		got = append(got, fmt.Sprintf("%s vip=%v backends=%v", s.Name, s.VIP, s.Backends))
	}
	want := []string{"db vip=<nil> backends=[10.0.1.9]", "web vip=10.0.1.2 backends=[10.0.1.3 10.0.1.5]"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("NetworkServices = %q, want %q", got, want)
	}
	if _, err := c.NetworkServices("missing"); err == nil || !strings.Contains(err.Error(), "/networks/missing?verbose=true") {
		t.Errorf("NetworkServices(missing): error %v, want one naming the path", err)
	}
}
