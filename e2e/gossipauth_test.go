package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/store"
	"golang.org/x/sys/unix"
)

// TestGossipAuth: with the defaults (no GOSSIP_KEY), a host on the underlay that is not in the swarm
// joins the gossip port and publishes forged records; the node where the claimed container is remote
// programs none of them, and traffic to the container keeps flowing. Then the network's key rotates
// under a ping every 200 ms, the old key signs nothing any more, and a node that creates the network
// after the rotation gets the new key from a manager.
func TestGossipAuth(t *testing.T) {
	c := startCluster(t, cluster.Options{Prefix: "vxk", Nodes: 3})
	installVxsafe(t, c, nil)
	nodes := c.Nodes()
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	m := c.Manager()
	if m != n1 {
		t.Fatalf("manager is %s, the test expects n1", m.Name)
	}
	outsider, err := c.AddHost("x1", 200)
	if err != nil {
		t.Fatal(err)
	}
	img := c.Image()
	docker(t, m, "network", "create", "-d", pluginName, "--attachable", "--subnet", "10.0.7.0/24", "ga")
	id, vni := networkVNI(t, m, "ga")
	dev := vxName(vni, id)
	docker(t, n1, "run", "-d", "--name", "c1", "--network", "ga", img, "sleep", "3600")
	docker(t, n2, "run", "-d", "--name", "c2", "--network", "ga", img, "sleep", "3600")
	ip2 := containerIP(t, n2, "c2", "ga")
	mac2 := docker(t, n2, "inspect", "-f", `{{(index .NetworkSettings.Networks "ga").MacAddress}}`, "c2")
	var opts map[string]string
	if err := json.Unmarshal([]byte(docker(t, n1, "network", "inspect", "-f", "{{json .Options}}", "ga")), &opts); err != nil {
		t.Fatal(err)
	}
	firstKey := opts["vxsafe.key"]
	if len(firstKey) != 64 || len(opts["vxsafe.key-authority"]) != 64 {
		t.Fatalf("network options carry no key and authority: %v", opts)
	}
	t.Logf("GOSSIP network %s: key and authority in its options, readable with docker network inspect on any node that has it", id[:12])
	ping := startPing(t, n1, "c1", ip2)

	// What the remote node n1 has for c2, and nothing of the forged records.
	const fakeMAC, fakeMAC2 = "02:42:66:66:66:66", "02:42:66:66:66:67"
	const unusedIP = "10.0.7.200"
	checkN1 := func(t *testing.T, what string) {
		t.Helper()
		fdb, err := fdbEntries(n1, dev)
		if err != nil {
			t.Fatal(err)
		}
		for _, mac := range []string{fakeMAC, fakeMAC2} {
			if dst, ok := fdb[mac]; ok {
				t.Errorf("%s: forged FDB entry %s -> %s on n1", what, mac, dst)
			}
		}
		neigh, err := neighbours(n1, dev)
		if err != nil {
			t.Fatal(err)
		}
		if neigh[ip2] != mac2 {
			t.Errorf("%s: n1's neighbour entry for c2 (%s) is %q, want %s", what, ip2, neigh[ip2], mac2)
		}
		if mac, ok := neigh[unusedIP]; ok {
			t.Errorf("%s: n1 has a neighbour entry for the unused %s (%s)", what, unusedIP, mac)
		}
		if fdb[mac2] != n2.Addr {
			t.Errorf("%s: n1's FDB entry for c2's MAC %s is %q, want %s", what, mac2, fdb[mac2], n2.Addr)
		}
		if err := pingOnce(n1, "c1", ip2); err != nil {
			t.Errorf("%s: c1 (n1) -> c2 (n2): %v", what, err)
		}
		t.Logf("GOSSIP %s: n1's FDB on %s: %v; neighbour %s -> %s", what, dev, fdb, ip2, neigh[ip2])
	}
	// refused waits for n1 to log the refusal of a record claiming ip with reason.
	refused := func(t *testing.T, offset int, ip, reason string) {
		t.Helper()
		poll(t, 20*time.Second, "n1 refuses the record for "+ip, func() error {
			if logLine(pluginLogSince(n1, offset), "refusing gossip record", reason, "ip="+ip) == "" {
				return fmt.Errorf("no refusal logged yet")
			}
			return nil
		})
		t.Logf("GOSSIP refusal on n1: %s", lastLine(logLine(pluginLogSince(n1, offset), "refusing gossip record", reason, "ip="+ip)))
	}

	t.Run("outsider without keys", func(t *testing.T) {
		offset := len(n1.Log())
		r := startRogueIn(t, outsider.NetnsPath(), outsider.Addr, rogueSpec{Target: n2.Addr + ":7947", Network: id,
			IP: ip2, MAC: fakeMAC, Extra: [][2]string{{unusedIP, fakeMAC2}}})
		defer r.stop(t)
		if r.joined == 0 {
			t.Fatalf("the outsider did not join the gossip (the attack needs it to): %s", r.line)
		}
		t.Logf("GOSSIP outsider at %s joined through n2: %s", outsider.Addr, r.line)
		refused(t, offset, ip2, "unsigned record for a keyed network")
		refused(t, offset, unusedIP, "unsigned record for a keyed network")
		checkN1(t, "unsigned forged records")
	})

	t.Run("outsider with a key of its own, claiming n2's VTEP", func(t *testing.T) {
		offset := len(n1.Log())
		own := make([]byte, 32)
		rand.Read(own)
		r := startRogueIn(t, outsider.NetnsPath(), outsider.Addr, rogueSpec{Target: n2.Addr + ":7947", Network: id,
			IP: ip2, MAC: fakeMAC, VTEP: n2.Addr, NetKey: hex.EncodeToString(own)})
		defer r.stop(t)
		if r.joined == 0 {
			t.Fatalf("the outsider did not join: %s", r.line)
		}
		refused(t, offset, ip2, "signed with a key this node does not hold")
		checkN1(t, "record signed with a key of the outsider's")
	})

	t.Run("replayed record", func(t *testing.T) {
		r := startRogueIn(t, outsider.NetnsPath(), outsider.Addr, rogueSpec{Target: n2.Addr + ":7947", Network: id})
		defer r.stop(t)
		docker(t, n3, "run", "-d", "--name", "old", "--network", "ga", img, "sleep", "3600")
		epID := docker(t, n3, "inspect", "-f", `{{(index .NetworkSettings.Networks "ga").EndpointID}}`, "old")
		oldMAC := docker(t, n3, "inspect", "-f", `{{(index .NetworkSettings.Networks "ga").MacAddress}}`, "old")
		poll(t, 30*time.Second, "the outsider records old's endpoint", func() error {
			if l := r.command(t, "capture "+epID, "captured"); l != "ROGUE captured=1" {
				return fmt.Errorf("%s", l)
			}
			return nil
		})
		docker(t, n3, "rm", "-f", "old")
		poll(t, 20*time.Second, "old's FDB entry gone from n1", func() error {
			fdb, err := fdbEntries(n1, dev)
			if err != nil {
				return err
			}
			if _, ok := fdb[oldMAC]; ok {
				return fmt.Errorf("still there")
			}
			return nil
		})
		// n3's engine drops the network with its last container; the rotation below then finds n3
		// without it (a rotation that meets a member dropping it meanwhile skips that member).
		poll(t, 30*time.Second, "n3 drops network ga", func() error {
			if out, _ := n3.Docker(context.Background(), "network", "ls", "-q", "--filter", "id="+id); strings.TrimSpace(out) != "" {
				return fmt.Errorf("n3 still has it")
			}
			return nil
		})
		t.Logf("GOSSIP %s", r.command(t, "replay", "replayed"))
		// The genuine, signed record of a removed endpoint, sent again: n1 holds the removal, which is
		// newer. Watch n1 for a while: the entry must not come back.
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			fdb, err := fdbEntries(n1, dev)
			if err != nil {
				t.Fatal(err)
			}
			if dst, ok := fdb[oldMAC]; ok {
				t.Fatalf("the replayed record of the removed endpoint was programmed on n1: %s -> %s", oldMAC, dst)
			}
		}
		checkN1(t, "replayed record of a removed endpoint")
	})

	t.Run("rotation under ping", func(t *testing.T) {
		offset2 := len(n2.Log())
		out := rotateKey(t, m, id)
		t.Logf("ROTATE vxsafe rotate-key on %s:\n    %s", m.Name, strings.ReplaceAll(out, "\n", "\n    "))
		if !strings.Contains(out, "(epoch 3)") {
			t.Fatalf("rotation output: %s", out)
		}
		if l := logLine(pluginLogSince(n2, offset2), "network keys changed by the authority's notice", "epoch=3"); l == "" {
			t.Errorf("n2 logged no change of keys to epoch 3")
		}
		checkN1(t, "after the rotation")
	})

	t.Run("first key after the rotation", func(t *testing.T) {
		offset := len(n1.Log())
		r := startRogueIn(t, outsider.NetnsPath(), outsider.Addr, rogueSpec{Target: n2.Addr + ":7947", Network: id,
			IP: ip2, MAC: fakeMAC, NetKey: firstKey})
		defer r.stop(t)
		refused(t, offset, ip2, "signed with a key this node does not hold")
		checkN1(t, "record signed with the network's first key")
	})

	t.Run("node that creates the network after the rotation", func(t *testing.T) {
		offset1, offset3 := len(n1.Log()), len(n3.Log())
		docker(t, n3, "run", "-d", "--name", "c3", "--network", "ga", img, "sleep", "3600")
		ip3 := containerIP(t, n3, "c3", "ga")
		took := poll(t, 60*time.Second, "c1 reaches c3", func() error { return pingOnce(n1, "c1", ip3) })
		t.Logf("GOSSIP c3 on n3 reachable from n1 %.1fs after its start", took.Seconds())
		t.Logf("GOSSIP n3: %s", lastLine(logLine(pluginLogSince(n3, offset3), "network keys changed")))
		t.Logf("GOSSIP n1: %s", lastLine(logLine(pluginLogSince(n1, offset1), "handed the network's current keys")))
		if err := pingOnce(n3, "c3", ip2); err != nil {
			t.Errorf("c3 -> c2: %v", err)
		}
	})

	t.Run("node removed from the swarm, then rotation", func(t *testing.T) {
		// What n3 holds: the keys of its state (a copy of the file; the plugin keeps it open).
		held := heldKeys(t, n3, id)
		docker(t, n3, "rm", "-f", "c3")
		docker(t, n3, "swarm", "leave", "--force")
		docker(t, m, "node", "rm", "--force", n3.Hostname)
		out := rotateKey(t, m, id)
		t.Logf("ROTATE after docker node rm %s:\n    %s", n3.Hostname, strings.ReplaceAll(out, "\n", "\n    "))
		if !strings.Contains(out, "(epoch 6)") {
			t.Fatalf("rotation output: %s", out)
		}
		// The removed machine still runs its plugin and holds the key it had: records signed with it are
		// refused, and it was sent nothing.
		offset := len(n1.Log())
		r := startRogueIn(t, outsider.NetnsPath(), outsider.Addr, rogueSpec{Target: n2.Addr + ":7947", Network: id,
			IP: ip2, MAC: fakeMAC, NetKey: held})
		defer r.stop(t)
		refused(t, offset, ip2, "signed with a key this node does not hold")
		checkN1(t, "record signed with the removed node's key")
	})

	gap, rx, tx := ping.stop(t)
	t.Logf("GOSSIP ping c1 (n1) -> c2 (n2) every 200 ms through every step: %d of %d replies, largest gap %s", rx, tx, gap)
	if gap > 2*pingInterval {
		t.Errorf("replies lost: largest gap %s", gap)
	}
	for _, n := range nodes[:2] {
		docker(t, n, "rm", "-f", "c1", "c2")
	}
	removeSwarmNetwork(t, m, "ga")
}

