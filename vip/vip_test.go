package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/engine"
)

const netA = "aaaaaaaaaaaa0123456789"

// fakeKernel records tables by namespace path; a key becomes a namespace when the test says so.
type fakeKernel struct {
	mu     sync.Mutex
	dns    map[string][]string // name -> addresses the embedded DNS answers; a name not there: no answer
	ns     map[string]string   // key -> path, once it is a namespace
	tables map[string]string   // path -> fingerprint
	calls  []string
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{ns: map[string]string{}, tables: map[string]string{}}
}

func (k *fakeKernel) bind(key string) {
	k.mu.Lock()
	k.ns[key] = "/proc/1/root" + key
	k.mu.Unlock()
}

func (k *fakeKernel) SandboxPath(key string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.ns[key]
	return p, ok
}

func (k *fakeKernel) ProgramServices(path, netID string, svcs []dataplane.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.tables[path] = fingerprint(svcs)
	k.calls = append(k.calls, "program "+path)
	return nil
}

func (k *fakeKernel) RemoveServices(path, netID string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.tables, path)
	k.calls = append(k.calls, "remove "+path)
	return nil
}

func (k *fakeKernel) ForgetBackends(path string, vip net.IP, gone []net.IP) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, fmt.Sprintf("forget %s %s %v", path, vip, gone))
	return len(gone), nil
}

func (k *fakeKernel) ResolveIn(path, name, server string, timeout time.Duration) ([]net.IP, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ips, ok := k.dns[name]
	if !ok {
		return nil, errors.New("i/o timeout")
	}
	var out []net.IP
	for _, ip := range ips {
		out = append(out, net.ParseIP(ip).To4())
	}
	return out, nil
}

func (k *fakeKernel) setDNS(name string, ips ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dns == nil {
		k.dns = map[string][]string{}
	}
	k.dns[name] = ips
}

func (k *fakeKernel) called(prefix string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, c := range k.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func (k *fakeKernel) table(path string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	t, ok := k.tables[path]
	return t, ok
}

type fakeEngine struct {
	mu   sync.Mutex
	svcs map[string][]engine.Service
	err  error
}

func (e *fakeEngine) set(netID string, svcs ...engine.Service) {
	e.mu.Lock()
	e.svcs[netID] = svcs
	e.mu.Unlock()
}

func (e *fakeEngine) fail(err error) {
	e.mu.Lock()
	e.err = err
	e.mu.Unlock()
}

func (e *fakeEngine) NetworkServices(netID string) ([]engine.Service, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return nil, e.err
	}
	return e.svcs[netID], nil
}

func svc(name, vip string, backends ...string) engine.Service {
	s := engine.Service{Name: name}
	if vip != "" {
		s.VIP = net.ParseIP(vip).To4()
	}
	for _, b := range backends {
		s.Backends = append(s.Backends, net.ParseIP(b).To4())
	}
	return s
}

func fp(pairs ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(&b, "%s=%s;", pairs[i], pairs[i+1])
	}
	return b.String()
}

type rig struct {
	k     *fakeKernel
	e     *fakeEngine
	b     *Balancer
	hook  *test.Hook
	reach map[string]bool
	mu    sync.Mutex
}

func newRig(t *testing.T, withEngine bool) *rig {
	r := &rig{k: newFakeKernel(), e: &fakeEngine{svcs: map[string][]engine.Service{}}}
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	r.hook = hook
	cfg := Config{Kernel: r.k, Refresh: 10 * time.Millisecond, Log: logrus.NewEntry(logger), EngineDesc: "/host/run/docker.sock",
		Reachable: func(string) map[string]bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.reach
		}}
	if withEngine {
		cfg.Engine = r.e
	}
	r.b = New(cfg)
	ctx, cancel := contextWithCancel()
	t.Cleanup(cancel)
	go r.b.Run(ctx)
	return r
}

