// Package store persists the driver's state (networks, endpoints, VNI
// allocations, gossip peers) in bbolt files so it survives plugin restarts.
//
// Values are JSON. Deletes are idempotent. IDs are validated with
// netconfig.ValidateID before they become keys.
//
// Two files: the one Open is given (vxsafe.db) holds the networks, VNI
// allocations, key authorities and peers, and every write to it is a bbolt
// transaction fsync'd on commit; its sibling EndpointsPath (vxsafe-endpoints.db)
// holds the endpoint records and is written without fsync (bbolt NoSync),
// because those writes are on the path of every container start and stop.
//
// Why the endpoint records need no fsync: a record only matters while the
// kernel state it describes exists (the endpoint's interface, the container
// holding it). A plugin crash or kill keeps the page cache: every committed
// write is in the file for the next opener. A machine crash takes the kernel
// state and the containers with it; dockerd re-drives its endpoints after the
// reboot (DeleteEndpoint of those it knew, CreateEndpoint and Join for the
// containers it starts), and a lost or stale record is what the driver already
// copes with (an unknown endpoint's DeleteEndpoint is a no-op; a joined record
// whose sandbox is gone is reaped). What a machine crash may also leave is a
// torn file: when Open finds that the machine booted since the state was last
// opened (the boot ID, kept in the fsync'd file), it checks the endpoint file
// and, if bbolt cannot open it or finds it inconsistent, moves it aside and
// starts with no endpoint records (OpenNotes says so). Within one boot an
// unreadable endpoint file is an error, as an unreadable main file is.
//
// Files written by earlier versions keep the endpoint records in vxsafe.db:
// Open moves them into the endpoint file (made durable with fsync once) and
// then removes them from vxsafe.db, whose schema version becomes 2 so that an
// older build refuses the file instead of reading it as a state without
// endpoints. A crash during the move repeats it at the next Open.
//
// The two files are not written atomically together. Open deletes endpoint
// records whose network is not in vxsafe.db (a DeleteNetwork that stopped
// between the two files); a network without endpoint records is a network
// with no endpoint on this host.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/vxsafe/overlay/netconfig"
)

// DefaultOpenTimeout is how long Open waits for the file lock held by
// another opener before failing.
const DefaultOpenTimeout = 5 * time.Second

var (
	// ErrInjected is wrapped by the error a FailNext-armed operation returns.
	ErrInjected = errors.New("injected store failure")
	// ErrLocked is wrapped when the file is held open by another opener.
	ErrLocked = errors.New("store file is locked by another process")
	// ErrNotFound is wrapped when a write refers to a missing record (an
	// endpoint of an unknown network).
	ErrNotFound = errors.New("not found")
	// ErrConflict is wrapped when PutAllocation would give one VNI to two
	// networks or two VNIs to one network.
	ErrConflict = errors.New("allocation conflict")
)

var (
	bucketNetworks    = []byte("networks")
	bucketEndpoints   = []byte("endpoints")
	bucketAllocations = []byte("allocations")
	bucketMeta        = []byte("meta")
	bucketAuthorities = []byte("key-authorities")
	keyPeers          = []byte("peers")
	keySchema         = []byte("schema")
	keyBoot           = []byte("boot")
	// schemaVersion 2: the endpoint records are in the endpoint file. 1: they are in the main file (read
	// and moved by Open).
	schemaVersion   = []byte("2")
	schemaVersionV1 = []byte("1")
	// endpointsSchema is the endpoint file's own version.
	endpointsSchema = []byte("1")
)

// bootIDPath is where the kernel tells the current boot apart from earlier ones (a variable for tests).
var bootIDPath = "/proc/sys/kernel/random/boot_id"

// EndpointsPath is the endpoint file that goes with the state file at path: "vxsafe.db" ->
// "vxsafe-endpoints.db" in the same directory.
func EndpointsPath(path string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-endpoints" + ext
}

// NetworkRecord is a network this node created.
type NetworkRecord struct {
	ID      string
	VNI     uint32
	Port    uint16
	MTU     int
	IPv4    []netconfig.Subnet
	Options map[string]string
	Created time.Time // set by PutNetwork when zero
	// Keys are the network's gossip keys once they changed from those in Options (a rotation); nil
	// until then.
	Keys *NetworkKeys `json:",omitempty"`
}

