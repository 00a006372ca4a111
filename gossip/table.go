package gossip

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"maps"
	"slices"
	"sync"
	"time"
)

// table is the pure state machine behind the Agent: it merges records by
// version, keeps tombstones, tracks owner liveness and incarnations and
// derives Added/Removed events as differences of the set of visible remote
// endpoints. It does no I/O; time is passed in. All methods are safe for
// concurrent use.
type table struct {
	mu sync.Mutex

	self  string
	inc   uint64 // own incarnation (boot id)
	clock uint64 // own per-record counter
	grace time.Duration
	// hostUpGrace (>= grace): how long the records of an owner that left or
	// failed stay visible while nobody has said that its host is gone.
	hostUpGrace time.Duration
	ttl         time.Duration

	local  map[recKey]*record
	owners map[string]*ownerState

	// keys holds the networks this node has declared, with their keys.
	keys map[string]*keyring
	// retiring: networks whose last key change retired a key, with when the records still signed by it
	// go (see setKeys).
	retiring map[string]time.Time
	// vtepCheck: a record is shown only when its VTEP is its owner's gossip address.
	vtepCheck bool
	// pub is this node's boot key (sent in manifests); peers what other members' manifests said.
	pub   []byte
	peers map[string]*peerKeys

	rejected uint64
	// refused counts the records refused by authLocked and the VTEP and replay checks; refusals holds
	// the latest ones for the agent to log (bounded).
	refused  uint64
	refusals []Refusal
}

// Refusal is a received record that was refused for its signature, its VTEP or as a replay.
type Refusal struct {
	Owner    string
	Network  string
	Endpoint string
	IP, MAC  string
	VTEP     string
	KeyID    string
	Inc, Seq uint64
	Reason   string
}

const maxRefusals = 64

type recKey struct{ network, endpoint string }

type record struct {
	ep      Endpoint
	inc     uint64
	seq     uint64
	deleted bool
	stamp   time.Time // local time this version was stored
	keyID   string    // the key that signed it ("" unsigned)
	tag     []byte
}

type ownerState struct {
	name string
	addr string // memberlist address, from nodeUp
	live bool
	// known: inc holds the owner's current incarnation from its memberlist
	// metadata (the owner has been seen alive).
	known bool
	inc   uint64
	// Records of the previous incarnation stay visible until prevUntil.
	prevInc   uint64
	prevUntil time.Time
	// downAt: when the owner went down; for owners never seen alive, when
	// we first heard of them.
	downAt time.Time
	// goneAt: when hostGone reported the owner's host gone (zero: not
	// reported, or reported back since).
	goneAt time.Time
	recs   map[recKey]*record
	shown  map[recKey]Endpoint // announced with Added and not yet Removed
	synced time.Time           // the last full sync
	// expireAt: no record of o can expire before then (tick skips the scan); zero: scan at the next
	// tick. Only tombstones and records of another incarnation than o's current one expire.
	expireAt time.Time
	// floor: the highest seq of the current incarnation's removals that expired here. A record of that
	// incarnation at or below it, for an endpoint this node holds nothing of, is a replay.
	floor uint64
}

// tableStats is a snapshot of the table's sizes.
type tableStats struct {
	LocalEndpoints  int
	RemoteEndpoints int
	PendingRecords  int
	Tombstones      int
	Owners          int
	Rejected        uint64
	Refused         uint64
}

func newTable(self string, inc uint64, grace, hostUpGrace, ttl time.Duration) *table {
	grace = max(grace, 0)
	return &table{
		self:        self,
		inc:         inc,
		grace:       grace,
		hostUpGrace: max(hostUpGrace, grace),
		ttl:         ttl,
		local:       make(map[recKey]*record),
		owners:      make(map[string]*ownerState),
		keys:        make(map[string]*keyring),
		retiring:    make(map[string]time.Time),
		peers:       make(map[string]*peerKeys),
	}
}

