package gossip

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

var (
	netKeyA = bytes.Repeat([]byte{0xa1}, KeySize)
	netKeyB = bytes.Repeat([]byte{0xb2}, KeySize)
)

// signed is r as owner would sign it under key.
func signed(key []byte, owner string, r wireRecord) wireRecord {
	r.KeyID = KeyID(key)
	r.Tag = recordTag(key, owner, r)
	return r
}

func declare(t *testing.T, tb *table, network string, nk NetworkKeys) ([]Event, wireGroup) {
	t.Helper()
	kr, err := newKeyring(nk)
	if err != nil {
		t.Fatal(err)
	}
	return tb.setKeys(network, kr, t0)
}

func wantRefusal(t *testing.T, tb *table, reason string) {
	t.Helper()
	refs := tb.takeRefusals()
	if len(refs) != 1 || refs[0].Reason != reason {
		t.Fatalf("refusals %+v, want one %q", refs, reason)
	}
}

func TestAuthKeyedNetworkAcceptsOnlySignedRecords(t *testing.T) {
	tb := newTestTable()
	declare(t, tb, "net1", NetworkKeys{Primary: netKeyA})
	tb.nodeUp("B", "192.168.77.2", bInc1, t0)

	wantEvents(t, "unsigned", applyD(tb, delta("B", rec(ep(5), bInc1, 1)), t0))
	wantRefusal(t, tb, refuseUnsigned)

	wantEvents(t, "other key", applyD(tb, delta("B", signed(netKeyB, "B", rec(ep(5), bInc1, 1))), t0))
	wantRefusal(t, tb, refuseUnknownKey)

	// A rogue that knows the key's ID, not the key.
	forged := rec(ep(5), bInc1, 1)
	forged.KeyID, forged.Tag = KeyID(netKeyA), bytes.Repeat([]byte{1}, 32)
	wantEvents(t, "forged tag", applyD(tb, delta("B", forged), t0))
	wantRefusal(t, tb, refuseBadTag)

	// Signed for another owner: the tag binds the owner.
	wantEvents(t, "other owner", applyD(tb, delta("B", signed(netKeyA, "C", rec(ep(5), bInc1, 1))), t0))
	wantRefusal(t, tb, refuseBadTag)

	// A changed field breaks the tag.
	tampered := signed(netKeyA, "B", rec(ep(5), bInc1, 1))
	tampered.MAC = "02:42:66:66:66:66"
	wantEvents(t, "tampered", applyD(tb, delta("B", tampered), t0))
	wantRefusal(t, tb, refuseBadTag)

	wantEvents(t, "signed", applyD(tb, delta("B", signed(netKeyA, "B", rec(ep(5), bInc1, 1))), t0), added("B", ep(5)))
	// A forged removal cannot take it away.
	wantEvents(t, "unsigned tombstone", applyD(tb, delta("B", tomb(ep(5), bInc1, 2)), t0))
	wantRefusal(t, tb, refuseUnsigned)
	wantRemote(t, tb, ep(5))
	if s := tb.stats(); s.Refused != 6 {
		t.Fatalf("refused %d, want 6", s.Refused)
	}
}

func TestAuthUnkeyedAndUndeclaredNetworks(t *testing.T) {
	tb := newTestTable()
	tb.nodeUp("B", "", bInc1, t0)
	// Undeclared: held unchecked (it matters to nothing until the network is created here).
	wantEvents(t, "undeclared", applyD(tb, delta("B", rec(ep(5), bInc1, 1), signed(netKeyA, "B", rec(ep(6), bInc1, 2))), t0),
		added("B", ep(5)), added("B", ep(6)))
	// Declared keyed: what the key does not sign goes.
	evs, _ := declare(t, tb, "net1", NetworkKeys{Primary: netKeyA})
	wantEvents(t, "declared", evs, removed("B", ep(5)))
	wantRefusal(t, tb, refuseUnsigned)
	wantRemote(t, tb, ep(6))

	// An unkeyed network (created before keys) takes unsigned records.
	tb2 := newTestTable()
	declare(t, tb2, "net1", NetworkKeys{})
	tb2.nodeUp("B", "", bInc1, t0)
	wantEvents(t, "unkeyed", applyD(tb2, delta("B", rec(ep(5), bInc1, 1)), t0), added("B", ep(5)))
}

