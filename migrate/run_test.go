package migrate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/engine"
)

// world is a fake swarm with network appnet (10.0.1.0/24) to move: services api (2 replicas, start-first,
// alias backend, also on network other), db (1 replica, on appnet through the deprecated Spec.Networks, by
// name, alias database), web (global, by an ID prefix, of stack shop), cache (on other only: not moved),
// and this engine's standalone container tool (alias toolbox, also on other).
type world struct {
	f                  *fakeSwarm
	old, other, ingres *engine.Network
	worker             *fakeNode
	tool               *fakeContainer
	moved              []string // the names of the snapshots' members that move
}

func newWorld(t *testing.T) *world {
	f := newFakeSwarm(t)
	w := &world{f: f}
	w.worker = f.node("worker1", true)
	w.ingres = f.network("ingress", "10.0.0.0/24", nil)
	w.ingres.Ingress, w.ingres.Attachable = true, false
	w.old = f.network("appnet", "10.0.1.0/24", map[string]string{"com.docker.network.driver.mtu": "1400"})
	w.old.Labels["team"] = "web"
	w.other = f.network("other", "10.0.2.0/24", nil)
	manager := f.Nodes[0]
	f.service(fmt.Sprintf(`{"Name":"api","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"api:1"},"Networks":[{"Target":%q,"Aliases":["backend"]},{"Target":%q}],"ForceUpdate":0},
		"Mode":{"Replicated":{"Replicas":2}},"UpdateConfig":{"Parallelism":1,"Order":"start-first","FailureAction":"pause"},"EndpointSpec":{"Mode":"vip"},"XUnknown":{"kept":true}}`, w.old.ID, w.other.ID), manager, w.worker)
	f.service(`{"Name":"db","TaskTemplate":{"ContainerSpec":{"Image":"db:1"}},"Mode":{"Replicated":{"Replicas":1}},"Networks":[{"Target":"appnet","Aliases":["database"]}]}`, w.worker)
	f.service(fmt.Sprintf(`{"Name":"web","Labels":{"com.docker.stack.namespace":"shop"},"TaskTemplate":{"ContainerSpec":{"Image":"web:1"},"Networks":[{"Target":%q}]},"Mode":{"Global":{}},"UpdateConfig":{"Order":"start-first"}}`, w.old.ID[:12]), manager, w.worker)
	f.service(fmt.Sprintf(`{"Name":"cache","TaskTemplate":{"ContainerSpec":{"Image":"cache:1"},"Networks":[{"Target":%q}]},"Mode":{"Replicated":{"Replicas":1}}}`, w.other.ID), manager)
	w.tool = f.container("tool", map[*engine.Network][]string{w.old: {"toolbox"}, w.other: nil})
	w.moved = []string{"service api", "service db", "service web", "container tool"}
	f.Lag = 3
	return w
}

func (w *world) opts(out *bytes.Buffer) Options {
	return Options{Network: "appnet", Yes: true, Poll: time.Millisecond, Timeout: 3 * time.Second, RemoveWait: 2 * time.Second, StuckAfter: 50 * time.Millisecond, Out: out}
}

func (w *world) run(t *testing.T, o Options) error {
	t.Helper()
	return New(w.f.client(), o).Run()
}

func (w *world) twin() *engine.Network {
	var n *engine.Network
	w.f.lock(func() {
		for _, m := range w.f.Networks {
			if m.Labels[LabelFromID] == w.old.ID {
				n = m
			}
		}
	})
	return n
}

func (w *world) exists(n *engine.Network) bool {
	ok := false
	w.f.lock(func() { ok = slices.Contains(w.f.Networks, n) })
	return ok
}

func (w *world) svc(name string) *fakeService {
	var s *fakeService
	w.f.lock(func() { s = w.f.svcByRef(name) })
	return s
}

// specNets are a service's spec's network IDs (sorted) and its attachments.
func (w *world) specNets(name string) ([]string, []attachment) {
	var ids []string
	var atts []attachment
	w.f.lock(func() {
		s := w.f.svcByRef(name)
		ids = w.f.specTargets(s.Spec)
		sp, err := parseSpec(s.Spec)
		if err != nil {
			w.f.t.Fatal(err)
		}
		atts = sp.networks()
	})
	slices.Sort(ids)
	return ids, atts
}

func (w *world) taskNets(name string) []string {
	var ids []string
	w.f.lock(func() { ids = w.f.taskNets(w.f.svcByRef(name)) })
	return ids
}

