package control

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/driver"
	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

var _ driver.KeyedControl = (*Plane)(nil)

// netKeys is what the Plane knows of one network's keys.
type netKeys struct {
	keys   gossip.NetworkKeys
	notice *gossip.KeyNotice // the authority's notice of this epoch (nil at epoch 0)
	local  bool              // declared by the driver (the network is on this node)
}

// Declare gives the control plane a network of this node: its records are signed and checked with the
// network's keys (see gossip.NetworkKeys). A network without a key stays unkeyed.
func (c *Plane) Declare(rec store.NetworkRecord) {
	nk, notice, err := keysOf(rec)
	log := c.log.WithField("network", rec.ID)
	if err != nil {
		log.WithError(err).Error("network keys unreadable: its records are neither signed nor checked")
		nk, notice = gossip.NetworkKeys{}, nil
	}
	c.mu.Lock()
	cur, ok := c.nets[rec.ID]
	if ok && cur.keys.Epoch > nk.Epoch && slices.Equal(cur.keys.Authority, nk.Authority) {
		nk, notice = cur.keys, cur.notice // the authority's record is newer
	}
	c.nets[rec.ID] = &netKeys{keys: nk, notice: notice, local: true}
	a := c.agent
	c.mu.Unlock()
	if nk.Primary == nil {
		log.Warn("network has no gossip key: its endpoint records are not signed (a network allocated before networks had keys)")
	}
	if a != nil {
		c.setAgentKeys(a, rec.ID, nk)
	}
	if nk.Authority != nil && nk.Epoch == 0 {
		// Created here after a rotation? A manager that holds newer keys answers; the others stay silent.
		go c.behind(rec.ID, "the network was created on this node (after a key rotation?)")
	}
}

// Forget takes a network that was removed from this node away (the authority keeps declaring it).
func (c *Plane) Forget(netID string) {
	c.mu.Lock()
	_, held := c.auths[netID]
	if nk, ok := c.nets[netID]; ok {
		nk.local = false
		if !held {
			delete(c.nets, netID)
		}
	}
	a := c.agent
	c.mu.Unlock()
	if a != nil && !held {
		a.ForgetNetwork(netID)
	}
}

// Authority tells the control plane that this manager allocated a network and holds its key authority.
func (c *Plane) Authority(netID string, rec store.AuthorityRecord) {
	nk, notice, err := fromStore(rec.Keys)
	if err != nil {
		c.log.WithError(err).WithField("network", netID).Error("key authority unreadable: the network's keys cannot rotate from here")
		return
	}
	c.mu.Lock()
	c.auths[netID] = rec
	cur, ok := c.nets[netID]
	if !ok || cur.keys.Epoch < nk.Epoch {
		c.nets[netID] = &netKeys{keys: nk, notice: notice, local: ok && cur.local}
	}
	a := c.agent
	c.mu.Unlock()
	if a != nil && (!ok || cur.keys.Epoch < nk.Epoch) {
		c.setAgentKeys(a, netID, nk)
	}
}

func (c *Plane) setAgentKeys(a *gossip.Agent, netID string, nk gossip.NetworkKeys) {
	if err := a.SetNetworkKeys(netID, nk); err != nil {
		c.log.WithError(err).WithField("network", netID).Error("network keys refused by the gossip agent")
	}
}

// keysOf reads a network record's keys: the rotated ones in Keys, else the first ones in its options.
func keysOf(rec store.NetworkRecord) (gossip.NetworkKeys, *gossip.KeyNotice, error) {
	if rec.Keys != nil {
		return fromStore(*rec.Keys)
	}
	s, ok := rec.Options[netconfig.OptKey]
	if !ok {
		return gossip.NetworkKeys{}, nil, nil
	}
	k, err := netconfig.ParseKey(s)
	if err != nil {
		return gossip.NetworkKeys{}, nil, err
	}
	nk := gossip.NetworkKeys{Primary: k}
	if a, ok := rec.Options[netconfig.OptKeyAuthority]; ok {
		if nk.Authority, err = netconfig.ParseKeyAuthority(a); err != nil {
			return gossip.NetworkKeys{}, nil, err
		}
	}
	return nk, nil, nil
}

