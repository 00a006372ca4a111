package migrate

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
)

// updateError is a service update that failed (paused, rolled back by the swarm, or not converged in
// time); the run rolls the service back before it stops.
type updateError struct {
	service string
	state   string // the update's state, or "not converged"
	message string // the swarm's message
	task    string // the last task error, with its node
	back    func() // rolls the service back and reports it
}

func (e *updateError) Error() string {
	s := fmt.Sprintf("service %s: update %s", e.service, e.state)
	if e.message != "" {
		s += ": " + e.message
	}
	if e.task != "" {
		s += "; last task error: " + e.task
	}
	return s
}

func (m *Migrator) createTwin(p *plan) (string, error) {
	nets, err := m.c.Networks()
	if err != nil {
		return "", err
	}
	_, temp := p.create.Labels[LabelKeepSubnet]
	if twins := twinOf(nets, p.create.Labels[LabelFromID], "", temp); len(twins) > 0 {
		*p.to = netRef{twins[0].ID, twins[0].Name}
		return "exists already", nil
	}
	deadline := time.Now().Add(m.o.RemoveWait)
	id, err := m.c.CreateNetwork(*p.create)
	// The second pass of --keep-subnet takes the subnet of a network just removed: the swarm's allocator
	// may not have released it yet.
	for err != nil && m.keep != nil && m.keep.second && strings.Contains(err.Error(), "overlap") && time.Now().Before(deadline) {
		time.Sleep(m.o.Poll)
		id, err = m.c.CreateNetwork(*p.create)
	}
	if err != nil {
		return "", err
	}
	*p.to = netRef{id, p.create.Name}
	return "id " + netconfig.ShortID(id), nil
}

// changeService applies change to the service's networks (at its current version, again if another
// change came between) and waits until its tasks run with the result; on a failure it rolls back.
func (m *Migrator) changeService(s *service, change func([]attachment) []attachment, converged func(engine.Task) bool, previous func(engine.Task) bool) (string, error) {
	for attempt := 0; ; attempt++ {
		cur, err := m.c.ServiceInspect(s.ID)
		if isNotFound(err) {
			return "the service is gone", nil
		}
		if err != nil {
			return "", fmt.Errorf("service %s: %w", s.Name, err)
		}
		sp, err := parseSpec(cur.Spec)
		if err != nil {
			return "", fmt.Errorf("service %s: %w", s.Name, err)
		}
		nets := sp.networks()
		next := change(nets)
		if sameTargets(nets, next) {
			break // done already: wait for it below
		}
		sp.setNetworks(next)
		warnings, err := m.c.UpdateService(s.ID, cur.Version.Index, sp.marshal(), false)
		if err != nil && strings.Contains(err.Error(), "out of sequence") && attempt < 3 {
			continue // changed since it was read
		}
		if err != nil {
			return "", fmt.Errorf("service %s: %w", s.Name, err)
		}
		for _, w := range warnings {
			m.printf("(service %s: the engine warns: %s) ", s.Name, w)
		}
		break
	}
	n, err := m.waitService(s, converged, false)
	if err != nil {
		var ue *updateError
		if errors.As(err, &ue) {
			ue.back = func() { m.rollback(s, previous) }
		}
		return "", err
	}
	return fmt.Sprintf("%d task(s) running", n), nil
}

func sameTargets(a, b []attachment) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Target != b[i].Target {
			return false
		}
	}
	return true
}

func onNet(t engine.Task, n *netRef) bool {
	for _, id := range t.Networks() {
		if id == n.ID {
			return true
		}
	}
	return false
}

func (m *Migrator) addNetwork(s *service, p *plan) (string, error) {
	from, to := *p.from, *p.to
	return m.changeService(s, func(nets []attachment) []attachment { return withNetwork(nets, from, to) },
		func(t engine.Task) bool { return onNet(t, &to) },
		func(t engine.Task) bool { return !onNet(t, &to) })
}

