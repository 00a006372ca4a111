package gossip

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

const (
	tGrace  = 10 * time.Second
	tTTL    = 10 * time.Minute
	selfInc = 1000
	bInc1   = 2000
	bInc2   = 3000
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func ep(n int) Endpoint {
	return Endpoint{
		Network:    "net1",
		EndpointID: fmt.Sprintf("ep%d", n),
		IP:         fmt.Sprintf("10.0.1.%d", n),
		MAC:        fmt.Sprintf("02:42:0a:00:01:%02x", n),
		VTEP:       "192.168.77.2",
	}
}

func rec(e Endpoint, inc, seq uint64) wireRecord {
	return wireRecord{Network: e.Network, Endpoint: e.EndpointID, IP: e.IP, MAC: e.MAC, VTEP: e.VTEP, Inc: inc, Seq: seq}
}

func tomb(e Endpoint, inc, seq uint64) wireRecord {
	return wireRecord{Network: e.Network, Endpoint: e.EndpointID, Inc: inc, Seq: seq, Deleted: true}
}

func delta(owner string, rs ...wireRecord) wireGroup { return wireGroup{Owner: owner, Records: rs} }

func added(node string, e Endpoint) Event   { return Event{Kind: Added, Endpoint: e, Node: node} }
func removed(node string, e Endpoint) Event { return Event{Kind: Removed, Endpoint: e, Node: node} }

func newTestTable() *table { return newTable("self", selfInc, tGrace, 0, tTTL) }

func wantEvents(t *testing.T, what string, got []Event, want ...Event) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: events\n got %+v\nwant %+v", what, got, want)
	}
}

func wantRemote(t *testing.T, tb *table, want ...Endpoint) {
	t.Helper()
	got := tb.remote("net1")
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("remote: got %+v want %+v", got, want)
	}
}

func applyD(tb *table, g wireGroup, now time.Time) []Event {
	evs, _ := tb.applyDelta(g, now)
	return evs
}

func TestTableDeltaAddRemove(t *testing.T) {
	tb := newTestTable()
	wantEvents(t, "nodeUp", tb.nodeUp("B", "", bInc1, t0))
	evs, acc := tb.applyDelta(delta("B", rec(ep(5), bInc1, 1)), t0)
	wantEvents(t, "add", evs, added("B", ep(5)))
	if len(acc.Records) != 1 {
		t.Fatalf("accepted %d records for relay, want 1", len(acc.Records))
	}
	wantRemote(t, tb, ep(5))
	if got := tb.remote("other"); len(got) != 0 {
		t.Fatalf("remote(other) = %v", got)
	}
	wantEvents(t, "remove", applyD(tb, delta("B", tomb(ep(5), bInc1, 2)), t0), removed("B", ep(5)))
	wantRemote(t, tb)
	if s := tb.stats(); s.Tombstones != 1 || s.RemoteEndpoints != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTableDuplicatesIgnored(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	wantEvents(t, "first", applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0), added("B", ep(5)))
	evs, acc := tb.applyDelta(delta("B", rec(ep(5), bInc1, 1)), t0)
	wantEvents(t, "duplicate", evs)
	if len(acc.Records) != 0 {
		t.Fatalf("duplicate accepted for relay: %+v", acc)
	}
	if s := tb.stats(); s.Rejected != 1 {
		t.Fatalf("rejected = %d, want 1", s.Rejected)
	}
}

func TestTableReorderedTombstoneFirst(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	wantEvents(t, "tombstone first", applyD(tb, delta("B", tomb(ep(5), bInc1, 2)), t0))
	wantEvents(t, "late add", applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0))
	wantRemote(t, tb)
}

