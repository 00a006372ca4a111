package migrate

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
)

// step is one step of a plan: do derives what to do from the live state, so that it is safe to run again.
type step struct {
	what string
	do   func() (note string, err error)
}

// plan moves every service and container from one network to another: old to twin, or back with --revert.
type plan struct {
	from, to *netRef
	create   *engine.NetworkCreate // the twin to create; nil when it exists
	subnet   string                // the twin's subnet
	steps    []step
	blockers []string // why the run cannot go on
	warnings []string
}

func (p *plan) block(format string, args ...any) {
	p.blockers = append(p.blockers, fmt.Sprintf(format, args...))
}
func (p *plan) warn(format string, args ...any) {
	p.warnings = append(p.warnings, fmt.Sprintf(format, args...))
}

// onFrom and onTo tell a service's or container's side, in the plan's direction.
func (m *Migrator) sides(old, twin bool) (onFrom, onTo bool) {
	if m.o.Revert {
		return twin, old
	}
	return old, twin
}

func (m *Migrator) plan(st *state) (*plan, error) {
	p := &plan{}
	old := st.oldRef()
	if m.o.Revert {
		twin := st.twinRef()
		p.from, p.to = &twin, &old
	} else {
		p.from = &old
		if st.Twin != nil {
			twin := st.twinRef()
			p.to = &twin
		} else {
			p.to = &netRef{Name: m.twinName(st.Old)}
		}
	}
	if !m.o.Revert {
		m.checkOld(st, p)
		if err := m.planTwin(st, p); err != nil {
			return nil, err
		}
		m.checkPlugins(st, p)
	}
	for _, s := range st.Services {
		if s.Job {
			p.block("service %s is a %s: a network change would run it again; move or remove it by hand", s.Name, s.Mode)
		}
		if onFrom, _ := m.sides(s.OnOld, s.OnTwin); onFrom && s.Order != "start-first" && s.Replicas == 1 {
			p.warn("service %s has %d replica and updates stop-first: it is down during each of its restarts; `docker service update --update-order start-first %s` first avoids it", s.Name, s.Replicas, s.Name)
		}
		if s.Update != nil && (s.Update.State == "updating" || s.Update.State == "rollback_started") {
			p.warn("service %s is in an update now (%s): its update here waits for the swarm to converge", s.Name, s.Update.State)
		}
	}
	final := p.to.Name
	if m.keep != nil {
		final = m.keep.final
	}
	for _, c := range st.Containers {
		if onFrom, _ := m.sides(c.OnOld, c.OnTwin); onFrom && c.Local && p.from.names(c.NetworkMode) && final != p.from.Name {
			p.warn("container %s was started with --network %s (its network mode): once %s is removed, current engines refuse `docker network connect` to it (%q; Docker 20.10 allows it); --keep-subnet brings the name back, or re-create %s on %s when convenient",
				c.Name, c.NetworkMode, p.from.Name, "could not find a network matching network mode "+c.NetworkMode, c.Name, final)
		}
		if onFrom, onTo := m.sides(c.OnOld, c.OnTwin); !c.Local && (onFrom || !onTo) {
			p.warn("container %s runs on node %s, which this engine cannot reach: on %s, run `docker network connect %s %s` when told, and `docker network disconnect %s %s` at the end",
				c.Name, st.nodeName(c.Node), st.nodeName(c.Node), p.to.Name, c.Name, p.from.Name, c.Name)
		}
	}
	m.addSteps(st, p)
	return p, nil
}

// checkOld refuses networks that cannot move and warns about what does not carry over.
func (m *Migrator) checkOld(st *state, p *plan) {
	o := st.Old
	if o == nil {
		return
	}
	switch {
	case o.Ingress:
		p.block("network %s is the swarm's ingress network: it carries the routing mesh and stays on Docker's overlay", o.Name)
	case o.Scope != "swarm":
		p.block("network %s has scope %q: only swarm networks are moved", o.Name, o.Scope)
	}
	if _, ok := o.Options["encrypted"]; ok {
		p.block("network %s is encrypted (-o encrypted): vxsafe/overlay does not encrypt the data path; not moving it", o.Name)
	}
	if o.EnableIPv6 {
		p.warn("network %s has --ipv6: swarm gives no IPv6 addresses on plugin networks; the twin is IPv4, give it -o vxsafe.ipv6=PREFIX by hand if needed", o.Name)
	}
	if o.Driver == m.o.Driver && (m.keep == nil || !m.keep.second) {
		p.warn("network %s already uses %s: it is moved to a new network of the same driver (a new VNI and gossip key)", o.Name, o.Driver)
	}
	var dropped []string
	for k := range o.Options {
		if dropOption(k) && k != "encrypted" {
			dropped = append(dropped, k)
		}
	}
	if len(dropped) > 0 && (m.keep == nil || !m.keep.second) {
		sort.Strings(dropped)
		p.warn("options not carried over (the old driver's, or the twin's own): %s", strings.Join(dropped, ", "))
	}
	if ns := o.Labels[LabelStack]; ns != "" {
		p.warn("network %s belongs to stack %s: the twin does not carry %s=%s (`docker stack rm %s` would remove it); declare it external in the stack's file (below)", o.Name, ns, LabelStack, ns, ns)
	}
}

