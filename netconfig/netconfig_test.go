package netconfig

import (
	"encoding/json"
	"math"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

func TestConstants(t *testing.T) {
	// Values libnetwork uses (netlabel.DriverMTU, netlabel.GenericData) and
	// Docker overlay's VNI option key.
	if OptMTU != "com.docker.network.driver.mtu" || GenericKey != "com.docker.network.generic" ||
		OptVNIList != "com.docker.network.driver.overlay.vxlanid_list" {
		t.Fatal("option keys changed")
	}
	if MaxVNI != 16777215 || DefaultPort != 4789 || VXLANOverhead != 50 {
		t.Fatal("numeric constants changed")
	}
	lo, hi, err := ParseVNIRange(DefaultVNIRange)
	if err != nil || lo != 0x100000 || hi != 0x1fffff {
		t.Fatalf("DefaultVNIRange = %d-%d, %v", lo, hi, err)
	}
}

func TestValidateID(t *testing.T) {
	good := []string{
		"a",
		"abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789", // 64 hex
		"q1w2e3r4t5y6u7i8o9p0asdfg",                                        // swarm 25 chars
		"net_1.2-x",
		strings.Repeat("a", MaxIDLength),
	}
	for _, id := range good {
		if err := ValidateID("network", id); err != nil {
			t.Errorf("ValidateID(%q) = %v, want nil", id, err)
		}
	}
	bad := map[string]string{
		"":                                 "empty",
		".":                                "not allowed",
		"..":                               "not allowed",
		"a..b":                             "not allowed",
		"a/b":                              "'/'",
		"../etc":                           "'/'",
		"a\x00b":                           "'\\x00'",
		"a b":                              "' '",
		"é":                                "not allowed",
		strings.Repeat("a", MaxIDLength+1): "at most 128",
	}
	for id, want := range bad {
		err := ValidateID("endpoint", id)
		if err == nil {
			t.Errorf("ValidateID(%q) = nil, want error", id)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "invalid endpoint ID ") || !strings.Contains(msg, want) {
			t.Errorf("ValidateID(%q) = %q, want prefix %q and %q", id, msg, "invalid endpoint ID ", want)
		}
		if strings.ContainsRune(msg, 0) {
			t.Errorf("error message contains raw NUL: %q", msg)
		}
	}
	if err := ValidateID("network", strings.Repeat("x", 500)); err == nil || len(err.Error()) > 200 {
		t.Errorf("long ID error not truncated: %v", err)
	}
}

func TestParseVNI(t *testing.T) {
	good := map[string]uint32{
		"1":                 1,
		"4100":              4100,
		"4100,4101":         4100,
		" 4100 , 4101 ":     4100,
		"16777215":          MaxVNI,
		"0004100":           4100,
		"1048576,2,3,4,5,6": 1048576,
	}
	for s, want := range good {
		got, err := ParseVNI(s)
		if err != nil || got != want {
			t.Errorf("ParseVNI(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "16777216", "-1", "abc", "4100,", ",4100", "4100,0", "4100,x", "0x10", "1e3", "4294967297", "+5", "4100;4101"} {
		v, err := ParseVNI(s)
		if err == nil {
			t.Errorf("ParseVNI(%q) = %d, want error", s, v)
			continue
		}
		if !strings.Contains(err.Error(), OptVNIList) || !strings.Contains(err.Error(), quoteShort(s)) {
			t.Errorf("ParseVNI(%q) error %q does not name the option and value", s, err)
		}
	}
}

func TestParseMTU(t *testing.T) {
	for s, want := range map[string]int{"68": 68, "1450": 1450, " 9000 ": 9000, "65535": 65535} {
		if got, err := ParseMTU(s); err != nil || got != want {
			t.Errorf("ParseMTU(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "67", "65536", "-1500", "15OO", "1500.0", "99999999999999999999"} {
		if v, err := ParseMTU(s); err == nil {
			t.Errorf("ParseMTU(%q) = %d, want error", s, v)
		} else if !strings.Contains(err.Error(), OptMTU) {
			t.Errorf("ParseMTU(%q) error %q does not name %s", s, err, OptMTU)
		}
	}
}

func TestParsePort(t *testing.T) {
	for s, want := range map[string]uint16{"1": 1, "4789": 4789, "8472": 8472, "65535": 65535} {
		if got, err := ParsePort(s); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "65536", "-1", "http", "47 89"} {
		if v, err := ParsePort(s); err == nil {
			t.Errorf("ParsePort(%q) = %d, want error", s, v)
		} else if !strings.Contains(err.Error(), OptPort) {
			t.Errorf("ParsePort(%q) error %q does not name %s", s, err, OptPort)
		}
	}
}

func TestParseAllocateOptions(t *testing.T) {
	vni, mtu, port, err := ParseAllocateOptions(nil)
	if err != nil || vni != 0 || mtu != 0 || port != 0 {
		t.Fatalf("nil options: %d %d %d %v", vni, mtu, port, err)
	}
	vni, mtu, port, err = ParseAllocateOptions(map[string]string{
		OptVNIList: "4100,4101", OptMTU: "1400", OptPort: "8472", "other": "x",
	})
	if err != nil || vni != 4100 || mtu != 1400 || port != 8472 {
		t.Fatalf("full options: %d %d %d %v", vni, mtu, port, err)
	}
	for key, val := range map[string]string{OptVNIList: "0", OptMTU: "10", OptPort: "0"} {
		_, _, _, err := ParseAllocateOptions(map[string]string{key: val})
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%s: err %v, want error naming the key", key, val, err)
		}
	}
	// An explicitly empty value is a mistake, not "absent".
	if _, _, _, err := ParseAllocateOptions(map[string]string{OptVNIList: ""}); err == nil {
		t.Error("empty VNI accepted")
	}
}

func ipam(pool, gw string) *network.IPAMData {
	return &network.IPAMData{AddressSpace: "GlobalDefault", Pool: pool, Gateway: gw}
}

// decode builds CreateNetwork options the way the plugin helper receives
// them: JSON-decoded into map[string]interface{}.
func decode(t *testing.T, js string, useNumber bool) map[string]interface{} {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(js))
	if useNumber {
		d.UseNumber()
	}
	var m map[string]interface{}
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	return m
}

const netID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseCreateOptions(t *testing.T) {
	js := `{"com.docker.network.enable_ipv6": false,
	        "com.docker.network.generic": {"com.docker.network.driver.overlay.vxlanid_list": "1048577",
	           "com.docker.network.driver.mtu": "1400", "vxsafe.port": "8472", "user": "yes", "nested": {"a": 1}}}`
	for _, useNumber := range []bool{false, true} {
		n, err := ParseCreateOptions(netID, decode(t, js, useNumber),
			[]*network.IPAMData{ipam("10.0.1.0/24", "10.0.1.1/24"), nil, ipam("10.0.2.0/24", "")})
		if err != nil {
			t.Fatal(err)
		}
		want := Network{
			ID: netID, VNI: 1048577, Port: 8472, MTU: 1400,
			IPv4:    []Subnet{{"10.0.1.0/24", "10.0.1.1/24"}, {"10.0.2.0/24", ""}},
			Options: map[string]string{OptVNIList: "1048577", OptMTU: "1400", OptPort: "8472", "user": "yes"},
		}
		if !reflect.DeepEqual(n, want) {
			t.Fatalf("got %+v\nwant %+v", n, want)
		}
	}
	// Numbers instead of strings: float64 and json.Number.
	js = `{"com.docker.network.generic": {"com.docker.network.driver.overlay.vxlanid_list": 4100, "com.docker.network.driver.mtu": 1450, "vxsafe.port": 4790}}`
	for _, useNumber := range []bool{false, true} {
		n, err := ParseCreateOptions(netID, decode(t, js, useNumber), nil)
		if err != nil || n.VNI != 4100 || n.MTU != 1450 || n.Port != 4790 {
			t.Fatalf("useNumber=%v: %+v %v", useNumber, n, err)
		}
	}
	// map[string]string under the generic key (in-process callers).
	n, err := ParseCreateOptions(netID, map[string]interface{}{GenericKey: map[string]string{OptVNIList: "7"}}, nil)
	if err != nil || n.VNI != 7 || n.MTU != 0 || n.Port != 0 {
		t.Fatalf("map[string]string: %+v %v", n, err)
	}
}

func TestParseCreateOptionsErrors(t *testing.T) {
	gen := func(m map[string]interface{}) map[string]interface{} {
		return map[string]interface{}{GenericKey: m}
	}
	okVNI := map[string]interface{}{OptVNIList: "4100"}
	cases := []struct {
		name  string
		id    string
		opts  map[string]interface{}
		ipv4  []*network.IPAMData
		wants []string
	}{
		{"bad id", "a/b", gen(okVNI), nil, []string{"invalid network ID"}},
		{"no options", netID, nil, nil, []string{OptVNIList, "missing", netID}},
		{"no vni", netID, gen(map[string]interface{}{"x": "y"}), nil, []string{OptVNIList, "missing"}},
		{"vni at top level only", netID, map[string]interface{}{OptVNIList: "4100"}, nil, []string{OptVNIList, "missing"}},
		{"generic not a map", netID, map[string]interface{}{GenericKey: "x"}, nil, []string{GenericKey, "object"}},
		{"vni zero", netID, gen(map[string]interface{}{OptVNIList: "0"}), nil, []string{OptVNIList, `"0"`}},
		{"vni fraction", netID, gen(map[string]interface{}{OptVNIList: 4100.5}), nil, []string{OptVNIList, "4100.5"}},
		{"vni too big", netID, gen(map[string]interface{}{OptVNIList: float64(1 << 24)}), nil, []string{OptVNIList, "16777216"}},
		{"vni wrong type", netID, gen(map[string]interface{}{OptVNIList: []interface{}{"1"}}), nil, []string{OptVNIList, "type"}},
		{"vni null", netID, gen(map[string]interface{}{OptVNIList: nil}), nil, []string{OptVNIList, "type"}},
		{"mtu bad", netID, gen(map[string]interface{}{OptVNIList: "1", OptMTU: "1"}), nil, []string{OptMTU}},
		{"port bad", netID, gen(map[string]interface{}{OptVNIList: "1", OptPort: "70000"}), nil, []string{OptPort}},
		{"pool bad", netID, gen(okVNI), []*network.IPAMData{ipam("10.0.1.0", "")}, []string{"pool", "10.0.1.0"}},
		{"pool v6", netID, gen(okVNI), []*network.IPAMData{ipam("fd00::/64", "")}, []string{"pool", "IPv4"}},
		{"gw outside", netID, gen(okVNI), []*network.IPAMData{ipam("10.0.1.0/24", "10.0.2.1/24")}, []string{"gateway", "10.0.2.1/24"}},
		{"gw prefix", netID, gen(okVNI), []*network.IPAMData{ipam("10.0.1.0/24", "10.0.1.1/16")}, []string{"gateway", "prefix"}},
		{"gw garbage", netID, gen(okVNI), []*network.IPAMData{ipam("10.0.1.0/24", "gw")}, []string{"gateway", `"gw"`}},
	}
	for _, c := range cases {
		_, err := ParseCreateOptions(c.id, c.opts, c.ipv4)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, err, w)
			}
		}
	}
	// A bare gateway address inside the pool is accepted.
	if _, err := ParseCreateOptions(netID, gen(okVNI), []*network.IPAMData{ipam("10.0.1.0/24", "10.0.1.1")}); err != nil {
		t.Errorf("bare gateway: %v", err)
	}
}

