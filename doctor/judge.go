package doctor

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/netconfig"
)

// Owner kinds.
const (
	kindVxsafe  = "vxsafe"
	kindOverlay = "overlay"
	kindUnknown = "unknown"
)

// Verdicts.
const (
	VerdictLive     = "live"
	VerdictStale    = "stale"
	VerdictConflict = "conflict"
)

var (
	// Docker overlay's host-side device: "vx-" + VNI (6 hex) + "-" + first 5 characters of the network ID.
	overlayDevName = regexp.MustCompile(`^vx-([0-9a-f]{6})-([0-9a-z]{5})$`)
	// Docker overlay's sandbox namespace, bind-mounted at <exec-root>/netns/1-<first 10 characters of the ID>.
	sandboxNSName = regexp.MustCompile(`^1-([0-9a-z]{10})$`)
)

// Owner says whose a device is, and from what evidence.
type Owner struct {
	Kind        string `json:"kind"`                   // vxsafe, overlay or unknown
	NetworkID   string `json:"network_id,omitempty"`   // full ID, when known
	IDPrefix    string `json:"id_prefix,omitempty"`    // the part of the ID the device itself carries
	NetworkName string `json:"network_name,omitempty"` // from the Docker API
	Driver      string `json:"driver,omitempty"`       // from the Docker API
	Via         string `json:"via,omitempty"`          // alias, device name or namespace name
	Note        string `json:"note,omitempty"`         // e.g. "not listed by the Docker API"
}

func (o Owner) String() string {
	if o.Kind == kindUnknown {
		return kindUnknown
	}
	if o.NetworkName != "" {
		return fmt.Sprintf("%s %q (%s)", o.Kind, o.NetworkName, netconfig.ShortID(o.NetworkID))
	}
	if o.Kind == kindVxsafe && o.Via == "alias" {
		return fmt.Sprintf("%s %s", o.Kind, netconfig.ShortID(o.IDPrefix))
	}
	return fmt.Sprintf("%s %s*", o.Kind, o.IDPrefix)
}

// Entry is one row of the doctor's report.
type Entry struct {
	Name            string   `json:"name"`
	Index           int      `json:"ifindex"`
	VNI             uint32   `json:"vni"`
	Port            int      `json:"port"`
	State           string   `json:"state"` // up or down
	Namespace       string   `json:"namespace"`
	NamespacePath   string   `json:"namespace_path,omitempty"`
	NamespaceInode  uint64   `json:"namespace_inode"`
	SocketNamespace string   `json:"socket_namespace"`
	Owner           Owner    `json:"owner"`
	Verdict         string   `json:"verdict"`
	Reason          string   `json:"reason"`
	Alias           string   `json:"alias,omitempty"`
	Master          string   `json:"master,omitempty"`
	Uppers          []string `json:"uppers,omitempty"`
	Addresses       []string `json:"addresses,omitempty"`

	dev dataplane.Device
}

// Device is the scanned device behind the entry.
func (e Entry) Device() dataplane.Device { return e.dev }

// judge gives every device its owner and verdict. nets is what the Docker API listed (apiOK false: the API
// was not reachable). liveNetwork tells whether a vxsafe network has containers on this host (nil: unknown).
func judge(devs []dataplane.SocketDevice, nets []Network, apiOK bool, liveNetwork func(string) bool) []Entry {
	// Devices sharing VNI and port on one socket namespace: the kernel lets only one of them work.
	type sockKey struct {
		ino  uint64
		vni  uint32
		port int
	}
	groups := map[sockKey][]int{}
	for i, d := range devs {
		if d.SockIno != 0 {
			k := sockKey{d.SockIno, d.VNI, d.Port}
			groups[k] = append(groups[k], i)
		}
	}
	out := make([]Entry, 0, len(devs))
	for i, d := range devs {
		e := Entry{
			Name: d.Name, Index: d.Index, VNI: d.VNI, Port: d.Port, State: "down",
			Namespace: d.NS.Desc, NamespacePath: d.NS.Path, NamespaceInode: d.NS.Ino, SocketNamespace: d.SockDesc,
			Owner: ownerOf(d.Device, nets, apiOK), Alias: d.Alias, Master: d.Master, Uppers: d.Uppers,
			Addresses: d.Addrs, dev: d.Device,
		}
		if d.Up {
			e.State = "up"
		}
		if e.SocketNamespace == "" {
			e.SocketNamespace = "unknown"
		}
		j := dataplane.Classify(d.Device, dataplane.Want{}, liveNetwork)

		var problems []string
		if apiOK {
			for _, n := range nets {
				if n.kind() == "" || isDeviceOf(d, n) {
					continue
				}
				for _, v := range n.VNIs {
					conflicts, byName := dataplane.Want{Name: netconfig.DeviceName(v, n.ID), VNI: v, Port: n.Port}.Conflict(d.Device)
					if !conflicts {
						continue
					}
					what := fmt.Sprintf("holds VNI %d (port %d)", v, n.Port)
					if byName {
						what = fmt.Sprintf("has the device name for VNI %d", v)
					}
					problems = append(problems, fmt.Sprintf("%s that %s network %q (%s) needs", what, n.kind(), n.Name, netconfig.ShortID(n.ID)))
				}
			}
		}
		if d.SockIno != 0 {
			for _, o := range groups[sockKey{d.SockIno, d.VNI, d.Port}] {
				if o == i {
					continue
				}
				od := devs[o]
				problems = append(problems, fmt.Sprintf("holds VNI %d port %d like %q (ifindex %d, %s) on the same socket namespace (%s)",
					d.VNI, d.Port, od.Name, od.Index, od.NS.Desc, d.SockDesc))
			}
		}

		switch {
		case j.Verdict == dataplane.Stale:
			e.Verdict, e.Reason = VerdictStale, j.Reason
			if len(problems) > 0 {
				e.Reason += "; it also " + strings.Join(problems, "; ")
			}
		case len(problems) > 0:
			e.Verdict = VerdictConflict
			e.Reason = strings.Join(problems, "; ") + ", and it " + j.Reason + " (not provably unused)"
		default:
			e.Verdict, e.Reason = VerdictLive, j.Reason
		}
		out = append(out, e)
	}
	return out
}