func TestAuthOwnRecordsSignedAndResignedOnRotation(t *testing.T) {
	a := newTable("A", selfInc, tGrace, 0, tTTL)
	b := newTestTable()
	for _, tb := range []*table{a, b} {
		declare(t, tb, "net1", NetworkKeys{Primary: netKeyA})
	}
	b.nodeUp("A", "", selfInc, t0)
	d, _ := a.localPublish(ep(5), t0)
	if d.Records[0].KeyID != KeyID(netKeyA) {
		t.Fatalf("own record not signed: %+v", d.Records[0])
	}
	wantEvents(t, "signed by A", applyD(b, d, t0), added("A", ep(5)))

	// Rotation, step 1: everyone accepts both keys; step 2: A signs with the new one.
	declare(t, b, "net1", NetworkKeys{Primary: netKeyA, Accept: [][]byte{netKeyB}})
	_, re := declare(t, a, "net1", NetworkKeys{Primary: netKeyB, Accept: [][]byte{netKeyA}})
	if len(re.Records) != 1 || re.Records[0].KeyID != KeyID(netKeyB) || re.Records[0].Seq <= d.Records[0].Seq {
		t.Fatalf("re-signed records %+v", re.Records)
	}
	wantEvents(t, "re-signed", applyD(b, re, t0))
	wantRemote(t, b, ep(5))
	// Step 3: the old key is dropped; the re-signed record stays, an old-key record is refused.
	evs, _ := declare(t, b, "net1", NetworkKeys{Primary: netKeyB})
	wantEvents(t, "old key dropped", evs)
	wantRemote(t, b, ep(5))
	wantEvents(t, "old key", applyD(b, delta("A", signed(netKeyA, "A", rec(ep(7), selfInc, 99))), t0))
	wantRefusal(t, b, refuseUnknownKey)
}

func TestAuthReplayAfterForgottenRemoval(t *testing.T) {
	tb := newTestTable()
	declare(t, tb, "net1", NetworkKeys{Primary: netKeyA})
	tb.nodeUp("B", "", bInc1, t0)
	add := signed(netKeyA, "B", rec(ep(5), bInc1, 1))
	applyD(tb, delta("B", add), t0)
	applyD(tb, delta("B", signed(netKeyA, "B", tomb(ep(5), bInc1, 2))), t0)
	wantRemote(t, tb)
	tb.tick(t0.Add(tTTL + time.Second)) // the removal is forgotten
	// The genuine, signed add, sent again by someone who recorded it.
	wantEvents(t, "replay", applyD(tb, delta("B", add), t0.Add(tTTL+2*time.Second)))
	wantRefusal(t, tb, refuseReplay)
	// B's next records are newer and pass.
	wantEvents(t, "new", applyD(tb, delta("B", signed(netKeyA, "B", rec(ep(6), bInc1, 3))), t0.Add(tTTL+2*time.Second)),
		added("B", ep(6)))
}

func TestAuthManifestGuardsCompleteness(t *testing.T) {
	tb := newTestTable()
	declare(t, tb, "net1", NetworkKeys{Primary: netKeyA})
	tb.nodeUp("B", "", bInc1, t0)
	applyD(tb, delta("B", signed(netKeyA, "B", rec(ep(5), bInc1, 1))), t0)
	// A forged full state "from B" listing nothing would remove B's endpoint; without B's manifest it
	// removes nothing.
	forged := wireState{From: "B", Inc: bInc1, Clock: 50}
	wantEvents(t, "forged state", tb.applyState(forged, t0))
	wantRemote(t, tb, ep(5))
	forged.Manifests = []wireManifest{{Network: "net1", KeyID: KeyID(netKeyA), Tag: bytes.Repeat([]byte{7}, 32)}}
	wantEvents(t, "forged manifest", tb.applyState(forged, t0))
	wantRemote(t, tb, ep(5))
	// B's own state, signed, does.
	real := wireState{From: "B", Inc: bInc1, Clock: 50,
		Manifests: []wireManifest{{Network: "net1", KeyID: KeyID(netKeyA)}}}
	real.Manifests[0].Tag = manifestTag(netKeyA, "B", real.Manifests[0], bInc1, 50)
	wantEvents(t, "B's state", tb.applyState(real, t0), removed("B", ep(5)))

	// And a node's own state carries its manifests.
	a := newTable("A", selfInc, tGrace, 0, tTTL)
	declare(t, a, "net1", NetworkKeys{Primary: netKeyA})
	declare(t, a, "net2", NetworkKeys{})
	s := a.state(t0)
	if len(s.Manifests) != 1 || s.Manifests[0].Network != "net1" ||
		!bytes.Equal(s.Manifests[0].Tag, manifestTag(netKeyA, "A", s.Manifests[0], s.Inc, s.Clock)) {
		t.Fatalf("manifests %+v", s.Manifests)
	}
}