func TestDeviceName(t *testing.T) {
	cases := []struct {
		vni  uint32
		id   string
		want string
	}{
		{4100, "abcdef0123", "vx-001004-abcde"},
		{MaxVNI, netID, "vx-ffffff-01234"},
		{1048576, "ab", "vx-100000-ab"},
	}
	for _, c := range cases {
		got := DeviceName(c.vni, c.id)
		if got != c.want {
			t.Errorf("DeviceName(%d, %q) = %q, want %q", c.vni, c.id, got, c.want)
		}
		if len(got) > 15 {
			t.Errorf("DeviceName too long: %q", got)
		}
	}
}

func TestEndpointIfName(t *testing.T) {
	if got := EndpointIfName(netID); got != "vxe-0123456789" || len(got) > 15 {
		t.Errorf("EndpointIfName = %q", got)
	}
	if got := EndpointIfName("abc"); got != "vxe-abc" {
		t.Errorf("EndpointIfName short = %q", got)
	}
}

func TestMACFromIP(t *testing.T) {
	cases := map[string]string{
		"10.0.1.2":        "02:42:0a:00:01:02",
		"255.255.255.255": "02:42:ff:ff:ff:ff",
		"::ffff:10.0.1.2": "02:42:0a:00:01:02",
		"fd00::a:1:2:3":   "02:42:00:02:00:03",
	}
	for s, want := range cases {
		if got := MACFromIP(net.ParseIP(s)).String(); got != want {
			t.Errorf("MACFromIP(%s) = %s, want %s", s, got, want)
		}
	}
	if MACFromIP(nil) != nil || MACFromIP(net.IP{1, 2, 3}) != nil {
		t.Error("invalid IP gave a MAC")
	}
	// Locally administered, unicast.
	if m := MACFromIP(net.ParseIP("10.0.0.1")); m[0]&0x02 == 0 || m[0]&0x01 != 0 {
		t.Errorf("MAC %s not locally administered unicast", m)
	}
}

