package gossip

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Wire protocol: every user message and every push/pull state starts with a
// protocol version byte and a message type byte, followed by JSON.
const (
	wireVersion byte = 1

	msgDelta      byte = 1 // one owner's changed records (broadcast)
	msgState      byte = 2 // full table (push/pull)
	msgRekey      byte = 3 // a key notice for one member (reliable, direct)
	msgAck        byte = 4 // a member applied a key notice (reliable, direct)
	msgKeyRequest byte = 5 // a member asks for a network's current keys (reliable, direct)
	msgPull       byte = 6 // a member asks for the records held of some owners (reliable, direct; digest.go)
	msgGroups     byte = 7 // the answer to msgPull: those owners' records (reliable, direct)

	metaVersion byte = 1
	metaLen          = 9 // version byte + big-endian incarnation

	maxFieldLen = 256
	maxKeyIDLen = 6  // bytes of a KeyID (12 hex digits)
	sha256Size  = 32 // bytes of a record's tag
)

// wireRecord is one endpoint record as it travels between nodes.
type wireRecord struct {
	Network  string `json:"n"`
	Endpoint string `json:"e"`
	IP       string `json:"ip,omitempty"`
	MAC      string `json:"mac,omitempty"`
	VTEP     string `json:"vtep,omitempty"`
	Inc      uint64 `json:"i"`
	Seq      uint64 `json:"s"`
	Deleted  bool   `json:"d,omitempty"`
	// AgeMS is, for a tombstone, how long ago (milliseconds, sender's
	// monotonic view) the sender stored it; receivers expire it at the same
	// moment, so tombstones do not bounce between nodes forever.
	AgeMS int64 `json:"age,omitempty"`
	// KeyID and Tag sign the record under its network's key (see recordTag); both are empty for
	// records of unkeyed networks.
	KeyID string `json:"k,omitempty"`
	Tag   []byte `json:"t,omitempty"`
}

// wireManifest signs, for one keyed network, the sender's claim that its own records of that network
// in the state are complete up to (Inc, Clock).
type wireManifest struct {
	Network string `json:"n"`
	KeyID   string `json:"k"`
	Epoch   uint64 `json:"e,omitempty"`
	Pub     []byte `json:"pub,omitempty"` // the sender's boot key (X25519, HPKE)
	Tag     []byte `json:"t"`
}

// wireGroup holds records of one owner node.
type wireGroup struct {
	Owner   string       `json:"o"`
	Records []wireRecord `json:"r"`
	// Direct: the owner sent this delta to every member itself (sendDirect); receivers do not relay it.
	// Earlier versions ignore the field and relay it.
	Direct bool `json:"dr,omitempty"`
}

// wireState is a node's table for push/pull. The group whose Owner equals From is complete up to
// (Inc, Clock). Of the other owners it carries digests (digest.go); a node of an earlier version sent
// their groups in full, which are merged as relayed.
type wireState struct {
	From   string      `json:"from"`
	Inc    uint64      `json:"inc"`
	Clock  uint64      `json:"clock"`
	Groups []wireGroup `json:"g"`
	// Manifests: one per keyed network the sender has declared.
	Manifests []wireManifest `json:"m,omitempty"`
	Digests   []wireDigest   `json:"dg,omitempty"`
}

func encodeMsg(typ byte, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode gossip message type %d: %w", typ, err)
	}
	buf := make([]byte, 0, len(body)+2)
	buf = append(buf, wireVersion, typ)
	return append(buf, body...), nil
}

// decodeMsg checks the header and returns the message type and body.
func decodeMsg(buf []byte) (byte, []byte, error) {
	if len(buf) < 2 {
		return 0, nil, errors.New("gossip message too short")
	}
	if buf[0] != wireVersion {
		return 0, nil, fmt.Errorf("gossip message has unsupported version %d", buf[0])
	}
	return buf[1], buf[2:], nil
}

func decodeDelta(body []byte) (wireGroup, error) {
	var g wireGroup
	if err := json.Unmarshal(body, &g); err != nil {
		return g, fmt.Errorf("decode gossip delta: %w", err)
	}
	return g, nil
}

func decodeJSON(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode gossip message: %w", err)
	}
	return nil
}

func decodeState(body []byte) (wireState, error) {
	var s wireState
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("decode gossip state: %w", err)
	}
	return s, nil
}

func encodeMeta(inc uint64) []byte {
	b := make([]byte, metaLen)
	b[0] = metaVersion
	binary.BigEndian.PutUint64(b[1:], inc)
	return b
}

