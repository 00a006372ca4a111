package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
)

const probeConfig = `{
  "description": "vxsafe e2e harness probe plugin",
  "documentation": "https://github.com/vxsafe/overlay",
  "entrypoint": ["/probe"],
  "interface": {"types": ["docker.networkdriver/1.0"], "socket": "probe.sock"},
  "network": {"type": "host"},
  "linux": {"capabilities": ["CAP_NET_ADMIN"]},
  "mounts": [
    {"name": "state", "description": "state", "source": "/var/lib/vxsafe", "destination": "/state",
     "type": "bind", "options": ["rbind"], "settable": ["source"]},
    {"name": "docker-socket", "description": "docker API", "source": "/var/run/docker.sock", "destination": "/run/docker.sock",
     "type": "bind", "options": ["rbind", "ro"], "settable": ["source"]}
  ],
  "env": [
    {"name": "LOG_LEVEL", "description": "log level", "settable": ["value"], "value": "info"},
    {"name": "NODE", "description": "node name", "settable": ["value"], "value": ""}
  ]
}
`

// buildProbeBundle writes a plugin bundle (config.json + rootfs/) with the
// probe plugin from ./internal/probeplugin into a test temp dir.
func buildProbeBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"run/docker/plugins", "state", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"etc/hosts", "etc/resolv.conf", "etc/hostname", "run/docker.sock"} {
		if err := os.WriteFile(filepath.Join(rootfs, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(probeConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(rootfs, "probe"), "./internal/probeplugin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe plugin: %v\n%s", err, out)
	}
	return dir
}

type probeReport struct {
	LogLevel   string   `json:"log_level"`
	Node       string   `json:"node"`
	Addrs      []string `json:"addrs"`
	DockerName string   `json:"docker_name"`
	DockerErr  string   `json:"docker_err"`
}

// TestInstallPlugin installs a probe managed plugin on every node and checks
// what InstallPlugin promises: enabled everywhere, env set (with per-node
// expansion), "state" bound to the node's state dir, "docker-socket" bound
// to the node's own daemon, running in the node's network namespace.
func TestInstallPlugin(t *testing.T) {
	requireCluster(t)
	began := time.Now()
	bundle := buildProbeBundle(t)
	t.Logf("TIMING probe bundle built in %.1fs", time.Since(began).Seconds())
	c := startCluster(t, cluster.Options{Nodes: 2})
	ctx := ctxT(t, 2*time.Minute)
	const name = "vxe2e/probe:latest"

	began = time.Now()
	if err := c.InstallPlugin(ctx, bundle, name, map[string]string{"LOG_LEVEL": "debug", "NODE": "{node}"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING plugin installed and enabled on %d nodes in %.1fs", len(c.Nodes()), time.Since(began).Seconds())

	for _, n := range c.Nodes() {
		enabled, err := n.Docker(ctx, "plugin", "inspect", "--format", "{{.Enabled}}", name)
		if err != nil {
			t.Fatal(err)
		}
		if enabled != "true" {
			t.Errorf("node %s: plugin enabled = %q", n.Name, enabled)
		}
		id, err := n.PluginID(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(cluster.PluginSocketPath(id, "probe.sock")); err != nil {
			t.Errorf("node %s: plugin socket: %v", n.Name, err)
		}
		var r probeReport
		path := filepath.Join(n.StateDir(), "probe.json")
		if !waitFor(20*time.Second, func() bool {
			b, err := os.ReadFile(path)
			return err == nil && json.Unmarshal(b, &r) == nil
		}) {
			t.Fatalf("node %s: no %s from the probe; log tail:\n%s", n.Name, path, n.LogTail(20))
		}
		t.Logf("node %s: probe report %+v", n.Name, r)
		if r.LogLevel != "debug" || r.Node != n.Name {
			t.Errorf("node %s: plugin env LOG_LEVEL=%q NODE=%q, want debug and %s", n.Name, r.LogLevel, r.Node, n.Name)
		}
		if !contains(r.Addrs, n.Addr+"/24") {
			t.Errorf("node %s: plugin sees addresses %v, want %s/24 (node namespace)", n.Name, r.Addrs, n.Addr)
		}
		if r.DockerName != n.Hostname {
			t.Errorf("node %s: plugin's docker-socket reaches daemon %q (%s), want %q", n.Name, r.DockerName, r.DockerErr, n.Hostname)
		}
		if !strings.Contains(n.Log(), "probe plugin listening") {
			t.Errorf("node %s: plugin output not in dockerd log", n.Name)
		}
	}

	if err := c.RemovePlugin(ctx, name); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes() {
		if out, err := n.Docker(ctx, "plugin", "ls", "-q"); err != nil || out != "" {
			t.Errorf("node %s: plugins after RemovePlugin: %q %v", n.Name, out, err)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