func (r *record) wire(now time.Time) wireRecord {
	w := wireRecord{Network: r.ep.Network, Endpoint: r.ep.EndpointID, Inc: r.inc, Seq: r.seq, Deleted: r.deleted,
		KeyID: r.keyID, Tag: r.tag}
	if r.deleted {
		w.AgeMS = max(now.Sub(r.stamp).Milliseconds(), 0)
	} else {
		w.IP, w.MAC, w.VTEP = r.ep.IP, r.ep.MAC, r.ep.VTEP
	}
	return w
}

// localPublish records a local endpoint. It returns the delta to broadcast
// and false when nothing changed. ep must be normalized.
func (t *table) localPublish(ep Endpoint, now time.Time) (wireGroup, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := recKey{ep.Network, ep.EndpointID}
	if cur, ok := t.local[k]; ok && !cur.deleted && cur.ep == ep {
		return wireGroup{}, false
	}
	t.clock++
	r := &record{ep: ep, inc: t.inc, seq: t.clock, stamp: now}
	t.signLocked(r)
	t.local[k] = r
	return wireGroup{Owner: t.self, Records: []wireRecord{r.wire(now)}}, true
}

// localWithdraw replaces a local endpoint by a tombstone. It returns the
// delta to broadcast and false when the endpoint was not published.
func (t *table) localWithdraw(network, endpointID string, now time.Time) (wireGroup, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := recKey{network, endpointID}
	cur, ok := t.local[k]
	if !ok || cur.deleted {
		return wireGroup{}, false
	}
	t.clock++
	r := &record{ep: Endpoint{Network: network, EndpointID: endpointID}, inc: t.inc, seq: t.clock, deleted: true, stamp: now}
	t.signLocked(r)
	t.local[k] = r
	return wireGroup{Owner: t.self, Records: []wireRecord{r.wire(now)}}, true
}

// state returns the table for push/pull: the own group (complete up to the own clock), then a digest
// of what is held of each owner that is a live member (the records themselves go to whoever asks:
// digest.go). Records of owners that are down or unknown are not relayed, so state about departed
// nodes dies out instead of circulating.
func (t *table) state(now time.Time) wireState {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := wireState{From: t.self, Inc: t.inc, Clock: t.clock}
	own := wireGroup{Owner: t.self, Records: make([]wireRecord, 0, len(t.local))}
	for _, r := range t.local {
		own.Records = append(own.Records, r.wire(now))
	}
	s.Groups = append(s.Groups, own)
	for _, n := range slices.Sorted(maps.Keys(t.keys)) {
		if kr := t.keys[n]; kr.keyed() {
			m := wireManifest{Network: n, KeyID: kr.primary, Epoch: kr.epoch, Pub: t.pub}
			m.Tag = manifestTag(kr.keys[kr.primary], t.self, m, t.inc, t.clock)
			s.Manifests = append(s.Manifests, m)
		}
	}
	for _, o := range t.owners {
		if len(o.recs) == 0 || !o.known || !o.live {
			continue
		}
		s.Digests = append(s.Digests, digestLocked(o))
	}
	return s
}

// owner returns the state of a remote owner, creating it (not live) if needed.
func (t *table) owner(name string, now time.Time) *ownerState {
	o, ok := t.owners[name]
	if !ok {
		o = &ownerState{name: name, downAt: now, recs: make(map[recKey]*record), shown: make(map[recKey]Endpoint)}
		t.owners[name] = o
	}
	return o
}

func (o *ownerState) inPrevWindow(inc uint64, now time.Time) bool {
	return o.prevInc != 0 && inc == o.prevInc && now.Before(o.prevUntil)
}

// newer reports whether received record r supersedes stored record e.
func (o *ownerState) newer(r wireRecord, e *record) bool {
	if r.Inc == e.inc {
		return r.Seq > e.seq
	}
	if o.known {
		if r.Inc == o.inc {
			return true
		}
		if e.inc == o.inc {
			return false
		}
	}
	return r.Inc > e.inc
}

