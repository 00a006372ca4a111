package e2e

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
)

// TestClusterLifecycle checks the harness itself: node namespaces and
// underlay, daemon crash and restart (what hardening tests build on), and —
// through startCluster's cleanup — that Close leaves nothing behind.
func TestClusterLifecycle(t *testing.T) {
	c := startCluster(t, cluster.Options{Nodes: 2, WithIperf3: true})
	ctx := ctxT(t, 2*time.Minute)
	n1, n2 := c.Node(1), c.Node(2)

	out, err := n1.Docker(ctx, "run", "--rm", "--network", "none", c.Image(), "iperf3", "--version")
	if err != nil || !strings.Contains(out, "iperf 3") {
		t.Fatalf("iperf3 in the image: %v\n%s", err, out)
	}

	if len(c.Leftovers()) == 0 {
		t.Fatal("Leftovers reports nothing for a running cluster")
	}
	for _, n := range c.Nodes() {
		out, err := n.Exec(ctx, "hostname")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) != n.Hostname {
			t.Errorf("node %s: hostname %q, want %q", n.Name, strings.TrimSpace(out), n.Hostname)
		}
		names, err := n.LinkNames()
		if err != nil {
			t.Fatal(err)
		}
		if !contains(names, "eth0") || !contains(names, "lo") {
			t.Errorf("node %s: links %v, want lo and eth0", n.Name, names)
		}
	}
	if out, err := n1.Exec(ctx, "busybox", "ping", "-c", "1", "-W", "2", n2.Addr); err != nil {
		t.Fatalf("underlay n1 -> n2: %v\n%s", err, out)
	}
	out, err = n1.Docker(ctx, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("docker node ls:\n%s", out)

	// A container survives a dockerd crash (its shim does), as on a real host.
	// The restarted dockerd (no live-restore) stops it: --stop-timeout 1, or
	// it waits 10 s for sleep, which ignores SIGTERM as PID 1.
	if _, err := n2.Docker(ctx, "run", "-d", "--name", "beta", "--network", "none", "--stop-timeout", "1", c.Image(), "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	pidStr, err := n2.Docker(ctx, "inspect", "--format", "{{.State.Pid}}", "beta")
	if err != nil {
		t.Fatal(err)
	}
	ctrPid, err := strconv.Atoi(pidStr)
	if err != nil || ctrPid <= 0 {
		t.Fatalf("container pid %q: %v", pidStr, err)
	}
	oldPid := n2.Pid
	began := time.Now()
	if err := n2.KillDaemon(); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING n2 dockerd killed in %.2fs", time.Since(began).Seconds())
	if n2.Running() || syscall.Kill(oldPid, 0) == nil {
		t.Fatalf("n2 dockerd %d still running after KillDaemon", oldPid)
	}
	if err := syscall.Kill(ctrPid, 0); err != nil {
		t.Fatalf("container process %d died with dockerd: %v", ctrPid, err)
	}
	if _, err := n2.Docker(ctx, "version"); err == nil {
		t.Fatal("n2 docker API answers while dockerd is down")
	}

	began = time.Now()
	if err := n2.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodesReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING n2 dockerd restarted after crash, node Ready again in %.1fs", time.Since(began).Seconds())
	if n2.Pid == oldPid || n2.Pid == 0 {
		t.Errorf("n2 dockerd pid %d after restart (was %d)", n2.Pid, oldPid)
	}
	if st, err := n2.Docker(ctx, "info", "--format", "{{.Swarm.LocalNodeState}}"); err != nil || st != "active" {
		t.Errorf("n2 swarm state after restart: %q %v", st, err)
	}

	began = time.Now()
	if err := n2.RestartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodesReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING n2 graceful RestartDaemon, node Ready again in %.1fs", time.Since(began).Seconds())
}
