package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/e2e/stale"
)

// TestOverlayBaseline checks Docker's own overlay driver across two nodes of
// the harness, then reproduces the stale-VXLAN failure vxsafe/overlay is
// about: a leftover vx-<vni>-<net> device on a worker makes every
// `docker run --network` of that network fail there.
func TestOverlayBaseline(t *testing.T) {
	c := startCluster(t, cluster.Options{Nodes: 2})
	ctx := ctxT(t, 4*time.Minute)
	n1, n2 := c.Node(1), c.Node(2)
	// dockerd 20.10 rejects one-character container names ("a"): use "alpha".
	img := c.Image()

	if _, err := n1.Docker(ctx, "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.1.0/24", "ovl"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := n1.Docker(ctx, "run", "-d", "--name", "alpha", "--network", "ovl", img, "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING container alpha on n1 running after %.1fs", time.Since(began).Seconds())

	began = time.Now()
	out, err := n2.Docker(ctx, "run", "--rm", "--network", "ovl", img, "ping", "-c", "2", "-W", "5", "alpha")
	if err != nil {
		t.Fatalf("ping alpha from n2 over Docker's overlay: %v\n%s", err, out)
	}
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("ping alpha from n2: want 0%% packet loss, got:\n%s", out)
	}
	t.Logf("TIMING n2 -> alpha ping over overlay ok in %.1fs:\n%s", time.Since(began).Seconds(), out)

	// The seed's failure. With no container of ovl left on n2, plant the
	// device Docker would create for ovl there. Docker removes its own device
	// (and with it the VNI) shortly after the last container left, so retry
	// while the kernel still says the name or VNI is taken.
	var name string
	var vni uint32
	began = time.Now()
	for {
		name, vni, err = stale.PlantDockerVXLAN(ctx, n1, n2, "ovl")
		if err == nil {
			break
		}
		if time.Since(began) > 30*time.Second || !strings.Contains(err.Error(), "exists") {
			t.Fatalf("plant stale vxlan on n2: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("planted DOWN %s (vni %d) on n2 after %.1fs", name, vni, time.Since(began).Seconds())

	began = time.Now()
	runCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	out, err = n2.Docker(runCtx, "run", "--rm", "--network", "ovl", img, "true")
	cancel()
	took := time.Since(began)
	if err == nil {
		t.Fatalf("docker run --network ovl on n2 succeeded despite stale %s:\n%s", name, out)
	}
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		t.Fatalf("docker run on n2 still hanging after %s: %v", took, err)
	}
	t.Logf("TIMING docker run on n2 failed after %.1fs: %v", took.Seconds(), err)
	const want = "error creating vxlan interface: file exists"
	if !waitFor(5*time.Second, func() bool { return strings.Contains(n2.Log(), want) }) {
		t.Fatalf("n2 dockerd log lacks %q", want)
	}
	for _, line := range strings.Split(n2.Log(), "\n") {
		if strings.Contains(line, want) {
			t.Logf("n2 dockerd: %s", line)
			break
		}
	}

	// Removing the stale device by hand is what fixes it for Docker's driver.
	if err := n2.RemoveLink(name); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	out, err = n2.Docker(ctx, "run", "--rm", "--network", "ovl", img, "ping", "-c", "1", "-W", "5", "alpha")
	if err != nil {
		t.Fatalf("after removing %s, ping alpha from n2: %v\n%s", name, err, out)
	}
	t.Logf("TIMING after removing %s by hand, n2 -> alpha works again (%.1fs)", name, time.Since(began).Seconds())
}

// waitFor polls cond every 100ms until it holds or limit passes.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
