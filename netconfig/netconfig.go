// Package netconfig parses and validates the options Docker hands to the
// vxsafe/overlay remote driver, and derives the names and addresses the
// driver uses for kernel objects.
//
// Nothing here touches the kernel or the disk: every function is pure and
// safe for concurrent use.
package netconfig

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/network"
)

const (
	// OptVNIList is the option that carries a requested VNI. It is the same
	// key Docker's overlay driver uses: a comma separated list of VNIs, one
	// per subnet. vxsafe uses one VNI per network: the first of the list.
	OptVNIList = "com.docker.network.driver.overlay.vxlanid_list"
	// OptMTU is the MTU option (same string as libnetwork's netlabel.DriverMTU).
	OptMTU = "com.docker.network.driver.mtu"
	// OptPort overrides the VXLAN UDP destination port for one network.
	OptPort = "vxsafe.port"
	// OptKey is the network's gossip key: 64 hex digits (32 bytes). AllocateNetwork makes one for every
	// new network; a user may give one, or "auto" to have one made where it would not be (a network
	// created with a VNI option: see the README).
	OptKey = "vxsafe.key"
	// OptKeyAuthority is the public half (64 hex digits, Ed25519) of the key pair whose signed notices
	// alone change the network's keys; AllocateNetwork makes it with the key.
	OptKeyAuthority = "vxsafe.key-authority"
	// KeyAuto asks AllocateNetwork to make the key.
	KeyAuto = "auto"
	// GenericKey is the CreateNetwork option under which libnetwork passes
	// the driver options (netlabel.GenericData). For swarm-scoped networks it
	// holds what AllocateNetwork returned on the manager.
	GenericKey = "com.docker.network.generic"

	// OptEnableIPv4 is libnetwork's netlabel.EnableIPv4. The current engine (moby v2) puts it, a bool,
	// among CreateNetwork's top-level options of every network; Docker 20.10 does not know it.
	OptEnableIPv4 = "com.docker.network.enable_ipv4"
	// OptIfName is libnetwork's netlabel.Ifname: the name a container asks for its interface on one
	// network (docker run --network name=N,driver-opt=com.docker.network.endpoint.ifname=NAME). The
	// current engine passes it in CreateEndpoint's options and leaves it to the driver, which hands it
	// back in Join as InterfaceName.DstName; Docker 20.10 neither knows nor reads it.
	OptIfName = "com.docker.network.endpoint.ifname"
	// MaxIfNameLength is the longest Linux interface name (IFNAMSIZ - 1).
	MaxIfNameLength = 15

	// DefaultPort is the IANA VXLAN UDP port.
	DefaultPort = 4789
	// VXLANOverhead is the encapsulation overhead of VXLAN over IPv4
	// (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8).
	VXLANOverhead = 50
	// MaxVNI is the largest VNI (24 bits).
	MaxVNI = 1<<24 - 1

	// MinMTU and MaxMTU bound ParseMTU.
	MinMTU = 68
	MaxMTU = 65535

	// MaxIDLength bounds ValidateID.
	MaxIDLength = 128

	// DefaultVNIRange is the range the manager allocates VNIs from when the
	// user does not request one (0x100000-0x1fffff). Docker's overlay driver
	// allocates upward from 4096, so the two never collide in practice.
	DefaultVNIRange = "1048576-2097151"
)

// Subnet is one IPv4 pool of a network, as Docker gives it: CIDR strings,
// e.g. Pool "10.0.1.0/24", Gateway "10.0.1.1/24" (Gateway may be empty).
type Subnet struct {
	Pool    string
	Gateway string
}

// Network is the validated configuration of one vxsafe network.
type Network struct {
	ID      string            // full Docker network ID
	VNI     uint32            // 1..MaxVNI
	Port    uint16            // 0 means "use plugin default"
	MTU     int               // 0 means "derive from underlay"
	IPv4    []Subnet          // IPv4 pools, in Docker's order
	Options map[string]string // all options (as strings), echoed
	// Key and Authority: OptKey and OptKeyAuthority decoded; nil for a network without a key.
	Key       []byte
	Authority []byte
	// IPv6 is the OptIPv6 prefix; nil for a network without IPv6.
	IPv6 *net.IPNet
}

// ParseKey decodes the OptKey option (32 bytes in hex).
func ParseKey(s string) ([]byte, error) {
	return parseHexOption(OptKey, s, 32)
}

