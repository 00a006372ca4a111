package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/vxsafe/overlay/netconfig"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state", "vxsafe.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func netRec(id string, vni uint32) NetworkRecord {
	return NetworkRecord{
		ID: id, VNI: vni, Port: 4789, MTU: 1450,
		IPv4:    []netconfig.Subnet{{Pool: "10.0.1.0/24", Gateway: "10.0.1.1/24"}},
		Options: map[string]string{netconfig.OptVNIList: fmt.Sprint(vni)},
	}
}

func epRec(netID, epID, ip string) EndpointRecord {
	return EndpointRecord{NetworkID: netID, EndpointID: epID, IP: ip, MAC: "02:42:0a:00:01:02",
		IfName: netconfig.EndpointIfName(epID), SandboxKey: "/var/run/docker/netns/" + epID[:4]}
}

func TestOpenModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "vxsafe.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", di.Mode().Perm())
	}
}

func TestOpenTightensExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v after reopen, want 0600", fi.Mode().Perm())
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Error("empty path accepted")
	}
	// Parent is a regular file: MkdirAll fails, error names the path.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(f, "x", "vxsafe.db")
	if _, err := Open(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Open under a file: %v", err)
	}
	// Not a bbolt file.
	junk := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a database ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(junk); err == nil {
		s.Close()
		t.Error("junk file opened")
	} else if !strings.Contains(err.Error(), junk) {
		t.Errorf("junk error does not name the path: %v", err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	s := openTemp(t)
	start := time.Now()
	s2, err := OpenWithTimeout(s.Path(), 300*time.Millisecond)
	elapsed := time.Since(start)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of the same file succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), s.Path()) {
		t.Errorf("error %q: want ErrLocked naming %s", err, s.Path())
	}
	if elapsed > 3*time.Second {
		t.Errorf("second Open took %s", elapsed)
	}
	// After Close the file can be opened again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := OpenWithTimeout(s.Path(), 300*time.Millisecond)
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	s3.Close()
}

func TestDefaultTimeoutBounded(t *testing.T) {
	if DefaultOpenTimeout <= 0 || DefaultOpenTimeout > 10*time.Second {
		t.Fatalf("DefaultOpenTimeout = %s", DefaultOpenTimeout)
	}
}

func TestNetworkRoundTrip(t *testing.T) {
	s := openTemp(t)
	n := netRec("net1", 4100)
	if err := s.PutNetwork(n); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.GetNetwork("net1")
	if err != nil || !ok {
		t.Fatalf("GetNetwork: %v %v", ok, err)
	}
	if got.Created.IsZero() || time.Since(got.Created) > time.Minute {
		t.Errorf("Created not stamped: %v", got.Created)
	}
	n.Created = got.Created
	if !reflect.DeepEqual(got, n) {
		t.Errorf("got %+v\nwant %+v", got, n)
	}
	// Replace keeps an explicit Created.
	created := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	n.MTU, n.Created = 1400, created
	if err := s.PutNetwork(n); err != nil {
		t.Fatal(err)
	}
	got, _, _ = s.GetNetwork("net1")
	if got.MTU != 1400 || !got.Created.Equal(created) {
		t.Errorf("replace: %+v", got)
	}
	if _, ok, err := s.GetNetwork("missing"); ok || err != nil {
		t.Errorf("missing network: %v %v", ok, err)
	}
	if err := s.PutNetwork(netRec("net0", 1)); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListNetworks()
	if err != nil || len(list) != 2 || list[0].ID != "net0" || list[1].ID != "net1" {
		t.Fatalf("ListNetworks = %+v, %v", list, err)
	}
}

