package dataplane

import (
	"errors"
	"fmt"
	"sync"
)

// ErrInjected is wrapped by every failure a Hooks injects.
var ErrInjected = errors.New("injected kernel failure")

// Kernel steps that Hooks can fail.
const (
	StepCreateVXLAN     = "create vxlan"
	StepLinkUp          = "set vxlan up"
	StepDeleteVXLAN     = "delete vxlan"
	StepCreateEndpoint  = "create endpoint interface"
	StepDeleteEndpoint  = "delete endpoint interface"
	StepDeleteStale     = "delete stale interface"
	StepAddPeer         = "program peer"
	StepProgramServices = "program services"
	// StepConfirmStale is the moment between the two scans that must both judge a foreign device stale
	// before EnsureVXLAN deletes it.
	StepConfirmStale = "confirm stale interface"
)

// Hooks inject failures into kernel steps, so tests can prove that a failure at any step leaves nothing
// half-built behind, and run a test's function at a step, so tests can race another program against it.
// The zero value does nothing.
type Hooks struct {
	mu     sync.Mutex
	fail   map[string]int
	before map[string][]func()
}

// Before makes the next call of step run fn first (tests use it to change the kernel's state at that
// moment, as another program would).
func (h *Hooks) Before(step string, fn func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.before == nil {
		h.before = map[string][]func(){}
	}
	h.before[step] = append(h.before[step], fn)
}

// FailNext makes the next n calls of step fail with an error wrapping ErrInjected.
func (h *Hooks) FailNext(step string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail == nil {
		h.fail = map[string]int{}
	}
	h.fail[step] += n
}

func (h *Hooks) check(step string) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	var fn func()
	if fns := h.before[step]; len(fns) > 0 {
		fn, h.before[step] = fns[0], fns[1:]
	}
	h.mu.Unlock()
	if fn != nil {
		fn()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail[step] > 0 {
		h.fail[step]--
		return fmt.Errorf("%s: %w", step, ErrInjected)
	}
	return nil
}
