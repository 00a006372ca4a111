package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
)

const reapPrefix = "vxe2erp"

// TestReapStale kills a process that owns a running cluster (as `go test
// -timeout` does: no cleanup runs) and checks that ReapStale removes what it
// left: processes (containers survive their daemon), mounts, namespaces,
// cgroups, directories.
func TestReapStale(t *testing.T) {
	if os.Getenv("VXE2E_CRASH_OWNER") == "1" {
		crashOwner()
		return
	}
	requireCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestReapStale$", "-test.v")
	cmd.Env = append(os.Environ(), "VXE2E_CRASH_OWNER=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var name string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "CLUSTER" {
			name = f[1]
			break
		}
	}
	if name == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("owner process did not start a cluster")
	}
	began := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	var left []string
	waitFor(5*time.Second, func() bool {
		left = cluster.Leftovers(name)
		return len(left) > 0
	})
	if len(left) == 0 {
		t.Fatalf("nothing left of %s after its owner was killed: the test cannot see leftovers", name)
	}
	t.Logf("left by the killed owner of %s: %s", name, strings.Join(left, "; "))
	if err := cluster.ReapStale(reapPrefix, tlog{t}); err != nil {
		t.Fatal(err)
	}
	if left := cluster.Leftovers(name); len(left) > 0 {
		t.Fatalf("after ReapStale: %s", strings.Join(left, "; "))
	}
	t.Logf("TIMING stale cluster %s reaped %.1fs after its owner was killed", name, time.Since(began).Seconds())
}

// crashOwner runs in the child: a one-node cluster with a container, then
// waits to be killed.
func crashOwner() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Prefix: reapPrefix, Nodes: 1, NoSwarm: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash owner:", err)
		os.Exit(1)
	}
	if _, err := c.Node(1).Docker(ctx, "run", "-d", "--network", "none", c.Image(), "sleep", "600"); err != nil {
		fmt.Fprintln(os.Stderr, "crash owner:", err)
		c.Close()
		os.Exit(1)
	}
	fmt.Println("CLUSTER", c.Name())
	time.Sleep(time.Minute)
	c.Close()
	os.Exit(1)
}