func (m *Migrator) removeNetwork(s *service, p *plan) (string, error) {
	from, to := *p.from, *p.to
	return m.changeService(s, func(nets []attachment) []attachment { return withoutNetwork(nets, from) },
		func(t engine.Task) bool { return !onNet(t, &from) && onNet(t, &to) },
		func(t engine.Task) bool { return onNet(t, &from) })
}

// waitService waits until the service's update is over and every task that should run runs, as ok
// wants it (and as many as its replicas). In a rollback, the rollback's end states are the goal.
func (m *Migrator) waitService(s *service, ok func(engine.Task) bool, rollback bool) (int, error) {
	began := time.Now()
	deadline := began.Add(m.o.Timeout)
	why := ""
	erring := map[string]time.Time{} // tasks of the update seen with an error, not running: since when
	for {
		cur, err := m.c.ServiceInspect(s.ID)
		if isNotFound(err) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("service %s: %w", s.Name, err)
		}
		state, msg := "", ""
		if cur.UpdateStatus != nil {
			state, msg = cur.UpdateStatus.State, cur.UpdateStatus.Message
		}
		if (!rollback && (state == "paused" || strings.HasPrefix(state, "rollback_"))) ||
			(rollback && (state == "rollback_paused" || state == "paused")) {
			return 0, &updateError{service: s.Name, state: state, message: msg, task: m.lastTaskError(s.ID)}
		}
		done := state == "" || state == "completed" || (rollback && state == "rollback_completed")
		if done {
			n, reason, err := m.tasksConverged(cur, ok)
			if err != nil {
				return 0, fmt.Errorf("service %s: %w", s.Name, err)
			}
			if reason == "" {
				return n, nil
			}
			why = reason
		} else {
			why = "update " + state
		}
		// A task that cannot start stops the run while the update is on, and also once the swarm calls it
		// "completed" with a replica short: the current engine can end an update whose new task failed
		// after the updater moved on, and the restart policy then fails that task again and again.
		if !rollback && (state == "updating" || done) {
			since := began // the swarm gave no update status: the tasks since the wait began
			if cur.UpdateStatus != nil {
				if at, err := time.Parse(time.RFC3339Nano, cur.UpdateStatus.StartedAt); err == nil {
					since = at
				}
			}
			failed, stuck := m.troubled(s.ID, since, erring)
			if failed >= failLimit {
				return 0, &updateError{service: s.Name, state: fmt.Sprintf("failing (%d tasks of it failed)", failed), message: msg, task: m.lastTaskError(s.ID)}
			}
			if stuck != "" {
				return 0, &updateError{service: s.Name, state: fmt.Sprintf("stuck (a task has failed to start for %s)", m.o.StuckAfter), message: msg, task: stuck}
			}
		}
		if time.Now().After(deadline) {
			return 0, &updateError{service: s.Name, state: "not converged within " + m.o.Timeout.String(), message: why, task: m.lastTaskError(s.ID)}
		}
		time.Sleep(m.o.Poll)
	}
}

// failLimit is how many tasks of an update may fail before the run stops it: swarm's own default
// (update-failure-action pause, max-failure-ratio 0) stops at the first, but the current engine retries a
// task that cannot start, and the update stays "updating" where 20.10 paused it. It either makes new
// tasks that fail, or keeps one in "preparing" with an error (an image it cannot pull): that is stuck once
// it has failed for Options.StuckAfter.
const failLimit = 3

// troubled looks at the service's tasks since its update started: how many failed or were rejected, and
// one that has been failing to start for StuckAfter (its error, with the node), if any.
func (m *Migrator) troubled(id string, since time.Time, erring map[string]time.Time) (failed int, stuck string) {
	tasks, err := m.c.Tasks(map[string][]string{"service": {id}})
	if err != nil {
		return 0, ""
	}
	now := time.Now()
	for _, t := range tasks {
		at, err := time.Parse(time.RFC3339Nano, t.Status.Timestamp)
		if t.ServiceID != id || err != nil || at.Before(since) {
			continue
		}
		switch {
		case t.Status.State == "failed" || t.Status.State == "rejected":
			failed++
		case t.Status.Err != "" && t.Status.State != "running" && t.DesiredState == "running":
			first, seen := erring[t.ID]
			if !seen {
				erring[t.ID] = now
			} else if now.Sub(first) >= m.o.StuckAfter && stuck == "" {
				stuck = m.describeTask(t)
			}
		}
	}
	return failed, stuck
}

