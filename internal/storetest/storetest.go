// Package storetest opens state stores for tests, in a temporary directory removed when the test ends.
package storetest

import (
	"path/filepath"
	"testing"

	"github.com/vxsafe/overlay/store"
)

// Open opens a fresh store in t's temporary directory and closes it when the test ends.
func Open(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "vxsafe.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
