package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
)

// TestEngineDifferences checks, on the engine under test, the remote-driver changes between 20.10 and
// the current engine that vxsafe handles (docs/engines.md): the endpoint option
// com.docker.network.endpoint.ifname (the current engine names the container's interface after it;
// 20.10 ignores it, and a name the kernel would refuse is refused on both, naming the option), and a
// network with no IPv4 subnet, which vxsafe refuses at allocation, naming the network.
func TestEngineDifferences(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxg", Nodes: 1, NoSwarm: true})
	installVxsafe(t, c, nil)
	if err := c.FormSwarm(ctxT(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	m := c.Manager()
	img := c.Image()
	current := cluster.EngineName() != "debian"
	docker(t, m, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.90.0/24", "eng-a")
	docker(t, m, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.91.0/24", "eng-b")

	t.Run("endpoint ifname", func(t *testing.T) {
		docker(t, m, "create", "--name", "eng-p1", "--network", "eng-a", img, "ip", "-o", "link")
		defer m.Docker(ctxT(t, time.Minute), "rm", "-f", "eng-p1")
		docker(t, m, "network", "connect", "--driver-opt", "com.docker.network.endpoint.ifname=data0", "eng-b", "eng-p1")
		out := docker(t, m, "start", "-a", "eng-p1")
		hasData0 := strings.Contains(out, ": data0@") || strings.Contains(out, ": data0:")
		switch {
		case current && !hasData0:
			t.Fatalf("current engine: no interface data0 in the container:\n%s", out)
		case !current && hasData0:
			t.Fatalf("20.10 named the interface data0, which its remote driver was thought to ignore:\n%s", out)
		}
		t.Logf("engine %s, ifname=data0 on eng-b: container links\n%s", cluster.EngineName(), out)
	})
	t.Run("invalid ifname refused", func(t *testing.T) {
		docker(t, m, "create", "--name", "eng-p2", "--network", "eng-a", img, "true")
		defer m.Docker(ctxT(t, time.Minute), "rm", "-f", "eng-p2")
		_, err := m.Docker(ctxT(t, time.Minute), "network", "connect", "--driver-opt", "com.docker.network.endpoint.ifname=a/b", "eng-b", "eng-p2")
		if err == nil {
			_, err = m.Docker(ctxT(t, time.Minute), "start", "eng-p2")
		}
		if err == nil || !strings.Contains(err.Error(), "com.docker.network.endpoint.ifname") {
			t.Fatalf("ifname a/b: want an error naming the option, got %v", err)
		}
		t.Logf("ifname a/b refused: %s", lastLine(err.Error()))
	})
	t.Run("no IPv4 subnet", func(t *testing.T) {
		offset := len(m.Log())
		out, err := m.Docker(ctxT(t, time.Minute), "network", "create", "-d", pluginName, "--attachable", "--ipv6", "--subnet", "fd00:9::/64", "eng-v6")
		if err == nil {
			defer m.Docker(ctxT(t, time.Minute), "network", "rm", "eng-v6")
			// The swarm allocates asynchronously: the manager's log has vxsafe's refusal.
			poll(t, 20*time.Second, "the manager logs vxsafe's refusal of an IPv6-only network", func() error {
				if logLine(m.Log()[offset:], "has no IPv4 subnet") == "" {
					return errString("no refusal in the log yet")
				}
				return nil
			})
			t.Logf("network create answered %q; the manager logged: %s", out, strings.TrimSpace(logLine(m.Log()[offset:], "has no IPv4 subnet")))
			return
		}
		if !strings.Contains(err.Error(), "has no IPv4 subnet") {
			t.Fatalf("IPv6-only network: %v", err)
		}
		t.Logf("IPv6-only network refused: %s", lastLine(err.Error()))
	})
	removeSwarmNetwork(t, m, "eng-a")
	removeSwarmNetwork(t, m, "eng-b")
}

type errString string

func (e errString) Error() string { return string(e) }
