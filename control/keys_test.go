package control

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"testing"

	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

// TestKeysOfRecord: a network record's keys come from its options until they rotate, then from Keys,
// which keeps every key and the authority's notice through the store's encoding.
func TestKeysOfRecord(t *testing.T) {
	k0, k1, auth := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	rec := store.NetworkRecord{ID: "n1", Options: map[string]string{
		netconfig.OptKey: hex.EncodeToString(k0), netconfig.OptKeyAuthority: hex.EncodeToString(auth)}}
	nk, notice, err := keysOf(rec)
	if err != nil || !bytes.Equal(nk.Primary, k0) || !bytes.Equal(nk.Authority, auth) || nk.Epoch != 0 || notice != nil {
		t.Fatalf("keys from options: %+v %v %v", nk, notice, err)
	}
	rotated := gossip.NetworkKeys{Primary: k1, Accept: [][]byte{k0}, Epoch: 2, Authority: auth, History: [][]byte{k0}}
	n := gossip.KeyNotice{Network: "n1", Epoch: 2, Primary: gossip.KeyID(k1), Accept: []string{gossip.KeyID(k0)}, Sig: []byte{9}}
	sk := toStore(rotated, &n)
	rec.Keys = &sk
	got, gotNotice, err := keysOf(rec)
	if err != nil || !reflect.DeepEqual(got, rotated) || !reflect.DeepEqual(*gotNotice, n) {
		t.Fatalf("rotated keys: %+v %+v %v", got, gotNotice, err)
	}
	if nk, _, err := keysOf(store.NetworkRecord{ID: "n2"}); err != nil || nk.Primary != nil {
		t.Fatalf("a network without a key: %+v %v", nk, err)
	}
	rec.Keys = nil
	rec.Options[netconfig.OptKey] = "zz"
	if _, _, err := keysOf(rec); err == nil {
		t.Fatal("a malformed key was read")
	}
}