// merge stores r if it is valid and newer than what is held. Caller holds mu.
func (t *table) merge(o *ownerState, r wireRecord, now time.Time) (wireRecord, bool) {
	r, err := r.validate()
	if err != nil {
		t.rejected++
		return r, false
	}
	// A superseded incarnation of a live-known owner.
	if o.known && r.Inc != o.inc && (r.Inc < o.inc || r.Inc == o.prevInc) && !o.inPrevWindow(r.Inc, now) {
		t.rejected++
		return r, false
	}
	stamp := now
	if r.Deleted {
		age := time.Duration(r.AgeMS) * time.Millisecond
		if age >= t.ttl {
			t.rejected++ // expired tombstone
			return r, false
		}
		stamp = now.Add(-age)
	}
	k := r.key()
	e, held := o.recs[k]
	if held && !o.newer(r, e) {
		t.rejected++
		return r, false
	}
	if reason := t.authLocked(o.name, r); reason != "" {
		t.refuseLocked(o.name, r, reason)
		return r, false
	}
	if !held && o.known && r.Inc == o.inc && r.Seq <= o.floor {
		t.refuseLocked(o.name, r, refuseReplay)
		return r, false
	}
	if t.vtepCheck && !r.Deleted && o.addr != "" && r.VTEP != o.addr {
		t.refuseLocked(o.name, r, refuseVTEP)
		return r, false
	}
	o.recs[k] = &record{ep: r.endpoint(), inc: r.Inc, seq: r.Seq, deleted: r.Deleted, stamp: stamp, keyID: r.KeyID, tag: r.Tag}
	if r.Deleted || !o.known || r.Inc != o.inc {
		o.noteExpiry(stamp.Add(t.ttl))
	}
	return r, true
}

// noteExpiry records that a record of o may expire at at.
func (o *ownerState) noteExpiry(at time.Time) {
	if !o.expireAt.IsZero() && at.Before(o.expireAt) {
		o.expireAt = at
	}
}

// refuseLocked counts a refused record and keeps it for the agent to log. Caller holds mu.
func (t *table) refuseLocked(owner string, r wireRecord, reason string) {
	t.rejected++
	t.refused++
	if len(t.refusals) < maxRefusals {
		t.refusals = append(t.refusals, Refusal{Owner: owner, Network: r.Network, Endpoint: r.Endpoint,
			IP: r.IP, MAC: r.MAC, VTEP: r.VTEP, KeyID: r.KeyID, Inc: r.Inc, Seq: r.Seq, Reason: reason})
	}
}

// takeRefusals returns the refusals since the last call.
func (t *table) takeRefusals() []Refusal {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.refusals
	t.refusals = nil
	return out
}

// setKeys declares a network of this node with its keys. The remote records of that network that the
// new keys do not sign are dropped (records that arrived before the network was declared were held
// unchecked). When the primary key changed, this node's own records of the network are signed again
// under it with new versions, returned for broadcast.
func (t *table) setKeys(network string, kr *keyring, now time.Time) ([]Event, wireGroup) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.keys[network]
	t.keys[network] = kr
	// A rotation's last step retires the old key, possibly before every member's records signed again
	// under the new one have arrived here: the owners send them when they apply the step before, by
	// UDP, while the authority's next notice comes by TCP and may overtake them. Records that a
	// retired key signed, held from before, stay until retireGrace has passed, so that the data plane
	// does not drop and re-add them; nothing signed by it is accepted any more.
	retiredNow := func(id string) bool {
		if old == nil {
			return false
		}
		_, wasCurrent := old.keys[id]
		_, retired := kr.history[id]
		return wasCurrent && retired
	}
	evs := t.dropUnsignedLocked(network, func(r *record) bool { return retiredNow(r.keyID) }, now)
	if old != nil {
		for id := range old.keys {
			if retiredNow(id) {
				t.retiring[network] = now.Add(retireGrace)
			}
		}
	}
	resigned := wireGroup{Owner: t.self}
	if old == nil || old.primary != kr.primary {
		for _, k := range slices.SortedFunc(maps.Keys(t.local), func(a, b recKey) int {
			return cmp.Or(cmp.Compare(a.network, b.network), cmp.Compare(a.endpoint, b.endpoint))
		}) {
			r := t.local[k]
			if k.network != network || r.keyID == kr.primary {
				continue
			}
			t.clock++
			nr := &record{ep: r.ep, inc: t.inc, seq: t.clock, deleted: r.deleted, stamp: r.stamp}
			t.signLocked(nr)
			t.local[k] = nr
			resigned.Records = append(resigned.Records, nr.wire(now))
		}
	}
	return evs, resigned
}