// NetworkKeys is a network's gossip keys at an epoch (hex-encoded keys; see gossip.NetworkKeys).
type NetworkKeys struct {
	Epoch     uint64
	Primary   string
	Accept    []string `json:",omitempty"`
	History   []string `json:",omitempty"`
	Authority string
	// Notice is the authority's signed notice of this epoch (JSON of gossip.KeyNotice), which this node
	// hands on to members that missed it.
	Notice json.RawMessage `json:",omitempty"`
}

// EndpointRecord is an endpoint on this node.
type EndpointRecord struct {
	NetworkID  string
	EndpointID string
	IP         string // CIDR, e.g. "10.0.1.2/24"
	IPv6       string `json:",omitempty"` // CIDR, the address derived from IP on a network with IPv6; "" without
	MAC        string
	IfName     string
	DstName    string `json:",omitempty"` // the name asked for in the container (netconfig.OptIfName), "" for none
	SandboxKey string
	Joined     bool
	Updated    time.Time // set by PutEndpoint on every write
}

// Store is a bbolt-backed state store. It is safe for concurrent use.
type Store struct {
	db     *bolt.DB // networks, allocations, authorities, meta: fsync'd
	eps    *bolt.DB // endpoint records: not fsync'd
	path   string
	epPath string
	notes  []string

	mu   sync.Mutex
	fail map[string]int
}

// Open opens (creating if needed) the store at path, waiting at most
// DefaultOpenTimeout for another opener to release it.
func Open(path string) (*Store, error) {
	return OpenWithTimeout(path, DefaultOpenTimeout)
}

// OpenWithTimeout is Open with an explicit lock timeout (> 0).
func OpenWithTimeout(path string, timeout time.Duration) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open store: empty path")
	}
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: create directory: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: %w (still locked after %s; is another vxsafe plugin running with the same state directory?)",
				path, ErrLocked, timeout)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// bbolt only applies the mode on creation; tighten a pre-existing file.
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: chmod: %w", path, err)
	}
	// The boot the main file was last opened in (written, fsync'd, once the endpoint file is open): another
	// boot means the machine restarted since, and the endpoint file, written without fsync, may be torn.
	boot, _ := os.ReadFile(bootIDPath)
	boot = bytes.TrimSpace(boot)
	var legacy bool // the main file still holds endpoint records (schema 1, or a move that did not finish)
	rebooted := true
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNetworks, bucketAllocations, bucketMeta, bucketAuthorities} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil && !bytes.Equal(v, schemaVersion) && !bytes.Equal(v, schemaVersionV1) {
			return fmt.Errorf("unsupported schema version %q (this build reads %q and %q)", v, schemaVersionV1, schemaVersion)
		}
		rebooted = len(boot) == 0 || !bytes.Equal(meta.Get(keyBoot), boot)
		legacy = tx.Bucket(bucketEndpoints) != nil
		if legacy {
			return nil // the version changes once the records are moved
		}
		return meta.Put(keySchema, schemaVersion)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, path: path, epPath: EndpointsPath(path), fail: map[string]int{}}
	if err := s.openEndpoints(timeout, rebooted); err != nil {
		db.Close()
		return nil, err
	}
	if legacy {
		if err := s.migrate(); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.prune(); err != nil {
		s.Close()
		return nil, err
	}
	if rebooted && len(boot) > 0 {
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyBoot, boot) }); err != nil {
			s.Close()
			return nil, fmt.Errorf("open store %s: recording the boot: %w", path, err)
		}
	}
	return s, nil
}

// OpenNotes says what Open did that an operator may want to know (records moved from an earlier
// version's file, an endpoint file found torn after a machine crash), one sentence each.
func (s *Store) OpenNotes() []string { return s.notes }

// openEndpoints opens the endpoint file, without fsync. After a restart of the machine (rebooted), a
// machine crash may have torn it: it is checked, and one that bbolt cannot open or finds inconsistent is
// moved aside and replaced by an empty one. Within one boot no such tear can happen (the page cache holds
// every committed write), so an unreadable file then is an error.
func (s *Store) openEndpoints(timeout time.Duration, rebooted bool) error {
	_, statErr := os.Stat(s.epPath)
	db, err := openEndpointFile(s.epPath, timeout, rebooted)
	if err != nil && rebooted && statErr == nil && !errors.Is(err, ErrLocked) {
		aside := fmt.Sprintf("%s.torn-%s", s.epPath, time.Now().UTC().Format("20060102T150405Z"))
		if rerr := os.Rename(s.epPath, aside); rerr != nil {
			return fmt.Errorf("open store %s: moving the unreadable endpoint file aside: %w (after: %w)", s.epPath, rerr, err)
		}
		s.notes = append(s.notes, fmt.Sprintf("the endpoint file %s could not be read after a restart of the machine (%v): "+
			"moved to %s and started with no endpoint records (those of the last boot describe containers that are gone)",
			s.epPath, err, aside))
		db, err = openEndpointFile(s.epPath, timeout, false)
	}
	if err != nil {
		return err
	}
	s.eps = db
	return nil
}

