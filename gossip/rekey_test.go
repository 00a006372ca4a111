package gossip

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsafe/overlay/internal/porttest"
)

// TestAgentRekey: three members of a keyed network rotate its key with the authority's three notices;
// every endpoint stays visible throughout (no Removed event), the old key signs nothing afterwards, and
// a notice that the authority did not sign, or that is sealed for another member, changes nothing.
func TestAgentRekey(t *testing.T) {
	apub, apriv, _ := ed25519.GenerateKey(rand.Reader)
	k0 := bytes.Repeat([]byte{0x10}, KeySize)
	k1 := bytes.Repeat([]byte{0x11}, KeySize)
	var saved sync.Map
	persist := func(c *Config) {
		c.OnNetworkKeys = func(network string, nk NetworkKeys, _ KeyNotice) { saved.Store(c.NodeName, nk.Epoch) }
	}
	a := startNode(t, "A", porttest.Free(t), nil, persist)
	b := startNode(t, "B", porttest.Free(t), nil, persist)
	c := startNode(t, "C", porttest.Free(t), nil, persist)
	genesis := NetworkKeys{Primary: k0, Authority: apub}
	for _, n := range []*node{a, b, c} {
		if err := n.SetNetworkKeys("netX", genesis); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Join([]string{a.addr}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join([]string{a.addr}); err != nil {
		t.Fatal(err)
	}
	b.Publish(testEP(2))
	c.Publish(testEP(3))
	waitFor(t, "A sees B's and C's endpoints", func() bool { return len(a.Remote("netX")) == 2 })
	waitFor(t, "A knows B's and C's boot keys", func() bool {
		hs := a.Holders("netX")
		return len(hs) == 2 && hs[0].Sealable && hs[1].Sealable && hs[0].Epoch == 0 && hs[1].Epoch == 0
	})

	id0, id1 := KeyID(k0), KeyID(k1)
	keys := map[string][]byte{id0: k0, id1: k1}

	// A notice signed by someone else, and one for C sent to B, are refused.
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	bad := SignNotice(otherPriv, KeyNotice{Network: "netX", Epoch: 1, Primary: id1})
	if err := a.Rekey("B", bad, keys, 2*time.Second); err == nil || !strings.Contains(err.Error(), "did not acknowledge") {
		t.Fatalf("Rekey with a forged notice: %v", err)
	}

	steps := []KeyNotice{
		{Network: "netX", Epoch: 1, Primary: id0, Accept: []string{id1}},
		{Network: "netX", Epoch: 2, Primary: id1, Accept: []string{id0}},
		{Network: "netX", Epoch: 3, Primary: id1},
	}
	local := []NetworkKeys{
		{Primary: k0, Accept: [][]byte{k1}, Epoch: 1, Authority: apub},
		{Primary: k1, Accept: [][]byte{k0}, Epoch: 2, Authority: apub},
		{Primary: k1, Epoch: 3, Authority: apub, History: [][]byte{k0}},
	}
	for i, n := range steps {
		n = SignNotice(apriv, n)
		for _, to := range []string{"B", "C"} {
			if err := a.Rekey(to, n, keys, 5*time.Second); err != nil {
				t.Fatalf("epoch %d: %v", n.Epoch, err)
			}
		}
		if err := a.SetNetworkKeys("netX", local[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"B", "C"} {
		if e, _ := saved.Load(name); e != uint64(3) {
			t.Errorf("%s persisted epoch %v, want 3", name, e)
		}
	}
	// New endpoints, signed with the new key, arrive; nothing was removed on the way.
	b.Publish(testEP(4))
	waitFor(t, "A sees B's new endpoint", func() bool { return len(a.Remote("netX")) == 3 })
	for _, n := range []*node{a, b, c} {
		for _, ev := range n.rec.all() {
			if ev.Kind == Removed {
				t.Errorf("%s: endpoint removed during the rotation: %+v", n.cfg.NodeName, ev.Event)
			}
		}
	}
	// A member still signing with the old key (it missed the rotation, or was removed) is refused.
	x := startNode(t, "X", porttest.Free(t), nil, nil)
	if err := x.SetNetworkKeys("netX", genesis); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Join([]string{a.addr}); err != nil {
		t.Fatal(err)
	}
	x.Publish(testEP(9))
	waitFor(t, "A refuses X's old-key record", func() bool { return a.Stats().RefusedRecords > 0 })
	if got := a.Remote("netX"); len(got) != 3 {
		t.Fatalf("A's endpoints after X published with the old key: %+v", got)
	}
}

// TestAgentRequestKeys: a member that lags asks the members at the given addresses; the one asked hears
// who asked, from which address and at which epoch; a request under a key it never held is dropped.
func TestAgentRequestKeys(t *testing.T) {
	apub, _, _ := ed25519.GenerateKey(rand.Reader)
	k0 := bytes.Repeat([]byte{0x20}, KeySize)
	type req struct {
		from, addr string
		epoch      uint64
	}
	got := make(chan req, 4)
	a := startNode(t, "A", porttest.Free(t), nil, func(c *Config) {
		c.OnKeyRequest = func(network, from, addr string, epoch uint64) { got <- req{from, addr, epoch} }
	})
	b := startNode(t, "B", porttest.Free(t), nil, nil)
	x := startNode(t, "X", porttest.Free(t), nil, nil)
	for _, n := range []*node{a, b} {
		if err := n.SetNetworkKeys("netX", NetworkKeys{Primary: k0, Authority: apub}); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.SetNetworkKeys("netX", NetworkKeys{Primary: bytes.Repeat([]byte{0x21}, KeySize)}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{b, x} {
		if _, err := n.Join([]string{a.addr}); err != nil {
			t.Fatal(err)
		}
	}
	if n := x.RequestKeys("netX", []string{"127.0.0.1"}); n == 0 {
		t.Fatal("X sent no request")
	}
	if n := b.RequestKeys("netX", []string{"127.0.0.1"}); n == 0 {
		t.Fatal("B sent no request")
	}
	select {
	case r := <-got:
		if r.from != "B" || r.addr != "127.0.0.1" || r.epoch != 0 {
			t.Fatalf("request %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("A heard no request from B")
	}
	select {
	case r := <-got:
		t.Fatalf("a request under a key A never held was heard: %+v", r)
	case <-time.After(500 * time.Millisecond):
	}
	if n := b.RequestKeys("other", []string{"127.0.0.1"}); n != 0 {
		t.Fatalf("a request for a network B has no key of was sent to %d members", n)
	}
}
