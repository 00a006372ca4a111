package dataplane

import (
	"fmt"
	"strings"

	"github.com/vxsafe/overlay/netconfig"
)

// Verdict is what vxsafe may do with a device that stands in the way of the one it wants.
type Verdict int

const (
	// Reuse: it is vxsafe's own, current device for this network.
	Reuse Verdict = iota + 1
	// Stale: provably unused; vxsafe deletes it.
	Stale
	// Live: in use, or not provably unused; vxsafe refuses to touch it.
	Live
)

func (v Verdict) String() string {
	switch v {
	case Reuse:
		return "reuse"
	case Stale:
		return "stale"
	case Live:
		return "live"
	}
	return "unknown"
}

// Judgement is a verdict with the reason an operator reads in logs and errors. Reasons read as a
// continuation of the device's description: `vxlan interface "x" (...) is down`.
type Judgement struct {
	Verdict Verdict
	Reason  string
}

// Want describes the VXLAN device vxsafe is about to create for a network.
type Want struct {
	NetworkID string
	Name      string
	VNI       uint32
	Port      int
}

// Conflict reports whether device d stands in the way of the device w describes: d holds w's name in
// the host namespace (byName), or w's VNI and port on a socket of the host namespace.
func (w Want) Conflict(d Device) (conflicts, byName bool) {
	byName = d.NS.Host && d.Name == w.Name
	return byName || (d.HostSock && d.VNI == w.VNI && d.Port == w.Port), byName
}

// Classify judges a device that conflicts with want (same name in the host namespace, or same VNI and
// port on a socket of the host namespace). liveNetwork reports whether vxsafe's state says a vxsafe
// network still has endpoints on this host; nil means "none has".
//
// The rules, in order:
//  1. vxsafe's own device for this very network, with the wanted name, VNI and port: reuse.
//  2. anything carrying upper devices (a macvlan or vlan, possibly inside a container): live.
//  3. a device in a Docker overlay sandbox (enslaved to a bridge in another namespace): live while the
//     bridge has other ports (containers' veths), stale when it has none (the sandbox outlived them).
//  4. vxsafe's device of another network: live while that network has endpoints here, else stale.
//  5. a device that is down: stale (it cannot carry traffic).
//  6. up and enslaved, or up with addresses: live.
//  7. up with nothing attached and no addresses: stale (nothing can use it).
func Classify(d Device, want Want, liveNetwork func(netID string) bool) Judgement {
	netID, epID, ours := ParseAlias(d.Alias)
	ours = ours && epID == ""
	if ours && netID == want.NetworkID && d.NS.Host && d.Name == want.Name && d.VNI == want.VNI && d.Port == want.Port {
		return Judgement{Reuse, "is vxsafe's device for this network"}
	}
	if len(d.Uppers) > 0 {
		return Judgement{Live, fmt.Sprintf("carries upper devices %s", strings.Join(quoteAll(d.Uppers), ", "))}
	}
	if d.SandboxBridge != "" {
		if len(d.SandboxPorts) > 0 {
			return Judgement{Live, fmt.Sprintf("is in a Docker overlay sandbox whose bridge %q still has containers attached (%s)",
				d.SandboxBridge, strings.Join(d.SandboxPorts, ", "))}
		}
		return Judgement{Stale, fmt.Sprintf("is a leftover of a Docker overlay sandbox: bridge %q has no container attached", d.SandboxBridge)}
	}
	if ours && netID != want.NetworkID {
		if liveNetwork != nil && liveNetwork(netID) {
			return Judgement{Live, fmt.Sprintf("belongs to vxsafe network %s, which has endpoints on this host", netconfig.ShortID(netID))}
		}
		return Judgement{Stale, fmt.Sprintf("belongs to vxsafe network %s, which has no endpoint on this host", netconfig.ShortID(netID))}
	}
	if !d.Up {
		if ours {
			return Judgement{Stale, "is an earlier, down device of this network"}
		}
		return Judgement{Stale, "is down"}
	}
	if d.Master != "" {
		return Judgement{Live, fmt.Sprintf("is up and enslaved to %q", d.Master)}
	}
	if len(d.Addrs) > 0 {
		return Judgement{Live, fmt.Sprintf("is up and has addresses %s", strings.Join(d.Addrs, ", "))}
	}
	if ours {
		return Judgement{Stale, "is an earlier device of this network with other settings and nothing attached"}
	}
	return Judgement{Stale, "is up but carries nothing (no master, no upper device, no address)"}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// ConflictError is returned when a live device blocks the one vxsafe wants. Its text is what Docker
// shows the user.
type ConflictError struct {
	Device Device
	Reason string
	Want   Want
	// ByName is true when the device holds the wanted name (else it holds the VNI).
	ByName bool
}

func (e *ConflictError) Error() string {
	what := fmt.Sprintf("holds VNI %d", e.Want.VNI)
	advice := fmt.Sprintf("delete it, or give this network another VNI with -o %s=N", netconfig.OptVNIList)
	if e.ByName {
		what = fmt.Sprintf("has the name vxsafe needs for VNI %d", e.Want.VNI)
		advice = "rename or delete it"
	}
	return fmt.Sprintf("%s %s and %s: not deleting a live interface; %s",
		e.Device, what, e.Reason, advice)
}
