package netconfig

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

func FuzzParseVNI(f *testing.F) {
	for _, s := range []string{"4100", "4100,4101", "0", "16777215", "16777216", "", ",", " 1 ", "-1", "1,0", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVNI(s)
		if err != nil {
			if v != 0 {
				t.Fatalf("ParseVNI(%q) returned %d with error", s, v)
			}
			if !strings.Contains(err.Error(), OptVNIList) {
				t.Fatalf("error %q does not name the option", err)
			}
			return
		}
		if v < 1 || v > MaxVNI {
			t.Fatalf("ParseVNI(%q) = %d, out of range", s, v)
		}
	})
}

func FuzzParseAllocateOptions(f *testing.F) {
	f.Add("4100", "1450", "4789", "x", "y", uint8(7))
	f.Add("0", "0", "0", "", "", uint8(7))
	f.Add("16777216", "65536", "65536", OptVNIList, "1", uint8(1))
	f.Add("1,2", " 68 ", "1", "", "", uint8(0))
	f.Fuzz(func(t *testing.T, vniS, mtuS, portS, k, v string, present uint8) {
		opts := map[string]string{k: v}
		if present&1 != 0 {
			opts[OptVNIList] = vniS
		}
		if present&2 != 0 {
			opts[OptMTU] = mtuS
		}
		if present&4 != 0 {
			opts[OptPort] = portS
		}
		vni, mtu, port, err := ParseAllocateOptions(opts)
		if err != nil {
			if vni != 0 || mtu != 0 || port != 0 {
				t.Fatalf("values with error: %d %d %d", vni, mtu, port)
			}
			return
		}
		if _, ok := opts[OptVNIList]; ok != (vni != 0) || vni > MaxVNI {
			t.Fatalf("vni %d, present %v", vni, ok)
		}
		if _, ok := opts[OptMTU]; ok != (mtu != 0) || (ok && (mtu < MinMTU || mtu > MaxMTU)) {
			t.Fatalf("mtu %d, present %v", mtu, ok)
		}
		if _, ok := opts[OptPort]; ok != (port != 0) {
			t.Fatalf("port %d, present %v", port, ok)
		}
	})
}

func FuzzParseCreateOptions(f *testing.F) {
	f.Add(netID, `{"com.docker.network.generic":{"com.docker.network.driver.overlay.vxlanid_list":"4100"}}`, "10.0.1.0/24", "10.0.1.1/24", false)
	f.Add("abc", `{"com.docker.network.generic":{"com.docker.network.driver.overlay.vxlanid_list":4100,"com.docker.network.driver.mtu":1450,"vxsafe.port":4790}}`, "10.0.0.0/8", "10.0.0.1", true)
	f.Add("abc", `{"com.docker.network.generic":{"com.docker.network.driver.overlay.vxlanid_list":4100.5}}`, "", "", false)
	f.Add("a..b", `{"com.docker.network.generic":"x"}`, "::/0", "x", false)
	f.Add("n", `{"com.docker.network.generic":{"com.docker.network.driver.overlay.vxlanid_list":1e300,"vxsafe.port":-1}}`, "1.2.3.4/32", "1.2.3.4/32", true)
	f.Add("n", `{}`, "", "", false)
	f.Fuzz(func(t *testing.T, id, js, pool, gw string, useNumber bool) {
		d := json.NewDecoder(strings.NewReader(js))
		if useNumber {
			d.UseNumber()
		}
		var opts map[string]interface{}
		if d.Decode(&opts) != nil {
			opts = map[string]interface{}{GenericKey: map[string]interface{}{OptVNIList: js}}
		}
		n, err := ParseCreateOptions(id, opts, []*network.IPAMData{nil, {Pool: pool, Gateway: gw}})
		if err != nil {
			return
		}
		if ValidateID("network", n.ID) != nil || n.ID != id {
			t.Fatalf("accepted bad ID %q", id)
		}
		if n.VNI < 1 || n.VNI > MaxVNI {
			t.Fatalf("VNI %d out of range", n.VNI)
		}
		if n.MTU != 0 && (n.MTU < MinMTU || n.MTU > MaxMTU) {
			t.Fatalf("MTU %d out of range", n.MTU)
		}
		if len(n.IPv4) != 1 {
			t.Fatalf("IPv4 = %v", n.IPv4)
		}
		ip, ipnet, perr := net.ParseCIDR(n.IPv4[0].Pool)
		if perr != nil || ip.To4() == nil {
			t.Fatalf("accepted pool %q", n.IPv4[0].Pool)
		}
		if g := n.IPv4[0].Gateway; g != "" {
			gip := net.ParseIP(g)
			if gip == nil {
				gip, _, _ = net.ParseCIDR(g)
			}
			if gip == nil || !ipnet.Contains(gip) {
				t.Fatalf("accepted gateway %q for pool %q", g, n.IPv4[0].Pool)
			}
		}
		if len(DeviceName(n.VNI, n.ID)) > 15 {
			t.Fatalf("device name too long: %q", DeviceName(n.VNI, n.ID))
		}
	})
}