func TestTableReorderedUpdates(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	v1, v2 := ep(5), ep(5)
	v2.MAC = "02:42:0a:00:01:ff"
	wantEvents(t, "v2 first", applyD(tb, delta("B", rec(v2, bInc1, 2)), t0), added("B", v2))
	wantEvents(t, "late v1", applyD(tb, delta("B", rec(v1, bInc1, 1)), t0))
	wantRemote(t, tb, v2)
	v3 := v2
	v3.IP = "10.0.1.99"
	wantEvents(t, "v3", applyD(tb, delta("B", rec(v3, bInc1, 3)), t0), removed("B", v2), added("B", v3))
}

func TestTableResurrectionAttempts(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	tb.nodeUp("C", "", 5000, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0)
	applyD(tb, delta("B", tomb(ep(5), bInc1, 2)), t0)
	// Replayed broadcast.
	wantEvents(t, "replayed add", applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0.Add(time.Second)))
	// Stale copy relayed in C's full state.
	st := wireState{From: "C", Inc: 5000, Clock: 0, Groups: []wireGroup{{Owner: "C"}, delta("B", rec(ep(5), bInc1, 1))}}
	wantEvents(t, "relayed stale state", tb.applyState(st, t0.Add(2*time.Second)))
	wantRemote(t, tb)
	// Re-adding with a newer version is legitimate.
	wantEvents(t, "re-add", applyD(tb, delta("B", rec(ep(5), bInc1, 3)), t0), added("B", ep(5)))
}

func TestTableNeverAcceptsOwnRecords(t *testing.T) {
	tb := newTestTable()
	g, ok := tb.localPublish(ep(1), t0)
	if !ok || g.Owner != "self" || g.Records[0].Inc != selfInc || g.Records[0].Seq != 1 {
		t.Fatalf("localPublish = %+v %v", g, ok)
	}
	evs, acc := tb.applyDelta(delta("self", tomb(ep(1), selfInc, 99), rec(ep(2), selfInc, 100)), t0)
	wantEvents(t, "self delta", evs)
	if len(acc.Records) != 0 {
		t.Fatalf("self-owned records accepted: %+v", acc)
	}
	st := wireState{From: "B", Inc: bInc1, Groups: []wireGroup{{Owner: "B"}, delta("self", tomb(ep(1), selfInc, 99))}}
	wantEvents(t, "self in state", tb.applyState(st, t0))
	// Own record untouched, and nothing owned by self shows up as remote.
	s := tb.state(t0)
	if len(s.Groups) != 1 || s.Groups[0].Owner != "self" || len(s.Groups[0].Records) != 1 || s.Groups[0].Records[0].Deleted {
		t.Fatalf("own state changed: %+v", s)
	}
	if tb.stats().LocalEndpoints != 1 || len(tb.remote("")) != 0 {
		t.Fatalf("stats %+v remote %v", tb.stats(), tb.remote(""))
	}
}

func TestTableLocalPublishWithdraw(t *testing.T) {
	tb := newTestTable()
	if _, ok := tb.localPublish(ep(1), t0); !ok {
		t.Fatal("first publish not a change")
	}
	if _, ok := tb.localPublish(ep(1), t0); ok {
		t.Fatal("identical re-publish reported as change")
	}
	e2 := ep(1)
	e2.IP = "10.0.1.77"
	if g, ok := tb.localPublish(e2, t0); !ok || g.Records[0].Seq != 2 {
		t.Fatalf("update: %+v %v", g, ok)
	}
	if _, ok := tb.localWithdraw("net1", "nope", t0); ok {
		t.Fatal("withdraw of unknown endpoint reported as change")
	}
	g, ok := tb.localWithdraw("net1", "ep1", t0)
	if !ok || !g.Records[0].Deleted || g.Records[0].Seq != 3 {
		t.Fatalf("withdraw: %+v %v", g, ok)
	}
	if _, ok := tb.localWithdraw("net1", "ep1", t0); ok {
		t.Fatal("second withdraw reported as change")
	}
	if s := tb.stats(); s.LocalEndpoints != 0 || s.Tombstones != 1 {
		t.Fatalf("stats %+v", s)
	}
	// Local tombstone expires, carrying its age in the state meanwhile.
	if st := tb.state(t0.Add(time.Minute)); st.Groups[0].Records[0].AgeMS != 60000 {
		t.Fatalf("tombstone age on the wire: %+v", st.Groups[0].Records[0])
	}
	tb.tick(t0.Add(tTTL))
	if s := tb.stats(); s.Tombstones != 0 {
		t.Fatalf("local tombstone not expired: %+v", s)
	}
	if _, ok := tb.localPublish(ep(1), t0.Add(tTTL)); !ok {
		t.Fatal("re-publish after withdraw not a change")
	}
	if st := tb.state(t0); st.Clock != 4 || st.Inc != selfInc {
		t.Fatalf("clock/inc in state: %+v", st)
	}
}

