package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	testNet  = "n0000000000000000000000000000000000000000000000000000000000000a"
	testNet2 = "n0000000000000000000000000000000000000000000000000000000000000b"
)

func testEP(i int) string { return fmt.Sprintf("e%063d", i) }

// mustOpen opens the state at path or fails the test.
func mustOpen(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withBoot points the boot ID the store reads at a file of the test's, holding id.
func withBoot(t *testing.T, id string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := bootIDPath
	bootIDPath = p
	t.Cleanup(func() { bootIDPath = old })
}

// writeLegacy writes a state file as schema 1 did: the endpoint records in the main file.
func writeLegacy(t *testing.T, path string, nets []NetworkRecord, eps []EndpointRecord) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketNetworks, bucketEndpoints, bucketAllocations, bucketMeta, bucketAuthorities} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keySchema, schemaVersionV1); err != nil {
			return err
		}
		for _, n := range nets {
			v, _ := json.Marshal(n)
			if err := tx.Bucket(bucketNetworks).Put([]byte(n.ID), v); err != nil {
				return err
			}
		}
		for _, e := range eps {
			v, _ := json.Marshal(e)
			if err := tx.Bucket(bucketEndpoints).Put(epKey(e.NetworkID, e.EndpointID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// mainFile reads the schema version of the main file and whether it still holds an endpoints bucket.
func mainFile(t *testing.T, path string) (schema string, hasEndpoints bool) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		schema = string(tx.Bucket(bucketMeta).Get(keySchema))
		hasEndpoints = tx.Bucket(bucketEndpoints) != nil
		return nil
	})
	return schema, hasEndpoints
}

