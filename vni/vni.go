// Package vni allocates cluster-wide VXLAN network identifiers on a swarm
// manager, persisting every allocation in the store before it is handed out.
package vni

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

var (
	// ErrInUse is wrapped when a requested VNI belongs to another network.
	ErrInUse = errors.New("VNI already in use")
	// ErrExhausted is wrapped when no VNI is free in the range.
	ErrExhausted = errors.New("VNI range exhausted")
	// ErrConflict is wrapped when a network that holds a VNI asks for another.
	ErrConflict = errors.New("network already holds a different VNI")
)

// kindError is an error with an exact message that still matches a
// sentinel with errors.Is.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func kindErrorf(kind error, format string, args ...interface{}) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// Allocator hands out VNIs. It is safe for concurrent use.
type Allocator struct {
	st       *store.Store
	min, max uint32

	mu     sync.Mutex
	byVNI  map[uint32]string
	byNet  map[string]uint32
	cursor uint32 // next VNI to try for automatic allocation
}

// New returns an allocator for [min, max] that starts from the allocations
// already recorded in st (which may lie outside the range).
func New(st *store.Store, min, max uint32) (*Allocator, error) {
	if st == nil {
		return nil, errors.New("vni allocator: nil store")
	}
	if min < 1 || max > netconfig.MaxVNI || min > max {
		return nil, fmt.Errorf("vni allocator: invalid range %d-%d (need 1 <= min <= max <= %d)", min, max, netconfig.MaxVNI)
	}
	allocs, err := st.Allocations()
	if err != nil {
		return nil, fmt.Errorf("vni allocator: load allocations: %w", err)
	}
	a := &Allocator{st: st, min: min, max: max, byVNI: map[uint32]string{}, byNet: map[string]uint32{}, cursor: min}
	for v, id := range allocs {
		if prev, dup := a.byNet[id]; dup {
			return nil, fmt.Errorf("vni allocator: store gives network %q two VNIs (%d and %d)", id, prev, v)
		}
		a.byVNI[v] = id
		a.byNet[id] = v
	}
	return a, nil
}

// Range returns the automatic allocation range.
func (a *Allocator) Range() (min, max uint32) { return a.min, a.max }

// Allocate returns the VNI of network netID. With requested == 0 it picks
// the next free VNI in the range, scanning from a cursor that starts at the
// range's low end and wraps around (so a released VNI is not handed out
// again at once). With requested != 0 it gives exactly that VNI (1..MaxVNI,
// inside or outside the range) unless another network holds it.
// Asking again for the same network returns its VNI (idempotent); asking for
// a different VNI than the one it holds is an error. The allocation is
// persisted before Allocate returns; the store refuses an invalid netID.
func (a *Allocator) Allocate(netID string, requested uint32) (uint32, error) {
	if requested > netconfig.MaxVNI {
		return 0, fmt.Errorf("allocate VNI for network %s: requested VNI %d is out of range 1..%d", netID, requested, netconfig.MaxVNI)
	}
	a.mu.Lock()
	defer a.mu.Unlock()

	if cur, ok := a.byNet[netID]; ok {
		if requested == 0 || requested == cur {
			return cur, nil
		}
		return 0, kindErrorf(ErrConflict, "network %q already holds VNI %d; it cannot switch to requested VNI %d",
			netID, cur, requested)
	}

	v := requested
	if v != 0 {
		if holder, ok := a.byVNI[v]; ok {
			return 0, kindErrorf(ErrInUse, "VNI %d is already used by network %q; choose another with -o %s=N",
				v, holder, netconfig.OptVNIList)
		}
	} else {
		var ok bool
		if v, ok = a.nextFree(); !ok {
			return 0, kindErrorf(ErrExhausted, "cannot allocate a VNI for network %q: all %d VNIs of range %d-%d are in use; widen the range with the setting VNI_RANGE or request a VNI with -o %s=N",
				netID, uint64(a.max-a.min)+1, a.min, a.max, netconfig.OptVNIList)
		}
	}
	if err := a.st.PutAllocation(v, netID); err != nil {
		return 0, fmt.Errorf("allocate VNI %d for network %s: %w", v, netID, err)
	}
	a.byVNI[v] = netID
	a.byNet[netID] = v
	if requested == 0 {
		a.cursor = v + 1
		if v == a.max {
			a.cursor = a.min
		}
	}
	return v, nil
}

// nextFree finds a free VNI in the range from the cursor, wrapping once.
// Called with a.mu held.
func (a *Allocator) nextFree() (uint32, bool) {
	size := uint64(a.max-a.min) + 1
	var used uint64
	for v := range a.byVNI {
		if v >= a.min && v <= a.max {
			used++
		}
	}
	if used >= size {
		return 0, false
	}
	v := a.cursor
	if v < a.min || v > a.max {
		v = a.min
	}
	for i := uint64(0); i < size; i++ {
		if _, taken := a.byVNI[v]; !taken {
			return v, true
		}
		if v == a.max {
			v = a.min
		} else {
			v++
		}
	}
	return 0, false
}

// Release frees the VNI of netID and returns it. Releasing a network
// without an allocation returns (0, false, nil). The store is updated first:
// on a store error nothing changes.
func (a *Allocator) Release(netID string) (uint32, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, stored, err := a.st.DeleteAllocation(netID)
	if err != nil {
		return 0, false, fmt.Errorf("release VNI of network %s: %w", netID, err)
	}
	mv, inMem := a.byNet[netID]
	if inMem {
		delete(a.byNet, netID)
		delete(a.byVNI, mv)
		v = mv
	}
	return v, stored || inMem, nil
}

// Lookup returns the VNI held by netID.
func (a *Allocator) Lookup(netID string) (uint32, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.byNet[netID]
	return v, ok
}

// Allocations returns a snapshot: VNI -> network ID.
func (a *Allocator) Allocations() map[uint32]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[uint32]string, len(a.byVNI))
	for v, id := range a.byVNI {
		out[v] = id
	}
	return out
}
