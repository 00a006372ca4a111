// Package migrate is `vxsafe migrate`: it moves a swarm network's services and standalone containers to a
// vxsafe/overlay twin without cutting anyone off, through a swarm manager's Engine API. It first attaches the
// twin to every service (a rolling update each, waited for) and container, and only then detaches the old
// network from each and removes it, so that every service reaches every other on one network or both at
// every moment. Every step is derived from the live state (is the twin there? does the service have it?),
// so a run can be repeated, resumed (--resume) or reverted (--revert) at any step. A service update that
// fails is rolled back, and the run stops with every service's state.
package migrate

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
)

// DefaultDriver is the driver the twin is created with.
const DefaultDriver = "vxsafe/overlay:latest"

// Options of a run (the command's flags).
type Options struct {
	Network    string // the network to move: name or ID
	Driver     string // the twin's driver (DefaultDriver)
	Subnet     string // the twin's subnet; empty: a free one of the old one's size
	Name       string // the twin's name; empty: <old name>-vxsafe
	DryRun     bool   // print the plan and stop
	Yes        bool   // do not ask
	Resume     bool   // continue a migration: its twin must exist
	Revert     bool   // move everything back to the old network, and remove the twin
	KeepSubnet bool   // end on the old network's subnet (and name): a second pass through a temporary twin
	Timeout    time.Duration
	Poll       time.Duration
	RemoveWait time.Duration // how long to retry removing a network still in use by a task
	StuckAfter time.Duration // how long a task of an update may fail to start before the run stops it
	Out        io.Writer
	In         io.Reader
}

// Migrator runs one migration against one manager's engine.
type Migrator struct {
	c     *engine.Client
	o     Options
	began time.Time
	keep  *keepPass // one pass of a --keep-subnet run; nil in a plain run
}