func endpointIDs(t *testing.T, s *Store, netID string) []string {
	t.Helper()
	eps, err := s.ListEndpoints(netID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range eps {
		ids = append(ids, e.EndpointID)
	}
	return ids
}

func TestEndpointsInTheirOwnFile(t *testing.T) {
	s := openTemp(t)
	if want := filepath.Join(filepath.Dir(s.Path()), "vxsafe-endpoints.db"); s.EndpointsPath() != want {
		t.Fatalf("EndpointsPath() = %q, want %q", s.EndpointsPath(), want)
	}
	if err := s.PutNetwork(netRec(testNet, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEndpoint(epRec(testNet, testEP(1), "10.0.1.2/24")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(s.EndpointsPath()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("endpoint file: %v %v", fi, err)
	}
	if !s.eps.NoSync || s.db.NoSync {
		t.Errorf("NoSync: endpoint file %v, main file %v; want true, false", s.eps.NoSync, s.db.NoSync)
	}
	s.Close()
	if schema, has := mainFile(t, s.Path()); schema != "2" || has {
		t.Errorf("main file: schema %q, endpoints bucket %v; want 2, none", schema, has)
	}
	db, err := bolt.Open(s.EndpointsPath(), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketEndpoints).Get(epKey(testNet, testEP(1))) == nil {
			return fmt.Errorf("endpoint record not in %s", s.EndpointsPath())
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestMigrateLegacyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "vxsafe.db")
	eps := []EndpointRecord{epRec(testNet, testEP(1), "10.0.1.2/24"), epRec(testNet, testEP(2), "10.0.1.3/24")}
	eps[1].Joined = true
	writeLegacy(t, path, []NetworkRecord{netRec(testNet, 1)}, eps)
	s := mustOpen(t, path)
	if got := endpointIDs(t, s, testNet); len(got) != 2 || got[0] != testEP(1) || got[1] != testEP(2) {
		t.Fatalf("after the move: endpoints %v", got)
	}
	if e, ok, err := s.GetEndpoint(testNet, testEP(2)); err != nil || !ok || !e.Joined || e.IP != "10.0.1.3/24" {
		t.Fatalf("moved record: %+v %v %v", e, ok, err)
	}
	if notes := strings.Join(s.OpenNotes(), "\n"); !strings.Contains(notes, "moved 2 endpoint records") {
		t.Errorf("OpenNotes: %q", notes)
	}
	s.Close()
	if schema, has := mainFile(t, path); schema != "2" || has {
		t.Errorf("main file after the move: schema %q, endpoints bucket %v", schema, has)
	}
	// Reopened: nothing to move, the records are there.
	s = mustOpen(t, path)
	defer s.Close()
	if len(s.OpenNotes()) != 0 {
		t.Errorf("second open: notes %q", s.OpenNotes())
	}
	if got := endpointIDs(t, s, ""); len(got) != 2 {
		t.Errorf("second open: endpoints %v", got)
	}
}

// A move that stopped before the main file's records were removed (or a build of the old layout that ran
// since) is done again, and the main file's records replace whatever the endpoint file holds.
func TestMigrateRepeatsInterruptedMove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	// An endpoint file with a stale record 9 and an old version of record 1.
	s := mustOpen(t, path)
	_ = s.PutNetwork(netRec(testNet, 1))
	stale := epRec(testNet, testEP(1), "10.0.1.2/24")
	if err := s.PutEndpoint(stale); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEndpoint(epRec(testNet, testEP(9), "10.0.1.9/24")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.Remove(path)
	fresh := epRec(testNet, testEP(1), "10.0.1.2/24")
	fresh.Joined = true
	writeLegacy(t, path, []NetworkRecord{netRec(testNet, 1)}, []EndpointRecord{fresh})
	s = mustOpen(t, path)
	defer s.Close()
	if got := endpointIDs(t, s, ""); len(got) != 1 || got[0] != testEP(1) {
		t.Fatalf("endpoints %v, want only %s", got, testEP(1)[:8])
	}
	if e, _, _ := s.GetEndpoint(testNet, testEP(1)); !e.Joined {
		t.Errorf("record 1 is the endpoint file's old one: %+v", e)
	}
}

// Endpoint records whose network is no longer in the main file (a DeleteNetwork that stopped between the
// two files) are deleted by Open; a network without endpoint records is kept.
func TestOpenPrunesRecordsOfDeletedNetworks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	s := mustOpen(t, path)
	for _, n := range []string{testNet, testNet2} {
		if err := s.PutNetwork(netRec(n, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutEndpoint(epRec(testNet, testEP(1), "10.0.1.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEndpoint(epRec(testNet2, testEP(2), "10.0.1.3/24")); err != nil {
		t.Fatal(err)
	}
	// The network's record alone goes, as the first half of DeleteNetwork does.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketNetworks).Delete([]byte(testNet2)) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = mustOpen(t, path)
	defer s.Close()
	if got := endpointIDs(t, s, ""); len(got) != 1 || got[0] != testEP(1) {
		t.Errorf("endpoints after reopen: %v, want only %s", got, testEP(1)[:8])
	}
	if notes := strings.Join(s.OpenNotes(), "\n"); !strings.Contains(notes, "deleted 1 endpoint records") {
		t.Errorf("OpenNotes: %q", notes)
	}
	if err := s.PutEndpoint(epRec(testNet2, testEP(3), "10.0.1.4/24")); err == nil {
		t.Error("PutEndpoint of a deleted network succeeded")
	}
}

// tearEndpointFile overwrites the endpoint file's pages after the two meta pages with garbage, as a
// machine crash may leave a file written without fsync.
func tearEndpointFile(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	for i := 2 * page; i < len(b); i++ {
		b[i] = 0xa5
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTornEndpointFileAfterReboot(t *testing.T) {
	withBoot(t, "boot-1")
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	s := mustOpen(t, path)
	_ = s.PutNetwork(netRec(testNet, 1))
	for i := 0; i < 50; i++ {
		if err := s.PutEndpoint(epRec(testNet, testEP(i), "10.0.1.2/24")); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	tearEndpointFile(t, EndpointsPath(path))

	// The same boot: a torn file cannot come from a missing fsync; it is an error, and nothing is moved.
	if s, err := Open(path); err == nil {
		_, lerr := s.ListEndpoints("")
		s.Close()
		if lerr == nil {
			t.Fatal("torn endpoint file read without error within the same boot")
		}
	}
	if _, err := os.Stat(EndpointsPath(path)); err != nil {
		t.Fatalf("endpoint file moved within the same boot: %v", err)
	}

	// Another boot: moved aside, started empty, the networks kept.
	withBoot(t, "boot-2")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("open after a reboot with a torn endpoint file: %v", err)
	}
	defer s.Close()
	if got := endpointIDs(t, s, ""); len(got) != 0 {
		t.Errorf("endpoints from a torn file: %d", len(got))
	}
	if _, ok, err := s.GetNetwork(testNet); !ok || err != nil {
		t.Errorf("network lost with the endpoint file: %v %v", ok, err)
	}
	notes := strings.Join(s.OpenNotes(), "\n")
	if !strings.Contains(notes, "could not be read after a restart of the machine") {
		t.Errorf("OpenNotes: %q", notes)
	}
	aside, _ := filepath.Glob(EndpointsPath(path) + ".torn-*")
	if len(aside) != 1 {
		t.Errorf("torn file not kept aside: %v", aside)
	}
	if err := s.PutEndpoint(epRec(testNet, testEP(1), "10.0.1.2/24")); err != nil {
		t.Errorf("writing to the new endpoint file: %v", err)
	}
}

// An intact endpoint file survives a reboot check.
func TestIntactEndpointFileAfterReboot(t *testing.T) {
	withBoot(t, "boot-1")
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	s := mustOpen(t, path)
	_ = s.PutNetwork(netRec(testNet, 1))
	if err := s.PutEndpoint(epRec(testNet, testEP(1), "10.0.1.2/24")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	withBoot(t, "boot-2")
	s = mustOpen(t, path)
	defer s.Close()
	if got := endpointIDs(t, s, ""); len(got) != 1 || len(s.OpenNotes()) != 0 {
		t.Errorf("after a reboot: endpoints %v, notes %q", got, s.OpenNotes())
	}
}

// TestEndpointWritesSurviveKill: endpoint records are written without fsync, and a process killed right
// after its writes returned leaves them all to the next opener (the page cache holds them).
func TestEndpointWritesSurviveKill(t *testing.T) {
	if path := os.Getenv("VXSAFE_STORE_KILL_CHILD"); path != "" {
		killChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestEndpointWritesSurviveKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), "VXSAFE_STORE_KILL_CHILD="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	written := -1
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "written %d", &written); err == nil {
			break
		}
	}
	if written < 0 {
		t.Fatalf("child did not report its writes: %s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	s := mustOpen(t, path)
	defer s.Close()
	eps, err := s.ListEndpoints(testNet)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != written {
		t.Fatalf("%d endpoint records after the kill, %d were written", len(eps), written)
	}
	for _, e := range eps {
		if !e.Joined {
			t.Errorf("endpoint %s lost its last write (Joined)", e.EndpointID[:8])
		}
	}
}

// killChild writes 200 endpoint records (then marks each joined), says so on stdout and waits to be
// killed, with the store still open.
func killChild(path string) {
	s, err := Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := s.PutNetwork(netRec(testNet, 1)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	const n = 200
	for i := 0; i < n; i++ {
		e := epRec(testNet, testEP(i), "10.0.1.2/24")
		if err := s.PutEndpoint(e); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		e.Joined = true
		if err := s.PutEndpoint(e); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Printf("written %d\n", n)
	time.Sleep(time.Hour)
}