// retireGrace: how long records signed by a key that a rotation retired stay (setKeys).
const retireGrace = 10 * time.Second

// dropUnsignedLocked drops the records of network that its keys do not sign, except those keep keeps,
// and syncs their owners. Caller holds mu.
func (t *table) dropUnsignedLocked(network string, keep func(*record) bool, now time.Time) []Event {
	var evs []Event
	for _, name := range t.ownerNamesLocked() {
		o := t.owners[name]
		dropped := false
		for k, r := range o.recs {
			if k.network != network || keep(r) {
				continue
			}
			w := r.wire(now)
			if reason := t.authLocked(o.name, w); reason != "" {
				delete(o.recs, k)
				t.refuseLocked(o.name, w, reason)
				dropped = true
			}
		}
		if dropped {
			evs = append(evs, t.sync(o, now)...)
		}
	}
	return evs
}

// forgetKeys undeclares a network (removed from this node).
func (t *table) forgetKeys(network string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.keys, network)
	delete(t.retiring, network)
}

// applyDelta merges a broadcast delta. It returns the events and the records
// that were new (to be re-broadcast).
func (t *table) applyDelta(g wireGroup, now time.Time) ([]Event, wireGroup) {
	t.mu.Lock()
	defer t.mu.Unlock()
	accepted := wireGroup{Owner: g.Owner}
	if g.Owner == "" || g.Owner == t.self || len(g.Owner) > maxFieldLen {
		t.rejected += uint64(len(g.Records))
		return nil, accepted
	}
	o := t.owner(g.Owner, now)
	keys := make([]recKey, 0, len(g.Records))
	for _, r := range g.Records {
		if nr, ok := t.merge(o, r, now); ok {
			accepted.Records = append(accepted.Records, nr)
			keys = append(keys, nr.key())
		}
	}
	return t.syncKeys(o, keys, now), accepted
}

// applyState merges a full table received in push/pull.
func (t *table) applyState(s wireState, now time.Time) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	var evs []Event
	sawFrom := false
	vouched := t.manifestsLocked(s)
	for _, g := range s.Groups {
		if g.Owner == s.From {
			sawFrom = true
		}
		evs = append(evs, t.applyGroupLocked(g, s, vouched, now)...)
	}
	if !sawFrom && s.From != "" {
		// The sender owns nothing (not even tombstones).
		evs = append(evs, t.applyGroupLocked(wireGroup{Owner: s.From}, s, vouched, now)...)
	}
	return evs
}

func (t *table) applyGroupLocked(g wireGroup, s wireState, vouched map[string]bool, now time.Time) []Event {
	if g.Owner == "" || g.Owner == t.self || len(g.Owner) > maxFieldLen {
		t.rejected += uint64(len(g.Records))
		return nil
	}
	o := t.owner(g.Owner, now)
	present := make(map[recKey]bool, len(g.Records))
	for _, r := range g.Records {
		present[r.key()] = true
		t.merge(o, r, now)
	}
	// The owner's own state is authoritative for its current incarnation: for the networks of keyed
	// networks, only where its signed manifest says so.
	if g.Owner == s.From && o.known && s.Inc == o.inc {
		for k, rec := range o.recs {
			if present[k] {
				continue
			}
			if kr := t.keys[k.network]; kr != nil && kr.keyed() && !vouched[k.network] {
				continue
			}
			switch {
			case rec.inc == s.Inc && rec.seq <= s.Clock && !rec.deleted:
				o.recs[k] = &record{ep: Endpoint{Network: k.network, EndpointID: k.endpoint}, inc: s.Inc, seq: s.Clock, deleted: true, stamp: now}
				o.noteExpiry(now.Add(t.ttl))
			case rec.inc == o.prevInc:
				delete(o.recs, k)
			}
		}
		// The new process has told us everything: the old one is gone.
		o.prevUntil = time.Time{}
	}
	return t.sync(o, now)
}