// New makes a migrator; o's zero durations get defaults.
func New(c *engine.Client, o Options) *Migrator {
	if o.Driver == "" {
		o.Driver = DefaultDriver
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Poll == 0 {
		o.Poll = 500 * time.Millisecond
	}
	if o.StuckAfter == 0 {
		o.StuckAfter = 30 * time.Second
	}
	if o.RemoveWait == 0 {
		o.RemoveWait = 2 * time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return &Migrator{c: c, o: o, began: time.Now()}
}

// ErrStopped is wrapped by the error of a run that stopped before the end (a failed update, a refusal, an
// operator's no), as opposed to one that could not read the swarm.
var ErrStopped = errors.New("migration stopped")

func (m *Migrator) printf(format string, args ...any) { fmt.Fprintf(m.o.Out, format, args...) }

// logf prints one progress line, with the time since the run began.
func (m *Migrator) logf(format string, args ...any) {
	m.printf("[%6.1fs] %s\n", time.Since(m.began).Seconds(), fmt.Sprintf(format, args...))
}

// Run plans, shows the plan, asks (unless Yes), and runs it.
func (m *Migrator) Run() error {
	if m.o.KeepSubnet && m.keep == nil {
		return m.runKeepSubnet()
	}
	st, err := m.look()
	if err != nil {
		return err
	}
	if st.Old == nil && !m.o.Revert {
		if st.Twin.Name == st.Twin.Labels[LabelFrom] {
			m.printf("network %s (%s, driver %s) is the vxsafe network that %s was moved to, on its subnet. Nothing left to do.\n", st.Twin.Name, netconfig.ShortID(st.Twin.ID), st.Twin.Driver, m.o.Network)
		} else {
			m.printf("network %s is gone: it was moved to %s (%s). Nothing left to do.\n", m.o.Network, st.Twin.Name, netconfig.ShortID(st.Twin.ID))
		}
		m.printStacks(st, st.Twin.Name)
		return nil
	}
	if m.o.Revert {
		if st.Old == nil {
			return fmt.Errorf("%w: cannot revert: network %s no longer exists (the migration to %s is complete); to move back, migrate %s to a new network", ErrStopped, m.o.Network, st.Twin.Name, st.Twin.Name)
		}
		if st.Twin == nil {
			m.printf("network %s has no vxsafe twin (no network labelled %s=%s): nothing to revert.\n", st.Old.Name, LabelFromID, st.Old.ID)
			return nil
		}
	}
	if m.o.Resume && st.Twin == nil {
		return fmt.Errorf("%w: nothing to resume: network %s has no twin (no network labelled %s=%s); run without --resume to start", ErrStopped, st.Old.Name, LabelFromID, st.Old.ID)
	}
	p, err := m.plan(st)
	if err != nil {
		return err
	}
	m.printPlan(st, p)
	if len(p.blockers) > 0 {
		return fmt.Errorf("%w: %s", ErrStopped, strings.Join(p.blockers, "; "))
	}
	if m.o.DryRun {
		m.printf("\n--dry-run: nothing changed.\n")
		return nil
	}
	if len(p.steps) == 0 {
		m.printf("\nNothing to do.\n")
		return nil
	}
	if !m.o.Yes && !m.confirm() {
		return fmt.Errorf("%w: not confirmed", ErrStopped)
	}
	m.began = time.Now()
	for i, s := range p.steps {
		began := time.Now()
		head := fmt.Sprintf("step %d/%d  %s", i+1, len(p.steps), s.what)
		m.printf("[%6.1fs] %s ... ", time.Since(m.began).Seconds(), head)
		note, err := s.do()
		if err != nil {
			m.printf("FAILED (%.1fs)\n", time.Since(began).Seconds())
			var ue *updateError
			if errors.As(err, &ue) {
				m.logf("%v", err)
				if ue.back != nil {
					ue.back()
				}
			}
			return m.stopped(err, p)
		}
		if note != "" {
			note = ": " + note
		}
		m.printf("ok (%.1fs%s)\n", time.Since(began).Seconds(), note)
	}
	switch {
	case m.o.Revert:
		m.logf("done: every service and container is back on %s only; the twin %s is removed", p.to.Name, p.from.Name)
	case m.keep != nil && !m.keep.second:
		m.logf("pass 1 done: every service and container is on %s; %s is removed", p.to.Name, p.from.Name)
	default:
		m.logf("done: every service and container is on %s (%s, driver %s); %s is removed", p.to.Name, netconfig.ShortID(p.to.ID), m.o.Driver, p.from.Name)
		st2, err := m.look()
		if err == nil && st2.Twin != nil {
			m.printStacks(st2, st2.Twin.Name)
		}
	}
	return nil
}

// stopped prints every service's state after a failed step and returns the run's error.
func (m *Migrator) stopped(err error, p *plan) error {
	var ue *updateError
	if !errors.As(err, &ue) {
		m.printf("\n%v\n", err)
	}
	if st, lerr := m.look(); lerr == nil {
		m.printf("\nState now:\n")
		m.printStates(st)
	}
	again := "--resume"
	if m.o.Revert {
		again = "--revert"
	}
	if m.keep != nil && m.keep.second {
		m.printf("\nFix the cause, then run `%s` to go on. (%s is removed: there is no going back to it; the services are on %s, %s or both.)\n",
			m.command(again), m.keep.origName, p.from.Name, p.to.Name)
	} else {
		m.printf("\nFix the cause, then run `%s` to go on, or `%s` to move back.\n", m.command(again), m.command("--revert"))
	}
	return fmt.Errorf("%w: %w", ErrStopped, err)
}

func (m *Migrator) confirm() bool {
	m.printf("\nProceed? [y/N] ")
	if m.o.In == nil {
		m.printf("\n")
		return false
	}
	line, _ := bufio.NewReader(m.o.In).ReadString('\n')
	line = strings.ToLower(strings.TrimSpace(line))
	return line == "y" || line == "yes"
}

// command is the command line that runs this migration again with flag.
func (m *Migrator) command(flag string) string {
	name := m.o.Network
	keep := ""
	if m.keep != nil {
		name, keep = m.keep.origName, "--keep-subnet "
	}
	return fmt.Sprintf("vxsafe migrate %s%s %s", keep, flag, name)
}

// twinName is the name the twin gets.
func (m *Migrator) twinName(old *engine.Network) string {
	if m.keep != nil {
		return m.keep.twinName()
	}
	if m.o.Name != "" {
		return m.o.Name
	}
	return old.Name + "-vxsafe"
}

// twinRequest is the twin's creation: the old network's options, labels, attachable and internal, on
// subnet, with the labels that name the old network.
func (m *Migrator) twinRequest(old *engine.Network, subnet *net.IPNet) engine.NetworkCreate {
	opts := map[string]string{}
	for k, v := range old.Options {
		if !dropOption(k) {
			opts[k] = v
		}
	}
	labels := map[string]string{}
	for k, v := range old.Labels {
		if k != LabelStack && k != LabelKeepSubnet && k != LabelKeepGateway {
			labels[k] = v
		}
	}
	ipam := engine.IPAMConfig{Subnet: subnet.String()}
	switch {
	case m.keep == nil:
		labels[LabelFrom], labels[LabelFromID] = old.Name, old.ID
	case !m.keep.second:
		// The temporary twin records where the second pass goes back to.
		labels[LabelFrom], labels[LabelFromID] = old.Name, old.ID
		labels[LabelKeepSubnet] = m.keep.subnet
		if m.keep.gateway != "" {
			labels[LabelKeepGateway] = m.keep.gateway
		}
	default:
		// The final network names the original (the temporary twin's labels say which), not the temporary.
		labels[LabelFrom], labels[LabelFromID] = m.keep.origName, m.keep.origID
		ipam.Gateway = m.keep.gateway
	}
	return engine.NetworkCreate{Name: m.twinName(old), CheckDuplicate: true, Driver: m.o.Driver,
		Attachable: old.Attachable, Internal: old.Internal,
		IPAM:    &engine.IPAM{Driver: "default", Config: []engine.IPAMConfig{ipam}},
		Options: opts, Labels: labels}
}

// dropOption tells the options of the old network that the twin does not take: the old driver's VNIs
// (the twin gets its own), vxsafe's gossip keys (the twin gets its own), the engine's own.
func dropOption(k string) bool {
	switch k {
	case netconfig.OptVNIList, netconfig.OptKey, netconfig.OptKeyAuthority, netconfig.GenericKey, "encrypted":
		return true
	}
	return strings.HasPrefix(k, "com.docker.network.driver.overlay.")
}
