package migrate

// A fake swarm manager's Engine API: just the subset the migrator uses, with an in-memory swarm of
// networks, services (their specs kept raw), tasks, nodes and this engine's containers. It answers as
// dockerd does where the migrator depends on it: 404 {"message": ...} for a missing object, "update out
// of sequence" for a stale version, a service update that converges a few reads later (UpdateStatus nil,
// then updating, then completed), a manual rollback that swaps Spec and PreviousSpec, a network removal
// refused while a service spec, a task or a container uses it, a second network on an overlapping subnet
// refused. It records every write it is asked for, and a snapshot of who is on which network before each.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsafe/overlay/engine"
)

const fakePlugin = "vxsafe/overlay:latest"

type fakeService struct {
	ID      string
	Index   uint64
	Spec    json.RawMessage
	Prev    json.RawMessage
	Update  *engine.UpdateStatus
	pending int    // reads of the service before its update resolves
	outcome string // how the pending update resolves: "", "paused", "rollback" (failure action), "retrying", "completed-failing", "nostatus-failing", "stuck", "manual-rollback"
}

type fakeTask struct {
	ID           string `json:"ID"`
	ServiceID    string `json:"ServiceID,omitempty"`
	NodeID       string `json:"NodeID"`
	DesiredState string `json:"DesiredState"`
	Status       struct {
		Timestamp string `json:"Timestamp"`
		State     string `json:"State"`
		Message   string `json:"Message"`
		Err       string `json:"Err,omitempty"`
	} `json:"Status"`
	Spec struct {
		NetworkAttachmentSpec *struct {
			ContainerID string `json:"ContainerID"`
		} `json:"NetworkAttachmentSpec,omitempty"`
	} `json:"Spec"`
	NetworksAttachments []fakeAttach `json:"NetworksAttachments"`
	linger              int          // an attachment task left after a disconnect: the DELETEs it still blocks
}

type fakeAttach struct {
	Network struct {
		ID string `json:"ID"`
	} `json:"Network"`
	Addresses []string `json:"Addresses"`
}

type fakeNode struct {
	ID       string
	Hostname string
	Plugins  []string // network plugins
	State    string   // ready, down
}

type heldSubnet struct {
	subnet *net.IPNet
	name   string
	left   int
}

type fakeContainer struct {
	ID, Name string
	Mode     string // HostConfig.NetworkMode (docker run --network)
	Labels   map[string]string
	Nets     map[string][]string // network ID -> aliases as the engine shows them (with the short ID)
}

// fakeEvent is one write the fake applied: a service's networks changed (by an update or a rollback), a
// container connected or disconnected, a network created or removed.
type fakeEvent struct {
	Kind   string // update, rollback, connect, disconnect, create, remove
	Who    string // service or container name, or network name
	Before []string
	After  []string // network IDs
}

// fakeSwarm is the swarm the fake engine serves.
type fakeSwarm struct {
	t     *testing.T
	mu    sync.Mutex
	srv   *httptest.Server
	seq   int
	epoch time.Time // the clock of the fake's timestamps starts here (now, as the client's clock)

	Self       string
	Networks   []*engine.Network
	Services   []*fakeService
	Tasks      []*fakeTask
	Nodes      []*fakeNode
	Containers []*fakeContainer

	// Lag is how many reads (GET /services/{id}) of a service its update takes to resolve (0: 2).
	Lag int
	// Fail decides how the update of a service (by name, networks before and after) fails: "" it does
	// not, "paused" the swarm pauses it, "rollback" the swarm rolls it back (update-failure-action
	// rollback), "retrying" its new tasks fail again and again while it stays "updating",
	// "completed-failing" the same once the swarm calls the update completed, "nostatus-failing" the same
	// with no update status, "stuck" a new task stays in "preparing" with an error (the current engine
	// with an image it cannot pull). TaskErr is the failed task's error.
	Fail    func(name string, before, after []string) string
	TaskErr string
	// OutOfSequence[name] updates of a service are refused as out of sequence (another writer came between).
	OutOfSequence map[string]int
	// Linger is how many DELETEs of a network a disconnected container's attachment task still blocks.
	Linger int
	// OnWrite, when set, runs (under the fake's lock) before each write request is handled: another
	// writer changing the swarm during the run.
	OnWrite func(method, path string)
	// HoldSubnet is how many creations after a network's removal still find its subnet taken (the swarm's
	// allocator releases it a little later).
	HoldSubnet int
	held       []heldSubnet

	Writes    []string // every write request: METHOD path
	Events    []fakeEvent
	Snapshots []map[string][]string // before each write and at the end (Snapshot): who is on which network IDs
}