// manifestsLocked returns the keyed networks for which state s carries a manifest of its sender signed
// with a key that signs records now. A manifest signed with any key this node holds or held also tells
// the sender's key epoch and boot key, which are kept for rotations (see peerKeys).
func (t *table) manifestsLocked(s wireState) map[string]bool {
	out := map[string]bool{}
	if s.From == "" || s.From == t.self {
		return out
	}
	// A full state lists every keyed network of its sender: one it no longer lists, it no longer has.
	if p := t.peers[s.From]; p != nil && p.inc == s.Inc {
		clear(p.epochs)
	}
	for _, m := range s.Manifests {
		kr := t.keys[m.Network]
		if kr == nil || !kr.keyed() {
			continue
		}
		key, ok := kr.anyKey(m.KeyID)
		if !ok || !hmac.Equal(m.Tag, manifestTag(key, s.From, m, s.Inc, s.Clock)) {
			continue
		}
		if _, current := kr.keys[m.KeyID]; current {
			out[m.Network] = true
		}
		t.notePeerLocked(s.From, s.Inc, m)
	}
	return out
}

// peerKeys is what verified manifests told about one member: its boot key, pinned for its incarnation
// at first sight, and its key epoch per network.
type peerKeys struct {
	inc      uint64
	pub      []byte
	conflict bool // two boot keys were claimed for this incarnation
	epochs   map[string]uint64
}

// notePeerLocked records a verified manifest. Caller holds mu.
func (t *table) notePeerLocked(owner string, inc uint64, m wireManifest) {
	p := t.peers[owner]
	if p == nil || p.inc != inc {
		p = &peerKeys{inc: inc, pub: slices.Clone(m.Pub), epochs: map[string]uint64{}}
		t.peers[owner] = p
	}
	if !bytes.Equal(p.pub, m.Pub) && !p.conflict {
		p.conflict = true
		t.refuseLocked(owner, wireRecord{Network: m.Network}, refuseBootKey)
	}
	p.epochs[m.Network] = m.Epoch
}

// nodeUp records that owner name is a live member running incarnation inc
// (memberlist NotifyJoin / NotifyUpdate).
func (t *table) nodeUp(name, addr string, inc uint64, now time.Time) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	if name == t.self {
		return nil
	}
	o := t.owner(name, now)
	if o.known && inc != o.inc {
		o.floor = 0
		o.prevInc = o.inc
		if t.activeLocked(o, now) {
			o.prevUntil = now.Add(t.grace)
		} else {
			o.prevUntil = time.Time{}
		}
	}
	o.inc = inc
	o.known = true
	o.live = true
	o.expireAt = time.Time{} // records of another incarnation may have become expirable
	o.downAt = time.Time{}
	o.goneAt = time.Time{}
	if addr != "" {
		o.addr = addr
	}
	return t.sync(o, now)
}

// nodeDown records that owner name left or failed (memberlist NotifyLeave).
func (t *table) nodeDown(name string, now time.Time) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.owners[name]
	if name == t.self || !ok || !o.live {
		return nil
	}
	o.live = false
	o.downAt = now
	return t.sync(o, now)
}

// hostGone records that the swarm reports the host with address addr gone
// (libnetwork's DiscoverDelete): the records of the owners on that host (by
// memberlist address or VTEP) expire GracePeriod after they are down, instead
// of HostUpGrace. It returns the number of owners matched.
func (t *table) hostGone(addr string, now time.Time) (int, []Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var evs []Event
	n := 0
	for _, name := range t.ownerNamesLocked() {
		o := t.owners[name]
		if !o.on(addr) {
			continue
		}
		n++
		if o.goneAt.IsZero() {
			o.goneAt = now
		}
		evs = append(evs, t.sync(o, now)...)
	}
	return n, evs
}