// errCorrupt marks a file bbolt opened but found inconsistent.
var errCorrupt = errors.New("inconsistent endpoint file")

// openEndpointFile opens (creating) the endpoint file, checking its consistency first when check is set.
func openEndpointFile(path string, timeout time.Duration, check bool) (db *bolt.DB, err error) {
	var file *os.File
	defer func() {
		// bbolt panics on some torn pages (its freelist) rather than returning an error, and then keeps
		// the file open and locked (its mapping holds the open file, and with it the lock, even once the
		// descriptor is closed): unlock it explicitly. The mapping of the torn file stays.
		if p := recover(); p != nil {
			if db != nil {
				db.Close()
			} else if file != nil {
				_ = unix.Flock(int(file.Fd()), unix.LOCK_UN)
				file.Close()
			}
			db, err = nil, fmt.Errorf("open store %s: %w: %v", path, errCorrupt, p)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoSync: true, NoGrowSync: true,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, mode)
			file = f
			return f, err
		}})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: %w (still locked after %s)", path, ErrLocked, timeout)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: chmod: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if check {
			var first error
			for cerr := range tx.Check() { // read to the end: the checker stops when the channel closes
				if first == nil {
					first = cerr
				}
			}
			if first != nil {
				return fmt.Errorf("%w: %w", errCorrupt, first)
			}
		}
		for _, b := range [][]byte{bucketEndpoints, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil && !bytes.Equal(v, endpointsSchema) {
			return fmt.Errorf("unsupported endpoint file version %q (this build reads %q)", v, endpointsSchema)
		}
		return meta.Put(keySchema, endpointsSchema)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// migrate moves the endpoint records an earlier version kept in the main file into the endpoint file:
// the main file's records replace the endpoint file's (they are the newer: the main file holds them only
// when a build of the old layout wrote them, or when a move did not finish), the endpoint file is made
// durable, and only then are they removed from the main file.
func (s *Store) migrate() error {
	moved := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		old := tx.Bucket(bucketEndpoints)
		return s.eps.Update(func(etx *bolt.Tx) error {
			if err := etx.DeleteBucket(bucketEndpoints); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return err
			}
			b, err := etx.CreateBucket(bucketEndpoints)
			if err != nil {
				return err
			}
			return old.ForEach(func(k, v []byte) error {
				moved++
				return b.Put(append([]byte(nil), k...), append([]byte(nil), v...))
			})
		})
	})
	if err != nil {
		return fmt.Errorf("open store %s: moving endpoint records to %s: %w", s.path, s.epPath, err)
	}
	if err := s.eps.Sync(); err != nil {
		return fmt.Errorf("open store %s: moving endpoint records: syncing %s: %w", s.path, s.epPath, err)
	}
	if err := syncDir(filepath.Dir(s.epPath)); err != nil {
		return fmt.Errorf("open store %s: moving endpoint records: %w", s.path, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketEndpoints); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, schemaVersion)
	})
	if err != nil {
		return fmt.Errorf("open store %s: removing the moved endpoint records: %w", s.path, err)
	}
	s.notes = append(s.notes, fmt.Sprintf("moved %d endpoint records from %s to %s (the endpoint records are now written without fsync)",
		moved, s.path, s.epPath))
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// prune deletes endpoint records whose network is not in the main file.
func (s *Store) prune() error {
	nets := map[string]bool{}
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNetworks).ForEach(func(k, _ []byte) error { nets[string(k)] = true; return nil })
	}); err != nil {
		return fmt.Errorf("open store %s: %w", s.path, err)
	}
	pruned := 0
	err := s.eps.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEndpoints)
		var orphans [][]byte
		if err := b.ForEach(func(k, _ []byte) error {
			if netID, _, _ := strings.Cut(string(k), "/"); !nets[netID] {
				orphans = append(orphans, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range orphans {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		pruned = len(orphans)
		return nil
	})
	if err != nil {
		return fmt.Errorf("open store %s: deleting endpoint records of deleted networks: %w", s.epPath, err)
	}
	if pruned > 0 {
		s.notes = append(s.notes, fmt.Sprintf("deleted %d endpoint records of networks that are no longer in %s", pruned, s.path))
	}
	return nil
}

// Close closes the files and releases their locks.
func (s *Store) Close() error {
	var errs []error
	if s.eps != nil {
		if err := s.eps.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store %s: %w", s.epPath, err))
		}
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store %s: %w", s.path, err))
	}
	return errors.Join(errs...)
}

// Path returns the main file's path.
func (s *Store) Path() string { return s.path }

// EndpointsPath returns the endpoint file's path.
func (s *Store) EndpointsPath() string { return s.epPath }

// FailNext arms a one-shot failure: the next call of op (the method name,
// e.g. "PutEndpoint") fails with an error wrapping ErrInjected and changes
// nothing. Calling it n times fails the next n calls.
func (s *Store) FailNext(op string) {
	s.mu.Lock()
	s.fail[op]++
	s.mu.Unlock()
}

func (s *Store) injected(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail[op] > 0 {
		s.fail[op]--
		return fmt.Errorf("store %s: %w", op, ErrInjected)
	}
	return nil
}

func epKey(netID, epID string) []byte { return []byte(netID + "/" + epID) }
func epPrefix(netID string) []byte    { return []byte(netID + "/") }

// PutNetwork creates or replaces a network record.
func (s *Store) PutNetwork(n NetworkRecord) error {
	if err := s.injected("PutNetwork"); err != nil {
		return err
	}
	if err := netconfig.ValidateID("network", n.ID); err != nil {
		return fmt.Errorf("put network: %w", err)
	}
	if n.Created.IsZero() {
		n.Created = time.Now().UTC()
	}
	v, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("put network %s: encode: %w", n.ID, err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNetworks).Put([]byte(n.ID), v)
	}); err != nil {
		return fmt.Errorf("put network %s: %w", n.ID, err)
	}
	return nil
}