func TestTablePendingUntilOwnerLive(t *testing.T) {
	tb := newTestTable()
	wantEvents(t, "unknown owner", applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0))
	wantRemote(t, tb)
	if s := tb.stats(); s.PendingRecords != 1 {
		t.Fatalf("stats %+v", s)
	}
	// Pending records of non-live owners are not relayed.
	if st := tb.state(t0); len(st.Groups) != 1 {
		t.Fatalf("pending records relayed: %+v", st)
	}
	wantEvents(t, "owner joins", tb.nodeUp("B", "", bInc1, t0), added("B", ep(5)))
}

func TestTablePendingFutureIncarnation(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	// B restarted, its delta overtakes its new memberlist metadata.
	wantEvents(t, "future inc", applyD(tb, delta("B", rec(ep(5), bInc2, 1)), t0))
	wantEvents(t, "metadata update", tb.nodeUp("B", "", bInc2, t0), added("B", ep(5)))
}

func TestTablePendingExpires(t *testing.T) {
	tb := newTestTable()
	applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0)
	tb.tick(t0.Add(tTTL))
	if s := tb.stats(); s.PendingRecords != 0 || s.Owners != 0 {
		t.Fatalf("pending of never-seen owner not forgotten: %+v", s)
	}
}

func TestTableNodeFailureGraceAndReturn(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1), rec(ep(6), bInc1, 2)), t0)
	wantEvents(t, "down", tb.nodeDown("B", t0))
	wantEvents(t, "within grace", tb.tick(t0.Add(tGrace-time.Millisecond)))
	wantRemote(t, tb, ep(5), ep(6))
	// A delta during grace is still applied.
	wantEvents(t, "withdraw during grace", applyD(tb, delta("B", tomb(ep(6), bInc1, 3)), t0.Add(time.Second)), removed("B", ep(6)))
	wantEvents(t, "grace over", tb.tick(t0.Add(tGrace)), removed("B", ep(5)))
	wantRemote(t, tb)
	// Not relayed while B is down.
	if st := tb.state(t0.Add(tGrace)); len(st.Groups) != 1 {
		t.Fatalf("down owner relayed: %+v", st)
	}
	// Same process returns: restored.
	wantEvents(t, "return", tb.nodeUp("B", "", bInc1, t0.Add(time.Minute)), added("B", ep(5)))
	// Its full state then arrives and agrees: no churn.
	st := wireState{From: "B", Inc: bInc1, Clock: 3, Groups: []wireGroup{delta("B", rec(ep(5), bInc1, 1), tomb(ep(6), bInc1, 3))}}
	wantEvents(t, "state after return", tb.applyState(st, t0.Add(time.Minute)))
	wantRemote(t, tb, ep(5))
}

func TestTableNodeReturnsWithinGrace(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0)
	tb.nodeDown("B", t0)
	wantEvents(t, "back within grace", tb.nodeUp("B", "", bInc1, t0.Add(time.Second)))
	wantEvents(t, "old grace deadline", tb.tick(t0.Add(time.Hour)))
	wantRemote(t, tb, ep(5))
}