// heldKeys returns the primary key (hex) that node n's plugin keeps for network id, read from a copy of
// its state file.
func heldKeys(t *testing.T, n *cluster.Node, id string) string {
	t.Helper()
	b, err := os.ReadFile(stateDB(n))
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "state", "vxsafe.db")
	if err := os.MkdirAll(filepath.Dir(cp), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(cp)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, ok, err := st.GetNetwork(id)
	if err != nil || !ok || rec.Keys == nil {
		t.Fatalf("node %s's state has no rotated keys of network %s: %+v %v", n.Name, id[:12], rec, err)
	}
	return rec.Keys.Primary
}

// neighbours lists the permanent IPv4 neighbour entries (IP -> MAC) on the link called dev of node n.
func neighbours(n *cluster.Node, dev string) (map[string]string, error) {
	out := map[string]string{}
	err := permanentNeighbours(n, dev, unix.AF_INET, func(nb netlink.Neigh) { out[nb.IP.String()] = nb.HardwareAddr.String() })
	return out, err
}

// rotateKey runs `vxsafe rotate-key` (the bundle's binary) against manager m's plugin and returns its
// output.
func rotateKey(t *testing.T, m *cluster.Node, netID string) string {
	t.Helper()
	pid := docker(t, m, "plugin", "inspect", "-f", "{{.Id}}", pluginName)
	var sock string
	for _, p := range []string{cluster.PluginSocketPath(pid, "vxsafe-admin.sock"), filepath.Join(m.ExecRoot, "plugins", pid, "vxsafe-admin.sock")} {
		if _, err := os.Stat(p); err == nil {
			sock = p
		}
	}
	if sock == "" {
		t.Fatalf("no vxsafe-admin.sock of plugin %s on %s", pid[:12], m.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(pluginBundle(t), "rootfs", "vxsafe"), "rotate-key", "--socket", sock, netID).CombinedOutput()
	if err != nil {
		t.Fatalf("vxsafe rotate-key: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}