// ParseKeyAuthority decodes the OptKeyAuthority option (an Ed25519 public key in hex).
func ParseKeyAuthority(s string) ([]byte, error) {
	return parseHexOption(OptKeyAuthority, s, 32)
}

func parseHexOption(name, s string, size int) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("invalid option %s: want %d hex digits", name, 2*size)
	}
	return b, nil
}

// ShortID is the first 12 characters of a Docker object ID, as docker prints IDs; shorter IDs whole.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ValidateID checks a Docker object ID before it is used as a store key or in
// a name. kind names the object ("network", "endpoint") in the error.
// Accepted: 1..MaxIDLength characters of [a-zA-Z0-9_.-], not containing "..".
func ValidateID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("invalid %s ID %q: empty", kind, id)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("invalid %s ID %s: %d characters, at most %d allowed",
			kind, quoteShort(id), len(id), MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return fmt.Errorf("invalid %s ID %s: character %q at offset %d is not allowed (only [a-zA-Z0-9_.-])",
				kind, quoteShort(id), c, i)
		}
	}
	if id == "." || strings.Contains(id, "..") {
		return fmt.Errorf("invalid %s ID %q: \".\" and \"..\" are not allowed", kind, id)
	}
	return nil
}

// quoteShort quotes s for an error message, truncating very long values.
func quoteShort(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// ParseVNI parses the OptVNIList option: a VNI ("4100") or a comma separated
// list of VNIs ("4100,4101"), of which the first is returned. Every element
// must be a decimal in 1..MaxVNI.
func ParseVNI(s string) (uint32, error) {
	parts := strings.Split(s, ",")
	var first uint32
	for i, p := range parts {
		p = strings.TrimSpace(p)
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil || v < 1 || v > MaxVNI {
			what := "element"
			if len(parts) == 1 {
				what = "value"
			}
			return 0, fmt.Errorf("invalid option %s=%s: %s %s is not a VNI (a decimal number in 1..%d)",
				OptVNIList, quoteShort(s), what, quoteShort(p), MaxVNI)
		}
		if i == 0 {
			first = uint32(v)
		}
	}
	return first, nil
}

// ParseMTU parses the OptMTU option: a decimal in MinMTU..MaxMTU.
func ParseMTU(s string) (int, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	if err != nil || v < MinMTU || v > MaxMTU {
		return 0, fmt.Errorf("invalid option %s=%s: MTU must be a decimal number in %d..%d",
			OptMTU, quoteShort(s), MinMTU, MaxMTU)
	}
	return int(v), nil
}

// ParsePort parses the OptPort option: a UDP port, 1..65535.
func ParsePort(s string) (uint16, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("invalid option %s=%s: port must be a decimal number in 1..65535",
			OptPort, quoteShort(s))
	}
	return uint16(v), nil
}

// ParseAllocateOptions parses the user's -o options as AllocateNetwork
// receives them. Absent options give zero values (vni 0 = none requested,
// mtu 0 = derive from underlay, port 0 = plugin default). Unknown options
// are ignored (they are echoed by the caller).
func ParseAllocateOptions(opts map[string]string) (vni uint32, mtu int, port uint16, err error) {
	if s, ok := opts[OptIPv6]; ok {
		if _, err = ParseIPv6Prefix(s); err != nil {
			return 0, 0, 0, err
		}
	}
	if s, ok := opts[OptVNIList]; ok {
		if vni, err = ParseVNI(s); err != nil {
			return 0, 0, 0, err
		}
	}
	if s, ok := opts[OptMTU]; ok {
		if mtu, err = ParseMTU(s); err != nil {
			return 0, 0, 0, err
		}
	}
	if s, ok := opts[OptPort]; ok {
		if port, err = ParsePort(s); err != nil {
			return 0, 0, 0, err
		}
	}
	return vni, mtu, port, nil
}

// optionString converts a JSON-decoded option value to a string. It accepts
// string, json.Number, float64 (integral values are printed without a
// fraction), integers and bool.
func optionString(v interface{}) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", false
		}
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case float32:
		return optionString(float64(x))
	case int:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// CreateOptionStrings flattens the driver options of a CreateNetwork request
// (the map under GenericKey) into strings. Values that are not scalars are
// left out. A GenericKey value that is not a map is an error.
func CreateOptionStrings(opts map[string]interface{}) (map[string]string, error) {
	out := map[string]string{}
	g, ok := opts[GenericKey]
	if !ok || g == nil {
		return out, nil
	}
	switch m := g.(type) {
	case map[string]interface{}:
		for k, v := range m {
			if s, ok := optionString(v); ok {
				out[k] = s
			}
		}
	case map[string]string:
		for k, v := range m {
			out[k] = v
		}
	default:
		return nil, fmt.Errorf("invalid option %s: expected an object, got %T", GenericKey, g)
	}
	return out, nil
}

