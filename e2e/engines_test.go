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

	// A running container on eng-a keeps the network attached on the node; eng-b is connected to it
	// with the endpoint option, as `docker network connect --driver-opt` does on both engines.
	docker(t, m, "run", "-d", "--name", "eng-p1", "--stop-timeout", "1", "--network", "eng-a", img, "sleep", "86400")
	t.Run("endpoint ifname", func(t *testing.T) {
		docker(t, m, "network", "connect", "--driver-opt", "com.docker.network.endpoint.ifname=data0", "eng-b", "eng-p1")
		defer docker(t, m, "network", "disconnect", "eng-b", "eng-p1")
		out := docker(t, m, "exec", "eng-p1", "ip", "-o", "link")
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
		_, err := m.Docker(ctxT(t, time.Minute), "network", "connect", "--driver-opt", "com.docker.network.endpoint.ifname=a/b", "eng-b", "eng-p1")
		if err == nil {
			m.Docker(ctxT(t, time.Minute), "network", "disconnect", "eng-b", "eng-p1")
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
			// The swarm allocates asynchronously. Both engines' allocators refuse an IPv6-only pool
			// themselves before asking the driver ("cannot find address pool for poolID:fd00:9::/64/invalid
			// Prefix"); vxsafe's own refusal ("has no IPv4 subnet") covers an engine that would ask it.
			// 20.10's allocator gives such a network a default IPv4 subnet too, and vxsafe allocates it;
			// each node's CreateNetwork then refuses its --ipv6 (TestIPv6).
			var line, subnets string
			poll(t, 20*time.Second, "the manager refuses an IPv6-only network or gives it an IPv4 subnet", func() error {
				log := m.Log()[offset:]
				if line = logLine(log, "has no IPv4 subnet"); line == "" {
					line = logLine(log, "Failed allocation for network")
				}
				if line != "" {
					return nil
				}
				// vxsafe refuses an AllocateNetwork without an IPv4 pool: its "allocated VNI" line means the
				// swarm sent one.
				if subnets = logLine(log, "allocated VNI"); subnets != "" {
					return nil
				}
				return errString("neither refused nor allocated yet")
			})
			if line != "" {
				t.Logf("engine %s: network create answered %q and the network was never allocated; the manager logged: %s", cluster.EngineName(), out, strings.TrimSpace(line))
			} else {
				t.Logf("engine %s: the swarm gave the IPv6-only network an IPv4 pool too, and vxsafe allocated it: %s", cluster.EngineName(), strings.TrimSpace(subnets))
			}
			return
		}
		if !strings.Contains(err.Error(), "has no IPv4 subnet") {
			t.Fatalf("IPv6-only network: %v", err)
		}
		t.Logf("IPv6-only network refused: %s", lastLine(err.Error()))
	})
	docker(t, m, "rm", "-f", "eng-p1")
	removeSwarmNetwork(t, m, "eng-a")
	removeSwarmNetwork(t, m, "eng-b")
}

type errString string

func (e errString) Error() string { return string(e) }
