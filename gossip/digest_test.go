package gossip

import (
	"slices"
	"testing"
	"time"

	"github.com/vxsafe/overlay/internal/porttest"
)

// TestTableStateCarriesDigests: a state relays the other live owners as digests, not records; a
// receiver pulls exactly the owners whose records it does not hold as the sender does, and after
// merging the answer it agrees.
func TestTableStateCarriesDigests(t *testing.T) {
	a := newTestTable()
	a.localPublish(ep(1), t0)
	a.nodeUp("B", "", bInc1, t0)
	a.nodeUp("C", "", 5000, t0)
	a.nodeUp("D", "", 6000, t0)
	applyD(a, delta("B", rec(ep(5), bInc1, 1), rec(ep(6), bInc1, 2), tomb(ep(7), bInc1, 3)), t0)
	applyD(a, delta("C", rec(ep(8), 5000, 1)), t0)
	applyD(a, delta("D", rec(ep(9), 6000, 1)), t0)
	a.nodeDown("D", t0)

	s := a.state(t0)
	if len(s.Groups) != 1 || s.Groups[0].Owner != "self" || len(s.Groups[0].Records) != 1 {
		t.Fatalf("state groups: %+v", s.Groups)
	}
	owners := func(ds []wireDigest) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.Owner)
		}
		slices.Sort(out)
		return out
	}
	if got := owners(s.Digests); !slices.Equal(got, []string{"B", "C"}) {
		t.Fatalf("digests of %v, want B and C (D is down)", got)
	}

	// The receiver holds C as the sender does, B without the tombstone and with an older ep6.
	r := newTable("R", 7000, tGrace, 0, tTTL)
	r.nodeUp("B", "", bInc1, t0)
	r.nodeUp("C", "", 5000, t0)
	applyD(r, delta("B", rec(ep(5), bInc1, 1)), t0)
	applyD(r, delta("C", rec(ep(8), 5000, 1)), t0)
	if got := r.mismatched(s); !slices.Equal(got, []string{"B"}) {
		t.Fatalf("mismatched = %v, want [B]", got)
	}
	applyD(r, delta("B", rec(ep(6), bInc1, 2)), t0)
	if got := r.mismatched(s); !slices.Equal(got, []string{"B"}) {
		t.Fatalf("mismatched without the tombstone = %v, want [B]", got)
	}
	// An owner the receiver has never heard of is pulled too.
	s.Digests = append(s.Digests, wireDigest{Owner: "E", Count: 1, Sum: 42})
	if got := r.mismatched(s); !slices.Equal(got, []string{"B", "E"}) {
		t.Fatalf("mismatched with an unknown owner = %v, want [B E]", got)
	}

	// The answer is merged as relayed records, and then the digests agree.
	wantEvents(t, "pulled groups", r.applyGroups(a.groups([]string{"B", "C", "D", "self", "nobody"}, t0), t0))
	if got := r.mismatched(a.state(t0)); len(got) != 0 {
		t.Fatalf("mismatched after the pull = %v", got)
	}
	wantRemote(t, r, ep(5), ep(6), ep(8))

	// A pulled group is never authoritative for its owner: one missing a record removes nothing.
	wantEvents(t, "partial group", r.applyGroups([]wireGroup{delta("B", rec(ep(5), bInc1, 1))}, t0))
	wantRemote(t, r, ep(5), ep(6), ep(8))
}

// TestTableTickSettledOwner: tick leaves the records of a settled owner alone, yet still removes
// what time ends: a previous incarnation's window, and an owner that went down.
func TestTableTickSettledOwner(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", rec(ep(5), bInc1, 1), rec(ep(6), bInc1, 2)), t0)
	wantEvents(t, "settled tick", tb.tick(t0.Add(time.Second)))
	if !tb.owners["B"].settledLocked() {
		t.Fatal("a live owner with no window open is not settled")
	}
	// B restarts: its old records stay visible for the grace period, then go, by tick alone.
	tb.nodeUp("B", "", bInc2, t0.Add(2*time.Second))
	applyD(tb, delta("B", rec(ep(5), bInc2, 1)), t0.Add(2*time.Second))
	wantEvents(t, "within the window", tb.tick(t0.Add(3*time.Second)))
	wantRemote(t, tb, ep(5), ep(6))
	wantEvents(t, "window over", tb.tick(t0.Add(2*time.Second+tGrace)), removed("B", ep(6)))
	wantRemote(t, tb, ep(5))
	wantEvents(t, "down", tb.nodeDown("B", t0.Add(time.Minute)))
	wantEvents(t, "grace over", tb.tick(t0.Add(time.Minute+tGrace)), removed("B", ep(5)))
}

// TestAgentPullsWhatDigestsMiss: a member that joins after the broadcasts ended, with no push/pull
// of its own and none from the owner, learns the owner's endpoints from another member's digest and
// a pull.
func TestAgentPullsWhatDigestsMiss(t *testing.T) {
	never := func(c *Config) { c.PushPullInterval = time.Hour }
	a := startNode(t, "A", porttest.Free(t), keyA, never)
	b := startNode(t, "B", porttest.Free(t), keyA, never)
	if _, err := b.Join([]string{a.addr}); err != nil {
		t.Fatalf("B.Join: %v", err)
	}
	for i := 1; i <= 20; i++ {
		a.Publish(testEP(i))
	}
	waitFor(t, "B has A's endpoints", func() bool { return len(b.Remote("netX")) == 20 })
	waitFor(t, "A's broadcasts done", func() bool { return a.queue.NumQueued() == 0 && b.queue.NumQueued() == 0 })

	d := startNode(t, "D", porttest.Free(t), keyA, never)
	if n, err := d.Join([]string{b.addr}); n != 1 || err != nil {
		t.Fatalf("D.Join: %d, %v", n, err)
	}
	waitFor(t, "D has A's endpoints", func() bool { return len(d.Remote("netX")) == 20 })
	if d.pullsSent.Load() == 0 {
		t.Fatal("D has A's endpoints without a pull")
	}
	if ev, _ := d.rec.last("ep07"); ev.Node != "A" || ev.Endpoint != withVTEP(testEP(7)) {
		t.Fatalf("D's event for ep07: %+v", ev)
	}
}