// ParseCreateOptions validates a CreateNetwork request. The VNI must be
// present under GenericKey (put there by the manager's AllocateNetwork):
// a worker cannot create a vxsafe network without that allocation.
func ParseCreateOptions(netID string, opts map[string]interface{}, ipv4 []*network.IPAMData) (Network, error) {
	if err := ValidateID("network", netID); err != nil {
		return Network{}, err
	}
	strs, err := CreateOptionStrings(opts)
	if err != nil {
		return Network{}, fmt.Errorf("network %s: %w", netID, err)
	}
	// Report known keys with a non-scalar value instead of silently
	// treating them as absent.
	if g, ok := opts[GenericKey].(map[string]interface{}); ok {
		for _, k := range []string{OptVNIList, OptMTU, OptPort, OptKey, OptKeyAuthority, OptIPv6} {
			if v, present := g[k]; present {
				if _, ok := strs[k]; !ok {
					return Network{}, fmt.Errorf("network %s: invalid option %s: unsupported value type %T", netID, k, v)
				}
			}
		}
	}
	n := Network{ID: netID, Options: strs}
	s, ok := strs[OptVNIList]
	if !ok {
		return Network{}, fmt.Errorf("network %s: option %s missing from %s: the network was not allocated by a vxsafe manager (create it on a swarm manager with -d vxsafe/overlay:latest)",
			netID, OptVNIList, GenericKey)
	}
	if n.VNI, err = ParseVNI(s); err != nil {
		return Network{}, fmt.Errorf("network %s: %w", netID, err)
	}
	if s, ok := strs[OptMTU]; ok {
		if n.MTU, err = ParseMTU(s); err != nil {
			return Network{}, fmt.Errorf("network %s: %w", netID, err)
		}
	}
	if s, ok := strs[OptPort]; ok {
		if n.Port, err = ParsePort(s); err != nil {
			return Network{}, fmt.Errorf("network %s: %w", netID, err)
		}
	}
	if s, ok := strs[OptKey]; ok {
		if n.Key, err = ParseKey(s); err != nil {
			return Network{}, fmt.Errorf("network %s: %w (it is set by the manager's AllocateNetwork)", netID, err)
		}
		if a, ok := strs[OptKeyAuthority]; ok {
			if n.Authority, err = ParseKeyAuthority(a); err != nil {
				return Network{}, fmt.Errorf("network %s: %w (it is set by the manager's AllocateNetwork)", netID, err)
			}
		}
	}
	if s, ok := strs[OptIPv6]; ok {
		if n.IPv6, err = ParseIPv6Prefix(s); err != nil {
			return Network{}, fmt.Errorf("network %s: %w", netID, err)
		}
	}
	for i, d := range ipv4 {
		if d == nil {
			continue
		}
		sub, err := parseSubnet(d.Pool, d.Gateway)
		if err != nil {
			return Network{}, fmt.Errorf("network %s: IPv4 pool %d: %w", netID, i, err)
		}
		n.IPv4 = append(n.IPv4, sub)
	}
	return n, nil
}

// RequireIPv4 refuses a network vxsafe cannot serve: one whose IPv4 is disabled (the top-level
// option OptEnableIPv4 false, as the current engine sends it in CreateNetwork; opts may be nil) or
// that has no IPv4 pool (pools is the number of IPv4 pools Docker gave). vxsafe derives endpoint MACs
// and the neighbour entries of remote endpoints from IPv4 addresses, and its endpoints need one.
func RequireIPv4(netID string, opts map[string]interface{}, pools int) error {
	if v, ok := opts[OptEnableIPv4]; ok {
		if s, ok := optionString(v); ok && s == "false" {
			return fmt.Errorf("network %s has IPv4 disabled (%s=false): vxsafe networks need IPv4 (endpoint MACs and "+
				"remote neighbour entries are derived from IPv4 addresses); re-create the network without --ipv4=false "+
				"or -o %s=false", ShortID(netID), OptEnableIPv4, OptEnableIPv4)
		}
	}
	if pools == 0 {
		return fmt.Errorf("network %s has no IPv4 subnet: vxsafe networks need one (endpoint MACs and remote "+
			"neighbour entries are derived from IPv4 addresses); re-create the network with IPv4 enabled and, "+
			"when giving subnets, an IPv4 one too (e.g. --subnet 10.0.9.0/24)", ShortID(netID))
	}
	return nil
}