// planTwin finds or plans the twin and its subnet.
func (m *Migrator) planTwin(st *state, p *plan) error {
	if st.Twin != nil {
		if st.Twin.Driver != m.o.Driver {
			p.block("the twin %s has driver %s, not %s", st.Twin.Name, st.Twin.Driver, m.o.Driver)
		}
		var s []string
		for _, c := range st.Twin.IPAM.Config {
			s = append(s, c.Subnet)
		}
		p.subnet = strings.Join(s, ",")
		return nil
	}
	name := p.to.Name
	for _, n := range st.Networks {
		if n.Name == name {
			p.block("a network named %s exists and is not the twin of %s (no label %s=%s): remove it or give another name with --name", name, st.Old.Name, LabelFromID, st.Old.ID)
		}
	}
	var subnet *net.IPNet
	if m.o.Subnet != "" {
		ip, s, err := net.ParseCIDR(m.o.Subnet)
		if err != nil || ip.To4() == nil || !ip.Equal(s.IP) {
			return fmt.Errorf("--subnet %q: want an IPv4 network such as 10.0.9.0/24", m.o.Subnet)
		}
		if n, used := usedBy(st.Networks, s, ""); used {
			if n.ID == st.Old.ID {
				p.block("--subnet %s overlaps %s's own subnet: swarm refuses a second network on it while %s exists; take another", s, n.Name, n.Name)
			} else {
				p.block("--subnet %s overlaps network %s (%s)", s, n.Name, strings.Join(subnetStrings(n), ","))
			}
		}
		subnet = s
	} else {
		s, err := freeSubnet(st.Networks, subnets(*st.Old))
		if err != nil {
			p.block("%v", err)
			return nil
		}
		subnet = s
	}
	req := m.twinRequest(st.Old, subnet)
	p.create, p.subnet = &req, subnet.String()
	if gw := req.IPAM.Config[0].Gateway; gw != "" {
		p.subnet += " gw " + gw
	}
	return nil
}

func subnetStrings(n engine.Network) []string {
	var out []string
	for _, s := range subnets(n) {
		out = append(out, s.String())
	}
	return out
}

// hasPlugin tells whether node n's engine has the network driver d (a name with or without ":latest").
func hasPlugin(n engine.SwarmNode, d string) bool {
	norm := func(s string) string { return strings.TrimSuffix(s, ":latest") }
	for _, p := range n.Description.Engine.Plugins {
		if p.Type == "Network" && norm(p.Name) == norm(d) {
			return true
		}
	}
	return false
}

// checkPlugins stops the run when a node that runs tasks or containers of the network lacks the driver.
func (m *Migrator) checkPlugins(st *state, p *plan) {
	used := map[string]bool{}
	for _, s := range st.Services {
		for _, n := range s.Nodes {
			used[n] = true
		}
	}
	for _, c := range st.Containers {
		used[c.Node] = true
	}
	var missing, idle []string
	for id := range used {
		if n, ok := st.Nodes[id]; !ok || !hasPlugin(n, m.o.Driver) {
			missing = append(missing, st.nodeName(id))
		}
	}
	for id, n := range st.Nodes {
		if !used[id] && n.Status.State == "ready" && n.Spec.Availability == "active" && !hasPlugin(n, m.o.Driver) {
			idle = append(idle, st.nodeName(id))
		}
	}
	sort.Strings(missing)
	sort.Strings(idle)
	if len(missing) > 0 {
		p.block("node(s) %s run tasks or containers of %s and have no %s plugin (docker node inspect: Description.Engine.Plugins): install and enable it there first (README, Quick start), or drain them",
			strings.Join(missing, ", "), st.Old.Name, m.o.Driver)
	}
	if len(idle) > 0 {
		p.warn("node(s) %s have no %s plugin: swarm will not schedule the moved services' tasks there", strings.Join(idle, ", "), m.o.Driver)
	}
}