func sorted(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func (w *world) writes() int {
	n := 0
	w.f.lock(func() { n = len(w.f.Writes) })
	return n
}

func (w *world) events() []fakeEvent {
	var out []fakeEvent
	w.f.lock(func() { out = slices.Clone(w.f.Events) })
	return out
}

// checkNoCutOff checks a run's record, moving members from network from to network to: in every snapshot
// each member is on from or to and every two members share one of them; and no event takes from off a
// member before the last event puts to on one.
func checkNoCutOff(events []fakeEvent, snaps []map[string][]string, members []string, from, to string) error {
	if err := checkShared(snaps, members, from, to); err != nil {
		return err
	}
	lastAdd, firstRemove := -1, len(events)
	for i, e := range events {
		switch {
		case (e.Kind == "update" || e.Kind == "connect") && !slices.Contains(e.Before, to) && slices.Contains(e.After, to):
			lastAdd = i
		case (e.Kind == "update" || e.Kind == "disconnect") && slices.Contains(e.Before, from) && !slices.Contains(e.After, from):
			firstRemove = min(firstRemove, i)
		}
	}
	if lastAdd > firstRemove {
		return fmt.Errorf("event %d (%s %s: %v -> %v) takes the old network off before event %d (%s %s) puts the new one on",
			firstRemove, events[firstRemove].Kind, events[firstRemove].Who, events[firstRemove].Before, events[firstRemove].After,
			lastAdd, events[lastAdd].Kind, events[lastAdd].Who)
	}
	return nil
}

// checkShared checks that in every snapshot every two members share one of nets (a member alone: is on one).
func checkShared(snaps []map[string][]string, members []string, nets ...string) error {
	for i, s := range snaps {
		for _, a := range members {
			for _, b := range members {
				shared := false
				for _, n := range nets {
					shared = shared || (slices.Contains(s[a], n) && slices.Contains(s[b], n))
				}
				if !shared && a == b {
					return fmt.Errorf("snapshot %d: %s is on none of the networks: %v", i, a, s[a])
				}
				if !shared {
					return fmt.Errorf("snapshot %d: %s (%v) and %s (%v) share no network", i, a, s[a], b, s[b])
				}
			}
		}
	}
	return nil
}

// The checker itself catches a cut-off: a service that leaves the old network before another has the
// new one, and the same in the snapshots.
func TestNoCutOffCheckCatches(t *testing.T) {
	ev := []fakeEvent{
		{Kind: "update", Who: "a", Before: []string{"old"}, After: []string{"old", "new"}},
		{Kind: "update", Who: "a", Before: []string{"old", "new"}, After: []string{"new"}},
		{Kind: "update", Who: "b", Before: []string{"old"}, After: []string{"old", "new"}},
	}
	snaps := []map[string][]string{{"a": {"old"}, "b": {"old"}}, {"a": {"new"}, "b": {"old"}}}
	if err := checkNoCutOff(ev, nil, []string{"a", "b"}, "old", "new"); err == nil {
		t.Error("an event order with a remove before an add passes")
	}
	if err := checkNoCutOff(nil, snaps, []string{"a", "b"}, "old", "new"); err == nil {
		t.Error("a snapshot where a and b share no network passes")
	}
	slices.Reverse(ev[1:])
	snaps[1]["a"] = []string{"old", "new"}
	if err := checkNoCutOff(ev, snaps, []string{"a", "b"}, "old", "new"); err != nil {
		t.Errorf("a good record fails: %v", err)
	}
}

// 1. The twin goes on every service and container before the old network comes off any; then the old
// network is removed and everyone is on the twin only, with the aliases they had on the old one.
func TestRunMovesWithoutCutOff(t *testing.T) {
	w := newWorld(t)
	w.f.OutOfSequence["api"] = 1 // another writer changes api between the migrator's read and its update
	w.f.Linger = 2               // the container's attachment task holds the old network for two more DELETEs
	var out bytes.Buffer
	if err := w.run(t, w.opts(&out)); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	twin := w.twin()
	if twin == nil {
		t.Fatalf("no twin created\n%s", out.String())
	}
	snaps := w.f.Snapshot()
	events := w.events()
	if err := checkNoCutOff(events, snaps, w.moved, w.old.ID, twin.ID); err != nil {
		t.Errorf("%v\nevents: %+v\n%s", err, events, out.String())
	}
	if w.exists(w.old) {
		t.Errorf("the old network is still there\n%s", out.String())
	}
	if last := events[len(events)-1]; last.Kind != "remove" || last.Who != "appnet" {
		t.Errorf("the last write is %+v, not the old network's removal", last)
	}
	// The twin: the old one's driver options and labels, the migrator's labels, a free subnet.
	if twin.Name != "appnet-vxsafe" || twin.Driver != DefaultDriver || !twin.Attachable || twin.Options["com.docker.network.driver.mtu"] != "1400" ||
		twin.Labels["team"] != "web" || twin.Labels[LabelFrom] != "appnet" {
		t.Errorf("twin %+v", twin)
	}
	if _, ok := twin.Options["com.docker.network.driver.overlay.vxlanid_list"]; ok {
		t.Error("the twin carries the old driver's VNI")
	}
	// Every moved service is on the twin only (and its other networks), in its spec and its tasks.
	for name, want := range map[string][]string{"api": sorted(twin.ID, w.other.ID), "db": {twin.ID}, "web": {twin.ID}} {
		if ids, _ := w.specNets(name); !slices.Equal(ids, want) {
			t.Errorf("service %s's spec is on %v, want %v", name, ids, want)
		}
		if ids := w.taskNets(name); !slices.Equal(ids, want) {
			t.Errorf("service %s's tasks are on %v, want %v", name, ids, want)
		}
	}
	// Aliases carried over.
	for name, alias := range map[string]string{"api": "backend", "db": "database"} {
		_, atts := w.specNets(name)
		a, ok := find(atts, netRef{twin.ID, twin.Name})
		if !ok || !slices.Equal(a.Aliases, []string{alias}) {
			t.Errorf("service %s's attachments %+v: want alias %s on the twin", name, atts, alias)
		}
	}
	var toolNets map[string][]string
	w.f.lock(func() { toolNets = w.tool.Nets })
	if al := toolNets[twin.ID]; !slices.Equal(al, []string{"toolbox", w.tool.ID[:12]}) { // the engine adds the short ID itself
		t.Errorf("container tool's aliases on the twin: %v", al)
	}
	if _, ok := toolNets[w.old.ID]; ok || len(toolNets) != 2 {
		t.Errorf("container tool is on %v", sortedKeys(toolNets))
	}
	// The spec's other fields go back as they came; cache is not touched.
	var api struct{ XUnknown map[string]bool }
	_ = json.Unmarshal(w.svc("api").Spec, &api)
	if !api.XUnknown["kept"] {
		t.Errorf("api's spec lost a field unknown to the migrator: %s", w.svc("api").Spec)
	}
	for _, e := range events {
		if e.Who == "cache" {
			t.Errorf("cache (not on appnet) changed: %+v", e)
		}
	}
	// Two service updates each (api once more: its first one was out of sequence), one connect, one disconnect.
	count := map[string]int{}
	for _, e := range events {
		count[e.Kind+" "+e.Who]++
	}
	for _, k := range []string{"update api", "update db", "update web"} {
		if count[k] != 2 {
			t.Errorf("%d %s, want 2 (%v)", count[k], k, count)
		}
	}
	if count["connect tool"] != 1 || count["disconnect tool"] != 1 || count["create appnet-vxsafe"] != 1 {
		t.Errorf("events %v", count)
	}
	if !strings.Contains(out.String(), "after 3 tries") {
		t.Errorf("the removal of appnet was not retried while the attachment task held it:\n%s", out.String())
	}
	if s := out.String(); !strings.Contains(s, "Stack shop") || !strings.Contains(s, "name: appnet-vxsafe") {
		t.Errorf("the output does not tell stack shop how to declare the twin:\n%s", s)
	}
}

// 2. --dry-run shows the plan and writes nothing; without --yes and no answer, nothing is written either.
func TestDryRunWritesNothing(t *testing.T) {
	w := newWorld(t)
	var out bytes.Buffer
	o := w.opts(&out)
	o.DryRun = true
	if err := w.run(t, o); err != nil {
		t.Fatalf("dry run: %v\n%s", err, out.String())
	}
	if n := w.writes(); n != 0 {
		t.Errorf("a dry run wrote %d times: %v", n, w.f.Writes)
	}
	s := out.String()
	for _, want := range []string{"--dry-run: nothing changed", "create network appnet-vxsafe", "service api: add network appnet-vxsafe", "container tool: connect to appnet-vxsafe", "remove network appnet"} {
		if !strings.Contains(s, want) {
			t.Errorf("the plan lacks %q:\n%s", want, s)
		}
	}
	o = w.opts(&out)
	o.Yes, o.In = false, strings.NewReader("n\n")
	if err := w.run(t, o); !errors.Is(err, ErrStopped) {
		t.Errorf("a no: %v", err)
	}
	if n := w.writes(); n != 0 {
		t.Errorf("a no wrote %d times: %v", n, w.f.Writes)
	}
}

// 3. An update that fails (paused, or rolled back by the swarm) stops the run: the service is rolled
// back, later services are not touched, the output names the service and the task's error. A --resume
// once the cause is fixed completes.
func TestFailedUpdateStopsAndResumes(t *testing.T) {
	for _, mode := range []string{"paused", "rollback", "retrying", "completed-failing", "nostatus-failing", "stuck"} {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t)
			w.f.Fail = func(name string, before, after []string) string {
				if name == "db" && len(after) > len(before) {
					return mode
				}
				return ""
			}
			w.f.TaskErr = "network appnet-vxsafe: plugin not found on worker1"
			var out bytes.Buffer
			err := w.run(t, w.opts(&out))
			if !errors.Is(err, ErrStopped) {
				t.Fatalf("run: %v, want ErrStopped\n%s", err, out.String())
			}
			twin := w.twin()
			if twin == nil || !w.exists(w.old) {
				t.Fatalf("twin %v, old there %v", twin, w.exists(w.old))
			}
			events := w.events()
			rolled := map[string]int{}
			for _, e := range events {
				rolled[e.Kind] += map[bool]int{true: 1}[e.Who == "db"]
				if e.Who == "web" || e.Who == "tool" {
					t.Errorf("%s touched after db failed: %+v", e.Who, e)
				}
				if e.Kind == "disconnect" || (e.Kind == "update" && slices.Contains(e.Before, w.old.ID) && !slices.Contains(e.After, w.old.ID)) {
					t.Errorf("the old network taken off: %+v", e)
				}
			}
			if mode != "rollback" && rolled["rollback"] != 1 {
				t.Errorf("db paused and not rolled back (rollback=previous): %v", rolled)
			}
			if mode == "rollback" && (rolled["swarm-rollback"] != 1 || rolled["rollback"] != 0) {
				t.Errorf("db rolled back by the swarm, then %v", rolled)
			}
			if ids, _ := w.specNets("db"); !slices.Equal(ids, []string{w.old.ID}) {
				t.Errorf("db's spec after the rollback: %v", ids)
			}
			if ids := w.taskNets("db"); !slices.Equal(ids, []string{w.old.ID}) {
				t.Errorf("db's tasks after the rollback: %v", ids)
			}
			if ids, _ := w.specNets("api"); !slices.Equal(ids, sorted(w.old.ID, w.other.ID, twin.ID)) {
				t.Errorf("api (before db) is on %v, want both and other", ids)
			}
			s := out.String()
			for _, want := range []string{"service db: update " + map[string]string{"paused": "paused", "rollback": "rollback_completed", "retrying": "failing (3 tasks of it failed)", "completed-failing": "failing (3 tasks of it failed)", "nostatus-failing": "failing (3 tasks of it failed)", "stuck": "stuck (a task has failed to start for 50ms)"}[mode], w.f.TaskErr, "(node worker1, ", "--resume appnet"} {
				if !strings.Contains(s, want) {
					t.Errorf("the output lacks %q:\n%s", want, s)
				}
			}
			if err := checkNoCutOff(events, w.f.Snapshot(), w.moved, w.old.ID, twin.ID); err != nil {
				t.Error(err)
			}

			w.f.Fail = nil
			out.Reset()
			o := w.opts(&out)
			o.Resume = true
			before := len(events)
			if err := w.run(t, o); err != nil {
				t.Fatalf("resume: %v\n%s", err, out.String())
			}
			if w.exists(w.old) {
				t.Error("the old network is still there after the resume")
			}
			for _, e := range w.events()[before:] {
				if e.Kind == "create" || (e.Who == "api" && slices.Contains(e.After, twin.ID) && !slices.Contains(e.Before, twin.ID)) {
					t.Errorf("the resume did again what was done: %+v", e)
				}
			}
			for _, name := range []string{"db", "web"} {
				if ids := w.taskNets(name); !slices.Equal(ids, []string{twin.ID}) {
					t.Errorf("%s is on %v after the resume", name, ids)
				}
			}
			if err := checkNoCutOff(w.events(), w.f.Snapshot(), w.moved, w.old.ID, twin.ID); err != nil {
				t.Error(err)
			}
		})
	}
}