// ParseIfName returns the interface name the endpoint's container asked for with OptIfName among
// CreateEndpoint's options, "" when it asked for none (libnetwork then names it from DstPrefix). The
// name must be one the kernel accepts: 1..MaxIfNameLength bytes, not "." or "..", without '/', ':',
// whitespace or NUL.
func ParseIfName(opts map[string]interface{}) (string, error) {
	v, ok := opts[OptIfName]
	if !ok || v == nil {
		return "", nil
	}
	name, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("invalid option %s: expected a string, got %T", OptIfName, v)
	}
	if name == "" {
		return "", nil
	}
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("invalid option %s=%s: %s; give a Linux interface name of at most %d characters "+
			"without '/', ':' or spaces (e.g. eth1)", OptIfName, quoteShort(name), why, MaxIfNameLength)
	}
	if len(name) > MaxIfNameLength {
		return bad(fmt.Sprintf("%d bytes long", len(name)))
	}
	if name == "." || name == ".." {
		return bad("not a name")
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '/', ':', ' ', '\t', '\n', '\v', '\f', '\r', 0:
			return bad(fmt.Sprintf("character %q at offset %d is not allowed", c, i))
		}
	}
	return name, nil
}

// parseSubnet validates an IPv4 pool and its optional gateway (CIDR with the
// pool's prefix, or a bare address) inside it.
func parseSubnet(pool, gw string) (Subnet, error) {
	ip, ipnet, err := net.ParseCIDR(pool)
	if err != nil {
		return Subnet{}, fmt.Errorf("invalid pool %s: %w", quoteShort(pool), err)
	}
	if ip.To4() == nil {
		return Subnet{}, fmt.Errorf("invalid pool %s: not IPv4", quoteShort(pool))
	}
	if gw == "" {
		return Subnet{Pool: pool}, nil
	}
	gip := net.ParseIP(gw)
	if gip == nil {
		var gnet *net.IPNet
		gip, gnet, err = net.ParseCIDR(gw)
		if err != nil {
			return Subnet{}, fmt.Errorf("invalid gateway %s: %w", quoteShort(gw), err)
		}
		if gnet.Mask.String() != ipnet.Mask.String() {
			return Subnet{}, fmt.Errorf("invalid gateway %s: prefix differs from pool %s", quoteShort(gw), pool)
		}
	}
	if gip.To4() == nil || !ipnet.Contains(gip) {
		return Subnet{}, fmt.Errorf("invalid gateway %s: not an IPv4 address in pool %s", quoteShort(gw), pool)
	}
	return Subnet{Pool: pool, Gateway: gw}, nil
}

// DeviceName returns the VXLAN device name for a network, in Docker
// overlay's format: "vx-" + 6 hex digits of the VNI + "-" + the first five
// characters of the network ID (at most 15 characters).
func DeviceName(vni uint32, netID string) string {
	if len(netID) > 5 {
		netID = netID[:5]
	}
	return fmt.Sprintf("vx-%06x-%s", vni&MaxVNI, netID)
}

// EndpointIfName returns the host-side interface name of an endpoint:
// "vxe-" + the first ten characters of the endpoint ID (at most 14).
func EndpointIfName(endpointID string) string {
	if len(endpointID) > 10 {
		endpointID = endpointID[:10]
	}
	return "vxe-" + endpointID
}

// MACFromIP derives a locally administered MAC from an IP as libnetwork
// does: 02:42 followed by the four IPv4 bytes. For an IPv6 address the last
// four bytes are used. It returns nil for an invalid IP.
func MACFromIP(ip net.IP) net.HardwareAddr {
	var b net.IP
	if v4 := ip.To4(); v4 != nil {
		b = v4
	} else if v6 := ip.To16(); v6 != nil {
		b = v6[12:]
	} else {
		return nil
	}
	hw := make(net.HardwareAddr, 6)
	hw[0], hw[1] = 0x02, 0x42
	copy(hw[2:], b)
	return hw
}

