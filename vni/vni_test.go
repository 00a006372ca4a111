package vni

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vxsafe/overlay/internal/storetest"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

func newStore(t *testing.T) *store.Store { return storetest.Open(t) }

func newAlloc(t *testing.T, st *store.Store, min, max uint32) *Allocator {
	t.Helper()
	a, err := New(st, min, max)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustAlloc(t *testing.T, a *Allocator, id string, req uint32) uint32 {
	t.Helper()
	v, err := a.Allocate(id, req)
	if err != nil {
		t.Fatalf("Allocate(%q, %d): %v", id, req, err)
	}
	return v
}

func TestNewValidation(t *testing.T) {
	st := newStore(t)
	for _, r := range [][2]uint32{{0, 10}, {10, 5}, {1, netconfig.MaxVNI + 1}} {
		if _, err := New(st, r[0], r[1]); err == nil {
			t.Errorf("New(%d, %d) accepted", r[0], r[1])
		}
	}
	if _, err := New(nil, 1, 2); err == nil {
		t.Error("New(nil store) accepted")
	}
	a := newAlloc(t, st, 1, netconfig.MaxVNI)
	if lo, hi := a.Range(); lo != 1 || hi != netconfig.MaxVNI {
		t.Errorf("Range = %d-%d", lo, hi)
	}
	st.FailNext("Allocations")
	if _, err := New(st, 1, 2); !errors.Is(err, store.ErrInjected) {
		t.Errorf("New with failing store: %v", err)
	}
}

func TestLowestFree(t *testing.T) {
	st := newStore(t)
	// Pre-existing allocations at the bottom of the range.
	for i, v := range []uint32{100, 101, 103} {
		if err := st.PutAllocation(v, fmt.Sprintf("old%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	a := newAlloc(t, st, 100, 200)
	for _, want := range []uint32{102, 104, 105} {
		if got := mustAlloc(t, a, fmt.Sprintf("new%d", want), 0); got != want {
			t.Errorf("got %d, want %d", got, want)
		}
	}
	if v, ok := a.Lookup("old2"); !ok || v != 103 {
		t.Errorf("Lookup(old2) = %d %v", v, ok)
	}
	if _, ok := a.Lookup("nobody"); ok {
		t.Error("Lookup(nobody) found")
	}
}

func TestCursorAndWrap(t *testing.T) {
	st := newStore(t)
	a := newAlloc(t, st, 10, 13)
	for i, want := range []uint32{10, 11, 12} {
		if got := mustAlloc(t, a, fmt.Sprintf("n%d", i), 0); got != want {
			t.Fatalf("got %d, want %d", got, want)
		}
	}
	// A released VNI is not reused at once: the cursor moves on.
	if v, ok, err := a.Release("n0"); err != nil || !ok || v != 10 {
		t.Fatalf("Release(n0) = %d %v %v", v, ok, err)
	}
	if got := mustAlloc(t, a, "n3", 0); got != 13 {
		t.Fatalf("after release got %d, want 13", got)
	}
	// Cursor at the top: wraps to the freed 10.
	if got := mustAlloc(t, a, "n4", 0); got != 10 {
		t.Fatalf("wrap got %d, want 10", got)
	}
	// Now full.
	_, err := a.Allocate("n5", 0)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("exhausted: %v", err)
	}
	for _, w := range []string{"10-13", "VNI_RANGE", `"n5"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("exhaustion error %q does not contain %q", err, w)
		}
	}
	// Free one in the middle: it is found after wrapping.
	if _, _, err := a.Release("n1"); err != nil {
		t.Fatal(err)
	}
	if got := mustAlloc(t, a, "n5", 0); got != 11 {
		t.Fatalf("got %d, want 11", got)
	}
}

func TestExhaustionIgnoresOutOfRange(t *testing.T) {
	st := newStore(t)
	a := newAlloc(t, st, 5, 5)
	// Allocations outside the range do not count against it.
	mustAlloc(t, a, "outside1", 4)
	mustAlloc(t, a, "outside2", 6)
	if got := mustAlloc(t, a, "inside", 0); got != 5 {
		t.Fatalf("got %d", got)
	}
	if _, err := a.Allocate("more", 0); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want exhausted, got %v", err)
	}
}

func TestRequested(t *testing.T) {
	st := newStore(t)
	a := newAlloc(t, st, 1048576, 2097151)
	// Outside the range is fine.
	if got := mustAlloc(t, a, "netA", 4100); got != 4100 {
		t.Fatalf("got %d", got)
	}
	// Held by another network: refused, message names both and the option.
	_, err := a.Allocate("netB", 4100)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("duplicate: %v", err)
	}
	want := `VNI 4100 is already used by network "netA"; choose another with -o com.docker.network.driver.overlay.vxlanid_list=N`
	if err.Error() != want {
		t.Errorf("error %q\nwant  %q", err, want)
	}
	if _, ok := a.Lookup("netB"); ok {
		t.Error("refused network got a VNI")
	}
	// Idempotent.
	for _, req := range []uint32{0, 4100} {
		if got := mustAlloc(t, a, "netA", req); got != 4100 {
			t.Errorf("again with %d: got %d", req, got)
		}
	}
	// A network holding a VNI cannot switch.
	_, err = a.Allocate("netA", 4101)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "4100") || !strings.Contains(err.Error(), "4101") {
		t.Errorf("switch: %v", err)
	}
	// Automatic allocation is idempotent too.
	v := mustAlloc(t, a, "netC", 0)
	if v != 1048576 || mustAlloc(t, a, "netC", 0) != v || mustAlloc(t, a, "netC", v) != v {
		t.Errorf("auto idempotency: %d", v)
	}
	// Requesting a VNI inside the range that is the cursor's next pick:
	// automatic allocation skips it.
	mustAlloc(t, a, "netD", 1048577)
	if got := mustAlloc(t, a, "netE", 0); got != 1048578 {
		t.Errorf("auto after requested: %d", got)
	}
	// Bad input.
	if _, err := a.Allocate("netF", netconfig.MaxVNI+1); err == nil || !strings.Contains(err.Error(), "16777216") {
		t.Errorf("too large: %v", err)
	}
	if _, err := a.Allocate("a/b", 0); err == nil || !strings.Contains(err.Error(), "invalid network ID") {
		t.Errorf("bad id: %v", err)
	}
	if got := mustAlloc(t, a, "netMax", netconfig.MaxVNI); got != netconfig.MaxVNI {
		t.Errorf("MaxVNI: %d", got)
	}
}

func TestReleaseIdempotent(t *testing.T) {
	st := newStore(t)
	a := newAlloc(t, st, 1, 10)
	mustAlloc(t, a, "n", 7)
	if v, ok, err := a.Release("n"); err != nil || !ok || v != 7 {
		t.Fatalf("Release = %d %v %v", v, ok, err)
	}
	if v, ok, err := a.Release("n"); err != nil || ok || v != 0 {
		t.Fatalf("Release again = %d %v %v", v, ok, err)
	}
	if _, _, err := a.Release(""); err == nil {
		t.Error("Release(\"\") accepted")
	}
	if m, _ := st.Allocations(); len(m) != 0 {
		t.Errorf("store still has %v", m)
	}
	// The VNI can be requested by another network now.
	mustAlloc(t, a, "m", 7)
}

func TestSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := newAlloc(t, st, 100, 110)
	mustAlloc(t, a, "a", 0)
	mustAlloc(t, a, "b", 0)
	mustAlloc(t, a, "c", 5000)
	if _, _, err := a.Release("a"); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a = newAlloc(t, st, 100, 110)
	if v, ok := a.Lookup("b"); !ok || v != 101 {
		t.Errorf("b = %d %v", v, ok)
	}
	if v, ok := a.Lookup("c"); !ok || v != 5000 {
		t.Errorf("c = %d %v", v, ok)
	}
	if _, ok := a.Lookup("a"); ok {
		t.Error("released a survived")
	}
	if _, err := a.Allocate("d", 101); !errors.Is(err, ErrInUse) {
		t.Errorf("reloaded allocation not enforced: %v", err)
	}
	if got := mustAlloc(t, a, "b", 0); got != 101 {
		t.Errorf("idempotent after reopen: %d", got)
	}
	// After a restart the lowest free VNI is used.
	if got := mustAlloc(t, a, "e", 0); got != 100 {
		t.Errorf("after reopen got %d, want 100", got)
	}
	if m := a.Allocations(); len(m) != 3 || m[100] != "e" || m[101] != "b" || m[5000] != "c" {
		t.Errorf("Allocations = %v", m)
	}
}

func TestStoreFailureLeavesNoTrace(t *testing.T) {
	st := newStore(t)
	a := newAlloc(t, st, 1, 10)
	st.FailNext("PutAllocation")
	if _, err := a.Allocate("n", 0); !errors.Is(err, store.ErrInjected) || !strings.Contains(err.Error(), `network n`) {
		t.Fatalf("Allocate with failing store: %v", err)
	}
	if _, ok := a.Lookup("n"); ok {
		t.Fatal("failed allocation visible in memory")
	}
	if m, _ := st.Allocations(); len(m) != 0 {
		t.Fatalf("failed allocation in store: %v", m)
	}
	// The same VNI is handed out on retry (cursor did not move).
	if got := mustAlloc(t, a, "n", 0); got != 1 {
		t.Fatalf("retry got %d, want 1", got)
	}
	st.FailNext("DeleteAllocation")
	if _, _, err := a.Release("n"); !errors.Is(err, store.ErrInjected) {
		t.Fatalf("Release with failing store: %v", err)
	}
	if v, ok := a.Lookup("n"); !ok || v != 1 {
		t.Fatal("failed release dropped the allocation from memory")
	}
	if _, err := a.Allocate("other", 1); !errors.Is(err, ErrInUse) {
		t.Fatalf("VNI of failed release reusable: %v", err)
	}
	if v, ok, err := a.Release("n"); err != nil || !ok || v != 1 {
		t.Fatalf("Release retry = %d %v %v", v, ok, err)
	}
}

func TestConcurrentAllocationsUnique(t *testing.T) {
	st := newStore(t)
	a := newAlloc(t, st, 1000, 1199)
	const n = 100
	var wg sync.WaitGroup
	got := make([]uint32, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("net%03d", i)
			req := uint32(0)
			if i%10 == 0 {
				req = uint32(5000 + i) // some explicit requests mixed in
			}
			got[i], errs[i] = a.Allocate(id, req)
			// Concurrent idempotent re-ask and lookups.
			if errs[i] == nil {
				if v, err := a.Allocate(id, 0); err != nil || v != got[i] {
					errs[i] = fmt.Errorf("re-ask: %d %v", v, err)
				}
			}
			a.Lookup(id)
		}(i)
	}
	wg.Wait()
	seen := map[uint32]int{}
	for i, v := range got {
		if errs[i] != nil {
			t.Fatalf("net%03d: %v", i, errs[i])
		}
		if j, dup := seen[v]; dup {
			t.Fatalf("VNI %d given to net%03d and net%03d", v, j, i)
		}
		seen[v] = i
	}
	m, err := st.Allocations()
	if err != nil || len(m) != n {
		t.Fatalf("store has %d allocations, %v", len(m), err)
	}
	for v, id := range m {
		if got[seen[v]] != v || fmt.Sprintf("net%03d", seen[v]) != id {
			t.Fatalf("store %d -> %s disagrees", v, id)
		}
	}
	// Two goroutines racing for the same explicit VNI: exactly one wins.
	var wins, losses int
	var mu sync.Mutex
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := a.Allocate(fmt.Sprintf("race%02d", i), 9999)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else if errors.Is(err, ErrInUse) {
				losses++
			} else {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 || losses != 19 {
		t.Fatalf("wins %d losses %d", wins, losses)
	}
}

func TestLargeRangeExhaustionIsFast(t *testing.T) {
	// Exhaustion is detected by counting, not by scanning the range.
	st := newStore(t)
	a := newAlloc(t, st, 1, 3)
	for i := 0; i < 3; i++ {
		mustAlloc(t, a, fmt.Sprintf("n%d", i), 0)
	}
	if _, err := a.Allocate("x", 0); !errors.Is(err, ErrExhausted) {
		t.Fatal(err)
	}
	// A huge range with a few allocations still allocates immediately.
	b := newAlloc(t, st, 1, netconfig.MaxVNI)
	if got := mustAlloc(t, b, "y", 0); got != 4 {
		t.Fatalf("got %d, want 4", got)
	}
}
