package control

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/internal/porttest"
	"github.com/vxsafe/overlay/internal/storetest"
	"github.com/vxsafe/overlay/store"
)

// applier records the remote changes a Plane applies.
type applier struct {
	mu      sync.Mutex
	changes []string
}

func (a *applier) RemoteChange(ep gossip.Endpoint, removed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	what := "added"
	if removed {
		what = "removed"
	}
	a.changes = append(a.changes, what+" "+ep.Network+"/"+ep.EndpointID+" "+ep.IP+" "+ep.MAC+" at "+ep.VTEP)
}

func (a *applier) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.changes...)
}

func newPlane(t *testing.T, cfg Config, st *store.Store) *Plane {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger, _ := test.NewNullLogger()
	p, err := New(ctx, cfg, st, logrus.NewEntry(logger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		cancel()
	})
	return p
}

func (c *Plane) seedList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seedListLocked()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestSeedsFromSettingsAndState(t *testing.T) {
	st := storetest.Open(t)
	if err := st.PutPeers([]string{"10.0.0.7:7947", "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	p := newPlane(t, Config{GossipPort: 7947, Peers: []string{"10.0.0.5", "10.0.0.6:8000"}}, st)
	want := []string{"10.0.0.5:7947", "10.0.0.6:8000", "10.0.0.7:7947"}
	if got := p.seedList(); !reflect.DeepEqual(got, want) {
		t.Fatalf("seeds %q, want %q", got, want)
	}
	p.AddSeed("10.0.0.8") // before the agent: only remembered
	if got := p.seedList(); len(got) != 4 || got[3] != "10.0.0.8:7947" {
		t.Fatalf("after AddSeed: seeds %q", got)
	}
	if p.Remote("n") != nil || p.Synced() {
		t.Error("a plane without an agent reports remote endpoints or a sync")
	}
	if m, s, r := p.GossipStats(); m != 0 || s != 0 || r != 0 {
		t.Errorf("GossipStats without an agent: %d %d %d", m, s, r)
	}
}

func TestSwarmManagersSeed(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/info" {
			w.Write([]byte(`{"Swarm":{"RemoteManagers":[{"Addr":"10.1.0.1:2377"}]}}`))
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p := newPlane(t, Config{GossipPort: 7947, DockerSocket: sock}, storetest.Open(t))
	waitFor(t, "the swarm manager as a seed", func() bool {
		return reflect.DeepEqual(p.seedList(), []string{"10.1.0.1:7947"})
	})
	// No socket: no managers, and no error.
	q := newPlane(t, Config{GossipPort: 7947, DockerSocket: filepath.Join(t.TempDir(), "none.sock")}, storetest.Open(t))
	if m := q.swarmManagers(); m != nil {
		t.Errorf("managers from a missing socket: %q", m)
	}
}

func TestGraceSetting(t *testing.T) {
	if graceSetting(0) != gossip.NoGracePeriod || graceSetting(time.Minute) != time.Minute {
		t.Error("graceSetting does not map 0 to no grace and keep others")
	}
}

// Two planes on loopback addresses gossip an endpoint published before either agent ran, and its
// withdrawal, to each other's driver.
func TestPlanesExchangeEndpoints(t *testing.T) {
	const a, b = "127.0.0.1", "127.0.0.2"
	port := porttest.Free(t, a, b)
	cfg := func(addr string) Config {
		return Config{GossipPort: port, GossipLabel: "vxsafe-test", BindAddr: addr,
			NodeGoneGrace: time.Second, PluginDownGrace: time.Second}
	}
	sa := storetest.Open(t)
	pa := newPlane(t, cfg(a), sa)
	pb := newPlane(t, cfg(b), storetest.Open(t))
	ra, rb := &applier{}, &applier{}
	pa.Attach(ra)
	pb.Attach(rb)
	ep := gossip.Endpoint{Network: "net1", EndpointID: "ep1", IP: "10.0.1.11", MAC: "02:42:0a:00:01:0b", VTEP: a}
	pa.Control().Publish(ep) // before the agent starts: kept and published on SetVTEP
	pa.SetVTEP(a)
	pb.SetVTEP(b)
	pb.AddSeed(a)
	waitFor(t, "b to learn a's endpoint", func() bool {
		r := pb.Remote("net1")
		return len(r) == 1 && r[0] == ep
	})
	added := "added net1/ep1 10.0.1.11 02:42:0a:00:01:0b at " + a
	waitFor(t, "b's driver to be told", func() bool { return reflect.DeepEqual(rb.list(), []string{added}) })
	waitFor(t, "the agents to sync", func() bool { return pa.Synced() || pb.Synced() })
	if m, _, _ := pb.GossipStats(); m != 2 {
		t.Errorf("b counts %d members, want 2", m)
	}
	// The members are remembered for the seeds of the next start.
	waitFor(t, "a to remember its peers", func() bool {
		peers, err := sa.Peers()
		return err == nil && len(peers) == 2
	})
	pa.Withdraw("net1", "ep1")
	waitFor(t, "b's driver to be told of the withdrawal", func() bool {
		return reflect.DeepEqual(rb.list(), []string{added, "removed net1/ep1 10.0.1.11 02:42:0a:00:01:0b at " + a})
	})
	if len(pb.Remote("net1")) != 0 {
		t.Error("b still lists the withdrawn endpoint")
	}
	if got := ra.list(); len(got) != 0 {
		t.Errorf("a was told of its own endpoint: %q", got)
	}
}
