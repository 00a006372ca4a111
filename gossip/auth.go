package gossip

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
)

// KeySize is the length of a network key: an HMAC-SHA256 key of 32 random bytes.
const KeySize = 32

// NetworkKeys is what a node knows of one network's keys. Records of a keyed network are signed with
// Primary; received records are accepted under Primary or any key of Accept (both sides of a rotation).
// A network declared with no Primary is unkeyed: it was created before networks had keys, and its
// records travel unsigned, as they did then.
type NetworkKeys struct {
	Primary []byte
	Accept  [][]byte
	// Epoch counts the network's key changes (0: the keys it was created with). Authority is the
	// Ed25519 public key whose signed notices alone change the keys (see Rekey); nil: the keys never
	// change. History holds earlier keys: they sign no record any more, but still tell this node which
	// members lag behind a rotation (their full states are signed under them).
	Epoch     uint64
	Authority ed25519.PublicKey
	History   [][]byte
}

// KeyID names a key without revealing it: 12 hex digits of a hash of it. Records name the key that
// signed them by this ID, and logs and metrics use it.
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("vxsafe network key id\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// keyring is a declared network's keys by ID. primary is "" for an unkeyed network.
type keyring struct {
	primary   string
	keys      map[string][]byte
	epoch     uint64
	authority ed25519.PublicKey
	history   map[string][]byte
}

func newKeyring(nk NetworkKeys) (*keyring, error) {
	kr := &keyring{keys: map[string][]byte{}, history: map[string][]byte{}, epoch: nk.Epoch}
	if nk.Authority != nil {
		if len(nk.Authority) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("network key authority of %d bytes, want %d", len(nk.Authority), ed25519.PublicKeySize)
		}
		kr.authority = slices.Clone(nk.Authority)
	}
	for _, k := range nk.History {
		if len(k) != KeySize {
			return nil, fmt.Errorf("earlier network key of %d bytes, want %d", len(k), KeySize)
		}
		kr.history[KeyID(k)] = slices.Clone(k)
	}
	for i, k := range append([][]byte{nk.Primary}, nk.Accept...) {
		if i == 0 && k == nil {
			continue
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("network key of %d bytes, want %d", len(k), KeySize)
		}
		id := KeyID(k)
		kr.keys[id] = slices.Clone(k)
		if i == 0 {
			kr.primary = id
		}
	}
	if kr.primary == "" && len(kr.keys) > 0 {
		return nil, fmt.Errorf("network keys to accept without a primary key")
	}
	return kr, nil
}

func (kr *keyring) keyed() bool { return kr.primary != "" }

// anyKey returns a key this node holds or held by ID.
func (kr *keyring) anyKey(id string) ([]byte, bool) {
	if k, ok := kr.keys[id]; ok {
		return k, true
	}
	k, ok := kr.history[id]
	return k, ok
}

// Refusal reasons, as logged and counted.
const (
	refuseUnsigned   = "unsigned record for a keyed network"
	refuseUnknownKey = "signed with a key this node does not hold"
	refuseBadTag     = "signature does not match"
	refuseReplay     = "replayed: older than a removal this node has forgotten"
	refuseVTEP       = "VTEP is not the address of the gossip member that owns the record"
	refuseBootKey    = "two boot keys claimed for one member: a holder of the network key forges full states; rotated keys are not sealed to it"
)

// authLocked checks a received record's signature against the network's keyring. It returns "" when
// the record is acceptable: signed with a held key of a keyed network, or of a network this node has
// not declared (it cannot be checked yet, is checked again when the network is declared, and matters to
// nothing before that), or of an unkeyed network. Caller holds mu.
func (t *table) authLocked(owner string, r wireRecord) string {
	kr := t.keys[r.Network]
	if kr == nil || !kr.keyed() {
		return ""
	}
	if r.KeyID == "" || len(r.Tag) == 0 {
		return refuseUnsigned
	}
	key, ok := kr.keys[r.KeyID]
	if !ok {
		return refuseUnknownKey
	}
	if !hmac.Equal(r.Tag, recordTag(key, owner, r)) {
		return refuseBadTag
	}
	return ""
}

// signLocked signs one of this node's records with its network's primary key (unsigned when the
// network is not declared or has no key). Caller holds mu.
func (t *table) signLocked(r *record) {
	r.keyID, r.tag = "", nil
	kr := t.keys[r.ep.Network]
	if kr == nil || !kr.keyed() {
		return
	}
	w := r.wire(r.stamp)
	r.keyID = kr.primary
	r.tag = recordTag(kr.keys[kr.primary], t.self, w)
}

// recordTag is the HMAC-SHA256, under a network's key, of everything a receiver acts on in a record:
// its owner, network, endpoint, addresses, incarnation, sequence and whether it is a removal. The
// fields are length-prefixed after a version label, so no two records share an encoding.
func recordTag(key []byte, owner string, r wireRecord) []byte {
	m := hmac.New(sha256.New, key)
	writeFields(m, "vxsafe record v1", owner, r.Network, r.Endpoint, r.IP, r.MAC, r.VTEP)
	var b [17]byte
	binary.BigEndian.PutUint64(b[0:], r.Inc)
	binary.BigEndian.PutUint64(b[8:], r.Seq)
	if r.Deleted {
		b[16] = 1
	}
	m.Write(b[:])
	return m.Sum(nil)
}

// manifestTag is the HMAC, under a network's key, of an owner's claim in a full state that its records
// of that network are complete up to (inc, clock): a receiver replaces what the claim leaves out by
// removals, so the claim must be the owner's.
// The manifest also carries the sender's key epoch for the network and its boot key (the public key
// that rotated keys are sealed to).
func manifestTag(key []byte, owner string, m wireManifest, inc, clock uint64) []byte {
	h := hmac.New(sha256.New, key)
	writeFields(h, "vxsafe manifest v1", owner, m.Network, string(m.Pub))
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], inc)
	binary.BigEndian.PutUint64(b[8:], clock)
	binary.BigEndian.PutUint64(b[16:], m.Epoch)
	h.Write(b[:])
	return h.Sum(nil)
}

func writeFields(h hash.Hash, fields ...string) {
	var n [4]byte
	for _, f := range fields {
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
}