// hostBack undoes hostGone for addr (libnetwork's DiscoverNew).
func (t *table) hostBack(addr string, now time.Time) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	var evs []Event
	for _, name := range t.ownerNamesLocked() {
		if o := t.owners[name]; o.on(addr) {
			o.goneAt = time.Time{}
			evs = append(evs, t.sync(o, now)...)
		}
	}
	return evs
}

// on reports whether the owner runs on the host with address addr.
func (o *ownerState) on(addr string) bool {
	if addr == "" {
		return false
	}
	if o.addr == addr {
		return true
	}
	for _, r := range o.recs {
		if !r.deleted && r.ep.VTEP == addr {
			return true
		}
	}
	return false
}

// expiry is when the records of an owner that is down stop being visible:
// HostUpGrace after it went down, or GracePeriod after it went down or its
// host was reported gone, whichever is later, once the host is reported gone.
func (t *table) expiry(o *ownerState) time.Time {
	at := o.downAt.Add(t.hostUpGrace)
	if !o.goneAt.IsZero() {
		if short := maxTime(o.downAt, o.goneAt).Add(t.grace); short.Before(at) {
			at = short
		}
	}
	return at
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// tick expires grace periods, tombstones, pending records and forgotten
// owners.
func (t *table) tick(now time.Time) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, r := range t.local {
		if r.deleted && now.Sub(r.stamp) >= t.ttl {
			delete(t.local, k)
		}
	}
	var evs []Event
	for network, until := range t.retiring {
		if !now.Before(until) {
			delete(t.retiring, network)
			evs = append(evs, t.dropUnsignedLocked(network, func(*record) bool { return false }, now)...)
		}
	}
	for _, name := range t.ownerNamesLocked() {
		o := t.owners[name]
		var expired []recKey
		if o.expireAt.IsZero() || !now.Before(o.expireAt) {
			// Scanning every record of every owner every second cost as much as the whole table.
			next := now.Add(t.ttl)
			for k, r := range o.recs {
				if !r.deleted && o.known && r.inc == o.inc {
					continue // expires only once o's incarnation changes (nodeUp rescans)
				}
				if at := r.stamp.Add(t.ttl); now.Before(at) {
					next = minTime(next, at)
					continue
				}
				if r.deleted && o.known && r.inc == o.inc {
					o.floor = max(o.floor, r.seq)
				}
				delete(o.recs, k)
				expired = append(expired, k)
			}
			o.expireAt = next
		}
		forget := !o.live && !now.Before(maxTime(t.expiry(o), o.downAt.Add(t.ttl)))
		if forget {
			o.recs = map[recKey]*record{}
		}
		if !forget && o.settledLocked() {
			// A full sync would cost all of o's records every tick, at every node, for nothing.
			evs = append(evs, t.syncKeys(o, expired, now)...)
		} else {
			evs = append(evs, t.sync(o, now)...)
		}
		if forget && len(o.shown) == 0 {
			delete(t.owners, name)
			delete(t.peers, name)
		}
	}
	return evs
}

func (t *table) activeLocked(o *ownerState, now time.Time) bool {
	return o.known && (o.live || now.Before(t.expiry(o)))
}

func (t *table) visibleLocked(o *ownerState, r *record, now time.Time) bool {
	if r.deleted || !t.activeLocked(o, now) {
		return false
	}
	if t.vtepCheck && o.addr != "" && r.ep.VTEP != o.addr {
		return false
	}
	return r.inc == o.inc || o.inPrevWindow(r.inc, now)
}