func TestParseVNIRange(t *testing.T) {
	good := map[string][2]uint32{
		"1-1":             {1, 1},
		"4096-8191":       {4096, 8191},
		" 100 - 200 ":     {100, 200},
		"1-16777215":      {1, MaxVNI},
		"1048576-2097151": {1048576, 2097151},
	}
	for s, want := range good {
		lo, hi, err := ParseVNIRange(s)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("ParseVNIRange(%q) = %d-%d, %v; want %v", s, lo, hi, err, want)
		}
	}
	for _, s := range []string{"", "5", "0-10", "10-5", "1-16777216", "a-b", "1-", "-5", "1-2-3", "-1-5"} {
		if lo, hi, err := ParseVNIRange(s); err == nil {
			t.Errorf("ParseVNIRange(%q) = %d-%d, want error", s, lo, hi)
		} else if !strings.Contains(err.Error(), "VNI range") {
			t.Errorf("ParseVNIRange(%q) error %q", s, err)
		}
	}
}

func TestSortedKeys(t *testing.T) {
	if got := SortedKeys(map[string]string{"b": "", "a": "", "c": ""}); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("SortedKeys = %v", got)
	}
}

func TestCreateOptionStrings(t *testing.T) {
	m, err := CreateOptionStrings(map[string]interface{}{GenericKey: map[string]interface{}{
		"s": "x", "f": 4100.0, "frac": 1.5, "n": json.Number("12"), "i": 7, "i64": int64(-3), "u32": uint32(9),
		"u64": uint64(10), "f32": float32(2), "b": true, "nan": math.NaN(), "inf": math.Inf(1),
		"nil": nil, "list": []interface{}{1}, "obj": map[string]interface{}{},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"s": "x", "f": "4100", "frac": "1.5", "n": "12", "i": "7", "i64": "-3", "u32": "9",
		"u64": "10", "f32": "2", "b": "true"}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got %v\nwant %v", m, want)
	}
	if m, err := CreateOptionStrings(nil); err != nil || len(m) != 0 {
		t.Errorf("nil: %v %v", m, err)
	}
	if m, err := CreateOptionStrings(map[string]interface{}{GenericKey: nil}); err != nil || len(m) != 0 {
		t.Errorf("generic nil: %v %v", m, err)
	}
	if _, err := CreateOptionStrings(map[string]interface{}{GenericKey: 5.0}); err == nil {
		t.Error("non-map generic accepted")
	}
}

func TestRequireIPv4(t *testing.T) {
	for _, c := range []struct {
		name  string
		opts  map[string]interface{}
		pools int
		want  string // "" for no error
	}{
		{"20.10, a pool", nil, 1, ""},
		{"current engine, IPv4 on", map[string]interface{}{OptEnableIPv4: true}, 2, ""},
		{"current engine, IPv4 off", map[string]interface{}{OptEnableIPv4: false}, 0, "IPv4 disabled"},
		{"IPv4 off as a string", map[string]interface{}{OptEnableIPv4: "false"}, 1, "IPv4 disabled"},
		{"no pool", map[string]interface{}{OptEnableIPv4: true}, 0, "no IPv4 subnet"},
		{"no pool, no options", nil, 0, "no IPv4 subnet"},
	} {
		err := RequireIPv4(netID, c.opts, c.pools)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), ShortID(netID))):
			t.Errorf("%s: error %v, want one naming the network and saying %q", c.name, err, c.want)
		}
	}
}