func (r *rig) setReach(ips ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ips == nil {
		r.reach = nil
		return
	}
	r.reach = map[string]bool{}
	for _, ip := range ips {
		r.reach[ip] = true
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (r *rig) wantTable(t *testing.T, path, want string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("table %q in %s", want, path), func() bool {
		got, ok := r.k.table(path)
		return ok && got == want
	})
}

func TestUnitJoinWaitsForTheNamespaceThenPrograms(t *testing.T) {
	r := newRig(t, true)
	r.e.set(netA, svc("web", "10.0.1.2", "10.0.1.3", "10.0.1.4"), svc("db", "", "10.0.1.9"))
	r.b.Joined(netA, "ep1", "/var/run/docker/netns/c1")
	time.Sleep(30 * time.Millisecond) // several reads and syncs: nothing to program while the key is no namespace
	if _, ok := r.k.table("/proc/1/root/var/run/docker/netns/c1"); ok {
		t.Fatal("programmed a key that is not a namespace yet")
	}
	r.k.bind("/var/run/docker/netns/c1")
	// The dnsrr service (no VIP) has no rule; every task is a backend (Reachable nil: not synced yet).
	r.wantTable(t, "/proc/1/root/var/run/docker/netns/c1", fp("10.0.1.2", "[10.0.1.3 10.0.1.4]"))
}

func TestUnitTasksFollowTheEngineAndTheReachableEndpoints(t *testing.T) {
	r := newRig(t, true)
	r.k.bind("/k/c1")
	r.k.bind("/k/c2")
	r.e.set(netA, svc("web", "10.0.1.2", "10.0.1.3", "10.0.1.4"))
	r.b.Joined(netA, "ep1", "/k/c1")
	r.b.Joined(netA, "ep2", "/k/c2")
	for _, p := range []string{"/proc/1/root/k/c1", "/proc/1/root/k/c2"} {
		r.wantTable(t, p, fp("10.0.1.2", "[10.0.1.3 10.0.1.4]"))
	}
	// Scale up: a task the engine lists but the data plane does not reach yet is no backend.
	r.setReach("10.0.1.3", "10.0.1.4")
	r.e.set(netA, svc("web", "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5"))
	time.Sleep(30 * time.Millisecond)
	r.wantTable(t, "/proc/1/root/k/c1", fp("10.0.1.2", "[10.0.1.3 10.0.1.4]"))
	r.setReach("10.0.1.3", "10.0.1.4", "10.0.1.5")
	r.b.Changed(netA)
	r.wantTable(t, "/proc/1/root/k/c1", fp("10.0.1.2", "[10.0.1.3 10.0.1.4 10.0.1.5]"))
	// A task whose endpoint is withdrawn leaves before the engine says so.
	r.setReach("10.0.1.3", "10.0.1.5")
	r.b.Changed(netA)
	r.wantTable(t, "/proc/1/root/k/c2", fp("10.0.1.2", "[10.0.1.3 10.0.1.5]"))
	// The UDP flows to the removed task end.
	if got := r.k.called("forget /proc/1/root/k/c2"); len(got) != 1 || got[0] != "forget /proc/1/root/k/c2 10.0.1.2 [10.0.1.4]" {
		t.Errorf("forgotten flows in c2: %q, want those to 10.0.1.4", got)
	}
	// Service removed: the tables go, and the flows to its tasks.
	r.e.set(netA)
	waitFor(t, "tables removed", func() bool {
		_, ok1 := r.k.table("/proc/1/root/k/c1")
		_, ok2 := r.k.table("/proc/1/root/k/c2")
		return !ok1 && !ok2
	})
	if got := r.k.called("forget /proc/1/root/k/c2"); len(got) != 2 || got[1] != "forget /proc/1/root/k/c2 10.0.1.2 [10.0.1.3 10.0.1.5]" {
		t.Errorf("forgotten flows in c2: %q, then those to 10.0.1.3 and 10.0.1.5", got)
	}
}

func TestUnitLeaveRemovesTheTable(t *testing.T) {
	r := newRig(t, true)
	r.k.bind("/k/c1")
	r.e.set(netA, svc("web", "10.0.1.2", "10.0.1.3"))
	r.b.Joined(netA, "ep1", "/k/c1")
	r.wantTable(t, "/proc/1/root/k/c1", fp("10.0.1.2", "[10.0.1.3]"))
	r.b.Left("ep1")
	waitFor(t, "table removed", func() bool { _, ok := r.k.table("/proc/1/root/k/c1"); return !ok })
	// A Leave of an endpoint never programmed (a plugin restarted since) still clears its sandbox.
	r.k.mu.Lock()
	r.k.tables["/proc/1/root/k/c9"] = "left by the plugin before the restart"
	r.k.mu.Unlock()
	r.k.bind("/k/c9")
	r.b.mu.Lock()
	r.b.left = append(r.b.left, &sandbox{netID: netA, epID: "ep9", key: "/k/c9"})
	r.b.mu.Unlock()
	r.b.Changed(netA)
	waitFor(t, "table of the earlier run removed", func() bool { _, ok := r.k.table("/proc/1/root/k/c9"); return !ok })
}

func TestUnitEngineDownKeepsTheLastTableAndWarnsOnce(t *testing.T) {
	r := newRig(t, true)
	r.k.bind("/k/c1")
	r.e.set(netA, svc("web", "10.0.1.2", "10.0.1.3"))
	r.b.Joined(netA, "ep1", "/k/c1")
	r.wantTable(t, "/proc/1/root/k/c1", fp("10.0.1.2", "[10.0.1.3]"))
	r.e.fail(errors.New("GET /networks/x?verbose=true from unix:///host/run/docker.sock: connection refused"))
	time.Sleep(60 * time.Millisecond) // several failed reads
	if got, _ := r.k.table("/proc/1/root/k/c1"); got != fp("10.0.1.2", "[10.0.1.3]") {
		t.Fatalf("table after the engine went away = %q, want the last known", got)
	}
	warnings := 0
	for _, e := range r.hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "cannot read swarm services from the Docker API at /host/run/docker.sock") {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d warnings for one outage, want 1", warnings)
	}
	r.e.fail(nil)
	r.e.set(netA, svc("web", "10.0.1.2", "10.0.1.7"))
	r.wantTable(t, "/proc/1/root/k/c1", fp("10.0.1.2", "[10.0.1.7]"))
}