// tasksConverged counts the service's tasks that should run: all running and as ok wants them, and as
// many as its replicas; else it says what is missing.
func (m *Migrator) tasksConverged(cur engine.SwarmService, ok func(engine.Task) bool) (int, string, error) {
	tasks, err := m.c.Tasks(map[string][]string{"service": {cur.ID}, "desired-state": {"running"}})
	if err != nil {
		return 0, "", err
	}
	sp, err := parseSpec(cur.Spec)
	if err != nil {
		return 0, "", err
	}
	f := sp.fields()
	n := 0
	for _, t := range tasks {
		if t.ServiceID != cur.ID {
			continue
		}
		if t.Status.State != "running" {
			return 0, fmt.Sprintf("task %s is %s %s", netconfig.ShortID(t.ID), t.Status.State, t.Status.Err), nil
		}
		if !ok(t) {
			return 0, fmt.Sprintf("task %s still has the networks of before", netconfig.ShortID(t.ID)), nil
		}
		n++
	}
	if r := f.Mode.Replicated; r != nil {
		want := 1
		if r.Replicas != nil {
			want = int(*r.Replicas)
		}
		if n != want {
			return 0, fmt.Sprintf("%d of %d replicas running", n, want), nil
		}
	}
	return n, "", nil
}

// lastTaskError is the newest task error of the service, with its node: what the operator must fix.
func (m *Migrator) lastTaskError(id string) string {
	tasks, err := m.c.Tasks(map[string][]string{"service": {id}})
	if err != nil {
		return ""
	}
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].Status.Timestamp > tasks[j].Status.Timestamp })
	for _, t := range tasks {
		if t.Status.Err != "" {
			return m.describeTask(t)
		}
	}
	return ""
}

// describeTask names a task, its node and state, and its error.
func (m *Migrator) describeTask(t engine.Task) string {
	node := netconfig.ShortID(t.NodeID)
	if nodes, err := m.c.Nodes(); err == nil {
		for _, n := range nodes {
			if n.ID == t.NodeID && n.Description.Hostname != "" {
				node = n.Description.Hostname
			}
		}
	}
	if node == "" {
		node = "not scheduled"
	}
	return fmt.Sprintf("task %s (node %s, %s): %s", netconfig.ShortID(t.ID), node, t.Status.State, t.Status.Err)
}

// rollback rolls a service back to its spec before the failed update (docker service rollback), unless
// the swarm did or does it already, and waits for the tasks to follow.
func (m *Migrator) rollback(s *service, previous func(engine.Task) bool) {
	began := time.Now()
	cur, err := m.c.ServiceInspect(s.ID)
	if err != nil {
		m.logf("service %s: cannot roll back: %v", s.Name, err)
		return
	}
	state := ""
	if cur.UpdateStatus != nil {
		state = cur.UpdateStatus.State
	}
	how := "rolled back by the swarm (its update-failure-action)"
	if !strings.HasPrefix(state, "rollback_") {
		if _, err := m.c.UpdateService(s.ID, cur.Version.Index, cur.Spec, true); err != nil {
			m.logf("service %s: rollback refused: %v: run `docker service rollback %s`", s.Name, err, s.Name)
			return
		}
		how = "rolled back (docker service rollback)"
	}
	m.logf("service %s: %s; waiting for its tasks", s.Name, how)
	if n, err := m.waitService(s, previous, true); err != nil {
		m.logf("service %s: the rollback did not converge: %v", s.Name, err)
	} else {
		m.logf("service %s: back on its previous networks, %d task(s) running (%.1fs)", s.Name, n, time.Since(began).Seconds())
	}
}