func fromStore(s store.NetworkKeys) (gossip.NetworkKeys, *gossip.KeyNotice, error) {
	dec := func(h string) ([]byte, error) {
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("stored network key: %w", err)
		}
		return b, nil
	}
	var nk gossip.NetworkKeys
	var err error
	nk.Epoch = s.Epoch
	if nk.Primary, err = dec(s.Primary); err != nil {
		return nk, nil, err
	}
	if s.Authority != "" {
		if nk.Authority, err = dec(s.Authority); err != nil {
			return nk, nil, err
		}
	}
	for _, h := range s.Accept {
		k, err := dec(h)
		if err != nil {
			return nk, nil, err
		}
		nk.Accept = append(nk.Accept, k)
	}
	for _, h := range s.History {
		k, err := dec(h)
		if err != nil {
			return nk, nil, err
		}
		nk.History = append(nk.History, k)
	}
	var notice *gossip.KeyNotice
	if len(s.Notice) > 0 {
		notice = &gossip.KeyNotice{}
		if err := json.Unmarshal(s.Notice, notice); err != nil {
			return nk, nil, fmt.Errorf("stored key notice: %w", err)
		}
	}
	return nk, notice, nil
}

func toStore(nk gossip.NetworkKeys, notice *gossip.KeyNotice) store.NetworkKeys {
	s := store.NetworkKeys{Epoch: nk.Epoch, Primary: hex.EncodeToString(nk.Primary), Authority: hex.EncodeToString(nk.Authority)}
	for _, k := range nk.Accept {
		s.Accept = append(s.Accept, hex.EncodeToString(k))
	}
	for _, k := range nk.History {
		s.History = append(s.History, hex.EncodeToString(k))
	}
	if notice != nil {
		s.Notice, _ = json.Marshal(notice)
	}
	return s
}

// keysChanged keeps keys that a notice set (the agent already uses them): in the network's record and,
// on the authority, in its record.
func (c *Plane) keysChanged(netID string, nk gossip.NetworkKeys, notice gossip.KeyNotice) {
	c.mu.Lock()
	cur := c.nets[netID]
	local := cur != nil && cur.local
	c.nets[netID] = &netKeys{keys: nk, notice: &notice, local: local}
	auth, held := c.auths[netID]
	if held {
		auth.Keys = toStore(nk, &notice)
		c.auths[netID] = auth
	}
	c.mu.Unlock()
	sk := toStore(nk, &notice)
	if err := c.st.PutNetworkKeys(netID, sk); err != nil {
		c.log.WithError(err).WithField("network", netID).Error("keeping the network's new keys failed: after a restart this node asks a manager for them")
	}
	if held {
		if err := c.st.PutAuthority(netID, auth); err != nil {
			c.log.WithError(err).WithField("network", netID).Error("keeping the key authority's new keys failed")
		}
	}
}

// behind asks the swarm's managers for a network's current keys, because why (a record signed with a key
// this node does not hold arrived, or the network was just created here): at most once per network every
// keyRequestEvery.
func (c *Plane) behind(netID, why string) {
	c.mu.Lock()
	last := c.asked[netID]
	nk := c.nets[netID]
	a := c.agent
	if a == nil || nk == nil || nk.keys.Authority == nil || time.Since(last) < keyRequestEvery {
		c.mu.Unlock()
		return
	}
	c.asked[netID] = time.Now()
	c.mu.Unlock()
	go func() {
		managers := c.swarmManagers()
		n := a.RequestKeys(netID, managers)
		c.log.WithFields(logrus.Fields{"network": netID, "epoch": nk.keys.Epoch, "managers": managers, "asked": n}).
			Info(why + ": asking the swarm managers for the network's newer keys, if any")
	}()
}

