package migrate

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"

	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
)

// Labels the twin carries, by which a later run finds it.
const (
	LabelFrom   = "io.vxsafe.migrate.from"    // the old network's name
	LabelFromID = "io.vxsafe.migrate.from-id" // the old network's ID
	// LabelStack is the label `docker stack deploy` puts on a stack's services and networks.
	LabelStack = "com.docker.stack.namespace"
	// LabelKeepSubnet marks the temporary twin of a --keep-subnet run, with the subnet the second pass goes
	// back to; LabelKeepGateway, its gateway.
	LabelKeepSubnet  = "io.vxsafe.migrate.keep-subnet"
	LabelKeepGateway = "io.vxsafe.migrate.keep-gateway"
	// labelService marks a service's task containers (standalone containers lack it).
	labelService = "com.docker.swarm.service.id"
)

// service is a service on the old network, the twin, or both, as the swarm has it now.
type service struct {
	ID, Name, Stack string
	Version         uint64
	spec            *spec
	Mode            string // "replicated N", "global", or a job's mode
	Job             bool
	Replicas        int // replicated: the replicas asked for; -1 for global
	Order           string
	EndpointMode    string
	Update          *engine.UpdateStatus
	OnOld, OnTwin   bool
	Nodes           []string // node IDs of its tasks that should run
}

// container is a standalone container attached to the old network or the twin.
type container struct {
	ID, Name      string
	Node          string // node ID
	Local         bool   // on the engine this run talks to: it can connect and disconnect it
	OnOld, OnTwin bool
	AliasesOld    []string // its aliases on the old network
	AliasesTwin   []string // and on the twin
	NetworkMode   string   // its network mode (docker run --network), when Local
}

// state is what the swarm holds now; every step is derived from it.
type state struct {
	Self       string // the node ID of the engine this run talks to
	Old        *engine.Network
	Twin       *engine.Network // nil: not created
	Networks   []engine.Network
	Services   []*service
	Containers []*container
	Nodes      map[string]engine.SwarmNode
}

func (s *state) oldRef() netRef {
	if s.Old == nil {
		return netRef{}
	}
	return netRef{s.Old.ID, s.Old.Name}
}

func (s *state) twinRef() netRef {
	if s.Twin == nil {
		return netRef{}
	}
	return netRef{s.Twin.ID, s.Twin.Name}
}

// nodeName is a node's hostname, or its short ID.
func (s *state) nodeName(id string) string {
	if n, ok := s.Nodes[id]; ok && n.Description.Hostname != "" {
		return n.Description.Hostname
	}
	return netconfig.ShortID(id)
}

// isNotFound tells whether err is the daemon's 404.
func isNotFound(err error) bool {
	var ae *engine.APIError
	return errors.As(err, &ae) && ae.Code == http.StatusNotFound
}

// twinOf returns the networks labelled as twins of the original network (by its ID, or by its name when
// the ID is not known): the temporary twins of a --keep-subnet run when temp, else the others.
func twinOf(nets []engine.Network, origID, origName string, temp bool) []engine.Network {
	var out []engine.Network
	for _, n := range nets {
		_, isTemp := n.Labels[LabelKeepSubnet]
		if isTemp != temp {
			continue
		}
		if (origID != "" && n.Labels[LabelFromID] == origID) || (origID == "" && namesOriginal(n, origName)) {
			out = append(out, n)
		}
	}
	return out
}

// namesOriginal tells whether a twin's labels name the original network as the user did: by name, ID or
// ID prefix.
func namesOriginal(n engine.Network, name string) bool {
	id := n.Labels[LabelFromID]
	return name != "" && (n.Labels[LabelFrom] == name || id == name || (len(name) >= 12 && strings.HasPrefix(id, name)))
}