func TestTableZeroGrace(t *testing.T) {
	tb := newTable("self", selfInc, 0, 0, tTTL)
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0)
	wantEvents(t, "down", tb.nodeDown("B", t0), removed("B", ep(5)))
	wantEvents(t, "back", tb.nodeUp("B", "", bInc1, t0), added("B", ep(5)))
	tb2 := newTable("self", selfInc, -time.Second, 0, tTTL)
	tb2.nodeUp("B", "", bInc1, t0)
	applyD(tb2, delta("B", rec(ep(5), bInc1, 1)), t0)
	wantEvents(t, "negative grace down", tb2.nodeDown("B", t0), removed("B", ep(5)))
}

func TestTableOwnerRestartAfterGrace(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1), rec(ep(6), bInc1, 2)), t0)
	tb.nodeDown("B", t0)
	wantEvents(t, "grace over", tb.tick(t0.Add(tGrace)), removed("B", ep(5)), removed("B", ep(6)))
	// New process: old records are not restored.
	t1 := t0.Add(time.Minute)
	wantEvents(t, "new incarnation joins", tb.nodeUp("B", "", bInc2, t1))
	// Stale copies of the old incarnation are refused.
	wantEvents(t, "old inc delta", applyD(tb, delta("B", rec(ep(6), bInc1, 7)), t1))
	// The new process republishes ep5 only (its seq restarts at 1).
	wantEvents(t, "new inc publish", applyD(tb, delta("B", rec(ep(5), bInc2, 1)), t1), added("B", ep(5)))
	wantRemote(t, tb, ep(5))
	if s := tb.stats(); s.PendingRecords != 0 {
		t.Fatalf("old incarnation records kept: %+v", s)
	}
}

func TestTableOwnerFastRestart(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	tb.nodeUp("C", "", 5000, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 10), rec(ep(6), bInc1, 11)), t0)
	// B crashes and restarts before anyone noticed: memberlist reports new meta.
	wantEvents(t, "meta update", tb.nodeUp("B", "", bInc2, t0.Add(time.Second)))
	wantRemote(t, tb, ep(5), ep(6)) // old records kept during grace
	// The new process publishes ep5 again with a lower seq: replaces, no churn.
	wantEvents(t, "republish", applyD(tb, delta("B", rec(ep(5), bInc2, 1)), t0.Add(time.Second)))
	// Late message of the old process during the window: old inc is still
	// accepted only where it is not superseded.
	wantEvents(t, "old inc update of ep5", applyD(tb, delta("B", tomb(ep(5), bInc1, 12)), t0.Add(time.Second)))
	wantRemote(t, tb, ep(5), ep(6))
	// A relayed (not authoritative) state missing ep6 changes nothing.
	st := wireState{From: "C", Inc: 5000, Groups: []wireGroup{{Owner: "C"}, delta("B", rec(ep(5), bInc2, 1))}}
	wantEvents(t, "relayed state", tb.applyState(st, t0.Add(2*time.Second)))
	// B's own full state: ep6 is gone.
	st = wireState{From: "B", Inc: bInc2, Clock: 1, Groups: []wireGroup{delta("B", rec(ep(5), bInc2, 1))}}
	wantEvents(t, "authoritative state", tb.applyState(st, t0.Add(2*time.Second)), removed("B", ep(6)))
	wantEvents(t, "old inc after state", applyD(tb, delta("B", rec(ep(7), bInc1, 13)), t0.Add(3*time.Second)))
	wantRemote(t, tb, ep(5))
}

func TestTableOwnerRestartPrevWindowExpires(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1), rec(ep(6), bInc1, 2)), t0)
	tb.nodeUp("B", "", bInc2, t0)
	applyD(tb, delta("B", rec(ep(5), bInc2, 1)), t0)
	wantEvents(t, "window open", tb.tick(t0.Add(tGrace-time.Millisecond)))
	wantEvents(t, "window over", tb.tick(t0.Add(tGrace)), removed("B", ep(6)))
	wantRemote(t, tb, ep(5))
}