// 4. After a run stopped in the middle of taking the old network off, --revert moves everything back to
// the old network only, with the aliases, and removes the twin.
func TestRevertAfterPartialRun(t *testing.T) {
	w := newWorld(t)
	w.f.Fail = func(name string, before, after []string) string {
		if name == "web" && slices.Contains(before, w.old.ID) && !slices.Contains(after, w.old.ID) {
			return "paused"
		}
		return ""
	}
	var out bytes.Buffer
	if err := w.run(t, w.opts(&out)); !errors.Is(err, ErrStopped) {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	twin := w.twin()
	if ids := w.taskNets("api"); !slices.Equal(ids, sorted(twin.ID, w.other.ID)) {
		t.Fatalf("api is on %v after the partial run, want the twin only (and other)", ids)
	}
	if ids := w.taskNets("web"); !slices.Equal(ids, sorted(twin.ID, w.old.ID)) {
		t.Fatalf("web is on %v after its failed update, want both", ids)
	}
	w.f.Fail = nil
	first := len(w.events())
	out.Reset()
	o := w.opts(&out)
	o.Revert = true
	if err := w.run(t, o); err != nil {
		t.Fatalf("revert: %v\n%s", err, out.String())
	}
	if w.exists(twin) || !w.exists(w.old) {
		t.Fatalf("twin there %v, old there %v\n%s", w.exists(twin), w.exists(w.old), out.String())
	}
	events := w.events()
	snaps := w.f.Snapshot()
	if err := checkNoCutOff(events[first:], snaps[first:], w.moved, twin.ID, w.old.ID); err != nil {
		t.Errorf("revert: %v\n%s", err, out.String())
	}
	for name, want := range map[string][]string{"api": sorted(w.old.ID, w.other.ID), "db": {w.old.ID}, "web": {w.old.ID}} {
		if ids := w.taskNets(name); !slices.Equal(ids, want) {
			t.Errorf("service %s is on %v after the revert, want %v", name, ids, want)
		}
	}
	for name, alias := range map[string]string{"api": "backend", "db": "database"} {
		_, atts := w.specNets(name)
		if a, ok := find(atts, netRef{w.old.ID, w.old.Name}); !ok || !slices.Equal(a.Aliases, []string{alias}) {
			t.Errorf("service %s's attachments after the revert %+v: want alias %s on appnet", name, atts, alias)
		}
	}
	var toolNets map[string][]string
	w.f.lock(func() { toolNets = w.tool.Nets })
	if !slices.Equal(sortedKeys(toolNets), sorted(w.old.ID, w.other.ID)) || !slices.Contains(toolNets[w.old.ID], "toolbox") {
		t.Errorf("container tool after the revert: %v", toolNets)
	}
}

// A revert's last line names the network everything is back on, and the twin it removed.
func TestRevertDoneMessage(t *testing.T) {
	w := newWorld(t)
	var out bytes.Buffer
	o := w.opts(&out)
	o.Network = "appnet"
	w.f.Fail = func(name string, before, after []string) string {
		if name == "db" && len(after) > len(before) {
			return "paused"
		}
		return ""
	}
	if err := w.run(t, o); !errors.Is(err, ErrStopped) {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	w.f.Fail = nil
	out.Reset()
	o.Revert = true
	if err := w.run(t, o); err != nil {
		t.Fatalf("revert: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "back on appnet only; the twin appnet-vxsafe is removed") {
		t.Errorf("the revert's last line: %q", last)
	}
}

// 5. A run after the migration completed has nothing to do and writes nothing.
func TestRunAgainAfterDone(t *testing.T) {
	w := newWorld(t)
	var out bytes.Buffer
	if err := w.run(t, w.opts(&out)); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	n := w.writes()
	for _, o := range []func(*Options){func(*Options) {}, func(o *Options) { o.Resume = true }, func(o *Options) { o.DryRun = true }} {
		out.Reset()
		opts := w.opts(&out)
		o(&opts)
		if err := w.run(t, opts); err != nil {
			t.Errorf("again (%+v): %v\n%s", opts, err, out.String())
		}
		if !strings.Contains(out.String(), "Nothing left to do") {
			t.Errorf("again: the output does not say nothing is left to do:\n%s", out.String())
		}
	}
	out.Reset()
	opts := w.opts(&out)
	opts.Revert = true
	if err := w.run(t, opts); !errors.Is(err, ErrStopped) {
		t.Errorf("a revert after completion: %v", err)
	}
	if w.writes() != n {
		t.Errorf("runs after completion wrote: %v", w.f.Writes[n:])
	}
}

// 6. What cannot move stops the run before anything is written: a node that runs the network's tasks
// without the plugin, an encrypted network, the ingress network, a job service, another network with the
// twin's name; a node without the plugin that runs nothing is only a warning.
func TestBlockers(t *testing.T) {
	cases := []struct {
		name  string
		setup func(w *world) string // the network to move
		want  string
	}{
		{"node without plugin", func(w *world) string {
			bare := w.f.node("worker2", false)
			w.f.lock(func() {
				w.f.converge(w.f.svcByRef("web"), []*fakeNode{w.f.Nodes[0], w.worker, bare})
			})
			return "appnet"
		}, "worker2"},
		{"encrypted", func(w *world) string {
			w.f.network("secure", "10.0.7.0/24", map[string]string{"encrypted": ""})
			return "secure"
		}, "encrypted"},
		{"ingress", func(w *world) string { return "ingress" }, "ingress"},
		{"job", func(w *world) string {
			w.f.service(fmt.Sprintf(`{"Name":"migrate-db","TaskTemplate":{"Networks":[{"Target":%q}]},"Mode":{"ReplicatedJob":{}}}`, w.old.ID))
			return "appnet"
		}, "migrate-db is a replicated-job"},
		{"name taken", func(w *world) string {
			w.f.network("appnet-vxsafe", "10.0.8.0/24", nil)
			return "appnet"
		}, "a network named appnet-vxsafe exists"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			var out bytes.Buffer
			o := w.opts(&out)
			o.Network = c.setup(w)
			err := w.run(t, o)
			if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("run: %v, want ErrStopped naming %q\n%s", err, c.want, out.String())
			}
			if n := w.writes(); n != 0 {
				t.Errorf("%d writes: %v", n, w.f.Writes)
			}
		})
	}
	t.Run("idle node without plugin", func(t *testing.T) {
		w := newWorld(t)
		w.f.node("spare", false)
		var out bytes.Buffer
		if err := w.run(t, w.opts(&out)); err != nil {
			t.Fatalf("run: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "warning: node(s) spare have no") {
			t.Errorf("no warning about node spare:\n%s", out.String())
		}
	})
}

// A standalone container on another node (seen only by its attachment task) cannot be connected from
// here: the run stops at the check, before the old network comes off anyone, and says what to run there.
func TestRemoteContainerStopsBeforeRemoving(t *testing.T) {
	w := newWorld(t)
	var id string
	w.f.lock(func() { id = w.f.remoteContainer(w.old, w.worker) })
	var out bytes.Buffer
	err := w.run(t, w.opts(&out))
	if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "on node worker1: docker network connect appnet-vxsafe "+id[:12]) {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, e := range w.events() {
		if e.Kind == "disconnect" || e.Kind == "remove" || (e.Kind == "update" && slices.Contains(e.Before, w.old.ID) && !slices.Contains(e.After, w.old.ID)) {
			t.Errorf("the old network taken off: %+v", e)
		}
	}
	if !strings.Contains(out.String(), "warning: container "+id[:12]+" runs on node worker1") {
		t.Errorf("no warning about the remote container:\n%s", out.String())
	}
}

// 7. --subnet must not overlap the old network nor another; a picked subnet overlaps none.
func TestSubnet(t *testing.T) {
	for _, c := range []struct{ subnet, want string }{
		{"10.0.1.128/25", "overlaps appnet's own subnet"},
		{"10.0.0.0/16", "overlaps"},
		{"10.0.2.0/24", "overlaps network other"},
	} {
		w := newWorld(t)
		var out bytes.Buffer
		o := w.opts(&out)
		o.Subnet = c.subnet
		if err := w.run(t, o); !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--subnet %s: %v, want ErrStopped with %q", c.subnet, err, c.want)
		}
		if n := w.writes(); n != 0 {
			t.Errorf("--subnet %s: %d writes", c.subnet, n)
		}
	}
	w := newWorld(t)
	var out bytes.Buffer
	o := w.opts(&out)
	o.Subnet = "10.0.1.1/24"
	if err := w.run(t, o); err == nil || w.writes() != 0 {
		t.Errorf("--subnet 10.0.1.1/24 (not a network address): %v, %d writes", err, w.writes())
	}

	// Picked: the networks around the old one are taken (10.0.3 too), and one far off overlaps 10.0.4.
	w = newWorld(t)
	w.f.network("third", "10.0.3.0/24", nil)
	w.f.network("wide", "10.0.4.0/23", nil)
	out.Reset()
	if err := w.run(t, w.opts(&out)); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	twin := w.twin()
	if twin == nil || len(twin.IPAM.Config) != 1 {
		t.Fatalf("twin %+v", twin)
	}
	_, picked, err := net.ParseCIDR(twin.IPAM.Config[0].Subnet)
	if err != nil {
		t.Fatal(err)
	}
	if ones, _ := picked.Mask.Size(); ones != 24 {
		t.Errorf("picked %s: not the old one's size", picked)
	}
	w.f.lock(func() {
		for _, n := range append(w.f.Networks, w.old) {
			if n == twin {
				continue
			}
			for _, s := range subnets(*n) {
				if overlaps(s, picked) {
					t.Errorf("picked %s overlaps %s's %s", picked, n.Name, s)
				}
			}
		}
	})

	// A free --subnet is taken as given.
	w = newWorld(t)
	out.Reset()
	o = w.opts(&out)
	o.Subnet = "10.0.50.0/24"
	if err := w.run(t, o); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if twin := w.twin(); twin == nil || twin.IPAM.Config[0].Subnet != "10.0.50.0/24" {
		t.Errorf("twin %+v", twin)
	}
}

// The fake refuses what swarm refuses: a second network on an overlapping subnet, removing a network a
// service or container still uses, an update at a stale version.
func TestFakeRefusesLikeSwarm(t *testing.T) {
	w := newWorld(t)
	c := w.f.client()
	if _, err := c.CreateNetwork(engine.NetworkCreate{Name: "x", Driver: "overlay", IPAM: &engine.IPAM{Config: []engine.IPAMConfig{{Subnet: "10.0.1.0/25"}}}}); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("an overlapping network: %v", err)
	}
	if err := c.RemoveNetwork(w.old.ID); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("removing a network in use: %v", err)
	}
	s, err := c.ServiceInspect("db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateService(s.ID, s.Version.Index-1, s.Spec, false); err == nil || !strings.Contains(err.Error(), "out of sequence") {
		t.Errorf("a stale update: %v", err)
	}
	if _, err := c.Network("nonesuch"); !isNotFound(err) {
		t.Errorf("a missing network: %v", err)
	}
}