const keyRequestEvery = 5 * time.Second

// serveKeys answers a member's request for a network's current keys, on a manager only, and only for a
// member whose address is a node of the swarm (a node removed from the swarm, which may still hold old
// keys, gets nothing).
func (c *Plane) serveKeys(netID, from, addr string, epoch uint64) {
	log := c.log.WithFields(logrus.Fields{"network": netID, "member": from, "addr": addr, "its_epoch": epoch})
	c.mu.Lock()
	nk := c.nets[netID]
	a := c.agent
	c.mu.Unlock()
	if a == nil || nk == nil || nk.notice == nil || nk.keys.Epoch <= epoch {
		return
	}
	nodes, err := c.swarmNodes()
	if err != nil {
		return // not a manager: another one answers
	}
	if !slices.Contains(nodes, addr) {
		log.Warn("refusing a key request: the member's address is not a node of this swarm")
		return
	}
	a.SyncWith(from) // its boot key comes with its full state, which may not have arrived since it has the network
	if err := a.Rekey(from, *nk.notice, keyMap(nk.keys), 10*time.Second); err != nil {
		log.WithError(err).Warn("handing the network's current keys to a member that lags failed")
		return
	}
	log.WithField("epoch", nk.keys.Epoch).Info("handed the network's current keys to a member that lagged")
}

// rekeyMember hands notice n to member to and waits for its acknowledgement, retrying until wait is
// over. It reports false when the member no longer has the network (its engine removed the network with
// its last container, between the rotation's first look and the notice) or left the gossip.
func rekeyMember(a *gossip.Agent, netID, to string, n gossip.KeyNotice, keys map[string][]byte, wait time.Duration) (bool, error) {
	deadline := time.Now().Add(wait)
	for {
		err := a.Rekey(to, n, keys, min(5*time.Second, max(time.Until(deadline), time.Second)))
		if err == nil {
			return true, nil
		}
		a.SyncWith(to)
		still := false
		for _, h := range a.Holders(netID) {
			if h.Name == to && h.Epoch >= 0 {
				still = true
			}
		}
		if !still {
			return false, nil
		}
		if time.Now().After(deadline) {
			return true, err
		}
	}
}

func keyMap(nk gossip.NetworkKeys) map[string][]byte {
	m := map[string][]byte{gossip.KeyID(nk.Primary): nk.Primary}
	for _, k := range nk.Accept {
		m[gossip.KeyID(k)] = k
	}
	return m
}

// swarmNodes returns the swarm nodes' addresses, answered by the engine of a manager only.
func (c *Plane) swarmNodes() ([]string, error) {
	if c.docker == nil {
		return nil, errors.New("no Docker API socket")
	}
	return c.docker.SwarmNodeAddrs()
}

// RotateResult is what a key rotation did.
type RotateResult struct {
	Network string   `json:"network"`
	Epoch   uint64   `json:"epoch"`
	OldKey  string   `json:"old_key"`
	NewKey  string   `json:"new_key"`
	Members []string `json:"members"`           // acknowledged every step
	Skipped []string `json:"skipped,omitempty"` // gossip members that are not swarm nodes: sent nothing
	Without []string `json:"without,omitempty"` // swarm nodes without the network: they ask when they create it
	Took    string   `json:"took"`
}