// look reads the swarm's state: the old network (by the name or ID the user gave), its twin, the services
// and standalone containers on either, and the nodes.
func (m *Migrator) look() (*state, error) {
	info, err := m.c.Info()
	if err != nil {
		return nil, err
	}
	if !info.Swarm.ControlAvailable {
		return nil, fmt.Errorf("the engine at %s is not a swarm manager (node state %q): run vxsafe migrate against a manager's engine (--docker-host)",
			m.c.Host(), info.Swarm.LocalNodeState)
	}
	st := &state{Self: info.Swarm.NodeID, Nodes: map[string]engine.SwarmNode{}}
	if st.Networks, err = m.c.Networks(); err != nil {
		return nil, err
	}
	old, err := m.c.Network(m.o.Network)
	switch {
	case isNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("network %s: %w", m.o.Network, err)
	default:
		st.Old = &old
	}
	second := m.keep != nil && m.keep.second
	origID, origName := "", m.o.Network
	if second {
		origID, origName = m.keep.origID, m.keep.origName
	}
	var final *engine.Network
	if st.Old != nil && !second {
		from := st.Old.Labels[LabelFrom]
		_, temp := st.Old.Labels[LabelKeepSubnet]
		switch {
		case from != "" && from == st.Old.Name && !temp:
			// The final network of a --keep-subnet run, which took the original's name: the move is over.
			final, st.Old = st.Old, nil
		case from != "":
			return nil, fmt.Errorf("network %s is the vxsafe twin of %s (label %s): name the original network", st.Old.Name, from, LabelFrom)
		default:
			origID = st.Old.ID
		}
	}
	if m.keep == nil {
		if temps := twinOf(st.Networks, origID, origName, true); len(temps) > 0 {
			return nil, fmt.Errorf("a --keep-subnet migration of %s is under way (its temporary network %s exists): run `vxsafe migrate --keep-subnet %s` to go on with it",
				origName, temps[0].Name, origName)
		}
	}
	var twins []engine.Network
	if final != nil {
		twins = []engine.Network{*final}
	} else {
		twins = twinOf(st.Networks, origID, origName, m.keep != nil && !second)
	}
	if len(twins) > 1 {
		var names []string
		for _, t := range twins {
			names = append(names, t.Name+" ("+netconfig.ShortID(t.ID)+")")
		}
		return nil, fmt.Errorf("network %s has %d twins (label %s): %s: remove all but one", m.o.Network, len(twins), LabelFromID, strings.Join(names, ", "))
	}
	if len(twins) == 1 {
		t, err := m.c.Network(twins[0].ID)
		if err != nil {
			return nil, fmt.Errorf("twin network %s: %w", twins[0].Name, err)
		}
		st.Twin = &t
	}
	if st.Old == nil && st.Twin == nil {
		return nil, fmt.Errorf("network %s not found on %s (and no network is labelled %s=%s)", m.o.Network, m.c.Host(), LabelFrom, m.o.Network)
	}
	nodes, err := m.c.Nodes()
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		st.Nodes[n.ID] = n
	}
	if err := m.lookServices(st); err != nil {
		return nil, err
	}
	if err := m.lookContainers(st); err != nil {
		return nil, err
	}
	return st, nil
}

func (m *Migrator) lookServices(st *state) error {
	all, err := m.c.Services()
	if err != nil {
		return err
	}
	old, twin := st.oldRef(), st.twinRef()
	for _, s := range all {
		sp, err := parseSpec(s.Spec)
		if err != nil {
			return fmt.Errorf("service %s: %w", netconfig.ShortID(s.ID), err)
		}
		nets := sp.networks()
		_, onOld := find(nets, old)
		_, onTwin := find(nets, twin)
		if !onOld && !onTwin {
			continue
		}
		f := sp.fields()
		svc := &service{ID: s.ID, Name: f.Name, Stack: f.Labels[LabelStack], Version: s.Version.Index, spec: sp,
			Update: s.UpdateStatus, OnOld: onOld, OnTwin: onTwin, Order: "stop-first", EndpointMode: "vip"}
		switch {
		case f.Mode.Replicated != nil:
			if f.Mode.Replicated.Replicas != nil {
				svc.Replicas = int(*f.Mode.Replicated.Replicas)
			} else {
				svc.Replicas = 1
			}
			svc.Mode = fmt.Sprintf("replicated %d", svc.Replicas)
		case f.Mode.Global != nil:
			svc.Replicas, svc.Mode = -1, "global"
		case f.Mode.ReplicatedJob != nil:
			svc.Mode, svc.Job = "replicated-job", true
		case f.Mode.GlobalJob != nil:
			svc.Mode, svc.Job = "global-job", true
		}
		if f.UpdateConfig != nil && f.UpdateConfig.Order != "" {
			svc.Order = f.UpdateConfig.Order
		}
		if f.EndpointSpec != nil && f.EndpointSpec.Mode != "" {
			svc.EndpointMode = f.EndpointSpec.Mode
		}
		tasks, err := m.c.Tasks(map[string][]string{"service": {s.ID}, "desired-state": {"running"}})
		if err != nil {
			return fmt.Errorf("service %s: %w", f.Name, err)
		}
		seen := map[string]bool{}
		for _, t := range tasks {
			if t.ServiceID == s.ID && t.NodeID != "" && !seen[t.NodeID] {
				seen[t.NodeID] = true
				svc.Nodes = append(svc.Nodes, t.NodeID)
			}
		}
		sort.Slice(svc.Nodes, func(i, j int) bool { return st.nodeName(svc.Nodes[i]) < st.nodeName(svc.Nodes[j]) })
		st.Services = append(st.Services, svc)
	}
	sort.Slice(st.Services, func(i, j int) bool { return st.Services[i].Name < st.Services[j].Name })
	return nil
}