// An update that never converges stops the run after Timeout, and the service is rolled back.
func TestUpdateNeverConverges(t *testing.T) {
	w := newWorld(t)
	w.f.Lag = 1 << 30
	var out bytes.Buffer
	o := w.opts(&out)
	o.Timeout = 50 * time.Millisecond
	err := w.run(t, o)
	if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "service api: update not converged within 50ms") {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	kinds := []string{}
	for _, e := range w.events() {
		kinds = append(kinds, e.Kind+" "+e.Who)
	}
	if !slices.Equal(kinds, []string{"create appnet-vxsafe", "update api", "rollback api"}) {
		t.Errorf("writes %v, want the twin, api's update, api's rollback", kinds)
	}
	if !strings.Contains(out.String(), "service api: the rollback did not converge") {
		t.Errorf("output:\n%s", out.String())
	}
}

// A network that something this engine cannot see keeps in use is not removed: the run stops after
// RemoveWait and says why; everyone is on the twin.
func TestRemoveNetworkStillInUse(t *testing.T) {
	w := newWorld(t)
	w.f.Linger = 1 << 30
	var out bytes.Buffer
	o := w.opts(&out)
	o.RemoveWait = 30 * time.Millisecond
	err := w.run(t, o)
	if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "is in use by task") || !strings.Contains(err.Error(), "something on another node still uses it") {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !w.exists(w.old) {
		t.Error("the old network is gone")
	}
	twin := w.twin()
	for _, name := range []string{"api", "db", "web"} {
		if ids := w.taskNets(name); slices.Contains(ids, w.old.ID) || !slices.Contains(ids, twin.ID) {
			t.Errorf("%s is on %v", name, ids)
		}
	}
}