func newFakeSwarm(t *testing.T) *fakeSwarm {
	f := &fakeSwarm{t: t, OutOfSequence: map[string]int{}, TaskErr: "starting container failed: network sandbox join failed", epoch: time.Now().UTC()}
	f.Self = f.node("manager1", true).ID
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// client is an engine client of the fake.
func (f *fakeSwarm) client() *engine.Client {
	c, err := engine.New("tcp://"+f.srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fakeSwarm) id(kind string, n int) string {
	f.seq++
	h := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", kind, f.seq)))
	return hex.EncodeToString(h[:])[:n]
}

func (f *fakeSwarm) stamp() string {
	f.seq++
	return f.epoch.Add(time.Duration(f.seq) * time.Millisecond).Format("2006-01-02T15:04:05.000000000Z")
}

func (f *fakeSwarm) node(host string, plugin bool) *fakeNode {
	n := &fakeNode{ID: f.id("node", 25), Hostname: host, State: "ready"}
	if plugin {
		n.Plugins = []string{fakePlugin}
	}
	f.Nodes = append(f.Nodes, n)
	return n
}

// network adds a swarm overlay network.
func (f *fakeSwarm) network(name, subnet string, opts map[string]string) *engine.Network {
	n := &engine.Network{Name: name, ID: f.id("net", 25), Driver: "overlay", Scope: "swarm", Attachable: true,
		IPAM:    engine.IPAM{Driver: "default", Config: []engine.IPAMConfig{{Subnet: subnet}}},
		Options: map[string]string{"com.docker.network.driver.overlay.vxlanid_list": "4097"}, Labels: map[string]string{}}
	for k, v := range opts {
		n.Options[k] = v
	}
	f.Networks = append(f.Networks, n)
	return n
}

// service adds a service from a spec (JSON), with its tasks running on nodes.
func (f *fakeSwarm) service(specJSON string, nodes ...*fakeNode) *fakeService {
	var probe map[string]any
	if err := json.Unmarshal([]byte(specJSON), &probe); err != nil {
		f.t.Fatalf("spec %s: %v", specJSON, err)
	}
	s := &fakeService{ID: f.id("svc", 25), Index: 10, Spec: json.RawMessage(specJSON)}
	f.Services = append(f.Services, s)
	f.converge(s, nodes)
	return s
}

// removeService deletes a service and its tasks.
func (f *fakeSwarm) removeService(s *fakeService) {
	f.Services = slices.DeleteFunc(f.Services, func(x *fakeService) bool { return x == s })
	f.Tasks = slices.DeleteFunc(f.Tasks, func(t *fakeTask) bool { return t.ServiceID == s.ID })
}

// container adds a standalone container of this engine, on networks with aliases.
func (f *fakeSwarm) container(name string, nets map[*engine.Network][]string) *fakeContainer {
	c := &fakeContainer{ID: f.id("ctr", 64), Name: "/" + name, Labels: map[string]string{}, Nets: map[string][]string{}}
	for n, aliases := range nets {
		c.Nets[n.ID] = append(append([]string(nil), aliases...), c.ID[:12])
		f.attachTask(c, n.ID, f.Self)
	}
	f.Containers = append(f.Containers, c)
	return c
}

// remoteContainer adds the attachment task of a standalone container on another node.
func (f *fakeSwarm) remoteContainer(n *engine.Network, node *fakeNode) string {
	id := f.id("ctr", 64)
	f.attachTask(&fakeContainer{ID: id}, n.ID, node.ID)
	return id
}

func (f *fakeSwarm) attachTask(c *fakeContainer, netID, node string) {
	t := &fakeTask{ID: f.id("task", 25), NodeID: node, DesiredState: "running"}
	t.Status.State, t.Status.Timestamp, t.Status.Message = "running", f.stamp(), "started"
	t.Spec.NetworkAttachmentSpec = &struct {
		ContainerID string `json:"ContainerID"`
	}{c.ID}
	var a fakeAttach
	a.Network.ID = netID
	t.NetworksAttachments = []fakeAttach{a}
	f.Tasks = append(f.Tasks, t)
}

// netByRef finds a network as Docker resolves a reference: full ID, name, then a unique ID prefix.
func (f *fakeSwarm) netByRef(ref string) *engine.Network {
	if ref == "" {
		return nil
	}
	for _, n := range f.Networks {
		if n.ID == ref {
			return n
		}
	}
	for _, n := range f.Networks {
		if n.Name == ref {
			return n
		}
	}
	var hit *engine.Network
	for _, n := range f.Networks {
		if strings.HasPrefix(n.ID, ref) {
			if hit != nil {
				return nil
			}
			hit = n
		}
	}
	return hit
}

func (f *fakeSwarm) svcByRef(ref string) *fakeService {
	for _, s := range f.Services {
		if s.ID == ref || specName(s.Spec) == ref {
			return s
		}
	}
	return nil
}

func (f *fakeSwarm) ctrByRef(ref string) *fakeContainer {
	for _, c := range f.Containers {
		if c.ID == ref || strings.TrimPrefix(c.Name, "/") == strings.TrimPrefix(ref, "/") || (len(ref) >= 12 && strings.HasPrefix(c.ID, ref)) {
			return c
		}
	}
	return nil
}

func specName(b json.RawMessage) string {
	var s struct{ Name string }
	_ = json.Unmarshal(b, &s)
	return s.Name
}

// specTargets are the network IDs a spec names, TaskTemplate.Networks then the deprecated Networks (a
// target that names no network stays as written).
func (f *fakeSwarm) specTargets(b json.RawMessage) []string {
	var s struct {
		TaskTemplate struct {
			Networks []struct{ Target string }
		}
		Networks []struct{ Target string }
	}
	if err := json.Unmarshal(b, &s); err != nil {
		f.t.Errorf("fake: service spec %s: %v", b, err)
	}
	var out []string
	for _, a := range append(s.TaskTemplate.Networks, s.Networks...) {
		if n := f.netByRef(a.Target); n != nil {
			out = append(out, n.ID)
		} else {
			out = append(out, a.Target)
		}
	}
	return out
}

func (f *fakeSwarm) replicas(s *fakeService) (n int, global bool) {
	var sp struct {
		Mode struct {
			Replicated *struct{ Replicas *int }
			Global     *struct{}
		}
	}
	_ = json.Unmarshal(s.Spec, &sp)
	if sp.Mode.Global != nil {
		return 0, true
	}
	if sp.Mode.Replicated != nil && sp.Mode.Replicated.Replicas != nil {
		return *sp.Mode.Replicated.Replicas, false
	}
	return 1, false
}

// serviceTasks are the service's running tasks.
func (f *fakeSwarm) serviceTasks(s *fakeService) []*fakeTask {
	var out []*fakeTask
	for _, t := range f.Tasks {
		if t.ServiceID == s.ID && t.DesiredState == "running" && t.Status.State == "running" {
			out = append(out, t)
		}
	}
	return out
}

// converge replaces the service's running tasks with tasks on its spec's networks, on nodes (nil: the
// nodes of the tasks before, or every ready node with the plugin).
func (f *fakeSwarm) converge(s *fakeService, nodes []*fakeNode) {
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	for _, t := range f.Tasks {
		if t.ServiceID != s.ID || t.DesiredState != "running" {
			continue
		}
		if nodes == nil && t.Status.State == "running" {
			ids = append(ids, t.NodeID)
		}
		t.DesiredState, t.Status.State, t.Status.Timestamp = "shutdown", "shutdown", f.stamp()
	}
	want, global := f.replicas(s)
	if len(ids) == 0 {
		for _, n := range f.Nodes {
			if n.State == "ready" {
				ids = append(ids, n.ID)
			}
		}
	}
	if global {
		want = len(ids)
	}
	targets := f.specTargets(s.Spec)
	for i := 0; i < want; i++ {
		t := &fakeTask{ID: f.id("task", 25), ServiceID: s.ID, NodeID: ids[i%len(ids)], DesiredState: "running"}
		t.Status.State, t.Status.Timestamp, t.Status.Message = "running", f.stamp(), "started"
		for j, id := range targets {
			var a fakeAttach
			a.Network.ID = id
			a.Addresses = []string{fmt.Sprintf("10.255.%d.%d/24", j, len(f.Tasks)%250+2)}
			t.NetworksAttachments = append(t.NetworksAttachments, a)
		}
		f.Tasks = append(f.Tasks, t)
	}
}

func (f *fakeSwarm) startUpdate(s *fakeService) {
	s.Update, s.Index = &engine.UpdateStatus{State: "updating", StartedAt: f.stamp(), Message: "update in progress"}, s.Index+1
}

// taskWithErr adds a task of s, on the last node, in state with the error TaskErr.
func (f *fakeSwarm) taskWithErr(s *fakeService, desired, state string) {
	t := &fakeTask{ID: f.id("task", 25), ServiceID: s.ID, NodeID: f.Nodes[len(f.Nodes)-1].ID, DesiredState: desired}
	t.Status.State, t.Status.Timestamp, t.Status.Err = state, f.stamp(), f.TaskErr
	f.Tasks = append(f.Tasks, t)
}

// advance is one read of a service under update: the update resolves after Lag reads.
func (f *fakeSwarm) advance(s *fakeService) {
	if s.pending <= 0 {
		return
	}
	switch s.outcome {
	case "stuck":
		// The current engine with an image it cannot pull: one task stays in "preparing" with the error.
		if s.Update == nil {
			f.startUpdate(s)
			f.taskWithErr(s, "running", "preparing")
		}
		return
	case "completed-failing":
		// The current engine can also call such an update completed while its new task has not come up
		// (here the old one still runs) and the restart policy fails that task again and again.
		if s.Update == nil {
			f.startUpdate(s)
			s.Update.State, s.Update.Message = "completed", "update completed"
		}
		f.taskWithErr(s, "shutdown", "failed")
		return
	case "nostatus-failing":
		// The same with no update status at all (as the swarm leaves it between an update and its updater).
		f.taskWithErr(s, "shutdown", "failed")
		return
	case "retrying":
		// The current engine's way with a task that cannot start: a new one, and again; the update stays on.
		if s.Update == nil {
			f.startUpdate(s)
		}
		f.taskWithErr(s, "shutdown", "rejected")
		return
	}
	s.pending--
	if s.pending > 0 {
		if s.outcome != "manual-rollback" && s.Update == nil {
			f.startUpdate(s)
		}
		return
	}
	s.Index++
	switch s.outcome {
	case "", "manual-rollback":
		f.converge(s, nil)
		if s.outcome == "" {
			s.Update = &engine.UpdateStatus{State: "completed", Message: "update completed"}
		} else {
			s.Update = &engine.UpdateStatus{State: "rollback_completed", Message: "rollback completed"}
		}
	case "paused", "rollback":
		failed := &fakeTask{ID: f.id("task", 25), ServiceID: s.ID, NodeID: f.Nodes[len(f.Nodes)-1].ID, DesiredState: "shutdown"}
		failed.Status.State, failed.Status.Timestamp, failed.Status.Message, failed.Status.Err = "failed", f.stamp(), "starting", f.TaskErr
		f.Tasks = append(f.Tasks, failed)
		if s.outcome == "paused" {
			s.Update = &engine.UpdateStatus{State: "paused", Message: "update paused due to failure or early termination of task " + failed.ID}
		} else {
			before := f.specTargets(s.Spec)
			s.Spec, s.Prev = s.Prev, s.Spec
			f.Events = append(f.Events, fakeEvent{Kind: "swarm-rollback", Who: specName(s.Spec), Before: before, After: f.specTargets(s.Spec)})
			s.Update = &engine.UpdateStatus{State: "rollback_completed", Message: "rollback completed"}
		}
	}
	s.outcome = ""
}

// taskNets are the networks every running task of the service is on.
func (f *fakeSwarm) taskNets(s *fakeService) []string {
	count := map[string]int{}
	tasks := f.serviceTasks(s)
	for _, t := range tasks {
		for _, a := range t.NetworksAttachments {
			count[a.Network.ID]++
		}
	}
	var out []string
	for id, n := range count {
		if n == len(tasks) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// snapshot is who is on which network now: a service where all its running tasks are, a container where
// it is connected.
func (f *fakeSwarm) snapshot() map[string][]string {
	out := map[string][]string{}
	for _, s := range f.Services {
		out["service "+specName(s.Spec)] = f.taskNets(s)
	}
	for _, c := range f.Containers {
		var ids []string
		for id := range c.Nets {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		out["container "+strings.TrimPrefix(c.Name, "/")] = ids
	}
	return out
}

// Snapshot records the state at the end (under the lock) and returns every snapshot.
func (f *fakeSwarm) Snapshot() []map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Snapshots = append(f.Snapshots, f.snapshot())
	return f.Snapshots
}

// lock runs fn under the fake's lock (a test reading or changing the swarm).
func (f *fakeSwarm) lock(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

type fakeErr struct {
	code int
	msg  string
}

func (f *fakeSwarm) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method != http.MethodGet {
		f.Writes = append(f.Writes, r.Method+" "+r.URL.RequestURI())
		f.Snapshots = append(f.Snapshots, f.snapshot())
		if f.OnWrite != nil {
			f.OnWrite(r.Method, r.URL.Path)
		}
	}
	body, _ := io.ReadAll(r.Body)
	out, ferr := f.route(r, body)
	w.Header().Set("Content-Type", "application/json")
	if ferr != nil {
		w.WriteHeader(ferr.code)
		_ = json.NewEncoder(w).Encode(map[string]string{"message": ferr.msg})
		return
	}
	code := http.StatusOK
	if r.Method == http.MethodPost && r.URL.Path == "/networks/create" {
		code = http.StatusCreated
	}
	if out == nil {
		w.WriteHeader(map[bool]int{true: http.StatusNoContent, false: code}[r.Method == http.MethodDelete])
		return
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(out)
}

func notFound(format string, args ...any) *fakeErr {
	return &fakeErr{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

func (f *fakeSwarm) route(r *http.Request, body []byte) (any, *fakeErr) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	for i := range parts {
		parts[i], _ = url.PathUnescape(parts[i])
	}
	get := r.Method == http.MethodGet
	switch {
	case get && len(parts) == 1 && parts[0] == "info":
		return map[string]any{"Swarm": map[string]any{"NodeID": f.Self, "LocalNodeState": "active", "ControlAvailable": true,
			"Cluster":        map[string]any{"DataPathPort": 4789},
			"RemoteManagers": []map[string]string{{"NodeID": f.Self, "Addr": "10.9.0.1:2377"}}}}, nil
	case get && len(parts) == 1 && parts[0] == "networks":
		var out []any
		for _, n := range f.Networks {
			out = append(out, f.networkJSON(n, false))
		}
		return out, nil
	case get && len(parts) == 2 && parts[0] == "networks":
		n := f.netByRef(parts[1])
		if n == nil {
			return nil, notFound("network %s not found", parts[1])
		}
		return f.networkJSON(n, true), nil
	case r.Method == http.MethodPost && len(parts) == 2 && parts[0] == "networks" && parts[1] == "create":
		return f.createNetwork(body)
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "networks" && (parts[2] == "connect" || parts[2] == "disconnect"):
		return f.connect(parts[1], parts[2], body)
	case r.Method == http.MethodDelete && len(parts) == 2 && parts[0] == "networks":
		return f.removeNetwork(parts[1])
	case get && len(parts) == 1 && parts[0] == "services":
		var out []any
		for _, s := range f.Services {
			out = append(out, serviceJSON(s))
		}
		return out, nil
	case get && len(parts) == 2 && parts[0] == "services":
		s := f.svcByRef(parts[1])
		if s == nil {
			return nil, notFound("service %s not found", parts[1])
		}
		f.advance(s)
		return serviceJSON(s), nil
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "services" && parts[2] == "update":
		return f.updateService(parts[1], r.URL.Query(), body)
	case get && len(parts) == 1 && parts[0] == "tasks":
		return f.tasks(r.URL.Query().Get("filters"))
	case get && len(parts) == 1 && parts[0] == "nodes":
		var out []any
		for _, n := range f.Nodes {
			var plugins []map[string]string
			for _, p := range n.Plugins {
				plugins = append(plugins, map[string]string{"Type": "Network", "Name": p})
			}
			plugins = append(plugins, map[string]string{"Type": "Network", "Name": "overlay"}, map[string]string{"Type": "Volume", "Name": "local"})
			role := "worker"
			if n.ID == f.Self {
				role = "manager"
			}
			out = append(out, map[string]any{"ID": n.ID, "Spec": map[string]string{"Role": role, "Availability": "active"},
				"Description": map[string]any{"Hostname": n.Hostname, "Engine": map[string]any{"EngineVersion": "27.5.1", "Plugins": plugins}},
				"Status":      map[string]string{"State": n.State, "Addr": "10.9.0." + strconv.Itoa(len(out)+1)}})
		}
		return out, nil
	case get && len(parts) == 3 && parts[0] == "containers" && parts[2] == "json":
		c := f.ctrByRef(parts[1])
		if c == nil {
			return nil, notFound("No such container: %s", parts[1])
		}
		nets := map[string]any{}
		for id, aliases := range c.Nets {
			n := f.netByRef(id)
			nets[n.Name] = map[string]any{"NetworkID": id, "EndpointID": f.id("ep", 64), "Aliases": aliases}
		}
		return map[string]any{"Id": c.ID, "Name": c.Name, "Config": map[string]any{"Labels": c.Labels},
			"HostConfig": map[string]any{"NetworkMode": c.Mode}, "NetworkSettings": map[string]any{"Networks": nets}}, nil
	}
	f.t.Errorf("fake engine: unexpected request %s %s", r.Method, r.URL.RequestURI())
	return nil, &fakeErr{http.StatusNotImplemented, "fake: not emulated: " + r.Method + " " + r.URL.Path}
}

func serviceJSON(s *fakeService) map[string]any {
	out := map[string]any{"ID": s.ID, "Version": map[string]uint64{"Index": s.Index}, "Spec": s.Spec,
		"CreatedAt": "2026-01-01T00:00:00Z", "Endpoint": map[string]any{}}
	if s.Prev != nil {
		out["PreviousSpec"] = s.Prev
	}
	if s.Update != nil {
		out["UpdateStatus"] = s.Update
	}
	return out
}

// networkJSON is a network as inspect shows it; the list (detail false) has no Containers, as dockerd's.
func (f *fakeSwarm) networkJSON(n *engine.Network, detail bool) engine.Network {
	out := *n
	out.Containers = map[string]json.RawMessage{}
	if !detail {
		return out
	}
	for _, c := range f.Containers {
		if _, ok := c.Nets[n.ID]; ok {
			b, _ := json.Marshal(map[string]string{"Name": strings.TrimPrefix(c.Name, "/"), "EndpointID": f.id("ep", 64)})
			out.Containers[c.ID] = b
		}
	}
	if len(out.Containers) > 0 {
		out.Containers["lb-"+n.Name] = json.RawMessage(`{"Name":"` + n.Name + `-endpoint"}`)
	}
	return out
}

func (f *fakeSwarm) createNetwork(body []byte) (any, *fakeErr) {
	var req engine.NetworkCreate
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &fakeErr{http.StatusBadRequest, err.Error()}
	}
	for _, n := range f.Networks {
		if n.Name == req.Name {
			return nil, &fakeErr{http.StatusConflict, fmt.Sprintf("network with name %s already exists", req.Name)}
		}
	}
	n := &engine.Network{Name: req.Name, ID: f.id("net", 25), Driver: req.Driver, Scope: "swarm", Attachable: req.Attachable,
		Internal: req.Internal, EnableIPv6: req.EnableIPv6, Options: req.Options, Labels: req.Labels}
	if req.IPAM != nil {
		n.IPAM = *req.IPAM
	}
	for _, c := range n.IPAM.Config {
		_, p, err := net.ParseCIDR(c.Subnet)
		if err != nil {
			return nil, &fakeErr{http.StatusBadRequest, fmt.Sprintf("invalid subnet %q", c.Subnet)}
		}
		if o, used := usedBy(f.networkList(), p, ""); used {
			return nil, &fakeErr{http.StatusForbidden, fmt.Sprintf("rpc error: code = InvalidArgument desc = invalid pool request: Pool overlaps with other one on this address space (network %s)", o.Name)}
		}
		for i := range f.held {
			if h := &f.held[i]; h.left > 0 && overlaps(h.subnet, p) {
				h.left--
				return nil, &fakeErr{http.StatusForbidden, fmt.Sprintf("rpc error: code = InvalidArgument desc = invalid pool request: Pool overlaps with other one on this address space (removed network %s)", h.name)}
			}
		}
	}
	f.Networks = append(f.Networks, n)
	f.Events = append(f.Events, fakeEvent{Kind: "create", Who: n.Name, After: []string{n.ID}})
	return map[string]string{"Id": n.ID, "Warning": ""}, nil
}

func (f *fakeSwarm) networkList() []engine.Network {
	var out []engine.Network
	for _, n := range f.Networks {
		out = append(out, *n)
	}
	return out
}

func (f *fakeSwarm) removeNetwork(ref string) (any, *fakeErr) {
	n := f.netByRef(ref)
	if n == nil {
		return nil, notFound("network %s not found", ref)
	}
	for _, s := range f.Services {
		for _, id := range append(f.specTargets(s.Spec), f.taskNetsAny(s)...) {
			if id == n.ID {
				return nil, &fakeErr{http.StatusForbidden, fmt.Sprintf("rpc error: code = FailedPrecondition desc = network %s is in use by service %s", n.ID, s.ID)}
			}
		}
	}
	for _, c := range f.Containers {
		if _, ok := c.Nets[n.ID]; ok {
			return nil, &fakeErr{http.StatusForbidden, fmt.Sprintf("error while removing network: network %s id %s has active endpoints", n.Name, n.ID)}
		}
	}
	for _, t := range f.Tasks {
		if t.DesiredState != "running" || t.Spec.NetworkAttachmentSpec == nil {
			continue
		}
		for _, a := range t.NetworksAttachments {
			if a.Network.ID != n.ID {
				continue
			}
			if t.linger > 0 {
				t.linger--
				if t.linger == 0 {
					t.DesiredState, t.Status.State = "shutdown", "shutdown"
				}
			}
			return nil, &fakeErr{http.StatusForbidden, fmt.Sprintf("rpc error: code = FailedPrecondition desc = network %s is in use by task %s", n.ID, t.ID)}
		}
	}
	for _, p := range subnets(*n) {
		f.held = append(f.held, heldSubnet{p, n.Name, f.HoldSubnet})
	}
	for i, m := range f.Networks {
		if m == n {
			f.Networks = append(f.Networks[:i:i], f.Networks[i+1:]...)
		}
	}
	f.Events = append(f.Events, fakeEvent{Kind: "remove", Who: n.Name, Before: []string{n.ID}})
	return nil, nil
}

// taskNetsAny are the networks any running task of the service is on.
func (f *fakeSwarm) taskNetsAny(s *fakeService) []string {
	var out []string
	for _, t := range f.serviceTasks(s) {
		for _, a := range t.NetworksAttachments {
			out = append(out, a.Network.ID)
		}
	}
	return out
}

func (f *fakeSwarm) connect(ref, op string, body []byte) (any, *fakeErr) {
	var req struct {
		Container      string
		EndpointConfig struct{ Aliases []string }
		Force          bool
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &fakeErr{http.StatusBadRequest, err.Error()}
	}
	n := f.netByRef(ref)
	if n == nil {
		return nil, notFound("network %s not found", ref)
	}
	c := f.ctrByRef(req.Container)
	if c == nil {
		return nil, notFound("No such container: %s", req.Container)
	}
	before := sortedKeys(c.Nets)
	name := strings.TrimPrefix(c.Name, "/")
	if op == "connect" {
		if _, ok := c.Nets[n.ID]; ok {
			return nil, &fakeErr{http.StatusForbidden, fmt.Sprintf("endpoint with name %s already exists in network %s", name, n.Name)}
		}
		if !n.Attachable {
			return nil, &fakeErr{http.StatusForbidden, fmt.Sprintf("Could not attach to network %s: rpc error: code = PermissionDenied desc = network %s not manually attachable", n.Name, n.ID)}
		}
		c.Nets[n.ID] = append(append([]string(nil), req.EndpointConfig.Aliases...), c.ID[:12])
		f.attachTask(c, n.ID, f.Self)
	} else {
		if _, ok := c.Nets[n.ID]; !ok {
			return nil, &fakeErr{http.StatusForbidden, fmt.Sprintf("container %s is not connected to network %s", c.ID, n.Name)}
		}
		delete(c.Nets, n.ID)
		for _, t := range f.Tasks {
			if t.Spec.NetworkAttachmentSpec != nil && t.Spec.NetworkAttachmentSpec.ContainerID == c.ID && t.DesiredState == "running" &&
				len(t.NetworksAttachments) == 1 && t.NetworksAttachments[0].Network.ID == n.ID {
				if f.Linger > 0 {
					t.linger = f.Linger
				} else {
					t.DesiredState, t.Status.State = "shutdown", "shutdown"
				}
			}
		}
	}
	f.Events = append(f.Events, fakeEvent{Kind: op, Who: name, Before: before, After: sortedKeys(c.Nets)})
	return nil, nil
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (f *fakeSwarm) updateService(ref string, q url.Values, body []byte) (any, *fakeErr) {
	s := f.svcByRef(ref)
	if s == nil {
		return nil, notFound("service %s not found", ref)
	}
	name := specName(s.Spec)
	v, err := strconv.ParseUint(q.Get("version"), 10, 64)
	if err != nil {
		return nil, &fakeErr{http.StatusBadRequest, "invalid version"}
	}
	if f.OutOfSequence[name] > 0 {
		f.OutOfSequence[name]--
		s.Index++ // another writer came between
	}
	if v != s.Index {
		return nil, &fakeErr{http.StatusInternalServerError, "rpc error: code = Unknown desc = update out of sequence"}
	}
	before := f.specTargets(s.Spec)
	if q.Get("rollback") == "previous" {
		if s.Prev == nil {
			return nil, &fakeErr{http.StatusBadRequest, fmt.Sprintf("rpc error: code = FailedPrecondition desc = service %s does not have a previous spec", s.ID)}
		}
		s.Spec, s.Prev = s.Prev, s.Spec
		s.Update = &engine.UpdateStatus{State: "rollback_started", Message: "manually requested rollback"}
		s.outcome = "manual-rollback"
		f.Events = append(f.Events, fakeEvent{Kind: "rollback", Who: name, Before: before, After: f.specTargets(s.Spec)})
	} else {
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(body, &probe); err != nil || probe["TaskTemplate"] == nil {
			return nil, &fakeErr{http.StatusBadRequest, fmt.Sprintf("invalid spec: %s", body)}
		}
		s.Prev, s.Spec = s.Spec, append(json.RawMessage(nil), body...)
		s.Update, s.outcome = nil, ""
		after := f.specTargets(s.Spec)
		if f.Fail != nil {
			s.outcome = f.Fail(name, before, after)
		}
		f.Events = append(f.Events, fakeEvent{Kind: "update", Who: name, Before: before, After: after})
	}
	s.Index++
	s.pending = f.Lag
	if s.pending <= 0 {
		s.pending = 2
	}
	return map[string]any{"Warnings": nil}, nil
}

func (f *fakeSwarm) tasks(filters string) (any, *fakeErr) {
	want := map[string][]string{}
	if filters != "" {
		if err := json.Unmarshal([]byte(filters), &want); err != nil {
			var old map[string]map[string]bool
			if err2 := json.Unmarshal([]byte(filters), &old); err2 != nil {
				return nil, &fakeErr{http.StatusBadRequest, "invalid filter: " + err.Error()}
			}
			for k, vs := range old {
				for v := range vs {
					want[k] = append(want[k], v)
				}
			}
		}
	}
	match := func(key, v string, also ...string) bool {
		vs, ok := want[key]
		if !ok {
			return true
		}
		for _, w := range vs {
			if w == v {
				return true
			}
			for _, a := range also {
				if w == a {
					return true
				}
			}
		}
		return false
	}
	for k := range want {
		if k != "service" && k != "desired-state" && k != "node" {
			return nil, &fakeErr{http.StatusBadRequest, "invalid filter '" + k + "'"}
		}
	}
	out := []*fakeTask{}
	for _, t := range f.Tasks {
		svcName := ""
		if s := f.svcByRef(t.ServiceID); s != nil && t.ServiceID != "" {
			svcName = specName(s.Spec)
		}
		if _, ok := want["service"]; ok && t.ServiceID == "" {
			continue
		}
		if match("service", t.ServiceID, svcName) && match("desired-state", t.DesiredState) && match("node", t.NodeID) {
			out = append(out, t)
		}
	}
	return out, nil
}
