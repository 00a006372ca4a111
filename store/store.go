// Package store persists the driver's state (networks, endpoints, VNI
// allocations, gossip peers) in a bbolt file so it survives plugin restarts.
//
// Values are JSON. Every write is a single bbolt transaction, fsync'd on
// commit. Deletes are idempotent. IDs are validated with
// netconfig.ValidateID before they become keys.
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
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

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
	schemaVersion     = []byte("1")
)

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
	db   *bolt.DB
	path string

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
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNetworks, bucketEndpoints, bucketAllocations, bucketMeta, bucketAuthorities} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil && !bytes.Equal(v, schemaVersion) {
			return fmt.Errorf("unsupported schema version %q (this build reads %q)", v, schemaVersion)
		}
		return meta.Put(keySchema, schemaVersion)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, path: path, fail: map[string]int{}}, nil
}

// Close closes the file and releases its lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Path returns the file path.
func (s *Store) Path() string { return s.path }

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
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketNetworks).Delete([]byte(id)); err != nil {
			return err
		}
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
		return fmt.Errorf("delete network %s: %w", id, err)
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
	err = s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNetworks).Get([]byte(e.NetworkID)) == nil {
			return fmt.Errorf("network %w", ErrNotFound)
		}
		return tx.Bucket(bucketEndpoints).Put(epKey(e.NetworkID, e.EndpointID), v)
	})
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
	err := s.db.View(func(tx *bolt.Tx) error {
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
	if err := s.db.Update(func(tx *bolt.Tx) error {
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
	err := s.db.View(func(tx *bolt.Tx) error {
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
