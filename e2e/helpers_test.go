package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
)

// requireCluster skips (or, with CI=true, fails) when the harness cannot run.
func requireCluster(t *testing.T) {
	t.Helper()
	if err := cluster.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// tlog forwards the harness's progress lines to t.Log.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startCluster starts a cluster and registers its Close (and a leftover
// check) with t.Cleanup. VXE2E_KEEP=1 keeps the cluster dir of a failed test.
func startCluster(t *testing.T, opts cluster.Options) *cluster.Cluster {
	t.Helper()
	requireCluster(t)
	if opts.Log == nil {
		opts.Log = tlog{t}
	}
	opts.KeepOnFailure = os.Getenv("VXE2E_KEEP") != ""
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Logf("TIMING cluster %s: %d nodes up, swarm formed, image imported in %.1fs", c.Name(), len(c.Nodes()), time.Since(began).Seconds())
	t.Cleanup(func() {
		if t.Failed() {
			c.MarkFailed()
			for _, n := range c.Nodes() {
				t.Logf("node %s dockerd log tail:\n%s", n.Name, n.LogTail(30))
			}
		}
		began := time.Now()
		if err := c.Close(); err != nil {
			t.Errorf("close cluster %s: %v", c.Name(), err)
		}
		t.Logf("TIMING cluster %s closed in %.1fs", c.Name(), time.Since(began).Seconds())
		if left := c.Leftovers(); len(left) > 0 {
			t.Errorf("cluster %s left behind: %s", c.Name(), strings.Join(left, "; "))
		}
	})
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// stateDB is the plugin's state database on node n: the harness points the "state" mount at the node's
// StateDir, and the plugin keeps its state in vxsafe/ inside the mounted directory (/var/lib/vxsafe on a
// host with the defaults).
func stateDB(n *cluster.Node) string { return filepath.Join(n.StateDir(), "vxsafe", "vxsafe.db") }