func decodeMeta(b []byte) (uint64, error) {
	if len(b) != metaLen || b[0] != metaVersion {
		return 0, fmt.Errorf("node metadata of %d bytes is not a vxsafe gossip incarnation", len(b))
	}
	inc := binary.BigEndian.Uint64(b[1:])
	if inc == 0 {
		return 0, errors.New("node metadata carries incarnation 0")
	}
	return inc, nil
}

// normalizeEndpoint validates ep and returns it in canonical form (MAC lower
// case, addresses without zone or prefix).
func normalizeEndpoint(ep Endpoint) (Endpoint, error) {
	if ep.Network == "" || ep.EndpointID == "" {
		return ep, fmt.Errorf("endpoint %q of network %q: network and endpoint ID are required", ep.EndpointID, ep.Network)
	}
	if len(ep.Network) > maxFieldLen || len(ep.EndpointID) > maxFieldLen {
		return ep, fmt.Errorf("endpoint %q of network %q: identifier too long", ep.EndpointID, ep.Network)
	}
	ip, mac, vtep, err := ep.Addrs()
	if err != nil {
		return ep, err
	}
	ep.IP = ip.String()
	ep.MAC = mac.String()
	ep.VTEP = vtep.String()
	return ep, nil
}

// Addrs parses the endpoint's addresses: its IPv4 address (4 bytes), its 48-bit MAC and its VTEP (4 bytes
// for IPv4, 16 for IPv6, no zone). It is the one parser of an endpoint's strings: the wire records are
// validated with it, and the driver turns what the table reports into kernel entries with it.
func (ep Endpoint) Addrs() (ip net.IP, mac net.HardwareAddr, vtep net.IP, err error) {
	a, err := netip.ParseAddr(ep.IP)
	if err != nil || !a.Unmap().Is4() {
		return nil, nil, nil, fmt.Errorf("endpoint %s of network %s: IP %q is not an IPv4 address", ep.EndpointID, ep.Network, ep.IP)
	}
	mac, err = net.ParseMAC(ep.MAC)
	if err != nil || len(mac) != 6 {
		return nil, nil, nil, fmt.Errorf("endpoint %s of network %s: MAC %q is not a 48-bit MAC address", ep.EndpointID, ep.Network, ep.MAC)
	}
	v, err := netip.ParseAddr(ep.VTEP)
	if err != nil || v.Zone() != "" {
		return nil, nil, nil, fmt.Errorf("endpoint %s of network %s: VTEP %q is not an IP address", ep.EndpointID, ep.Network, ep.VTEP)
	}
	return net.IP(a.Unmap().AsSlice()), mac, net.IP(v.Unmap().AsSlice()), nil
}

func (r wireRecord) key() recKey { return recKey{network: r.Network, endpoint: r.Endpoint} }

func (r wireRecord) endpoint() Endpoint {
	return Endpoint{Network: r.Network, EndpointID: r.Endpoint, IP: r.IP, MAC: r.MAC, VTEP: r.VTEP}
}

// validate checks a received record and returns it in canonical form.
func (r wireRecord) validate() (wireRecord, error) {
	if r.Inc == 0 {
		return r, fmt.Errorf("record %s/%s has incarnation 0", r.Network, r.Endpoint)
	}
	if r.Deleted {
		if r.Network == "" || r.Endpoint == "" || len(r.Network) > maxFieldLen || len(r.Endpoint) > maxFieldLen {
			return r, fmt.Errorf("tombstone %q/%q has an invalid key", r.Network, r.Endpoint)
		}
		if r.AgeMS < 0 {
			r.AgeMS = 0
		}
		r.IP, r.MAC, r.VTEP = "", "", ""
		return r, r.checkSignature()
	}
	ep, err := normalizeEndpoint(r.endpoint())
	if err != nil {
		return r, fmt.Errorf("invalid record: %w", err)
	}
	r.IP, r.MAC, r.VTEP = ep.IP, ep.MAC, ep.VTEP
	r.AgeMS = 0
	return r, r.checkSignature()
}

// checkSignature bounds the signature fields of a received record (whether they sign it is checked
// against the network's keys).
func (r wireRecord) checkSignature() error {
	if len(r.KeyID) > 2*maxKeyIDLen || len(r.Tag) > sha256Size || (r.KeyID == "") != (len(r.Tag) == 0) {
		return fmt.Errorf("record %s/%s has a malformed signature", r.Network, r.Endpoint)
	}
	return nil
}