// addSteps lays out the move: the twin, then the new network on every service and container, then the
// old network off each, then the old network removed. No service or container loses the old network
// before every one has the new.
func (m *Migrator) addSteps(st *state, p *plan) {
	add := func(what string, do func() (string, error)) { p.steps = append(p.steps, step{what, do}) }
	if p.create != nil {
		add(fmt.Sprintf("create network %s (driver %s, subnet %s)", p.create.Name, p.create.Driver, p.subnet), func() (string, error) { return m.createTwin(p) })
	}
	var froms []*service
	for _, s := range st.Services {
		onFrom, onTo := m.sides(s.OnOld, s.OnTwin)
		if onFrom && !onTo {
			s := s
			add(fmt.Sprintf("service %s: add network %s (rolling update, %s)", s.Name, p.to.Name, s.Order), func() (string, error) { return m.addNetwork(s, p) })
		}
		if onFrom {
			froms = append(froms, s)
		}
	}
	var local []*container
	for _, c := range st.Containers {
		onFrom, onTo := m.sides(c.OnOld, c.OnTwin)
		if c.Local && onFrom && !onTo {
			c := c
			add(fmt.Sprintf("container %s: connect to %s", c.Name, p.to.Name), func() (string, error) { return m.connect(c, p) })
		}
		if c.Local && onFrom {
			local = append(local, c)
		}
	}
	if len(froms) > 0 || len(st.Containers) > 0 {
		add(fmt.Sprintf("check: every service and container of %s is on %s", p.from.Name, p.to.Name), func() (string, error) { return m.checkAllOnTo(p) })
	}
	for _, s := range froms {
		s := s
		add(fmt.Sprintf("service %s: remove network %s (rolling update, %s)", s.Name, p.from.Name, s.Order), func() (string, error) { return m.removeNetwork(s, p) })
	}
	for _, c := range local {
		c := c
		add(fmt.Sprintf("container %s: disconnect from %s", c.Name, p.from.Name), func() (string, error) { return m.disconnect(c, p) })
	}
	add(fmt.Sprintf("remove network %s", p.from.Name), func() (string, error) { return m.removeFrom(p) })
}

