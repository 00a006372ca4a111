package gossip

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// Key rotation.
//
// A keyed network has an authority: an Ed25519 key pair made with the network (its public half travels
// with the network's options through swarm, like the first key; its private half stays with the manager
// that allocated the network). Only a KeyNotice signed by the authority changes a network's keys: it names
// the keys by ID and says which one signs records (Primary) and which others are still accepted. Notices
// carry no secret. New keys travel beside the notice sealed with HPKE (X25519, HKDF-SHA256, AES-256-GCM)
// to the boot key of one member: a key pair each agent makes at start, whose public half its full
// states carry in manifests signed under the network key. Nobody who only listens, or who holds only
// older keys, learns a new key.
//
// A rotation is three notices, each applied by every member before the next is sent (Rekey returns once
// the member acknowledged): accept the new key; sign with it; stop accepting the old one. Records keep
// verifying throughout, so no entry is ever withdrawn and no packet is lost.

// KeyNotice is the authority's signed statement of a network's keys at an epoch.
type KeyNotice struct {
	Network string   `json:"n"`
	Epoch   uint64   `json:"e"`
	Primary string   `json:"p"`
	Accept  []string `json:"a,omitempty"`
	Sig     []byte   `json:"sig"`
}

func (n KeyNotice) signedBytes() []byte {
	h := sha256.New()
	writeFields(h, append([]string{"vxsafe key notice v1", n.Network, n.Primary}, n.Accept...)...)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n.Epoch)
	h.Write(b[:])
	return h.Sum(nil)
}

// SignNotice signs n with the network's authority key.
func SignNotice(priv ed25519.PrivateKey, n KeyNotice) KeyNotice {
	n.Sig = ed25519.Sign(priv, n.signedBytes())
	return n
}

func (n KeyNotice) verify(pub ed25519.PublicKey) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, n.signedBytes(), n.Sig)
}

// wireRekey is a notice for one member, with the keys it names sealed to that member's boot key.
type wireRekey struct {
	From   string            `json:"from"`
	To     string            `json:"to"`
	Notice KeyNotice         `json:"notice"`
	Sealed map[string][]byte `json:"keys,omitempty"` // key ID -> HPKE ciphertext
}

// wireAck acknowledges a notice: the member now holds the keys of that epoch. Its tag is under the
// member's primary key of that epoch.
type wireAck struct {
	From    string `json:"from"`
	Network string `json:"n"`
	Epoch   uint64 `json:"e"`
	KeyID   string `json:"k"`
	Tag     []byte `json:"t"`
}

func ackTag(key []byte, a wireAck) []byte {
	h := hmac.New(sha256.New, key)
	writeFields(h, "vxsafe key ack v1", a.From, a.Network, a.KeyID)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], a.Epoch)
	h.Write(b[:])
	return h.Sum(nil)
}

var (
	bootKEM  = hpke.DHKEM(ecdh.X25519())
	bootKDF  = hpke.HKDFSHA256()
	bootAEAD = hpke.AES256GCM()
)

func sealInfo(network, to, keyID string) []byte {
	h := sha256.New()
	writeFields(h, "vxsafe sealed key v1", network, to, keyID)
	return h.Sum(nil)
}

// Holder is a member as the key rotation sees it.
type Holder struct {
	Name string
	Addr string // gossip address (IP), which is its VTEP
	// Epoch is the member's key epoch for the network, from its last full state signed with a key this
	// node holds or held; -1 when none was seen.
	Epoch int64
	// Sealable: its boot key is known, and no second one was claimed for its incarnation.
	Sealable bool
}

