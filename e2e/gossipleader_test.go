package e2e

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/gossip"
)

// TestGossipKeyLeaderChange: three managers; the leader that allocated a network stops, another is
// elected and allocates every network again. The network keeps its key: a node that creates the network
// under the new leader gets the same key and reaches a container of a node that had it before.
func TestGossipKeyLeaderChange(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxkl", Nodes: 3, Managers: 3})
	installVxsafe(t, c, nil)
	nodes := c.Nodes()
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	img := c.Image()
	docker(t, n1, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.8.0/24", "gl")
	docker(t, n2, "run", "-d", "--name", "c2", "--network", "gl", img, "sleep", "3600")
	keyOn := func(n *cluster.Node) string {
		var opts map[string]string
		if err := json.Unmarshal([]byte(docker(t, n, "network", "inspect", "-f", "{{json .Options}}", "gl")), &opts); err != nil {
			t.Fatal(err)
		}
		return opts["vxsafe.key"]
	}
	key := keyOn(n2)
	if len(key) != 64 {
		t.Fatalf("network gl has no key on n2: %q", key)
	}
	// The leader goes; n2 and n3 elect a new one, whose allocator allocates gl again.
	offset := map[string]int{n2.Name: len(n2.Log()), n3.Name: len(n3.Log())}
	if err := n1.StopDaemon(ctxT(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	var leader *cluster.Node
	poll(t, 60*time.Second, "a new swarm leader", func() error {
		for _, n := range []*cluster.Node{n2, n3} {
			out, err := n.Docker(ctxT(t, 30*time.Second), "node", "inspect", "self", "-f", "{{.ManagerStatus.Leader}}")
			if err == nil && strings.TrimSpace(out) == "true" {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("no leader yet")
	})
	t.Logf("GOSSIP new leader %s", leader.Name)
	raw, err := hex.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	if line := logLine(pluginLogSince(leader, offset[leader.Name]), "allocated VNI"); line != "" {
		t.Logf("GOSSIP the new leader allocated the network again: %s", lastLine(line))
		if !strings.Contains(line, "key="+gossip.KeyID(raw)) {
			t.Errorf("the new leader's allocation returned another key than %s", gossip.KeyID(raw))
		}
	} else {
		t.Logf("GOSSIP the new leader's plugin logged no allocation (yet)")
	}
	// n3 creates the network now, from what the new leader's allocation left in the swarm.
	poll(t, 60*time.Second, "c3 starts on n3", func() error {
		_, err := n3.Docker(ctxT(t, time.Minute), "run", "-d", "--name", "c3", "--network", "gl", img, "sleep", "3600")
		if err != nil {
			n3.Docker(ctxT(t, time.Minute), "rm", "-f", "c3")
		}
		return err
	})
	if got := keyOn(n3); got != key {
		t.Fatalf("n3 created gl under the new leader with key %.12s..., n2 has %.12s...", got, key)
	}
	ip2 := containerIP(t, n2, "c2", "gl")
	took := poll(t, 20*time.Second, "c3 reaches c2", func() error { return pingOnce(n3, "c3", ip2) })
	t.Logf("GOSSIP c3 (n3, network created under the new leader) reaches c2 (n2) after %.1fs; one key on both", took.Seconds())
	docker(t, n2, "rm", "-f", "c2")
	docker(t, n3, "rm", "-f", "c3")
}
