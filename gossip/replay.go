package gossip

import (
	"slices"
	"time"
)

// Captured is a record of another member as it travels between nodes, signature included.
type Captured struct {
	owner string
	rec   wireRecord
}

// Endpoint is what the captured record says.
func (c Captured) Endpoint() Endpoint { return c.rec.endpoint() }

// Captured returns the live records of other members that this agent holds for network, as they were
// sent. With Replay it exists for tests that play an attacker who records gossip and sends it again
// later: it gives nothing that a member cannot read off the wire.
func (a *Agent) Captured(network string) []Captured {
	a.tbl.mu.Lock()
	defer a.tbl.mu.Unlock()
	now := time.Now()
	var out []Captured
	for _, name := range a.tbl.ownerNamesLocked() {
		o := a.tbl.owners[name]
		for k, r := range o.recs {
			if k.network == network && !r.deleted {
				out = append(out, Captured{owner: name, rec: r.wire(now)})
			}
		}
	}
	slices.SortFunc(out, func(x, y Captured) int { return cmpString(x.rec.Endpoint, y.rec.Endpoint) })
	return out
}

// Replay sends captured records again to every member, each as a delta of its owner.
func (a *Agent) Replay(cs []Captured) {
	for _, c := range cs {
		g := wireGroup{Owner: c.owner, Records: []wireRecord{c.rec}}
		a.broadcast(g)
		a.sendDirect(g)
	}
}
