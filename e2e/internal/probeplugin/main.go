// Command probeplugin is a throw-away managed Docker plugin for the e2e
// harness's own tests (it exercises cluster.InstallPlugin before the real
// plugin exists). It answers the plugin handshake and the network-driver
// capability call, and writes what it sees into its "state" mount as
// probe.json: its environment, the addresses of the namespace it runs in, and
// the name of the daemon behind its "docker-socket" mount.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

const (
	socketPath = "/run/docker/plugins/probe.sock"
	stateFile  = "/state/probe.json"
	dockerSock = "/run/docker.sock"
)

type report struct {
	LogLevel   string   `json:"log_level"`
	Node       string   `json:"node"`
	Addrs      []string `json:"addrs"`
	DockerName string   `json:"docker_name"`
	DockerErr  string   `json:"docker_err,omitempty"`
}

func dockerName() (string, error) {
	c := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", dockerSock)
		}},
	}
	resp, err := c.Get("http://docker/info")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var info struct{ Name string }
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return "", err
	}
	return info.Name, nil
}

func writeReport() {
	r := report{LogLevel: os.Getenv("LOG_LEVEL"), Node: os.Getenv("NODE")}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			r.Addrs = append(r.Addrs, a.String())
		}
	}
	// dockerd waits for the plugin during enable: ask it only afterwards.
	for i := 0; i < 100; i++ {
		name, err := dockerName()
		if err == nil {
			r.DockerName, r.DockerErr = name, ""
			break
		}
		r.DockerErr = err.Error()
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	tmp := stateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		log.Printf("probe: write report: %v", err)
		return
	}
	if err := os.Rename(tmp, stateFile); err != nil {
		log.Printf("probe: write report: %v", err)
	}
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	json.NewEncoder(w).Encode(v)
}

func main() {
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o755); err != nil {
		log.Fatalf("probe: %v", err)
	}
	os.Remove(socketPath)
	l, err := net.Listen("unix", socketPath)
	if err != nil {
		log.Fatalf("probe: listen %s: %v", socketPath, err)
	}
	fmt.Printf("probe plugin listening on %s, LOG_LEVEL=%s\n", socketPath, os.Getenv("LOG_LEVEL"))
	go writeReport()
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string][]string{"Implements": {"NetworkDriver"}})
	})
	mux.HandleFunc("/NetworkDriver.GetCapabilities", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]string{"Scope": "local", "ConnectivityScope": "local"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		reply(w, map[string]string{})
	})
	log.Fatal(http.Serve(l, mux))
}