func TestAuthVTEPMustBeOwnersAddress(t *testing.T) {
	tb := newTestTable()
	tb.vtepCheck = true
	tb.nodeUp("rogue", "192.168.77.200", bInc1, t0)
	wantEvents(t, "foreign VTEP", applyD(tb, delta("rogue", rec(ep(5), bInc1, 1)), t0))
	wantRefusal(t, tb, refuseVTEP)
	tb.nodeUp("B", "192.168.77.2", bInc2, t0)
	wantEvents(t, "own VTEP", applyD(tb, delta("B", rec(ep(5), bInc2, 1)), t0), added("B", ep(5)))
}

func TestNewKeyringRefusesBadKeys(t *testing.T) {
	for _, nk := range []NetworkKeys{{Primary: []byte("short")}, {Accept: [][]byte{netKeyA}}, {Primary: netKeyA, Accept: [][]byte{{1}}}} {
		if _, err := newKeyring(nk); err == nil {
			t.Errorf("newKeyring(%v) accepted", nk)
		}
	}
	if id := KeyID(netKeyA); len(id) != 12 || strings.Contains(string(netKeyA), id) {
		t.Errorf("KeyID %q", id)
	}
}

// TestAuthRetiredKeyGrace: the rotation step that retires a key keeps the records it signed, held from
// before, for retireGrace (their owners' records signed again may still be on the way), accepts nothing
// new signed by it, and then drops those that were not replaced.
func TestAuthRetiredKeyGrace(t *testing.T) {
	tb := newTestTable()
	declare(t, tb, "net1", NetworkKeys{Primary: netKeyA, Epoch: 1})
	tb.nodeUp("B", "192.168.77.2", bInc1, t0)
	tb.nodeUp("C", "192.168.77.2", 5000, t0)
	applyD(tb, delta("B", signed(netKeyA, "B", rec(ep(5), bInc1, 1))), t0)
	applyD(tb, delta("C", signed(netKeyA, "C", rec(ep(6), 5000, 1))), t0)
	declare(t, tb, "net1", NetworkKeys{Primary: netKeyB, Accept: [][]byte{netKeyA}, Epoch: 2})
	evs, _ := declare(t, tb, "net1", NetworkKeys{Primary: netKeyB, History: [][]byte{netKeyA}, Epoch: 3})
	wantEvents(t, "retiring the old key", evs)
	wantRemote(t, tb, ep(5), ep(6))
	// Nothing new is accepted under the retired key.
	wantEvents(t, "a new record under the retired key", applyD(tb, delta("C", signed(netKeyA, "C", rec(ep(7), 5000, 2))), t0))
	wantRefusal(t, tb, refuseUnknownKey)
	// B's record signed again arrives late: it replaces the old one without churn.
	wantEvents(t, "B signed again", applyD(tb, delta("B", signed(netKeyB, "B", rec(ep(5), bInc1, 2))), t0.Add(time.Second)))
	wantEvents(t, "within the grace", tb.tick(t0.Add(retireGrace-time.Second)))
	wantRemote(t, tb, ep(5), ep(6))
	// C's never came: its record goes when the grace ends.
	wantEvents(t, "grace over", tb.tick(t0.Add(retireGrace)), removed("C", ep(6)))
	wantRemote(t, tb, ep(5))
	// A key change that is not a rotation (the keys replaced) drops at once.
	evs, _ = declare(t, tb, "net1", NetworkKeys{Primary: netKeyA, Epoch: 4})
	wantEvents(t, "keys replaced", evs, removed("B", ep(5)))
}