// --keep-subnet ends on a network of the old one's name and subnet, through a temporary twin, without a
// cut-off in either pass; the swarm's allocator releasing the old subnet late is waited for. A run again
// has nothing to do.
func TestKeepSubnet(t *testing.T) {
	w := newWorld(t)
	w.f.HoldSubnet = 2
	var out bytes.Buffer
	o := w.opts(&out)
	o.KeepSubnet = true
	if err := w.run(t, o); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	var final *engine.Network
	var ids []string
	w.f.lock(func() {
		final = w.f.netByRef("appnet")
		for _, n := range w.f.Networks {
			if n.Name == "appnet-vxsafe-tmp" {
				t.Errorf("the temporary twin %s is still there", n.Name)
			}
		}
	})
	for _, e := range w.events() {
		if e.Kind == "create" {
			ids = append(ids, e.After...)
		}
	}
	if final == nil || final.ID == w.old.ID || final.Driver != DefaultDriver || final.IPAM.Config[0].Subnet != "10.0.1.0/24" || len(ids) != 2 {
		t.Fatalf("final network %+v, created %v\n%s", final, ids, out.String())
	}
	creates := 0
	w.f.lock(func() {
		for _, wr := range w.f.Writes {
			if wr == "POST /networks/create" {
				creates++
			}
		}
	})
	if creates != 4 {
		t.Errorf("%d creations, want 4: the temporary twin, and the final one twice refused while the old subnet was held", creates)
	}
	if err := checkShared(w.f.Snapshot(), w.moved, w.old.ID, ids[0], ids[1]); err != nil {
		t.Errorf("%v\n%s", err, out.String())
	}
	for name, want := range map[string][]string{"api": sorted(final.ID, w.other.ID), "db": {final.ID}, "web": {final.ID}} {
		if got := w.taskNets(name); !slices.Equal(got, want) {
			t.Errorf("service %s is on %v, want %v", name, got, want)
		}
	}
	_, atts := w.specNets("api")
	if a, ok := find(atts, netRef{final.ID, final.Name}); !ok || !slices.Equal(a.Aliases, []string{"backend"}) {
		t.Errorf("api's attachments %+v", atts)
	}
	n := w.writes()
	out.Reset()
	if err := w.run(t, o); err != nil || !strings.Contains(out.String(), "Nothing left to do") || w.writes() != n {
		t.Errorf("again: %v, %d writes\n%s", err, w.writes()-n, out.String())
	}
}

