package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/e2e/vxsafe"
)

// makeTarget runs `make TARGET` in the checkout against node n's engine, as an operator on that host
// would (DOCKER_HOST is the node's socket; DOCKER the harness's CLI).
func makeTarget(t *testing.T, n *cluster.Node, target string, env ...string) string {
	t.Helper()
	root, err := vxsafe.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "-C", root, target)
	cmd.Env = append(append(n.CommandEnv(), "PATH=/usr/local/go/bin:"+os.Getenv("PATH")), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: make %s: %v\n%s\nlog tail:\n%s", n.Name, target, err, out, n.LogTail(15))
	}
	return string(out)
}

// TestFreshHostDefaultInstall installs vxsafe on hosts that look like new machines (Options.FreshHost:
// /var/lib without vxsafe/, a /run of their own) exactly as the README says, with `make plugin` and no
// setting at all. n1's engine listens on /var/run/docker.sock, n2's only elsewhere: both plugins must
// enable. Then the state must outlive disable/enable, `make upgrade` and `plugin rm` + reinstall: the
// network stays known, and containers keep starting on it. Then a stack with a vxsafe network.
func TestFreshHostDefaultInstall(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxf", Nodes: 2, FreshHost: true, NoSwarm: true})
	n1, n2 := c.Node(1), c.Node(2)
	for _, n := range c.Nodes() {
		if _, err := os.Stat(filepath.Join(n.FreshVarLib(), "vxsafe")); !os.IsNotExist(err) {
			t.Fatalf("node %s: /var/lib/vxsafe exists before the install (%v): not a fresh host", n.Name, err)
		}
	}
	// The README's install on a real Docker host, node by node, before the node joins the swarm (the
	// swarm then knows the plugin at once).
	for _, n := range c.Nodes() {
		out := makeTarget(t, n, "plugin")
		t.Logf("%s$ make plugin\n%s", n.Name, strings.TrimSpace(out))
		mounts := docker(t, n, "plugin", "inspect", "-f", `{{range .Settings.Mounts}}{{.Name}}={{.Source}} {{end}}`, pluginName)
		if mounts != "state=/var/lib docker-socket=/var/run" {
			t.Fatalf("node %s: plugin mounts %q, want the defaults", n.Name, mounts)
		}
	}
	if err := c.FormSwarm(ctxT(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	db := func(n *cluster.Node) string { return filepath.Join(n.FreshVarLib(), "vxsafe", "vxsafe.db") }
	for _, n := range c.Nodes() {
		st, err := os.Stat(filepath.Dir(db(n)))
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("node %s: state directory /var/lib/vxsafe: %v %v", n.Name, st, err)
		}
		if st, err := os.Stat(db(n)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("node %s: state database /var/lib/vxsafe/vxsafe.db: %v %v", n.Name, st, err)
		}
	}
	for _, n := range c.Nodes() {
		if logLine(pluginLogSince(n, 0), "vxsafe starting", "docker_socket=/host/run/docker.sock", "state=/host/var/lib/vxsafe") == "" {
			t.Errorf("node %s: no start line with the default state and socket paths in the plugin log", n.Name)
		}
	}
	if _, err := n2.Exec(ctxT(t, 10*time.Second), "nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", n2.Pid), "test", "-S", cluster.DefaultDockerSocket); err == nil {
		t.Fatalf("node %s: its engine listens on %s: the test wants one that listens elsewhere", n2.Name, cluster.DefaultDockerSocket)
	}

	img := c.Image()
	docker(t, n1, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.70.0/24", "fresh")
	docker(t, n1, "run", "-d", "--name", "fresh-c1", "--stop-timeout", "1", "--network", "fresh", img, "sleep", "86400")
	docker(t, n2, "run", "-d", "--name", "fresh-c2", "--stop-timeout", "1", "--network", "fresh", img, "sleep", "86400")
	poll(t, 30*time.Second, "fresh-c2 pings fresh-c1 by name across hosts", func() error { return pingOnce(n2, "fresh-c2", "fresh-c1") })
	netID, vni := networkVNI(t, n1, "fresh")

	// After each way of replacing n2's plugin process, a new container on n2 reaches n1's, and the
	// network's device is the same VNI: the plugin found its state again.
	runOnN2 := func(t *testing.T, step string) {
		t.Helper()
		out, err := n2.Docker(ctxT(t, time.Minute), "run", "--rm", "--network", "fresh", img, "ping", "-c", "1", "-w", "10", "fresh-c1")
		if err != nil || !strings.Contains(out, "1 packets received") {
			t.Fatalf("after %s: ping from a new container on n2: %v\n%s\nplugin log:\n%s", step, err, out, pluginLogSince(n2, 0))
		}
		if !hasLink(n2, vxName(vni, netID)) {
			t.Fatalf("after %s: n2 has no device %s", step, vxName(vni, netID))
		}
		if err := pingOnce(n2, "fresh-c2", "fresh-c1"); err != nil {
			t.Fatalf("after %s: the running container lost its path: %v", step, err)
		}
		t.Logf("after %s: a new container on n2 reached fresh-c1, the running one too", step)
	}
	t.Run("disable and enable", func(t *testing.T) {
		docker(t, n2, "plugin", "disable", "-f", pluginName)
		docker(t, n2, "plugin", "enable", pluginName)
		runOnN2(t, "disable -f and enable")
	})
	t.Run("make upgrade", func(t *testing.T) {
		out := makeTarget(t, n2, "upgrade")
		t.Logf("n2$ make upgrade\n%s", strings.TrimSpace(out))
		runOnN2(t, "make upgrade")
	})
	t.Run("plugin rm and reinstall", func(t *testing.T) {
		docker(t, n2, "plugin", "disable", "-f", pluginName)
		docker(t, n2, "plugin", "rm", "-f", pluginName)
		makeTarget(t, n2, "plugin")
		runOnN2(t, "plugin rm -f and make plugin")
	})
	t.Run("stack", func(t *testing.T) { testStack(t, c) })
	docker(t, n1, "rm", "-f", "fresh-c1")
	docker(t, n2, "rm", "-f", "fresh-c2")
	removeSwarmNetwork(t, n1, "fresh")
}