func TestTableOwnerRestartClockBackwards(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc2, t0)
	applyD(tb, delta("B", rec(ep(5), bInc2, 50)), t0)
	// New process got a smaller boot id (clock stepped back): memberlist
	// metadata is authoritative.
	tb.nodeUp("B", "", bInc1, t0)
	e := ep(5)
	e.MAC = "02:42:0a:00:01:aa"
	wantEvents(t, "lower inc is current", applyD(tb, delta("B", rec(e, bInc1, 1)), t0), removed("B", ep(5)), added("B", e))
}

func TestTableAuthoritativeState(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(1), bInc1, 1), rec(ep(2), bInc1, 2), rec(ep(9), bInc1, 9)), t0)
	// B's state at clock 8 lists ep1 only. ep2 was withdrawn and its tombstone
	// already expired at B; ep9 (seq 9) is newer than the state: kept.
	st := wireState{From: "B", Inc: bInc1, Clock: 8, Groups: []wireGroup{delta("B", rec(ep(1), bInc1, 1))}}
	wantEvents(t, "state", tb.applyState(st, t0), removed("B", ep(2)))
	wantRemote(t, tb, ep(1), ep(9))
	// The removal is a tombstone: a stale copy cannot bring ep2 back.
	wantEvents(t, "stale ep2", applyD(tb, delta("B", rec(ep(2), bInc1, 2)), t0))
	// A state without any group for its sender means it owns nothing.
	wantEvents(t, "empty state", tb.applyState(wireState{From: "B", Inc: bInc1, Clock: 9}, t0),
		removed("B", ep(1)), removed("B", ep(9)))
}

func TestTableStateOfStaleIncarnationNotAuthoritative(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc2, t0)
	applyD(tb, delta("B", rec(ep(1), bInc2, 1)), t0)
	st := wireState{From: "B", Inc: bInc1, Clock: 100}
	wantEvents(t, "stale state", tb.applyState(st, t0))
	wantRemote(t, tb, ep(1))
}

func TestTableTombstoneExpiry(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0)
	applyD(tb, delta("B", tomb(ep(5), bInc1, 2)), t0)
	tb.tick(t0.Add(tTTL - time.Millisecond))
	if s := tb.stats(); s.Tombstones != 1 {
		t.Fatalf("tombstone expired early: %+v", s)
	}
	tb.tick(t0.Add(tTTL))
	if s := tb.stats(); s.Tombstones != 0 {
		t.Fatalf("tombstone not expired: %+v", s)
	}
	// A relayed tombstone carries its age: it expires when the original does
	// and one older than the TTL is not taken at all.
	old := tomb(ep(6), bInc1, 4)
	old.AgeMS = (tTTL - time.Minute).Milliseconds()
	applyD(tb, delta("B", old), t0)
	tb.tick(t0.Add(time.Minute))
	if s := tb.stats(); s.Tombstones != 0 {
		t.Fatalf("aged tombstone not expired with its origin: %+v", s)
	}
	old.AgeMS = tTTL.Milliseconds()
	applyD(tb, delta("B", old), t0)
	if s := tb.stats(); s.Tombstones != 0 {
		t.Fatalf("expired tombstone accepted: %+v", s)
	}
}

func TestTableForgetsDepartedOwner(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0)
	tb.nodeDown("B", t0)
	tb.tick(t0.Add(tGrace))
	tb.tick(t0.Add(tTTL))
	if s := tb.stats(); s.Owners != 0 || s.PendingRecords != 0 {
		t.Fatalf("departed owner not forgotten: %+v", s)
	}
}