// The network can be named by its ID, also in a run after the move is complete.
func TestNetworkByID(t *testing.T) {
	w := newWorld(t)
	var out bytes.Buffer
	o := w.opts(&out)
	o.Network = w.old.ID
	if err := w.run(t, o); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if w.exists(w.old) || w.twin() == nil {
		t.Fatalf("old there %v, twin %v", w.exists(w.old), w.twin())
	}
	out.Reset()
	if err := w.run(t, o); err != nil || !strings.Contains(out.String(), "Nothing left to do") {
		t.Errorf("again by ID: %v\n%s", err, out.String())
	}
}

// A service that joins the old network during the run (another writer) is caught by the check before
// anything leaves the old network: the run stops and nothing is taken off.
func TestLateJoinerCaughtByCheck(t *testing.T) {
	w := newWorld(t)
	joined := false
	w.f.OnWrite = func(method, path string) {
		if !joined && strings.HasSuffix(path, "/connect") { // the last add step
			joined = true
			w.f.service(fmt.Sprintf(`{"Name":"late","TaskTemplate":{"Networks":[{"Target":%q}]},"Mode":{"Replicated":{"Replicas":1}}}`, w.old.ID))
		}
	}
	var out bytes.Buffer
	err := w.run(t, w.opts(&out))
	if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "service late") {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, e := range w.events() {
		if e.Kind == "disconnect" || e.Kind == "remove" || (e.Kind == "update" && slices.Contains(e.Before, w.old.ID) && !slices.Contains(e.After, w.old.ID)) {
			t.Errorf("the old network taken off: %+v", e)
		}
	}
	// Run again: late gets the twin too, and the move completes.
	out.Reset()
	if err := w.run(t, w.opts(&out)); err != nil {
		t.Fatalf("again: %v\n%s", err, out.String())
	}
	if ids := w.taskNets("late"); !slices.Equal(ids, []string{w.twin().ID}) || w.exists(w.old) {
		t.Errorf("late is on %v, old there %v", ids, w.exists(w.old))
	}
}

