package migrate

import (
	"fmt"
	"net"
	"time"

	"github.com/vxsafe/overlay/engine"
)

// A --keep-subnet run ends on the original network's subnet, and by default its name: swarm refuses a
// second network on a subnet while the first exists, so it moves in two passes. Pass 1 moves everything
// to a temporary twin on a free subnet, labelled with the subnet to go back to, and removes the original.
// Pass 2 creates the final network on that subnet, moves everything to it, and removes the temporary
// twin. Each pass is a plain migration of its own; which one is due is read from the networks that exist,
// so the run can be repeated or resumed at any step like a plain one. Every service restarts twice.

// keepPass is one pass of a --keep-subnet run.
type keepPass struct {
	second           bool
	origName, origID string // the original network
	subnet, gateway  string // the original's, where pass 2 goes back to
	final            string // the final network's name: --name, else the original's
}

func (k *keepPass) twinName() string {
	if k.second {
		return k.final
	}
	return k.origName + "-vxsafe-tmp"
}

// pass makes the migrator of one pass of a --keep-subnet run.
func (m *Migrator) pass(k *keepPass, network string) *Migrator {
	o := m.o
	o.Network, o.Subnet = network, ""
	if k.second {
		o.Subnet = k.subnet
	}
	return &Migrator{c: m.c, o: o, began: m.began, keep: k}
}

// runKeepSubnet finds which pass is due and runs it (and pass 2 after pass 1).
func (m *Migrator) runKeepSubnet() error {
	if m.o.Subnet != "" {
		return fmt.Errorf("%w: --keep-subnet ends on %s's own subnet: --subnet has no place in it", ErrStopped, m.o.Network)
	}
	k := &keepPass{origName: m.o.Network, final: m.o.Name}
	var orig *engine.Network
	n, err := m.c.Network(m.o.Network)
	switch {
	case isNotFound(err):
	case err != nil:
		return fmt.Errorf("network %s: %w", m.o.Network, err)
	case n.Labels[LabelFrom] == "":
		orig = &n
		k.origName, k.origID = n.Name, n.ID
	default:
		// The final network (it took the original's name) or the temporary twin: its labels name the
		// original. A plain run's twin is not a name to give.
		if _, temp := n.Labels[LabelKeepSubnet]; !temp && n.Name != n.Labels[LabelFrom] {
			return fmt.Errorf("network %s is the vxsafe twin of %s (label %s): name the original network", n.Name, n.Labels[LabelFrom], LabelFrom)
		}
		k.origName, k.origID = n.Labels[LabelFrom], n.Labels[LabelFromID]
	}
	nets, err := m.c.Networks()
	if err != nil {
		return err
	}
	temps := twinOf(nets, k.origID, k.origName, true)
	if len(temps) > 1 {
		return fmt.Errorf("network %s has %d temporary twins (label %s): remove all but one", k.origName, len(temps), LabelKeepSubnet)
	}
	if orig == nil && len(temps) == 1 {
		// Named by the original's ID, or by the temporary twin's name: the labels say the original's name.
		k.origName, k.origID = temps[0].Labels[LabelFrom], temps[0].Labels[LabelFromID]
	}
	if k.final == "" {
		k.final = k.origName
	}
	if orig != nil {
		if finals := twinOf(nets, orig.ID, orig.Name, false); len(finals) > 0 {
			return fmt.Errorf("%w: network %s is already being moved to %s without --keep-subnet: go on without it, or --revert that first", ErrStopped, orig.Name, finals[0].Name)
		}
		var sub *engine.IPAMConfig
		for i, c := range orig.IPAM.Config {
			if ip, _, err := net.ParseCIDR(c.Subnet); err == nil && ip.To4() != nil {
				sub = &orig.IPAM.Config[i]
				break
			}
		}
		if sub == nil {
			return fmt.Errorf("%w: network %s has no IPv4 subnet to keep", ErrStopped, orig.Name)
		}
		k.subnet, k.gateway = sub.Subnet, sub.Gateway
		if len(temps) == 1 && temps[0].Labels[LabelKeepSubnet] != "" {
			k.subnet, k.gateway = temps[0].Labels[LabelKeepSubnet], temps[0].Labels[LabelKeepGateway]
		}
		if err := m.pass(k, orig.ID).Run(); err != nil || m.o.DryRun || m.o.Revert {
			return err
		}
		if err := m.waitGone(orig); err != nil {
			return err
		}
		if nets, err = m.c.Networks(); err != nil {
			return err
		}
		if temps = twinOf(nets, k.origID, k.origName, true); len(temps) != 1 {
			return fmt.Errorf("%w: after pass 1, %d temporary twins of %s (label %s), want 1", ErrStopped, len(temps), k.origName, LabelKeepSubnet)
		}
		m.o.Yes = true // the operator agreed to both passes
		m.printf("\n")
	}
	if m.o.Revert {
		return fmt.Errorf("%w: cannot revert: pass 1 of the --keep-subnet move removed %s; its services and containers are on %s now, and `vxsafe migrate --keep-subnet %s` finishes the move",
			ErrStopped, k.origName, twinNames(temps), k.origName)
	}
	if len(temps) == 0 {
		if finals := twinOf(nets, k.origID, k.origName, false); len(finals) > 0 {
			f := finals[0]
			m.printf("network %s is on %s (driver %s): the --keep-subnet move is over. Nothing left to do.\n", f.Name, ipamString(f.IPAM), f.Driver)
			return nil
		}
		return fmt.Errorf("network %s not found on %s (and no network is labelled %s=%s)", m.o.Network, m.c.Host(), LabelFrom, m.o.Network)
	}
	t := temps[0]
	k2 := *k
	k2.second = true
	k2.subnet, k2.gateway = t.Labels[LabelKeepSubnet], t.Labels[LabelKeepGateway]
	if k2.subnet == "" {
		return fmt.Errorf("%w: the temporary twin %s has no subnet to go back to (label %s is empty)", ErrStopped, t.Name, LabelKeepSubnet)
	}
	return m.pass(&k2, t.ID).Run()
}