// GetNetwork returns the network record with that ID, if any.
func (s *Store) GetNetwork(id string) (NetworkRecord, bool, error) {
	var n NetworkRecord
	if err := s.injected("GetNetwork"); err != nil {
		return n, false, err
	}
	if err := netconfig.ValidateID("network", id); err != nil {
		return n, false, fmt.Errorf("get network: %w", err)
	}
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNetworks).Get([]byte(id))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &n)
	})
	if err != nil {
		return NetworkRecord{}, false, fmt.Errorf("get network %s: %w", id, err)
	}
	return n, found, nil
}

// DeleteNetwork deletes a network record and all its endpoint records. It
// does not touch VNI allocations. Deleting a missing network is not an error.
func (s *Store) DeleteNetwork(id string) error {
	if err := s.injected("DeleteNetwork"); err != nil {
		return err
	}
	if err := netconfig.ValidateID("network", id); err != nil {
		return fmt.Errorf("delete network: %w", err)
	}
	// The network first: a stop between the two files leaves endpoint records of no network, which Open
	// deletes.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNetworks).Delete([]byte(id))
	}); err != nil {
		return fmt.Errorf("delete network %s: %w", id, err)
	}
	err := s.eps.Update(func(tx *bolt.Tx) error {
		eps := tx.Bucket(bucketEndpoints)
		prefix := epPrefix(id)
		var keys [][]byte
		c := eps.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := eps.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete network %s: its endpoint records in %s: %w", id, s.epPath, err)
	}
	return nil
}

// ListNetworks returns all network records, ordered by ID.
func (s *Store) ListNetworks() ([]NetworkRecord, error) {
	if err := s.injected("ListNetworks"); err != nil {
		return nil, err
	}
	var out []NetworkRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNetworks).ForEach(func(k, v []byte) error {
			var n NetworkRecord
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("network %s: %w", k, err)
			}
			out = append(out, n)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	return out, nil
}

// PutEndpoint creates or replaces an endpoint record, stamping Updated. The
// network must exist (ErrNotFound otherwise).
func (s *Store) PutEndpoint(e EndpointRecord) error {
	if err := s.injected("PutEndpoint"); err != nil {
		return err
	}
	if err := netconfig.ValidateID("network", e.NetworkID); err != nil {
		return fmt.Errorf("put endpoint: %w", err)
	}
	if err := netconfig.ValidateID("endpoint", e.EndpointID); err != nil {
		return fmt.Errorf("put endpoint: %w", err)
	}
	e.Updated = time.Now().UTC()
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("put endpoint %s of network %s: encode: %w", e.EndpointID, e.NetworkID, err)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNetworks).Get([]byte(e.NetworkID)) == nil {
			return fmt.Errorf("network %w", ErrNotFound)
		}
		return nil
	})
	if err == nil {
		err = s.eps.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketEndpoints).Put(epKey(e.NetworkID, e.EndpointID), v)
		})
	}
	if err != nil {
		return fmt.Errorf("put endpoint %s of network %s: %w", e.EndpointID, e.NetworkID, err)
	}
	return nil
}