func TestTableRejectsMalformed(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	bad := []wireRecord{
		rec(Endpoint{Network: "net1", EndpointID: "x", IP: "fe80::1", MAC: "02:42:0a:00:01:05", VTEP: "1.2.3.4"}, bInc1, 1),
		rec(Endpoint{Network: "net1", EndpointID: "x", IP: "10.0.0.1/24", MAC: "02:42:0a:00:01:05", VTEP: "1.2.3.4"}, bInc1, 1),
		rec(Endpoint{Network: "net1", EndpointID: "x", IP: "10.0.0.1", MAC: "zz", VTEP: "1.2.3.4"}, bInc1, 1),
		rec(Endpoint{Network: "net1", EndpointID: "x", IP: "10.0.0.1", MAC: "02:42:0a:00:01:05", VTEP: ""}, bInc1, 1),
		rec(Endpoint{Network: "", EndpointID: "x", IP: "10.0.0.1", MAC: "02:42:0a:00:01:05", VTEP: "1.2.3.4"}, bInc1, 1),
		rec(ep(1), 0, 1),
	}
	for i, r := range bad {
		if evs := applyD(tb, delta("B", r), t0); len(evs) != 0 {
			t.Fatalf("malformed record %d accepted: %+v", i, evs)
		}
	}
	if s := tb.stats(); s.Rejected != uint64(len(bad)) || s.PendingRecords != 0 {
		t.Fatalf("stats %+v", s)
	}
	// MAC case is canonicalised.
	e := ep(3)
	e.MAC = "02:42:0A:00:01:03"
	wantEvents(t, "canonical", applyD(tb, delta("B", rec(e, bInc1, 1)), t0), added("B", ep(3)))
}

func TestWireRoundTrip(t *testing.T) {
	st := wireState{From: "A", Inc: 7, Clock: 9, Groups: []wireGroup{delta("A", rec(ep(1), 7, 1), tomb(ep(2), 7, 9))}}
	buf, err := encodeMsg(msgState, st)
	if err != nil {
		t.Fatal(err)
	}
	typ, body, err := decodeMsg(buf)
	if err != nil || typ != msgState {
		t.Fatalf("decodeMsg: %v %d", err, typ)
	}
	got, err := decodeState(body)
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("decodeState: %v\n got %+v\nwant %+v", err, got, st)
	}
	if _, _, err := decodeMsg([]byte{9, 1, '{'}); err == nil {
		t.Fatal("bad version accepted")
	}
	if inc, err := decodeMeta(encodeMeta(42)); err != nil || inc != 42 {
		t.Fatalf("meta: %d %v", inc, err)
	}
	if _, err := decodeMeta([]byte("junk")); err == nil {
		t.Fatal("junk meta accepted")
	}
}