func TestUnitNoEngineWarnsAndProgramsNothing(t *testing.T) {
	r := newRig(t, false)
	r.k.bind("/k/c1")
	r.b.Joined(netA, "ep1", "/k/c1")
	waitFor(t, "the warning", func() bool {
		for _, e := range r.hook.AllEntries() {
			if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "dnsrr work as usual") {
				return true
			}
		}
		return false
	})
	time.Sleep(20 * time.Millisecond)
	r.k.mu.Lock()
	defer r.k.mu.Unlock()
	if len(r.k.calls) != 0 {
		t.Errorf("kernel calls without an engine: %v", r.k.calls)
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// A task the engine still lists but has withdrawn from its service (gone from tasks.<service> in the
// embedded DNS: swarm is about to stop it) takes no new connection.
func TestUnitWithdrawnTaskLeavesBeforeTheEngineForgetsIt(t *testing.T) {
	r := newRig(t, true)
	r.k.bind("/k/c1")
	r.e.set(netA, svc("web", "10.0.1.2", "10.0.1.3", "10.0.1.4"))
	r.b.Joined(netA, "ep1", "/k/c1")
	r.wantTable(t, "/proc/1/root/k/c1", fp("10.0.1.2", "[10.0.1.3 10.0.1.4]"))
	r.k.setDNS("tasks.web", "10.0.1.3")
	r.wantTable(t, "/proc/1/root/k/c1", fp("10.0.1.2", "[10.0.1.3]"))
	// Back in service (DNS answers it again): back in the table.
	r.k.setDNS("tasks.web", "10.0.1.3", "10.0.1.4")
	r.wantTable(t, "/proc/1/root/k/c1", fp("10.0.1.2", "[10.0.1.3 10.0.1.4]"))
}