// GetEndpoint returns an endpoint record, if any.
func (s *Store) GetEndpoint(netID, epID string) (EndpointRecord, bool, error) {
	var e EndpointRecord
	if err := s.injected("GetEndpoint"); err != nil {
		return e, false, err
	}
	if err := netconfig.ValidateID("network", netID); err != nil {
		return e, false, fmt.Errorf("get endpoint: %w", err)
	}
	if err := netconfig.ValidateID("endpoint", epID); err != nil {
		return e, false, fmt.Errorf("get endpoint: %w", err)
	}
	found := false
	err := s.eps.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketEndpoints).Get(epKey(netID, epID))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &e)
	})
	if err != nil {
		return EndpointRecord{}, false, fmt.Errorf("get endpoint %s of network %s: %w", epID, netID, err)
	}
	return e, found, nil
}

// DeleteEndpoint deletes an endpoint record. Deleting a missing one is not
// an error.
func (s *Store) DeleteEndpoint(netID, epID string) error {
	if err := s.injected("DeleteEndpoint"); err != nil {
		return err
	}
	if err := netconfig.ValidateID("network", netID); err != nil {
		return fmt.Errorf("delete endpoint: %w", err)
	}
	if err := netconfig.ValidateID("endpoint", epID); err != nil {
		return fmt.Errorf("delete endpoint: %w", err)
	}
	if err := s.eps.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEndpoints).Delete(epKey(netID, epID))
	}); err != nil {
		return fmt.Errorf("delete endpoint %s of network %s: %w", epID, netID, err)
	}
	return nil
}

// ListEndpoints returns the endpoint records of one network, or of all
// networks when netID is "", ordered by network ID then endpoint ID.
func (s *Store) ListEndpoints(netID string) ([]EndpointRecord, error) {
	if err := s.injected("ListEndpoints"); err != nil {
		return nil, err
	}
	var prefix []byte
	if netID != "" {
		if err := netconfig.ValidateID("network", netID); err != nil {
			return nil, fmt.Errorf("list endpoints: %w", err)
		}
		prefix = epPrefix(netID)
	}
	var out []EndpointRecord
	err := s.eps.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEndpoints).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var e EndpointRecord
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("endpoint %s: %w", k, err)
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		if netID == "" {
			return nil, fmt.Errorf("list endpoints: %w", err)
		}
		return nil, fmt.Errorf("list endpoints of network %s: %w", netID, err)
	}
	return out, nil
}

func vniKey(vni uint32) []byte {
	k := make([]byte, 4)
	binary.BigEndian.PutUint32(k, vni)
	return k
}

// Allocations returns the manager's VNI allocations: VNI -> network ID.
func (s *Store) Allocations() (map[uint32]string, error) {
	if err := s.injected("Allocations"); err != nil {
		return nil, err
	}
	out := map[uint32]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAllocations).ForEach(func(k, v []byte) error {
			if len(k) != 4 {
				return fmt.Errorf("corrupt allocation key %x", k)
			}
			out[binary.BigEndian.Uint32(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list VNI allocations: %w", err)
	}
	return out, nil
}

// PutAllocation records that vni belongs to netID. Re-recording the same
// pair is a no-op. It fails with ErrConflict if the VNI belongs to another
// network or the network already holds another VNI.
func (s *Store) PutAllocation(vni uint32, netID string) error {
	if err := s.injected("PutAllocation"); err != nil {
		return err
	}
	if err := netconfig.ValidateID("network", netID); err != nil {
		return fmt.Errorf("put VNI allocation: %w", err)
	}
	if vni < 1 || vni > netconfig.MaxVNI {
		return fmt.Errorf("put VNI allocation for network %s: VNI %d out of range 1..%d", netID, vni, netconfig.MaxVNI)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAllocations)
		if cur := b.Get(vniKey(vni)); cur != nil {
			if string(cur) == netID {
				return nil
			}
			return fmt.Errorf("%w: VNI %d is held by network %q", ErrConflict, vni, cur)
		}
		if err := b.ForEach(func(k, v []byte) error {
			if string(v) == netID {
				return fmt.Errorf("%w: network already holds VNI %d", ErrConflict, binary.BigEndian.Uint32(k))
			}
			return nil
		}); err != nil {
			return err
		}
		return b.Put(vniKey(vni), []byte(netID))
	})
	if err != nil {
		return fmt.Errorf("put VNI allocation %d for network %s: %w", vni, netID, err)
	}
	return nil
}