func TestInvalidIDsRejected(t *testing.T) {
	s := openTemp(t)
	if err := s.PutNetwork(netRec("a/b", 1)); err == nil || !strings.Contains(err.Error(), "invalid network ID") {
		t.Errorf("PutNetwork bad id: %v", err)
	}
	if _, _, err := s.GetNetwork(""); err == nil {
		t.Error("GetNetwork empty id accepted")
	}
	if err := s.DeleteNetwork(".."); err == nil {
		t.Error("DeleteNetwork .. accepted")
	}
	if err := s.PutNetwork(netRec("n", 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEndpoint(epRec("n", "ep/1xxx", "")); err == nil || !strings.Contains(err.Error(), "invalid endpoint ID") {
		t.Errorf("PutEndpoint bad id: %v", err)
	}
	if _, _, err := s.GetEndpoint("n", ""); err == nil {
		t.Error("GetEndpoint empty id accepted")
	}
	if err := s.DeleteEndpoint("n/", "e"); err == nil {
		t.Error("DeleteEndpoint bad net id accepted")
	}
	if _, err := s.ListEndpoints("x\x00"); err == nil {
		t.Error("ListEndpoints bad id accepted")
	}
	if err := s.PutAllocation(5, "a b"); err == nil {
		t.Error("PutAllocation bad id accepted")
	}
	if _, _, err := s.DeleteAllocation(""); err == nil {
		t.Error("DeleteAllocation empty id accepted")
	}
}

func TestEndpoints(t *testing.T) {
	s := openTemp(t)
	// Endpoint of an unknown network is refused.
	if err := s.PutEndpoint(epRec("nope", "ep000001", "10.0.1.2/24")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PutEndpoint unknown network: %v", err)
	}
	for _, id := range []string{"netA", "netA.x", "netB"} {
		if err := s.PutNetwork(netRec(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	eps := []EndpointRecord{
		epRec("netA", "ep000002", "10.0.1.3/24"),
		epRec("netA", "ep000001", "10.0.1.2/24"),
		epRec("netA.x", "ep000009", "10.0.9.2/24"),
		epRec("netB", "ep000003", "10.0.2.2/24"),
	}
	for _, e := range eps {
		if err := s.PutEndpoint(e); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := s.GetEndpoint("netA", "ep000001")
	if err != nil || !ok {
		t.Fatalf("GetEndpoint: %v %v", ok, err)
	}
	if got.Updated.IsZero() {
		t.Error("Updated not stamped")
	}
	want := eps[1]
	want.Updated = got.Updated
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// Update: Joined + SandboxKey, Updated moves forward.
	got.Joined, got.SandboxKey = true, "/var/run/docker/netns/abcd"
	before := got.Updated
	if err := s.PutEndpoint(got); err != nil {
		t.Fatal(err)
	}
	got2, _, _ := s.GetEndpoint("netA", "ep000001")
	if !got2.Joined || got2.SandboxKey != "/var/run/docker/netns/abcd" || got2.Updated.Before(before) {
		t.Errorf("update: %+v", got2)
	}
	if _, ok, err := s.GetEndpoint("netA", "ep000003"); ok || err != nil {
		t.Errorf("endpoint of another network visible: %v %v", ok, err)
	}

	ids := func(l []EndpointRecord) []string {
		var out []string
		for _, e := range l {
			out = append(out, e.NetworkID+"/"+e.EndpointID)
		}
		return out
	}
	l, err := s.ListEndpoints("netA")
	if err != nil || !reflect.DeepEqual(ids(l), []string{"netA/ep000001", "netA/ep000002"}) {
		t.Errorf("ListEndpoints(netA) = %v, %v", ids(l), err)
	}
	l, err = s.ListEndpoints("")
	if err != nil || len(l) != 4 {
		t.Errorf("ListEndpoints(\"\") = %v, %v", ids(l), err)
	}
	if l, err := s.ListEndpoints("empty"); err != nil || len(l) != 0 {
		t.Errorf("ListEndpoints(empty) = %v, %v", l, err)
	}

	// Delete endpoint: idempotent.
	for i := 0; i < 2; i++ {
		if err := s.DeleteEndpoint("netA", "ep000002"); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := s.GetEndpoint("netA", "ep000002"); ok {
		t.Error("endpoint still there after delete")
	}
	// Delete network removes its endpoints only (not those of "netA.x").
	for i := 0; i < 2; i++ {
		if err := s.DeleteNetwork("netA"); err != nil {
			t.Fatal(err)
		}
	}
	l, _ = s.ListEndpoints("")
	if !reflect.DeepEqual(ids(l), []string{"netA.x/ep000009", "netB/ep000003"}) {
		t.Errorf("after DeleteNetwork: %v", ids(l))
	}
	if _, ok, _ := s.GetNetwork("netA"); ok {
		t.Error("network still there after delete")
	}
}

func TestAllocations(t *testing.T) {
	s := openTemp(t)
	if m, err := s.Allocations(); err != nil || len(m) != 0 {
		t.Fatalf("empty Allocations = %v, %v", m, err)
	}
	if err := s.PutAllocation(4100, "netA"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAllocation(4100, "netA"); err != nil {
		t.Fatalf("same pair again: %v", err)
	}
	if err := s.PutAllocation(4100, "netB"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "netA") {
		t.Errorf("VNI taken: %v", err)
	}
	if err := s.PutAllocation(4101, "netA"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "4100") {
		t.Errorf("network holds another VNI: %v", err)
	}
	for _, v := range []uint32{0, netconfig.MaxVNI + 1} {
		if err := s.PutAllocation(v, "netC"); err == nil {
			t.Errorf("PutAllocation(%d) accepted", v)
		}
	}
	if err := s.PutAllocation(netconfig.MaxVNI, "netB"); err != nil {
		t.Fatal(err)
	}
	m, err := s.Allocations()
	if err != nil || !reflect.DeepEqual(m, map[uint32]string{4100: "netA", netconfig.MaxVNI: "netB"}) {
		t.Fatalf("Allocations = %v, %v", m, err)
	}
	v, ok, err := s.DeleteAllocation("netA")
	if err != nil || !ok || v != 4100 {
		t.Fatalf("DeleteAllocation = %d %v %v", v, ok, err)
	}
	v, ok, err = s.DeleteAllocation("netA")
	if err != nil || ok || v != 0 {
		t.Fatalf("DeleteAllocation again = %d %v %v", v, ok, err)
	}
	if err := s.PutAllocation(4100, "netC"); err != nil {
		t.Fatalf("reuse after delete: %v", err)
	}
}

func TestPeers(t *testing.T) {
	s := openTemp(t)
	if p, err := s.Peers(); err != nil || p != nil {
		t.Fatalf("empty Peers = %v, %v", p, err)
	}
	if err := s.PutPeers([]string{"10.0.0.2:7946", "10.0.0.1:7946", "", "10.0.0.2:7946"}); err != nil {
		t.Fatal(err)
	}
	p, err := s.Peers()
	if err != nil || !reflect.DeepEqual(p, []string{"10.0.0.1:7946", "10.0.0.2:7946"}) {
		t.Fatalf("Peers = %v, %v", p, err)
	}
	if err := s.PutPeers(nil); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Peers(); err != nil || p != nil {
		t.Fatalf("cleared Peers = %v, %v", p, err)
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	n := netRec("netP", 1048576)
	if err := s.PutNetwork(n); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEndpoint(epRec("netP", "epP00001", "10.0.1.5/24")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAllocation(1048576, "netP"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPeers([]string{"192.168.1.1:7946"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, ok, err := s.GetNetwork("netP")
	if err != nil || !ok || got.VNI != 1048576 || !reflect.DeepEqual(got.IPv4, n.IPv4) || !reflect.DeepEqual(got.Options, n.Options) {
		t.Errorf("network after reopen: %+v %v %v", got, ok, err)
	}
	if e, ok, err := s.GetEndpoint("netP", "epP00001"); err != nil || !ok || e.IP != "10.0.1.5/24" {
		t.Errorf("endpoint after reopen: %+v %v %v", e, ok, err)
	}
	if m, err := s.Allocations(); err != nil || m[1048576] != "netP" {
		t.Errorf("allocations after reopen: %v %v", m, err)
	}
	if p, err := s.Peers(); err != nil || len(p) != 1 {
		t.Errorf("peers after reopen: %v %v", p, err)
	}
}

func TestFailNext(t *testing.T) {
	s := openTemp(t)
	if err := s.PutNetwork(netRec("n1", 1)); err != nil {
		t.Fatal(err)
	}
	ops := map[string]func() error{
		"PutNetwork":       func() error { return s.PutNetwork(netRec("n2", 2)) },
		"GetNetwork":       func() error { _, _, err := s.GetNetwork("n1"); return err },
		"ListNetworks":     func() error { _, err := s.ListNetworks(); return err },
		"PutEndpoint":      func() error { return s.PutEndpoint(epRec("n1", "e0000001", "10.0.1.2/24")) },
		"GetEndpoint":      func() error { _, _, err := s.GetEndpoint("n1", "e0000001"); return err },
		"ListEndpoints":    func() error { _, err := s.ListEndpoints(""); return err },
		"DeleteEndpoint":   func() error { return s.DeleteEndpoint("n1", "e0000001") },
		"PutAllocation":    func() error { return s.PutAllocation(7, "n1") },
		"Allocations":      func() error { _, err := s.Allocations(); return err },
		"DeleteAllocation": func() error { _, _, err := s.DeleteAllocation("n1"); return err },
		"PutPeers":         func() error { return s.PutPeers([]string{"x"}) },
		"Peers":            func() error { _, err := s.Peers(); return err },
		"DeleteNetwork":    func() error { return s.DeleteNetwork("n2") },
	}
	order := []string{"PutNetwork", "GetNetwork", "ListNetworks", "PutEndpoint", "GetEndpoint", "ListEndpoints",
		"DeleteEndpoint", "PutAllocation", "Allocations", "DeleteAllocation", "PutPeers", "Peers", "DeleteNetwork"}
	if len(order) != len(ops) {
		t.Fatal("order and ops disagree")
	}
	for _, op := range order {
		s.FailNext(op)
		err := ops[op]()
		if !errors.Is(err, ErrInjected) || !strings.Contains(err.Error(), op) {
			t.Errorf("%s armed: err = %v, want ErrInjected naming the op", op, err)
		}
		// One shot: the next call succeeds.
		if err := ops[op](); err != nil {
			t.Errorf("%s after the injected failure: %v", op, err)
		}
	}
	// An injected failure changes nothing.
	s.FailNext("PutEndpoint")
	_ = s.PutEndpoint(epRec("n1", "e0000002", "10.0.1.3/24"))
	if _, ok, _ := s.GetEndpoint("n1", "e0000002"); ok {
		t.Error("failed PutEndpoint wrote a record")
	}
	// Arming twice fails twice; other ops are unaffected.
	s.FailNext("Peers")
	s.FailNext("Peers")
	if _, err := s.ListNetworks(); err != nil {
		t.Errorf("unarmed op failed: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := s.Peers(); !errors.Is(err, ErrInjected) {
			t.Errorf("Peers call %d: %v", i, err)
		}
	}
	if _, err := s.Peers(); err != nil {
		t.Errorf("Peers after two failures: %v", err)
	}
}

func TestCorruptRecordNamed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketNetworks).Put([]byte("badnet"), []byte("{not json")); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyPeers, []byte("[1,2]"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.ListNetworks(); err == nil || !strings.Contains(err.Error(), "badnet") {
		t.Errorf("ListNetworks on corrupt record: %v", err)
	}
	if _, _, err := s.GetNetwork("badnet"); err == nil || !strings.Contains(err.Error(), "badnet") {
		t.Errorf("GetNetwork on corrupt record: %v", err)
	}
	if _, err := s.Peers(); err == nil {
		t.Error("Peers on corrupt record: no error")
	}
}

func TestSchemaVersionChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vxsafe.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte("99"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("future schema accepted")
	} else if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), path) {
		t.Errorf("schema error: %v", err)
	}
}

func TestConcurrentWrites(t *testing.T) {
	s := openTemp(t)
	if err := s.PutNetwork(netRec("n", 1)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ep := fmt.Sprintf("ep%06d", i)
			if err := s.PutEndpoint(epRec("n", ep, "10.0.0.1/24")); err != nil {
				t.Error(err)
			}
			if _, err := s.ListEndpoints("n"); err != nil {
				t.Error(err)
			}
			if i%2 == 0 {
				s.FailNext("Nothing")
			}
		}(i)
	}
	wg.Wait()
	if l, err := s.ListEndpoints("n"); err != nil || len(l) != 20 {
		t.Fatalf("after concurrent writes: %d, %v", len(l), err)
	}
}

func TestNetworkKeysAndAuthorities(t *testing.T) {
	s := openTemp(t)
	if err := s.PutNetworkKeys("missing", NetworkKeys{Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.GetNetwork("missing"); ok {
		t.Fatal("PutNetworkKeys created a network")
	}
	if err := s.PutNetwork(netRec("net1", 4100)); err != nil {
		t.Fatal(err)
	}
	k := NetworkKeys{Epoch: 3, Primary: "aa", History: []string{"bb"}, Authority: "cc", Notice: []byte(`{"e":3}`)}
	if err := s.PutNetworkKeys("net1", k); err != nil {
		t.Fatal(err)
	}
	n, _, err := s.GetNetwork("net1")
	if err != nil || n.Keys == nil || n.Keys.Epoch != 3 || string(n.Keys.Notice) != `{"e":3}` || n.VNI != 4100 {
		t.Fatalf("network after PutNetworkKeys: %+v, %v", n, err)
	}
	if err := s.PutAuthority("net1", AuthorityRecord{Private: []byte{1, 2}, Keys: k}); err != nil {
		t.Fatal(err)
	}
	all, err := s.Authorities()
	if err != nil || len(all) != 1 || all["net1"].Keys.Primary != "aa" || len(all["net1"].Private) != 2 {
		t.Fatalf("Authorities = %+v, %v", all, err)
	}
	if err := s.DeleteAuthority("net1"); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Authorities(); len(all) != 0 {
		t.Fatalf("after DeleteAuthority: %+v", all)
	}
}
