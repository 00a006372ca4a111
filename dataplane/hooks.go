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
)

// Hooks inject failures into kernel steps, so tests can prove that a failure at any step leaves nothing
// half-built behind. The zero value injects nothing.
type Hooks struct {
	mu   sync.Mutex
	fail map[string]int
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
	defer h.mu.Unlock()
	if h.fail[step] > 0 {
		h.fail[step]--
		return fmt.Errorf("%s: %w", step, ErrInjected)
	}
	return nil
}