func (m *Migrator) printPlan(st *state, p *plan) {
	verb := "Move"
	if m.o.Revert {
		verb = "Revert: move back"
	}
	if m.keep != nil {
		verb = fmt.Sprintf("--keep-subnet, pass %d of 2: move", map[bool]int{false: 1, true: 2}[m.keep.second])
		if m.o.Revert {
			verb = "--keep-subnet, revert pass 1: move back"
		}
	}
	m.printf("%s the services and containers of network %s to %s.\n\n", verb, p.from.Name, p.to.Name)
	w := tabwriter.NewWriter(m.o.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NETWORK\tID\tDRIVER\tSUBNET\tATTACHABLE\tINTERNAL\tOPTIONS\tLABELS")
	for _, row := range []struct {
		n    *engine.Network
		role string
	}{{st.Old, "old"}, {st.Twin, "twin"}} {
		if row.n == nil {
			continue
		}
		fmt.Fprintf(w, "%s (%s)\t%s\t%s\t%s\t%v\t%v\t%s\t%s\n", row.n.Name, row.role, netconfig.ShortID(row.n.ID), row.n.Driver,
			ipamString(row.n.IPAM), row.n.Attachable, row.n.Internal, kv(row.n.Options), kv(row.n.Labels))
	}
	if p.create != nil {
		fmt.Fprintf(w, "%s (twin, to create)\t-\t%s\t%s\t%v\t%v\t%s\t%s\n", p.create.Name, p.create.Driver, p.subnet,
			p.create.Attachable, p.create.Internal, kv(p.create.Options), kv(p.create.Labels))
	}
	w.Flush()
	if p.create != nil && m.o.Subnet == "" && m.keep == nil {
		m.printf("(the twin's subnet is picked free: swarm refuses a second network on %s while %s exists; --subnet sets it)\n", ipamString(st.Old.IPAM), st.Old.Name)
	}
	m.printf("\n")
	if len(st.Services) == 0 {
		m.printf("No service is on %s.\n", p.from.Name)
	} else {
		w = tabwriter.NewWriter(m.o.Out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "SERVICE\tSTACK\tMODE\tENDPOINT\tUPDATE ORDER\tLAST UPDATE\tNODES\tON")
		for _, s := range st.Services {
			var nodes []string
			for _, n := range s.Nodes {
				nodes = append(nodes, st.nodeName(n))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, dash(s.Stack), s.Mode, s.EndpointMode, s.Order, updateString(s.Update),
				dash(strings.Join(nodes, ",")), m.side(st, s.OnOld, s.OnTwin))
		}
		w.Flush()
	}
	if len(st.Containers) == 0 {
		m.printf("No standalone container is on %s.\n", p.from.Name)
	} else {
		w = tabwriter.NewWriter(m.o.Out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "CONTAINER\tNODE\tON")
		for _, c := range st.Containers {
			node := st.nodeName(c.Node)
			if c.Local {
				node += " (this engine)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", c.Name, node, m.side(st, c.OnOld, c.OnTwin))
		}
		w.Flush()
	}
	m.printf("(containers on other nodes are found from the swarm's attachment tasks; only this engine's can be connected from here)\n")
	if len(p.steps) > 0 {
		m.printf("\nSteps:\n")
		for i, s := range p.steps {
			m.printf("  %2d  %s\n", i+1, s.what)
		}
		updates := 0
		for _, s := range p.steps {
			if strings.HasPrefix(s.what, "service ") {
				updates++
			}
		}
		m.printf("Each service step is one rolling update of that service, in its own update order: %d in all.\n", updates)
	}
	m.keepNote(p)
	for _, w := range p.warnings {
		m.printf("warning: %s\n", w)
	}
	for _, b := range p.blockers {
		m.printf("cannot go on: %s\n", b)
	}
	if !m.o.Revert {
		to := p.to.Name
		if m.keep != nil {
			to = m.keep.final
		}
		m.printStacks(st, to)
	}
}

// printStacks tells each stack involved the change its compose file needs.
func (m *Migrator) printStacks(st *state, twin string) {
	stacks := map[string][]string{}
	for _, s := range st.Services {
		if s.Stack != "" {
			stacks[s.Stack] = append(stacks[s.Stack], s.Name)
		}
	}
	oldName, oldStack := m.o.Network, ""
	if m.keep != nil && m.keep.second {
		oldName = m.keep.origName
	} else if st.Old != nil {
		oldName, oldStack = st.Old.Name, st.Old.Labels[LabelStack]
	} else if st.Twin != nil {
		oldName = st.Twin.Labels[LabelFrom]
	}
	if oldStack != "" && stacks[oldStack] == nil {
		stacks[oldStack] = []string{}
	}
	var names []string
	for n := range stacks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, ns := range names {
		key := strings.TrimPrefix(oldName, ns+"_")
		m.printf("\nStack %s (services %s): until its compose file names the new network, `docker stack deploy` of it puts its services back on %s. Declare the network as:\n",
			ns, dash(strings.Join(stacks[ns], ", ")), oldName)
		m.printf("    networks:\n      %s:\n        external: true\n        name: %s\n", key, twin)
		m.printf("  (with the services' `networks:` unchanged; %q is the network's key in the file%s)\n", key, map[bool]string{true: "", false: ", if it is declared there under another key, use that"}[key != oldName])
	}
}

// printStates is every service's and container's side now.
func (m *Migrator) printStates(st *state) {
	w := tabwriter.NewWriter(m.o.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SERVICE\tON\tLAST UPDATE\tTASKS ON NODES")
	for _, s := range st.Services {
		var nodes []string
		for _, n := range s.Nodes {
			nodes = append(nodes, st.nodeName(n))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Name, m.side(st, s.OnOld, s.OnTwin), updateString(s.Update), dash(strings.Join(nodes, ",")))
	}
	for _, c := range st.Containers {
		fmt.Fprintf(w, "container %s\t%s\t-\t%s\n", c.Name, m.side(st, c.OnOld, c.OnTwin), st.nodeName(c.Node))
	}
	w.Flush()
}

// side names what a service or container is on: old, twin, or both.
func (m *Migrator) side(st *state, old, twin bool) string {
	switch {
	case old && twin:
		return "both"
	case old:
		return "old (" + st.Old.Name + ")"
	case twin:
		return "twin (" + st.Twin.Name + ")"
	}
	return "neither"
}

func updateString(u *engine.UpdateStatus) string {
	if u == nil || u.State == "" {
		return "-"
	}
	return u.State
}

func ipamString(i engine.IPAM) string {
	var out []string
	for _, c := range i.Config {
		s := c.Subnet
		if c.Gateway != "" {
			s += " gw " + c.Gateway
		}
		out = append(out, s)
	}
	return dash(strings.Join(out, ", "))
}

// kv prints options or labels as k=v,... sorted; the values of secret options (a vxsafe network's gossip
// keys, which the allocator puts in its options) are hidden.
func kv(m map[string]string) string {
	var out []string
	for k, v := range m {
		if secretOption(k) {
			v = "(hidden)"
		}
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return dash(strings.Join(out, ","))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// secretOption reports whether an option's value must not be printed: the gossip key and the keys of a
// network's key authority.
func secretOption(k string) bool {
	return k == netconfig.OptKey || k == netconfig.OptKeyAuthority || k == netconfig.GenericKey
}