// RotateKey replaces a network's key on every node, without withdrawing a record: three signed notices
// (accept the new key; sign with it; drop the old one), each acknowledged by every member that has the
// network before the next. It runs on the manager that holds the network's key authority; the new key
// is sealed to each member that is a node of the swarm (GET /nodes), and to no one else.
func (c *Plane) RotateKey(netID string, wait time.Duration) (RotateResult, error) {
	began := time.Now()
	c.rotMu.Lock()
	defer c.rotMu.Unlock()
	res := RotateResult{Network: netID}
	c.mu.Lock()
	auth, held := c.auths[netID]
	nk := c.nets[netID]
	a := c.agent
	c.mu.Unlock()
	short := netconfig.ShortID(netID)
	switch {
	case !held:
		return res, fmt.Errorf("network %s: this node does not hold its key authority: run the rotation on the manager that created the network (its plugin log says \"allocated VNI\" for it)", short)
	case a == nil || nk == nil:
		return res, fmt.Errorf("network %s: the gossip agent is not running yet", short)
	case nk.keys.Primary == nil:
		return res, fmt.Errorf("network %s has no key to rotate", short)
	}
	priv := ed25519.PrivateKey(auth.Private)
	nodes, err := c.swarmNodes()
	if err != nil {
		return res, fmt.Errorf("network %s: listing the swarm's nodes (a manager's engine answers): %w", short, err)
	}
	// Members that are swarm nodes and have the network; their boot keys arrive with their full states.
	var targets []string
	deadline := time.Now().Add(wait)
	for {
		a.SyncAll()
		targets, res.Skipped, res.Without = nil, nil, nil
		missing := ""
		for _, h := range a.Holders(netID) {
			switch {
			case !slices.Contains(nodes, h.Addr):
				res.Skipped = append(res.Skipped, h.Name)
			case h.Epoch < 0:
				res.Without = append(res.Without, h.Name)
			case !h.Sealable:
				missing = h.Name
			default:
				targets = append(targets, h.Name)
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("network %s: no boot key known for member %s after %s (its full state signed under the network key has not arrived, or two were claimed): try again", short, missing, wait)
		}
		time.Sleep(200 * time.Millisecond)
	}
	old := nk.keys
	next := make([]byte, gossip.KeySize)
	if _, err := rand.Read(next); err != nil {
		return res, fmt.Errorf("network %s: making a key: %w", short, err)
	}
	oldID, newID := gossip.KeyID(old.Primary), gossip.KeyID(next)
	res.OldKey, res.NewKey = oldID, newID
	history := slices.Clone(old.History)
	for _, k := range old.Accept {
		if gossip.KeyID(k) != newID {
			history = append(history, k)
		}
	}
	steps := []struct {
		primary []byte
		accept  [][]byte
		history [][]byte
	}{
		{old.Primary, [][]byte{next}, history},
		{next, [][]byte{old.Primary}, history},
		{next, nil, append(slices.Clone(history), old.Primary)},
	}
	keys := map[string][]byte{oldID: old.Primary, newID: next}
	for i, st := range steps {
		epoch := old.Epoch + uint64(i) + 1
		n := gossip.KeyNotice{Network: netID, Epoch: epoch, Primary: gossip.KeyID(st.primary)}
		for _, k := range st.accept {
			n.Accept = append(n.Accept, gossip.KeyID(k))
		}
		n = gossip.SignNotice(priv, n)
		var kept []string
		for _, to := range targets {
			has, err := rekeyMember(a, netID, to, n, keys, wait)
			if err != nil {
				return res, fmt.Errorf("network %s, key epoch %d (step %d of 3): %w; the nodes that applied it keep working; run the rotation again", short, epoch, i+1, err)
			}
			if has {
				kept = append(kept, to)
			} else {
				res.Without = append(res.Without, to) // removed the network meanwhile: it asks when it creates it again
			}
		}
		targets = kept
		here := gossip.NetworkKeys{Primary: st.primary, Accept: st.accept, Epoch: epoch, Authority: old.Authority, History: st.history}
		c.setAgentKeys(a, netID, here)
		c.keysChanged(netID, here, n)
		res.Epoch = epoch
		c.log.WithFields(logrus.Fields{"network": netID, "epoch": epoch, "primary": n.Primary, "accept": n.Accept, "members": targets}).
			Info(fmt.Sprintf("key rotation step %d of 3 applied by every member", i+1))
	}
	res.Members = targets
	res.Took = time.Since(began).Round(time.Millisecond).String()
	return res, nil
}