func TestParseIfName(t *testing.T) {
	for opts, want := range map[string]string{
		`{}`: "", `{"com.docker.network.endpoint.ifname": ""}`: "", `{"com.docker.network.endpoint.ifname": null}`: "",
		`{"com.docker.network.endpoint.ifname": "data0"}`:           "data0",
		`{"com.docker.network.endpoint.ifname": "fifteen-chars-x"}`: "fifteen-chars-x",
		`{"com.docker.network.endpoint.ifname": "eth0.100"}`:        "eth0.100",
	} {
		got, err := ParseIfName(decode(t, opts, false))
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", opts, got, err, want)
		}
	}
	if got, err := ParseIfName(nil); err != nil || got != "" {
		t.Errorf("nil options: %q %v", got, err)
	}
	for _, bad := range []string{`"sixteen-chars-xx"`, `"."`, `".."`, `"a/b"`, `"a:b"`, `"a b"`, `"a\tb"`, `"a\u0000b"`, `1`, `true`, `["x"]`} {
		_, err := ParseIfName(decode(t, `{"com.docker.network.endpoint.ifname": `+bad+`}`, false))
		if err == nil || !strings.Contains(err.Error(), OptIfName) {
			t.Errorf("%s: error %v, want one naming %s", bad, err, OptIfName)
		}
	}
}