// A node whose plugin stops (restart, upgrade, disable) while its host stays in
// the swarm keeps its records for the host-up grace: its containers' data plane
// still works. Once the swarm reports the host gone, the short grace applies.
func TestTableHostUpGraceAndHostGone(t *testing.T) {
	const hostUp = 10 * time.Minute
	tb := newTable("self", selfInc, tGrace, hostUp, tTTL)
	tb.nodeUp("B", "192.168.77.20", bInc1, t0) // gossip address differs from the VTEP
	tb.nodeUp("C", "192.168.77.3", 5000, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0)
	c := ep(6)
	c.VTEP = "192.168.77.3"
	applyD(tb, delta("C", rec(c, 5000, 1)), t0)

	tb.nodeDown("B", t0)
	wantEvents(t, "short grace over, host not reported gone", tb.tick(t0.Add(5*tGrace)))
	wantRemote(t, tb, ep(5), c)

	// The swarm reports B's host gone (by its VTEP, not its gossip address):
	// the records go GracePeriod later.
	t1 := t0.Add(time.Minute)
	if n, evs := tb.hostGone("192.168.77.2", t1); n != 1 || len(evs) != 0 {
		t.Fatalf("hostGone matched %d owners, events %+v; want 1, none", n, evs)
	}
	wantEvents(t, "within grace of the report", tb.tick(t1.Add(tGrace-time.Millisecond)))
	wantEvents(t, "grace after the report", tb.tick(t1.Add(tGrace)), removed("B", ep(5)))
	wantRemote(t, tb, c)

	// C: reported gone while still a live member: nothing changes until it
	// fails, then the short grace applies from its failure.
	if n, _ := tb.hostGone("192.168.77.3", t1); n != 1 {
		t.Fatalf("hostGone by gossip address matched %d owners", n)
	}
	wantRemote(t, tb, c)
	t2 := t1.Add(time.Hour)
	wantEvents(t, "C fails", tb.nodeDown("C", t2))
	wantEvents(t, "C grace over", tb.tick(t2.Add(tGrace)), removed("C", c))

	// Without a report the host-up grace bounds how long records stay.
	tb2 := newTable("self", selfInc, tGrace, hostUp, tTTL)
	tb2.nodeUp("B", "", bInc1, t0)
	applyD(tb2, delta("B", rec(ep(5), bInc1, 1)), t0)
	tb2.nodeDown("B", t0)
	wantEvents(t, "host back before failure", tb2.hostBack("192.168.77.2", t0))
	wantEvents(t, "within host-up grace", tb2.tick(t0.Add(hostUp-time.Millisecond)))
	wantEvents(t, "host-up grace over", tb2.tick(t0.Add(hostUp)), removed("B", ep(5)))

	// A report withdrawn by hostBack (the host rejoined the swarm) restores
	// the long grace.
	tb3 := newTable("self", selfInc, tGrace, hostUp, tTTL)
	tb3.nodeUp("B", "", bInc1, t0)
	applyD(tb3, delta("B", rec(ep(5), bInc1, 1)), t0)
	tb3.nodeDown("B", t0)
	tb3.hostGone("192.168.77.2", t0)
	wantEvents(t, "host back", tb3.hostBack("192.168.77.2", t0.Add(time.Second)))
	wantEvents(t, "after the short grace", tb3.tick(t0.Add(2*tGrace)))
	wantRemote(t, tb3, ep(5))
	if n, _ := tb3.hostGone("", t0); n != 0 {
		t.Fatalf("empty address matched %d owners", n)
	}
}

// TestTableDeltaSyncIsIncremental: a delta's events are those of the records it carries only, and match
// what a full sync would announce: after any sequence of deltas (adds, moves, removals, a record of a
// superseded incarnation, one of an owner down past its grace), a full sync has nothing left to say.
func TestTableDeltaSyncIsIncremental(t *testing.T) {
	tb := newTestTable()
	wantEvents(t, "nodeUp", tb.nodeUp("B", "", bInc1, t0))
	now := t0
	seq := uint64(0)
	next := func() uint64 { seq++; return seq }
	for i := 0; i < 200; i++ {
		now = now.Add(10 * time.Millisecond)
		e := ep(i % 37)
		var g wireGroup
		switch i % 5 {
		case 0, 1:
			g = delta("B", rec(e, bInc1, next()))
		case 2:
			e.VTEP = "192.168.77.9" // moved
			g = delta("B", rec(e, bInc1, next()), rec(ep((i+1)%37), bInc1, next()))
		case 3:
			g = delta("B", tomb(e, bInc1, next()))
		case 4:
			g = delta("B", rec(e, bInc1-1, next())) // an older incarnation: refused
		}
		evs := applyD(tb, g, now)
		if len(evs) > 2*len(g.Records) { // a changed record: Removed, then Added
			t.Fatalf("delta %d of %d records announced %d events", i, len(g.Records), len(evs))
		}
		tb.mu.Lock()
		rest := tb.sync(tb.owners["B"], now)
		tb.mu.Unlock()
		wantEvents(t, fmt.Sprintf("full sync after delta %d", i), rest)
	}
	// The owner goes down: its records stay for the grace period, then tick's full sync removes them.
	tb.nodeDown("B", now)
	shown := len(tb.remote("net1"))
	if shown == 0 {
		t.Fatal("nothing shown before the owner went down")
	}
	evs := tb.tick(now.Add(tGrace + time.Second))
	if len(evs) != shown || len(tb.remote("net1")) != 0 {
		t.Fatalf("tick after the grace: %d events for %d shown, %d left", len(evs), shown, len(tb.remote("net1")))
	}
}
