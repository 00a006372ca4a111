package main

import (
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSettingsDefaults(t *testing.T) {
	s, err := loadSettings(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.VNIMin != 1048576 || s.VNIMax != 2097151 || s.Port != 4789 || s.GossipPort != 7947 || s.MTU != 0 ||
		s.StateDir != "/host/var/lib" || s.DockerSocket != "/host/run" || s.SweepInterval != 30*time.Second || s.MetricsAddr != "" || len(s.GossipKey) != 0 ||
		s.NodeGoneGrace != 10*time.Second || s.PluginDownGrace != 10*time.Minute ||
		s.ProbeInterval != time.Second || s.ProbeTimeout != 0 {
		t.Fatalf("defaults: %+v", s)
	}
}

func TestSettingsParsed(t *testing.T) {
	s, err := loadSettings(envOf(map[string]string{
		"VNI_RANGE": "5000-6000", "VXLAN_PORT": "8472", "MTU": "1400", "VTEP": "192.168.1.2", "GOSSIP_PORT": "8000",
		"GOSSIP_KEY": strings.Repeat("ab", 32), "PEERS": "10.0.0.1, 10.0.0.2:8000", "METRICS_ADDR": "127.0.0.1:9323",
		"SWEEP_INTERVAL": "5s", "LOG_LEVEL": "debug", "NODE_GONE_GRACE": "0s", "PLUGIN_DOWN_GRACE": "1h",
		"GOSSIP_PROBE_INTERVAL": "3s", "GOSSIP_PROBE_TIMEOUT": "2s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.VNIMin != 5000 || s.VNIMax != 6000 || s.Port != 8472 || s.MTU != 1400 || s.VTEP != "192.168.1.2" ||
		s.GossipPort != 8000 || len(s.GossipKey) != 32 || len(s.Peers) != 2 || s.SweepInterval != 5*time.Second ||
		s.NodeGoneGrace != 0 || s.PluginDownGrace != time.Hour || s.ProbeInterval != 3*time.Second || s.ProbeTimeout != 2*time.Second {
		t.Fatalf("parsed: %+v", s)
	}
}

func TestSettingsErrorsNameTheSetting(t *testing.T) {
	for k, v := range map[string]string{
		"VNI_RANGE": "9-3", "VXLAN_PORT": "0", "MTU": "60", "VTEP": "nope", "GOSSIP_PORT": "7946",
		"GOSSIP_KEY": "short", "PEERS": "a b", "METRICS_ADDR": "9323", "SWEEP_INTERVAL": "1ms", "LOG_LEVEL": "loud",
		"NODE_GONE_GRACE": "-1s", "PLUGIN_DOWN_GRACE": "1s", "GOSSIP_PROBE_INTERVAL": "1ms", "GOSSIP_PROBE_TIMEOUT": "5s",
	} {
		_, err := loadSettings(envOf(map[string]string{k: v}))
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: error %v does not name the setting", k, v, err)
		}
	}
}