// lookContainers finds the standalone containers on the old network or the twin: on this engine from the
// networks' own lists, on every node from the swarm's attachment tasks (a standalone container on a swarm
// network has one per network).
func (m *Migrator) lookContainers(st *state) error {
	byID := map[string]*container{}
	get := func(id string) *container {
		if c := byID[id]; c != nil {
			return c
		}
		c := &container{ID: id}
		byID[id] = c
		return c
	}
	for _, n := range []*engine.Network{st.Old, st.Twin} {
		if n == nil {
			continue
		}
		for id := range n.Containers {
			if !isHexID(id) {
				continue // the load balancer's endpoint ("lb-<network>") and the like
			}
			ci, err := m.c.ContainerInspect(id)
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("container %s on network %s: %w", netconfig.ShortID(id), n.Name, err)
			}
			if ci.Config.Labels[labelService] != "" {
				continue // a service's task
			}
			c := get(ci.ID)
			c.Name, c.Node, c.Local, c.NetworkMode = strings.TrimPrefix(ci.Name, "/"), st.Self, true, ci.HostConfig.NetworkMode
			for _, e := range ci.NetworkSettings.Networks {
				switch {
				case st.Old != nil && e.NetworkID == st.Old.ID:
					c.OnOld, c.AliasesOld = true, ownAliases(e.Aliases, ci.ID)
				case st.Twin != nil && e.NetworkID == st.Twin.ID:
					c.OnTwin, c.AliasesTwin = true, ownAliases(e.Aliases, ci.ID)
				}
			}
		}
	}
	tasks, err := m.c.Tasks(map[string][]string{"desired-state": {"running"}})
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if t.Spec.NetworkAttachmentSpec == nil || t.Spec.NetworkAttachmentSpec.ContainerID == "" || t.Status.State != "running" {
			continue
		}
		id := t.Spec.NetworkAttachmentSpec.ContainerID
		if c := byID[id]; c != nil && c.Local {
			continue // its own engine told
		}
		if t.NodeID == st.Self {
			continue // an attachment left behind by a container this engine no longer has
		}
		for _, nid := range t.Networks() {
			onOld := st.Old != nil && nid == st.Old.ID
			onTwin := st.Twin != nil && nid == st.Twin.ID
			if !onOld && !onTwin {
				continue
			}
			c := get(id)
			c.Node = t.NodeID
			if c.Name == "" {
				c.Name = netconfig.ShortID(id)
			}
			c.OnOld = c.OnOld || onOld
			c.OnTwin = c.OnTwin || onTwin
		}
	}
	for _, c := range byID {
		st.Containers = append(st.Containers, c)
	}
	sort.Slice(st.Containers, func(i, j int) bool { return st.Containers[i].Name < st.Containers[j].Name })
	return nil
}

// ownAliases are a container's aliases on a network without the short ID that the engine adds itself.
func ownAliases(aliases []string, id string) []string {
	var out []string
	for _, a := range aliases {
		if a != netconfig.ShortID(id) {
			out = append(out, a)
		}
	}
	return out
}

func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// subnets of a network.
func subnets(n engine.Network) []*net.IPNet {
	var out []*net.IPNet
	for _, c := range n.IPAM.Config {
		if _, p, err := net.ParseCIDR(c.Subnet); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func overlaps(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// usedBy returns the network (other than skip) whose subnet overlaps p, if any.
func usedBy(nets []engine.Network, p *net.IPNet, skip string) (engine.Network, bool) {
	for _, n := range nets {
		if n.ID == skip {
			continue
		}
		for _, q := range subnets(n) {
			if overlaps(p, q) {
				return n, true
			}
		}
	}
	return engine.Network{}, false
}

// freeSubnet picks a subnet of the old one's size (a /24 when it has none) that overlaps no network the
// engine knows: the next ones after the old, in its private range (10/8, 172.16/12, 192.168/16).
func freeSubnet(nets []engine.Network, old []*net.IPNet) (*net.IPNet, error) {
	start := &net.IPNet{IP: net.IPv4(10, 0, 1, 0).To4(), Mask: net.CIDRMask(24, 32)}
	for _, p := range old {
		if p.IP.To4() != nil {
			start = &net.IPNet{IP: p.IP.To4(), Mask: p.Mask}
			break
		}
	}
	ones, _ := start.Mask.Size()
	space := &net.IPNet{IP: net.IPv4(10, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}
	for _, s := range []string{"172.16.0.0/12", "192.168.0.0/16"} {
		_, r, _ := net.ParseCIDR(s)
		if r.Contains(start.IP) {
			space = r
		}
	}
	if !space.Contains(start.IP) {
		start = &net.IPNet{IP: space.IP, Mask: start.Mask}
	}
	size := uint32(1) << (32 - ones)
	base := ipToU32(space.IP)
	spaceOnes, _ := space.Mask.Size()
	count := uint32(1) << (32 - spaceOnes) / size
	first := (ipToU32(start.IP) - base) / size
	for i := uint32(1); i <= count; i++ {
		k := (first + i) % count
		cand := &net.IPNet{IP: u32ToIP(base + k*size), Mask: start.Mask}
		if _, used := usedBy(nets, cand, ""); !used {
			return cand, nil
		}
	}
	return nil, fmt.Errorf("no free /%d left in %s: give one with --subnet", ones, space)
}

func ipToU32(ip net.IP) uint32 {
	ip = ip.To4()
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func u32ToIP(v uint32) net.IP { return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4() }
