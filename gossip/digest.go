package gossip

import (
	"slices"
	"time"

	"github.com/sirupsen/logrus"
)

// Anti-entropy by digest. A push/pull state carries its sender's own records in full, and of every
// other owner it relays only a digest: how many records it holds and a hash of their versions. A
// receiver whose own digest of that owner differs asks the sender for those owners' records (msgPull,
// reliable and direct), and the answer (msgGroups) is merged like a relayed group. At rest the
// digests agree and a state costs its sender's own records plus a few bytes per member, instead of
// the whole cluster's table: with 10,000 endpoints, 2 MB per exchange at any cluster size before.
//
// Nodes of an earlier version send full states, which are merged as before; they drop msgPull as an
// unknown message type and still learn the other owners' records from those owners' own states and
// from the broadcasts.

// maxPullOwners bounds the owners named in one pull request; maxPullsInFlight the requests this node
// has outstanding (a pull left out is asked again at the next exchange that still disagrees).
const (
	maxPullOwners    = 1024
	maxPullsInFlight = 4
	pullMemberWait   = 2 * time.Second
)

// wireDigest summarizes what the sender of a state holds of one other owner's records.
type wireDigest struct {
	Owner string `json:"o"`
	Count int    `json:"c"`
	Sum   uint64 `json:"h"`
}

// wirePull asks a member for the records it holds of the named owners.
type wirePull struct {
	From   string   `json:"from"`
	Owners []string `json:"o"`
}

// recordHash is a record's version as one number (FNV-1a over its key and version); a digest is the
// XOR of its records' hashes, so that it does not depend on their order.
func recordHash(k recKey, inc, seq uint64, deleted bool) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for _, s := range [2]string{k.network, k.endpoint} {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint64(s[i])) * prime
		}
		h = (h ^ 0xff) * prime
	}
	for _, v := range [2]uint64{inc, seq} {
		for i := 0; i < 8; i++ {
			h = (h ^ (v >> (8 * i) & 0xff)) * prime
		}
	}
	if deleted {
		h = (h ^ 1) * prime
	}
	return h
}

// digestLocked is this node's digest of owner o's records. Caller holds mu.
func digestLocked(o *ownerState) wireDigest {
	d := wireDigest{Owner: o.name, Count: len(o.recs)}
	for k, r := range o.recs {
		d.Sum ^= recordHash(k, r.inc, r.seq, r.deleted)
	}
	return d
}

// mismatched returns the owners of the digests in s whose records this node does not hold as the
// sender does: those to pull from it.
func (t *table) mismatched(s wireState) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, d := range s.Digests {
		if d.Owner == "" || d.Owner == t.self || d.Owner == s.From || len(d.Owner) > maxFieldLen {
			continue
		}
		if o, ok := t.owners[d.Owner]; ok {
			if digestLocked(o) == d {
				continue
			}
		} else if d.Count == 0 {
			continue
		}
		out = append(out, d.Owner)
		if len(out) == maxPullOwners {
			break
		}
	}
	return out
}

// groups returns the records of the named owners as state relays them: only of owners that are live
// members (see state).
func (t *table) groups(owners []string, now time.Time) []wireGroup {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []wireGroup
	for _, name := range owners {
		o, ok := t.owners[name]
		if !ok || name == t.self || len(o.recs) == 0 || !o.known || !o.live {
			continue
		}
		g := wireGroup{Owner: o.name, Records: make([]wireRecord, 0, len(o.recs))}
		for _, r := range o.recs {
			g.Records = append(g.Records, r.wire(now))
		}
		out = append(out, g)
	}
	return out
}

// applyGroups merges groups relayed by another member (a pull's answer): as the other owners' groups
// of a state, never authoritative for their owner.
func (t *table) applyGroups(groups []wireGroup, now time.Time) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	var evs []Event
	for _, g := range groups {
		evs = append(evs, t.applyGroupLocked(g, wireState{}, nil, now)...)
	}
	return evs
}

// pull asks member from for the records it holds of owners (run on its own goroutine).
func (a *Agent) pull(from string, owners []string) {
	if a.pulls.Add(1) > maxPullsInFlight {
		a.pulls.Add(-1)
		return
	}
	defer a.pulls.Add(-1)
	ml, n := a.ml.Load(), a.member(from)
	if ml == nil || n == nil || a.closed.Load() {
		return
	}
	buf, err := encodeMsg(msgPull, wirePull{From: a.cfg.NodeName, Owners: owners})
	if err == nil {
		err = ml.SendReliable(n, buf)
	}
	if err != nil {
		a.log.WithError(err).WithField("member", from).Debug("gossip pull request not sent")
		return
	}
	a.pullsSent.Add(1)
}

// handlePull answers a pull request with the records this node holds of the owners asked for.
func (a *Agent) handlePull(body []byte) {
	var p wirePull
	if err := decodeJSON(body, &p); err != nil || len(p.Owners) > maxPullOwners {
		return
	}
	// A joining member pulls as soon as it has this node's state, which memberlist sends before it
	// merges the joiner's member list here: give the member a moment to appear.
	ml, n := a.ml.Load(), a.member(p.From)
	for deadline := time.Now().Add(pullMemberWait); n == nil && time.Now().Before(deadline) && !a.closed.Load(); {
		time.Sleep(20 * time.Millisecond)
		n = a.member(p.From)
	}
	if ml == nil || n == nil || a.closed.Load() {
		return
	}
	groups := a.tbl.groups(slices.Compact(slices.Sorted(slices.Values(p.Owners))), time.Now())
	if len(groups) == 0 {
		return
	}
	buf, err := encodeMsg(msgGroups, wireState{From: a.cfg.NodeName, Groups: groups})
	if err == nil {
		err = ml.SendReliable(n, buf)
	}
	if err != nil {
		a.log.WithError(err).WithFields(logrus.Fields{"member": p.From, "owners": len(groups)}).
			Debug("gossip pull not answered")
	}
}

// handleGroups merges the answer to a pull request.
func (a *Agent) handleGroups(body []byte) {
	var s wireState
	if err := decodeJSON(body, &s); err != nil {
		a.log.WithError(err).Debug("dropping gossip pull answer")
		return
	}
	a.apply(func() []Event { return a.tbl.applyGroups(s.Groups, time.Now()) })
}