// ownerOf names the network a device belongs to: vxsafe's alias first, then Docker overlay's device name,
// then the name of a Docker overlay sandbox namespace.
func ownerOf(d dataplane.Device, nets []Network, apiOK bool) Owner {
	if id, ep, ok := dataplane.ParseAlias(d.Alias); ok && ep == "" && id != "" {
		o := Owner{Kind: kindVxsafe, IDPrefix: id, Via: "alias"}
		resolveOwner(&o, nets, apiOK, func(n Network) bool { return n.ID == id })
		return o
	}
	if m := overlayDevName.FindStringSubmatch(d.Name); m != nil {
		o := Owner{Kind: kindOverlay, IDPrefix: m[2], Via: "device name"}
		resolveOwner(&o, nets, apiOK, func(n Network) bool { return strings.HasPrefix(n.ID, m[2]) })
		return o
	}
	if d.NS.Mount != "" {
		if m := sandboxNSName.FindStringSubmatch(path.Base(d.NS.Mount)); m != nil {
			o := Owner{Kind: kindOverlay, IDPrefix: m[1], Via: "namespace name"}
			resolveOwner(&o, nets, apiOK, func(n Network) bool { return strings.HasPrefix(n.ID, m[1]) })
			return o
		}
	}
	return Owner{Kind: kindUnknown}
}

func resolveOwner(o *Owner, nets []Network, apiOK bool, match func(Network) bool) {
	if !apiOK {
		return
	}
	var found []Network
	for _, n := range nets {
		if match(n) {
			found = append(found, n)
		}
	}
	switch len(found) {
	case 0:
		o.Note = "not listed by the Docker API"
	case 1:
		n := found[0]
		o.NetworkID, o.NetworkName, o.Driver = n.ID, n.Name, n.Driver
		if k := n.kind(); k != "" {
			o.Kind = k
		}
	default:
		names := make([]string, len(found))
		for i, n := range found {
			names[i] = fmt.Sprintf("%q (%s)", n.Name, netconfig.ShortID(n.ID))
		}
		o.Note = "the ID prefix matches several networks: " + strings.Join(names, ", ")
	}
}

// isDeviceOf tells whether d is network n's own device (so holding n's name or VNI is no conflict).
func isDeviceOf(d dataplane.SocketDevice, n Network) bool {
	netID, ep, ours := dataplane.ParseAlias(d.Alias)
	switch n.kind() {
	case kindVxsafe:
		return ours && ep == "" && netID == n.ID
	case kindOverlay:
		if ours {
			return false
		}
		vniOK := len(n.VNIs) == 0
		for _, v := range n.VNIs {
			vniOK = vniOK || v == d.VNI
		}
		if !vniOK {
			return false
		}
		if m := overlayDevName.FindStringSubmatch(d.Name); m != nil {
			v, _ := strconv.ParseUint(m[1], 16, 32)
			return strings.HasPrefix(n.ID, m[2]) && uint32(v) == d.VNI
		}
		if d.NS.Mount != "" {
			if m := sandboxNSName.FindStringSubmatch(path.Base(d.NS.Mount)); m != nil {
				return strings.HasPrefix(n.ID, m[1])
			}
		}
	}
	return false
}