// Holders returns the live members other than this node, with what is known of their keys for network.
func (a *Agent) Holders(network string) []Holder {
	ml := a.ml.Load()
	if ml == nil {
		return nil
	}
	a.tbl.mu.Lock()
	defer a.tbl.mu.Unlock()
	var out []Holder
	for _, n := range ml.Members() {
		if n.Name == a.cfg.NodeName {
			continue
		}
		h := Holder{Name: n.Name, Addr: n.Addr.String(), Epoch: -1}
		inc, err := decodeMeta(n.Meta)
		if p := a.tbl.peers[n.Name]; err == nil && p != nil && p.inc == inc {
			if e, ok := p.epochs[network]; ok {
				h.Epoch = int64(e)
			}
			h.Sealable = !p.conflict && len(p.pub) > 0
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(x, y Holder) int { return cmpString(x.Name, y.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Rekey sends notice, with the keys it names sealed to the member's boot key, to one member, and waits
// up to timeout for the member to acknowledge that it applied the notice. keys holds the key material
// by ID (at least the keys the notice names).
func (a *Agent) Rekey(to string, notice KeyNotice, keys map[string][]byte, timeout time.Duration) error {
	ml := a.ml.Load()
	if ml == nil || a.closed.Load() {
		return errors.New("gossip agent is closed")
	}
	node := a.member(to)
	if node == nil {
		return fmt.Errorf("member %s is not in the gossip", to)
	}
	inc, err := decodeMeta(node.Meta)
	if err != nil {
		return fmt.Errorf("member %s: %w", to, err)
	}
	a.tbl.mu.Lock()
	p := a.tbl.peers[to]
	var pub []byte
	if p != nil && p.inc == inc && !p.conflict {
		pub = p.pub
	}
	a.tbl.mu.Unlock()
	if pub == nil {
		return fmt.Errorf("member %s: no boot key to seal the network key to (no full state of its current process signed under the network key has arrived yet, or two were claimed)", to)
	}
	pk, err := bootKEM.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("member %s: boot key: %w", to, err)
	}
	msg := wireRekey{From: a.cfg.NodeName, To: to, Notice: notice, Sealed: map[string][]byte{}}
	for _, id := range append([]string{notice.Primary}, notice.Accept...) {
		k, ok := keys[id]
		if !ok {
			return fmt.Errorf("network %s: key %s of the notice is not given", notice.Network, id)
		}
		ct, err := hpke.Seal(pk, bootKDF, bootAEAD, sealInfo(notice.Network, to, id), k)
		if err != nil {
			return fmt.Errorf("seal key %s for member %s: %w", id, to, err)
		}
		msg.Sealed[id] = ct
	}
	buf, err := encodeMsg(msgRekey, msg)
	if err != nil {
		return err
	}
	w := a.waitAck(to, notice.Network, notice.Epoch)
	defer a.dropAckWait(w)
	if err := ml.SendReliable(node, buf); err != nil {
		return fmt.Errorf("send key notice to member %s: %w", to, err)
	}
	select {
	case <-w.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("member %s did not acknowledge key epoch %d of network %s within %s", to, notice.Epoch, notice.Network, timeout)
	}
}

type ackWait struct {
	to, network string
	epoch       uint64
	done        chan struct{}
}

func (a *Agent) waitAck(to, network string, epoch uint64) *ackWait {
	w := &ackWait{to: to, network: network, epoch: epoch, done: make(chan struct{})}
	a.ackMu.Lock()
	a.acks = append(a.acks, w)
	a.ackMu.Unlock()
	return w
}

func (a *Agent) dropAckWait(w *ackWait) {
	a.ackMu.Lock()
	defer a.ackMu.Unlock()
	a.acks = slices.DeleteFunc(a.acks, func(x *ackWait) bool { return x == w })
}

// handleRekey applies a notice sent to this node and acknowledges it.
func (a *Agent) handleRekey(body []byte) {
	var m wireRekey
	lg := a.log
	err := decodeJSON(body, &m)
	if err == nil && m.To != a.cfg.NodeName {
		err = fmt.Errorf("key notice for %q", m.To)
	}
	if err != nil {
		lg.WithError(err).Debug("dropping key notice")
		return
	}
	n := m.Notice
	lg = lg.WithFields(logrus.Fields{"network": n.Network, "epoch": n.Epoch, "from": m.From})
	nk, err := a.openNotice(m)
	if err != nil {
		lg.WithError(err).Warn("refusing key notice")
		return
	}
	if nk != nil {
		if err := a.SetNetworkKeys(n.Network, *nk); err != nil {
			lg.WithError(err).Warn("refusing key notice")
			return
		}
		if a.cfg.OnNetworkKeys != nil {
			a.cfg.OnNetworkKeys(n.Network, *nk, n)
		}
		lg.WithFields(logrus.Fields{"primary": n.Primary, "accept": n.Accept}).Info("network keys changed by the authority's notice")
	}
	a.sendAck(m.From, n.Network)
	if nk != nil {
		// Records this node refused while it lacked the keys come again with a full state: exchange one
		// with the sender now rather than at the next push/pull.
		a.SyncWith(m.From)
	}
}

// SyncAll exchanges full states with every live member now (memberlist's push/pull), so that what their
// manifests say (key epochs, boot keys) is current: a key rotation starts with it.
func (a *Agent) SyncAll() {
	ml := a.ml.Load()
	if ml == nil || a.closed.Load() {
		return
	}
	for _, n := range ml.Members() {
		if n.Name != a.cfg.NodeName {
			a.SyncWith(n.Name)
		}
	}
}

// SyncWith exchanges full states with member name (memberlist's push/pull, which Join runs).
func (a *Agent) SyncWith(name string) {
	ml := a.ml.Load()
	if ml == nil || a.closed.Load() {
		return
	}
	if n := a.member(name); n != nil {
		if _, err := ml.Join([]string{n.Address()}); err != nil {
			a.log.WithError(err).WithField("member", name).Debug("full-state exchange failed")
		}
	}
}

// openNotice checks a notice against the network's authority and returns the keys it sets, or nil when
// this node is already at that epoch.
func (a *Agent) openNotice(m wireRekey) (*NetworkKeys, error) {
	n := m.Notice
	a.tbl.mu.Lock()
	kr := a.tbl.keys[n.Network]
	var cur keyring
	if kr != nil {
		cur = *kr
	}
	a.tbl.mu.Unlock()
	switch {
	case kr == nil:
		return nil, errors.New("the network is not on this node")
	case cur.authority == nil:
		return nil, errors.New("the network has no key authority")
	case !n.verify(cur.authority):
		return nil, errors.New("the notice is not signed by the network's key authority")
	case n.Epoch < cur.epoch:
		return nil, fmt.Errorf("the notice is older than this node's key epoch %d", cur.epoch)
	case n.Epoch == cur.epoch:
		return nil, nil
	}
	priv := a.boot
	get := func(id string) ([]byte, error) {
		if k, ok := cur.anyKey(id); ok {
			return k, nil
		}
		ct, ok := m.Sealed[id]
		if !ok {
			return nil, fmt.Errorf("key %s is neither held nor sealed in the notice", id)
		}
		k, err := hpke.Open(priv, bootKDF, bootAEAD, sealInfo(n.Network, a.cfg.NodeName, id), ct)
		if err != nil {
			return nil, fmt.Errorf("key %s does not open with this node's boot key: %w", id, err)
		}
		if KeyID(k) != id {
			return nil, fmt.Errorf("sealed key does not match its ID %s", id)
		}
		return k, nil
	}
	nk := &NetworkKeys{Epoch: n.Epoch, Authority: cur.authority}
	var err error
	if nk.Primary, err = get(n.Primary); err != nil {
		return nil, err
	}
	named := map[string]bool{n.Primary: true}
	for _, id := range n.Accept {
		k, err := get(id)
		if err != nil {
			return nil, err
		}
		nk.Accept = append(nk.Accept, k)
		named[id] = true
	}
	for id, k := range cur.keys {
		if !named[id] {
			nk.History = append(nk.History, k)
		}
	}
	for id, k := range cur.history {
		if !named[id] {
			nk.History = append(nk.History, k)
		}
	}
	return nk, nil
}

func (a *Agent) sendAck(to, network string) {
	ml := a.ml.Load()
	if ml == nil {
		return
	}
	ack, key, ok := a.ownKeys(network)
	if !ok {
		return
	}
	ack.Tag = ackTag(key, ack)
	buf, err := encodeMsg(msgAck, ack)
	if err != nil {
		return
	}
	if n := a.member(to); n != nil {
		if err := ml.SendReliable(n, buf); err != nil {
			a.log.WithError(err).WithField("to", to).Debug("key acknowledgement not sent")
		}
	}
}

// handleAck wakes a Rekey waiting for this acknowledgement.
func (a *Agent) handleAck(body []byte) {
	var m wireAck
	if err := decodeJSON(body, &m); err != nil {
		return
	}
	if key, ok := a.heldKey(m.Network, m.KeyID); !ok || !hmac.Equal(m.Tag, ackTag(key, m)) {
		a.log.WithFields(logrus.Fields{"from": m.From, "network": m.Network}).Debug("dropping key acknowledgement that does not verify")
		return
	}
	a.ackMu.Lock()
	defer a.ackMu.Unlock()
	for _, w := range a.acks {
		if w.to == m.From && w.network == m.Network && m.Epoch >= w.epoch {
			select {
			case <-w.done:
			default:
				close(w.done)
			}
		}
	}
}

// wireKeyRequest asks a member for a network's current keys: the sender holds keys of an older epoch (it
// missed a rotation, or created the network after one). It says what an ack says; its tag is under a
// key the sender holds.
type wireKeyRequest wireAck

// ownKeys returns, for a keyed network of this node, what an ack or a key request says of this node's
// keys (without its tag), and the primary key to sign it with.
func (a *Agent) ownKeys(network string) (wireAck, []byte, bool) {
	a.tbl.mu.Lock()
	defer a.tbl.mu.Unlock()
	kr := a.tbl.keys[network]
	if kr == nil || !kr.keyed() {
		return wireAck{}, nil, false
	}
	return wireAck{From: a.cfg.NodeName, Network: network, Epoch: kr.epoch, KeyID: kr.primary}, kr.keys[kr.primary], true
}

func requestTag(key []byte, r wireKeyRequest) []byte {
	return ackTag(key, wireAck{From: "request\x00" + r.From, Network: r.Network, Epoch: r.Epoch, KeyID: r.KeyID})
}

// RequestKeys asks the members at the given addresses (the swarm's managers) for network's current keys;
// a manager that holds them answers with Rekey (Config.OnKeyRequest).
func (a *Agent) RequestKeys(network string, addrs []string) int {
	ml := a.ml.Load()
	if ml == nil || a.closed.Load() {
		return 0
	}
	own, key, ok := a.ownKeys(network)
	if !ok {
		return 0
	}
	req := wireKeyRequest(own)
	req.Tag = requestTag(key, req)
	buf, err := encodeMsg(msgKeyRequest, req)
	if err != nil {
		return 0
	}
	sent := 0
	for _, n := range ml.Members() {
		if n.Name == a.cfg.NodeName || !slices.Contains(addrs, n.Addr.String()) {
			continue
		}
		if err := ml.SendReliable(n, buf); err == nil {
			sent++
		}
	}
	return sent
}

// handleKeyRequest checks a key request and hands it to Config.OnKeyRequest with the sender's gossip
// address.
func (a *Agent) handleKeyRequest(body []byte) {
	var r wireKeyRequest
	if err := decodeJSON(body, &r); err != nil || a.cfg.OnKeyRequest == nil {
		return
	}
	if key, ok := a.heldKey(r.Network, r.KeyID); !ok || !hmac.Equal(r.Tag, requestTag(key, r)) {
		a.log.WithFields(logrus.Fields{"from": r.From, "network": r.Network}).Debug("dropping key request that does not verify")
		return
	}
	if n := a.member(r.From); n != nil {
		a.cfg.OnKeyRequest(r.Network, r.From, n.Addr.String(), r.Epoch)
	}
}

// heldKey returns a key of network that this node holds or held, by ID.
func (a *Agent) heldKey(network, id string) ([]byte, bool) {
	a.tbl.mu.Lock()
	defer a.tbl.mu.Unlock()
	if kr := a.tbl.keys[network]; kr != nil {
		return kr.anyKey(id)
	}
	return nil, false
}

// member returns the live member called name, or nil.
func (a *Agent) member(name string) *memberlist.Node {
	ml := a.ml.Load()
	if ml == nil {
		return nil
	}
	for _, n := range ml.Members() {
		if n.Name == name {
			return n
		}
	}
	return nil
}