// waitGone waits until the engine no longer lists network n: the manager's engine may list a swarm
// network for a moment after its removal, and pass 2 takes its subnet and name.
func (m *Migrator) waitGone(n *engine.Network) error {
	deadline := time.Now().Add(m.o.RemoveWait)
	for {
		nets, err := m.c.Networks()
		if err != nil {
			return err
		}
		there := false
		for _, x := range nets {
			there = there || x.ID == n.ID
		}
		if !there {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: network %s is still listed %s after its removal: run `%s` again later", ErrStopped, n.Name, m.o.RemoveWait, m.command("--resume"))
		}
		time.Sleep(m.o.Poll)
	}
}

func twinNames(nets []engine.Network) string {
	s := ""
	for i, n := range nets {
		if i > 0 {
			s += ", "
		}
		s += n.Name
	}
	return dash(s)
}

// keepNote says, under pass 1's plan, what pass 2 does.
func (m *Migrator) keepNote(p *plan) {
	if m.keep == nil || m.o.Revert {
		return
	}
	if m.keep.second {
		m.printf("This is pass 2 of 2 of --keep-subnet: back to the original subnet %s, in network %s. %s is already removed.\n",
			m.keep.subnet, m.keep.final, m.keep.origName)
		return
	}
	m.printf("This is pass 1 of 2 of --keep-subnet: %s is a temporary twin. Pass 2 then creates %s (driver %s, subnet %s), moves every service and container to it the same way, and removes %s: every service makes a second rolling update, so each of its tasks restarts twice in all.\n",
		p.to.Name, m.keep.final, m.o.Driver, m.keep.subnet, p.to.Name)
}