// ParseVNIRange parses "A-B" with 1 <= A <= B <= MaxVNI.
func ParseVNIRange(s string) (min, max uint32, err error) {
	bad := func(why string) (uint32, uint32, error) {
		return 0, 0, fmt.Errorf("invalid VNI range %s: %s (format A-B with 1 <= A <= B <= %d)", quoteShort(s), why, MaxVNI)
	}
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return bad("missing '-'")
	}
	lo, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	hi, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	if err1 != nil || err2 != nil {
		return bad("bounds must be decimal numbers")
	}
	if lo < 1 || hi > MaxVNI {
		return bad("bounds out of range")
	}
	if lo > hi {
		return bad("start is above end")
	}
	return uint32(lo), uint32(hi), nil
}

// SortedKeys returns the keys of m in order (handy for logging options).
func SortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// OptIPv6 gives a network IPv6: an IPv6 prefix of at most 96 bits (e.g. fd00:1::/64). Every endpoint's
// IPv6 address is the prefix with the endpoint's IPv4 address, which swarm allocates uniquely across
// the cluster, in its last 32 bits (fd00:1::/64 and 10.0.7.3 give fd00:1::a00:703).
const OptIPv6 = "vxsafe.ipv6"

// OptEnableIPv6 is libnetwork's netlabel.EnableIPv6: the top-level CreateNetwork option that says the
// network was created with Docker's own --ipv6.
const OptEnableIPv6 = "com.docker.network.enable_ipv6"

// ParseIPv6Prefix parses the OptIPv6 option: an IPv6 prefix (not an IPv4-mapped one) of at most 96
// bits, with no bit set past its length, that is not link-local, multicast, loopback or unspecified.
func ParseIPv6Prefix(s string) (*net.IPNet, error) {
	bad := func(why string) (*net.IPNet, error) {
		return nil, fmt.Errorf("invalid option %s=%s: %s; give an IPv6 prefix of at most 96 bits, such as "+
			"a unique local one (e.g. %s=fd00:1::/64)", OptIPv6, quoteShort(s), why, OptIPv6)
	}
	ip, pfx, err := net.ParseCIDR(strings.TrimSpace(s))
	if err != nil {
		return bad("not a prefix in CIDR notation")
	}
	if ip.To4() != nil || strings.Contains(s, ".") {
		return bad("not an IPv6 prefix")
	}
	ones, _ := pfx.Mask.Size()
	if ones > 96 {
		return bad(fmt.Sprintf("/%d leaves fewer than the 32 bits an IPv4 address needs", ones))
	}
	if !ip.Equal(pfx.IP) {
		return bad(fmt.Sprintf("bits are set past the prefix length (the prefix is %s)", pfx))
	}
	if pfx.IP.IsLinkLocalUnicast() || pfx.IP.IsMulticast() || pfx.IP.IsLoopback() || pfx.IP.IsUnspecified() {
		return bad("not a unicast prefix")
	}
	return pfx, nil
}

// IPv6For returns the IPv6 address of the endpoint whose IPv4 address is ip on a network with the IPv6
// prefix pfx (ParseIPv6Prefix's answer): the prefix with the IPv4 address in its last 32 bits. It
// returns nil when ip is not IPv4 or pfx is nil.
func IPv6For(pfx *net.IPNet, ip net.IP) net.IP {
	v4 := ip.To4()
	if pfx == nil || v4 == nil {
		return nil
	}
	out := make(net.IP, net.IPv6len)
	copy(out, pfx.IP.To16())
	copy(out[12:], v4)
	return out
}

// RefuseDockerIPv6 refuses a network created with Docker's own --ipv6 (top-level option OptEnableIPv6
// true, or IPv6 pools given; opts may be nil). Swarm allocates no IPv6 addresses (moby/moby#48116): each
// node's engine hands out its own from the same pool, so containers on different nodes get the same
// addresses, and vxsafe cannot replace an address the engine assigned.
func RefuseDockerIPv6(netID string, opts map[string]interface{}, ipv6Pools int) error {
	on := ipv6Pools > 0
	if v, ok := opts[OptEnableIPv6]; ok {
		if s, ok := optionString(v); ok && s == "true" {
			on = true
		}
	}
	if !on {
		return nil
	}
	return fmt.Errorf("network %s was created with --ipv6: swarm allocates no IPv6 addresses (moby/moby#48116), "+
		"so every node would give its containers the same ones; re-create the network without --ipv6 and without "+
		"an IPv6 --subnet, and with -o %s=PREFIX (e.g. %s=fd00:1::/64): vxsafe then gives each endpoint a unique "+
		"IPv6 address derived from its IPv4 one", ShortID(netID), OptIPv6, OptIPv6)
}