func TestIPv6Prefix(t *testing.T) {
	for s, want := range map[string]string{
		"fd00:1::/64": "fd00:1::/64", " 2001:db8:7::/48 ": "2001:db8:7::/48", "fd00::/96": "fd00::/96",
	} {
		p, err := ParseIPv6Prefix(s)
		if err != nil || p.String() != want {
			t.Errorf("ParseIPv6Prefix(%q) = %v, %v; want %s", s, p, err, want)
		}
	}
	for s, why := range map[string]string{
		"10.0.0.0/8": "not an IPv6 prefix", "::ffff:10.0.0.0/104": "not an IPv6 prefix", "fd00::/97": "fewer than the 32 bits",
		"fd00:1::5/64": "bits are set past", "fe80::/64": "not a unicast prefix", "ff02::/16": "not a unicast prefix",
		"::/0": "not a unicast prefix", "fd00:1::": "not a prefix", "": "not a prefix",
	} {
		_, err := ParseIPv6Prefix(s)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), OptIPv6+"=fd00:1::/64") {
			t.Errorf("ParseIPv6Prefix(%q): error %v, want one saying %q and giving an example", s, err, why)
		}
	}
	p, _ := ParseIPv6Prefix("fd00:1::/64")
	for v4, want := range map[string]string{"10.0.7.3": "fd00:1::a00:703", "192.168.255.254": "fd00:1::c0a8:fffe"} {
		if got := IPv6For(p, net.ParseIP(v4)); got.String() != want || !p.Contains(got) {
			t.Errorf("IPv6For(%s, %s) = %s, want %s inside the prefix", p, v4, got, want)
		}
	}
	if IPv6For(nil, net.ParseIP("10.0.0.1")) != nil || IPv6For(p, net.ParseIP("fd00::1")) != nil {
		t.Error("IPv6For without a prefix or without an IPv4 address is not nil")
	}
	// Distinct IPv4 addresses give distinct IPv6 ones: the map is injective on the last 32 bits.
	seen := map[string]bool{}
	for i := 0; i < 1024; i++ {
		a := IPv6For(p, net.IPv4(10, byte(i>>8), byte(i), 1)).String()
		if seen[a] {
			t.Fatalf("duplicate %s", a)
		}
		seen[a] = true
	}
	if err := RefuseDockerIPv6("n", map[string]interface{}{OptEnableIPv6: false}, 0); err != nil {
		t.Errorf("a network without --ipv6 refused: %v", err)
	}
	for _, c := range []struct {
		opts  map[string]interface{}
		pools int
	}{{nil, 1}, {map[string]interface{}{OptEnableIPv6: true}, 0}, {map[string]interface{}{OptEnableIPv6: "true"}, 0}} {
		if err := RefuseDockerIPv6("n", c.opts, c.pools); err == nil || !strings.Contains(err.Error(), OptIPv6+"=PREFIX") {
			t.Errorf("RefuseDockerIPv6(%v, %d) = %v", c.opts, c.pools, err)
		}
	}
}