func (m *Migrator) connect(c *container, p *plan) (string, error) {
	ci, err := m.c.ContainerInspect(c.ID)
	if isNotFound(err) {
		return "the container is gone", nil
	}
	if err != nil {
		return "", fmt.Errorf("container %s: %w", c.Name, err)
	}
	for _, e := range ci.NetworkSettings.Networks {
		if e.NetworkID == p.to.ID {
			return "connected already", nil
		}
	}
	aliases := c.AliasesOld
	if m.o.Revert {
		aliases = c.AliasesTwin
	}
	if err := m.c.ConnectNetwork(p.to.ID, c.ID, aliases); err != nil {
		return "", fmt.Errorf("container %s: connect to %s: %w", c.Name, p.to.Name, err)
	}
	if len(aliases) > 0 {
		return "aliases " + strings.Join(aliases, ","), nil
	}
	return "", nil
}

func (m *Migrator) disconnect(c *container, p *plan) (string, error) {
	ci, err := m.c.ContainerInspect(c.ID)
	if isNotFound(err) {
		return "the container is gone", nil
	}
	if err != nil {
		return "", fmt.Errorf("container %s: %w", c.Name, err)
	}
	on := false
	for _, e := range ci.NetworkSettings.Networks {
		on = on || e.NetworkID == p.from.ID
	}
	if !on {
		return "disconnected already", nil
	}
	if err := m.c.DisconnectNetwork(p.from.ID, c.ID, false); err != nil {
		return "", fmt.Errorf("container %s: disconnect from %s: %w", c.Name, p.from.Name, err)
	}
	return "", nil
}

// checkAllOnTo is the gate before anything leaves the old network: every service and container on it
// must be on the new one too, read again now.
func (m *Migrator) checkAllOnTo(p *plan) (string, error) {
	st, err := m.look()
	if err != nil {
		return "", err
	}
	var missing, remote []string
	for _, s := range st.Services {
		if onFrom, onTo := m.sides(s.OnOld, s.OnTwin); onFrom && !onTo {
			missing = append(missing, "service "+s.Name)
		}
	}
	for _, c := range st.Containers {
		if onFrom, onTo := m.sides(c.OnOld, c.OnTwin); onFrom && !onTo {
			if c.Local {
				missing = append(missing, "container "+c.Name)
			} else {
				remote = append(remote, fmt.Sprintf("on node %s: docker network connect %s %s", st.nodeName(c.Node), p.to.Name, c.Name))
			}
		}
	}
	if len(remote) > 0 {
		return "", fmt.Errorf("containers on other nodes are on %s only, and would be cut off: %s; then run again", p.from.Name, strings.Join(remote, "; "))
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("not on %s yet (they joined %s during the run?): %s; run again", p.to.Name, p.from.Name, strings.Join(missing, ", "))
	}
	return fmt.Sprintf("%d service(s), %d container(s)", len(st.Services), len(st.Containers)), nil
}

// removeFrom removes the network everything left; the swarm drops the attachment tasks of removed
// endpoints a little later, and refuses meanwhile ("in use by task"): that is retried.
func (m *Migrator) removeFrom(p *plan) (string, error) {
	deadline := time.Now().Add(m.o.RemoveWait)
	tries := 0
	for {
		tries++
		err := m.c.RemoveNetwork(p.from.ID)
		if err == nil {
			if tries > 1 {
				return fmt.Sprintf("after %d tries: the swarm still held attachment tasks", tries), nil
			}
			return "", nil
		}
		// 20.10 answers a second DELETE of a swarm network whose removal is still going on (the manager
		// engine's inspect still finds it) with 500 "network ID not found".
		if isNotFound(err) || strings.HasSuffix(strings.TrimSpace(err.Error()), p.from.ID+" not found") {
			return "gone already", nil
		}
		inUse := strings.Contains(err.Error(), "in use") || strings.Contains(err.Error(), "active endpoints")
		if !inUse || time.Now().After(deadline) {
			hint := ""
			if inUse {
				hint = fmt.Sprintf(": something on another node still uses it (`docker network inspect %s` on each node: a container this engine cannot see?); remove it there, then run again", p.from.Name)
			}
			return "", fmt.Errorf("remove network %s: %w%s", p.from.Name, err, hint)
		}
		time.Sleep(m.o.Poll)
	}
}