// A service removed during the run, and one scaled to zero, do not stop it.
func TestServiceGoneOrScaledToZero(t *testing.T) {
	w := newWorld(t)
	w.f.service(fmt.Sprintf(`{"Name":"zero","TaskTemplate":{"Networks":[{"Target":%q}]},"Mode":{"Replicated":{"Replicas":0}},"UpdateConfig":{"Order":"start-first"}}`, w.old.ID))
	w.f.OnWrite = func(method, path string) {
		if s := w.f.svcByRef("db"); s != nil && strings.HasSuffix(path, "/networks/create") {
			w.f.removeService(s)
		}
	}
	var out bytes.Buffer
	if err := w.run(t, w.opts(&out)); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "the service is gone") || w.exists(w.old) {
		t.Errorf("old there %v\n%s", w.exists(w.old), out.String())
	}
	if ids, _ := w.specNets("zero"); !slices.Equal(ids, []string{w.twin().ID}) {
		t.Errorf("zero's spec is on %v", ids)
	}
}

// A container started with --network on the old network is warned about, unless --keep-subnet brings the
// name back.
func TestNetworkModeWarning(t *testing.T) {
	w := newWorld(t)
	w.tool.Mode = "appnet"
	for _, keep := range []bool{false, true} {
		var out bytes.Buffer
		o := w.opts(&out)
		o.DryRun, o.KeepSubnet = true, keep
		if err := w.run(t, o); err != nil {
			t.Fatalf("dry run (keep-subnet %v): %v\n%s", keep, err, out.String())
		}
		warned := strings.Contains(out.String(), "container tool was started with --network appnet")
		if warned == keep {
			t.Errorf("keep-subnet %v: warned %v about tool's network mode\n%s", keep, warned, out.String())
		}
	}
}

// --keep-subnet naming a plain run's twin is refused, and so is --keep-subnet while a plain run is under way.
func TestKeepSubnetRefusesPlainTwin(t *testing.T) {
	w := newWorld(t)
	w.f.Fail = func(name string, before, after []string) string {
		if name == "web" && len(after) > len(before) {
			return "paused"
		}
		return ""
	}
	var out bytes.Buffer
	if err := w.run(t, w.opts(&out)); !errors.Is(err, ErrStopped) {
		t.Fatalf("plain run: %v, want it stopped\n%s", err, out.String())
	}
	w.f.Fail = nil
	n := w.writes()
	for _, name := range []string{"appnet-vxsafe", "appnet"} {
		out.Reset()
		o := w.opts(&out)
		o.Network, o.KeepSubnet = name, true
		err := w.run(t, o)
		if err == nil || w.writes() != n {
			t.Errorf("--keep-subnet %s during a plain run: %v, %d writes, want a refusal and none\n%s", name, err, w.writes()-n, out.String())
		}
	}
}