// DeleteAllocation removes the allocation of netID and returns its VNI.
// A network without an allocation gives (0, false, nil).
func (s *Store) DeleteAllocation(netID string) (uint32, bool, error) {
	if err := s.injected("DeleteAllocation"); err != nil {
		return 0, false, err
	}
	if err := netconfig.ValidateID("network", netID); err != nil {
		return 0, false, fmt.Errorf("delete VNI allocation: %w", err)
	}
	var vni uint32
	found := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAllocations)
		var keys [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			if string(v) == netID {
				keys = append(keys, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range keys {
			if !found {
				vni, found = binary.BigEndian.Uint32(k), true
			}
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("delete VNI allocation of network %s: %w", netID, err)
	}
	return vni, found, nil
}

// PutPeers replaces the remembered gossip peers (deduplicated, sorted).
func (s *Store) PutPeers(addrs []string) error {
	if err := s.injected("PutPeers"); err != nil {
		return err
	}
	set := map[string]struct{}{}
	for _, a := range addrs {
		if a != "" {
			set[a] = struct{}{}
		}
	}
	list := make([]string, 0, len(set))
	for a := range set {
		list = append(list, a)
	}
	sort.Strings(list)
	v, err := json.Marshal(list)
	if err != nil {
		return fmt.Errorf("put peers: encode: %w", err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyPeers, v)
	}); err != nil {
		return fmt.Errorf("put peers: %w", err)
	}
	return nil
}

// Peers returns the remembered gossip peers (nil if none).
func (s *Store) Peers() ([]string, error) {
	if err := s.injected("Peers"); err != nil {
		return nil, err
	}
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyPeers)
		if v == nil {
			return nil
		}
		return json.Unmarshal(v, &out)
	})
	if err != nil {
		return nil, fmt.Errorf("get peers: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// PutNetworkKeys replaces the keys of a network record that exists (a network removed meanwhile is left
// alone).
func (s *Store) PutNetworkKeys(id string, k NetworkKeys) error {
	if err := s.injected("PutNetworkKeys"); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNetworks)
		v := b.Get([]byte(id))
		if v == nil {
			return nil
		}
		var n NetworkRecord
		if err := json.Unmarshal(v, &n); err != nil {
			return err
		}
		n.Keys = &k
		nv, err := json.Marshal(n)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), nv)
	})
	if err != nil {
		return fmt.Errorf("put keys of network %s: %w", id, err)
	}
	return nil
}

// AuthorityRecord is what the manager that allocated a network keeps of it: its key authority's private
// key and the network's keys (the manager may have no container of the network, yet rotates its keys).
type AuthorityRecord struct {
	Private []byte
	Keys    NetworkKeys
}

// PutAuthority keeps a network's authority record.
func (s *Store) PutAuthority(netID string, a AuthorityRecord) error {
	if err := s.injected("PutAuthority"); err != nil {
		return err
	}
	if err := netconfig.ValidateID("network", netID); err != nil {
		return fmt.Errorf("put key authority: %w", err)
	}
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("put key authority of network %s: encode: %w", netID, err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAuthorities).Put([]byte(netID), v)
	}); err != nil {
		return fmt.Errorf("put key authority of network %s: %w", netID, err)
	}
	return nil
}

// Authorities returns the authority records this node keeps, by network ID.
func (s *Store) Authorities() (map[string]AuthorityRecord, error) {
	if err := s.injected("Authorities"); err != nil {
		return nil, err
	}
	out := map[string]AuthorityRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAuthorities).ForEach(func(k, v []byte) error {
			var a AuthorityRecord
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("key authority of network %s: %w", k, err)
			}
			out[string(k)] = a
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list key authorities: %w", err)
	}
	return out, nil
}

// DeleteAuthority forgets a network's key authority (the network was freed).
func (s *Store) DeleteAuthority(netID string) error {
	if err := s.injected("DeleteAuthority"); err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAuthorities).Delete([]byte(netID))
	}); err != nil {
		return fmt.Errorf("delete key authority of network %s: %w", netID, err)
	}
	return nil
}
