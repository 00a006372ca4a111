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
// With Config.Key set, every memberlist packet and stream is encrypted and
// authenticated with that key (AES-GCM keyring, GossipVerifyIncoming and
// GossipVerifyOutgoing), and Config.Label (default "vxsafe") is bound into the
// packets so that a memberlist cluster with another purpose never merges with
// this one. Every key holder is trusted to speak for the nodes it claims to
// speak for: memberlist does not reliably tell the receiver who originated a
// broadcast, so the package cannot prove that a record claiming owner X was
// created by X. What it does enforce against accidents and stale peers:
//
//   - a node never accepts records claiming to be owned by itself (its own
//     records change only through Publish/Withdraw);
//   - records of owners that are not live members are kept pending, never
//     shown;
//   - records of a superseded incarnation of an owner are ignored;
//   - malformed records (bad IPv4, MAC or VTEP) are rejected.
//
// Without a key anybody who can reach the gossip port can inject endpoints, and
// New logs a warning.
package gossip