// sync drops records that can never become visible again and emits the
// difference between the visible records of o and what was announced.
// Caller holds mu.
func (t *table) sync(o *ownerState, now time.Time) []Event {
	o.synced = now
	for k, r := range o.recs {
		if o.known && r.inc != o.inc && (r.inc < o.inc || r.inc == o.prevInc) && !o.inPrevWindow(r.inc, now) {
			delete(o.recs, k) // superseded incarnation
		}
	}
	var removed, added []Event
	for k, ep := range o.shown {
		if r, ok := o.recs[k]; !ok || r.ep != ep || !t.visibleLocked(o, r, now) {
			removed = append(removed, Event{Kind: Removed, Endpoint: ep, Node: o.name})
			delete(o.shown, k)
		}
	}
	for k, r := range o.recs {
		if _, shown := o.shown[k]; !shown && t.visibleLocked(o, r, now) {
			added = append(added, Event{Kind: Added, Endpoint: r.ep, Node: o.name})
			o.shown[k] = r.ep
		}
	}
	sortEvents(removed)
	sortEvents(added)
	return append(removed, added...)
}

// settledLocked reports whether time alone can change nothing of o's visible records since its last
// full sync: o is a live member of a known incarnation whose previous incarnation's window (if any)
// had ended by then. Every other change to o (records, incarnation, liveness, host reports) syncs it
// when it happens. Caller holds mu.
func (o *ownerState) settledLocked() bool {
	return o.live && o.known && !o.prevUntil.After(o.synced)
}

// syncKeys is sync for the records of keys alone: those a delta changed. A delta changes no state of
// the owner itself (incarnation, liveness, host reports), so the records it did not touch keep their
// visibility, and what time changes for them is caught up by tick's full sync. sync costs as much as
// the owner's records; a delta of one record would otherwise cost that much at every node. Caller
// holds mu.
func (t *table) syncKeys(o *ownerState, keys []recKey, now time.Time) []Event {
	var removed, added []Event
	for _, k := range keys {
		r, held := o.recs[k]
		if held && o.known && r.inc != o.inc && (r.inc < o.inc || r.inc == o.prevInc) && !o.inPrevWindow(r.inc, now) {
			delete(o.recs, k) // superseded incarnation
			held = false
		}
		visible := held && t.visibleLocked(o, r, now)
		if ep, shown := o.shown[k]; shown && (!visible || ep != r.ep) {
			removed = append(removed, Event{Kind: Removed, Endpoint: ep, Node: o.name})
			delete(o.shown, k)
		}
		if _, shown := o.shown[k]; visible && !shown {
			added = append(added, Event{Kind: Added, Endpoint: r.ep, Node: o.name})
			o.shown[k] = r.ep
		}
	}
	sortEvents(removed)
	sortEvents(added)
	return append(removed, added...)
}

func sortEvents(evs []Event) {
	slices.SortFunc(evs, func(a, b Event) int {
		return cmp.Or(cmp.Compare(a.Endpoint.Network, b.Endpoint.Network), cmp.Compare(a.Endpoint.EndpointID, b.Endpoint.EndpointID))
	})
}

func (t *table) ownerNamesLocked() []string {
	names := make([]string, 0, len(t.owners))
	for n := range t.owners {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// remote returns the visible remote endpoints of a network ("" = all).
func (t *table) remote(network string) []Endpoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Endpoint
	for _, o := range t.owners {
		for _, ep := range o.shown {
			if network == "" || ep.Network == network {
				out = append(out, ep)
			}
		}
	}
	slices.SortFunc(out, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Network, b.Network), cmp.Compare(a.EndpointID, b.EndpointID), cmp.Compare(a.VTEP, b.VTEP))
	})
	return out
}

func (t *table) stats() tableStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := tableStats{Owners: len(t.owners), Rejected: t.rejected, Refused: t.refused}
	for _, r := range t.local {
		if r.deleted {
			s.Tombstones++
		} else {
			s.LocalEndpoints++
		}
	}
	for _, o := range t.owners {
		s.RemoteEndpoints += len(o.shown)
		for k, r := range o.recs {
			switch {
			case r.deleted:
				s.Tombstones++
			default:
				if _, ok := o.shown[k]; !ok {
					s.PendingRecords++
				}
			}
		}
	}
	return s
}
