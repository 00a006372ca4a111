// Package gossip is the control plane through which vxsafe plugin instances on
// different swarm nodes learn each other's endpoints. A libnetwork remote
// driver is told nothing about endpoints on other nodes, so every instance
// publishes the endpoints it hosts (network, endpoint ID, IPv4, MAC, VTEP) and
// learns the others' over hashicorp/memberlist.
//
// # Dissemination
//
//   - Deltas: Publish and Withdraw send a one-record message at once to every
//     live member (memberlist SendBestEffort, UDP) and also queue it on a
//     memberlist TransmitLimitedQueue (piggybacked on memberlist gossip every
//     GossipInterval, retransmitted). A node that accepts a delta as new
//     re-queues it, so updates spread epidemically even when direct packets
//     are lost and in clusters larger than the origin's retransmit fan-out.
//   - Anti-entropy: on join and every PushPullInterval two members exchange
//     their complete tables over TCP (Delegate.LocalState/MergeRemoteState).
//
// # Versions, incarnations and tombstones
//
// Only the owner (the node hosting the endpoint) ever changes a record. Each
// record carries (incarnation, seq): the incarnation is the owner process's
// boot id (wall clock in nanoseconds at New), seq is a per-owner counter that
// grows with every Publish/Withdraw of that process. Among records of the same
// incarnation the higher seq wins; duplicates and reordered older messages are
// dropped. A Withdraw leaves a tombstone with a higher seq, so a late copy of
// the add can never resurrect the endpoint. Tombstones are forgotten after
// TombstoneTTL (default 10 min), far longer than any message stays in flight.
//
// The incarnation is also published in the owner's memberlist node metadata,
// which memberlist itself orders and refutes. That metadata is authoritative:
// records of an owner whose incarnation is not the owner's current one are
// stale. When an owner restarts (new process, same NodeName) its old records
// stay visible for GracePeriod so that a quick restart that re-publishes the
// same endpoints causes no Removed/Added churn; they disappear earlier as soon
// as the new process's full state arrives.
//
// The owner is also authoritative in push/pull: the part of a full state that
// describes the sender's own records is complete up to the sender's clock, so a
// record of that owner with a lower version that the state does not list has
// been removed and is replaced by a tombstone. Copies of other owners' records
// relayed in a full state are merged by version only.
//
// # Membership
//
// Records are only shown (onChange Added, Remote) while their owner is a live
// memberlist member. Records that arrive for an owner that is not (yet) a live
// member are kept pending and shown once it is. When an owner leaves or fails
// (EventDelegate.NotifyLeave) its records are removed after GracePeriod
// (default 10s; a negative GracePeriod removes them at once). When it comes back
// with the same process they are shown again; when it comes back as a new
// process they are replaced by whatever the new process publishes. State about
// an owner that stays away longer than max(GracePeriod, TombstoneTTL) is
// forgotten.
//
// # Trust model
//
// Records are signed per network (auth.go). A network declared with SetNetworkKeys and a key has its
// records signed by their owner with HMAC-SHA256 over owner, network, endpoint, addresses, incarnation,
// version and removal flag; a receiver refuses, before anything is shown, a record of such a network that
// is unsigned, signed with a key it does not hold, or does not verify, and one older than a removal it
// has forgotten (a replay). The owner's claim in a full state that its records are complete (what the
// receiver lacks is removed) is signed per network too (a manifest), and carries the owner's key epoch and
// boot key. With Config.VTEPCheck a record is shown only when its VTEP is the gossip address of the member
// that owns it. Records of networks a node has not declared are held unchecked and checked when the
// network is declared; a network declared without a key (created before keys) takes unsigned records.
//
// Keys change only by notices that the network's key authority signs (rekey.go); the new keys are sealed
// with HPKE to each member's boot key.
//
// With Config.Key set, every memberlist packet and stream is also encrypted and authenticated with that
// key (AES-GCM keyring, GossipVerifyIncoming and GossipVerifyOutgoing), and Config.Label (default
// "vxsafe") is bound into the packets so that a memberlist cluster with another purpose never merges with
// this one. Without it anybody who can reach the gossip port can join (New logs a warning), but not speak
// for a keyed network. What the package enforces besides:
//
//   - a node never accepts records claiming to be owned by itself (its own records change only through
//     Publish/Withdraw);
//   - records of owners that are not live members are kept pending, never shown;
//   - records of a superseded incarnation of an owner are ignored;
//   - malformed records (bad IPv4, MAC or VTEP) are rejected.
package gossip
