package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
)

// TestPrivileges is an experiment, run with VXSAFE_PRIVILEGES=1 (not part of make test): it installs the
// plugin with config.json as shipped and with one privilege taken away at a time, on one swarm node, and
// reports which of the plugin's jobs still work:
//
//	join       a container starts on a vxsafe network (devices, endpoints)
//	hidden-pid a stale device holding the network's VNI, hidden in the namespace of a process, is found and
//	           removed
//	hidden-mnt the same, hidden in a namespace pinned only by a bind mount
//	overlay    a live Docker overlay device with the VNI is named in the error (not "none is visible")
//	reap       a joined endpoint whose container died without a Leave is noticed
func TestPrivileges(t *testing.T) {
	if os.Getenv("VXSAFE_PRIVILEGES") == "" {
		t.Skip("an experiment: set VXSAFE_PRIVILEGES=1")
	}
	c := startCluster(t, cluster.Options{Prefix: "vxp", Nodes: 1})
	n := c.Manager()
	img := c.Image()
	base := pluginBundle(t)
	type variant struct {
		name string
		edit func(cfg map[string]any)
	}
	dropCap := func(capName string) func(map[string]any) {
		return func(cfg map[string]any) {
			linux := cfg["linux"].(map[string]any)
			var keep []any
			for _, c := range linux["capabilities"].([]any) {
				if c != capName {
					keep = append(keep, c)
				}
			}
			linux["capabilities"] = keep
		}
	}
	variants := []variant{
		{"as shipped", func(map[string]any) {}},
		{"no CAP_SYS_ADMIN", dropCap("CAP_SYS_ADMIN")},
		{"no CAP_SYS_PTRACE", dropCap("CAP_SYS_PTRACE")},
		{"no pidhost", func(cfg map[string]any) { delete(cfg, "pidhost") }},
		{"no CAP_NET_ADMIN", dropCap("CAP_NET_ADMIN")},
		{"no docker-socket mount", func(cfg map[string]any) {
			var keep []any
			for _, m := range cfg["mounts"].([]any) {
				if m.(map[string]any)["name"] != "docker-socket" {
					keep = append(keep, m)
				}
			}
			cfg["mounts"] = keep
		}},
	}
	var report []string
	for i, v := range variants {
		bundle := t.TempDir()
		if out, err := exec.Command("cp", "-a", base+"/.", bundle).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		raw, err := os.ReadFile(filepath.Join(bundle, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		v.edit(cfg)
		raw, _ = json.MarshalIndent(cfg, "", "  ")
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("vxsafe/priv%d:latest", i)
		state := filepath.Join(n.Dir(), fmt.Sprintf("priv%d-state", i))
		if err := os.MkdirAll(state, 0o700); err != nil {
			t.Fatal(err)
		}
		ctx := ctxT(t, 5*time.Minute)
		results := map[string]string{}
		func() {
			if _, err := n.Docker(ctx, "plugin", "create", name, bundle); err != nil {
				t.Fatal(err)
			}
			set := []string{"plugin", "set", name, "state.source=" + state, "LOG_LEVEL=debug", "SWEEP_INTERVAL=2s"}
			if v.name != "no docker-socket mount" {
				set = append(set, "docker-socket.source="+n.Socket)
			}
			if _, err := n.Docker(ctx, set...); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_, _ = n.Docker(context.Background(), "plugin", "disable", "-f", name)
			}()
			if _, err := n.Docker(ctx, "plugin", "enable", name); err != nil {
				results["enable"] = "FAILS: " + oneLine(err.Error())
				return
			}
			net := fmt.Sprintf("pv%d", i)
			vni := 3000 + i*10
			if _, err := n.Docker(ctx, "network", "create", "-d", name, "--attachable", "--subnet", fmt.Sprintf("10.0.%d.0/24", 60+i),
				"-o", fmt.Sprintf("com.docker.network.driver.overlay.vxlanid_list=%d", vni), net); err != nil {
				results["join"] = "FAILS: " + oneLine(err.Error())
				return
			}
			defer func() { _, _ = n.Docker(context.Background(), "network", "rm", net) }()
			var runOn func(what, net string)
			run := func(what string) { runOn(what, net) }
			runOn = func(what, net string) {
				out, err := n.Docker(ctx, "run", "--rm", "--network", net, img, "true")
				if err != nil {
					results[what] = "FAILS: " + oneLine(err.Error())
				} else {
					results[what] = "works " + out
				}
			}
			run("join")
			// hidden-pid: a DOWN device with the VNI, moved into the namespace of a sleeping process.
			sleeper := exec.Command("nsenter", "--net="+n.NetnsPath(), "unshare", "-n", "sleep", "300")
			if err := sleeper.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
			time.Sleep(300 * time.Millisecond) // unshare exec's sleep
			dev := fmt.Sprintf("vxhp%d", i)
			if _, err := n.Exec(ctx, "ip", "link", "add", dev, "type", "vxlan", "id", fmt.Sprint(vni), "dstport", "4789"); err != nil {
				t.Fatal(err)
			}
			if _, err := n.Exec(ctx, "ip", "link", "set", dev, "netns", fmt.Sprint(sleeper.Process.Pid)); err != nil {
				t.Fatal(err)
			}
			run("hidden-pid")
			// hidden-mnt: the same in a namespace pinned only by a bind mount, for a network of its own
			// (the device of hidden-pid may still be there).
			netm := fmt.Sprintf("pm%d", i)
			if _, err := n.Docker(ctx, "network", "create", "-d", name, "--attachable", "--subnet", fmt.Sprintf("10.0.%d.0/24", 120+i),
				"-o", fmt.Sprintf("com.docker.network.driver.overlay.vxlanid_list=%d", vni+2), netm); err != nil {
				t.Fatal(err)
			}
			defer func() { _, _ = n.Docker(context.Background(), "network", "rm", netm) }()
			nsName := fmt.Sprintf("%s-priv%d", c.Name(), i)
			if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			defer exec.Command("ip", "netns", "del", nsName).Run()
			devm := fmt.Sprintf("vxhm%d", i)
			if _, err := n.Exec(ctx, "ip", "link", "add", devm, "type", "vxlan", "id", fmt.Sprint(vni+2), "dstport", "4789"); err != nil {
				t.Fatal(err)
			}
			if _, err := n.Exec(ctx, "ip", "link", "set", devm, "netns", "/var/run/netns/"+nsName); err != nil {
				// ip resolves a netns name relative to /var/run/netns
				if _, err := n.Exec(ctx, "ip", "link", "set", devm, "netns", nsName); err != nil {
					t.Fatal(err)
				}
			}
			runOn("hidden-mnt", netm)
			// overlay: Docker's overlay network with containers on the same VNI.
			ov := fmt.Sprintf("ov%d", i)
			if _, err := n.Docker(ctx, "network", "create", "-d", "overlay", "--attachable", "--subnet", fmt.Sprintf("10.0.%d.0/24", 80+i),
				"-o", fmt.Sprintf("com.docker.network.driver.overlay.vxlanid_list=%d", vni+1), ov); err != nil {
				t.Fatal(err)
			}
			defer func() { _, _ = n.Docker(context.Background(), "network", "rm", ov) }()
			octr := fmt.Sprintf("ovc%d", i)
			if _, err := n.Docker(ctx, "run", "-d", "--name", octr, "--network", ov, img, "sleep", "300"); err != nil {
				t.Fatal(err)
			}
			defer func() { _, _ = n.Docker(context.Background(), "rm", "-f", octr) }()
			net2 := fmt.Sprintf("pw%d", i)
			if _, err := n.Docker(ctx, "network", "create", "-d", name, "--attachable", "--subnet", fmt.Sprintf("10.0.%d.0/24", 100+i),
				"-o", fmt.Sprintf("com.docker.network.driver.overlay.vxlanid_list=%d", vni+1), net2); err != nil {
				t.Fatal(err)
			}
			defer func() { _, _ = n.Docker(context.Background(), "network", "rm", net2) }()
			_, err := n.Docker(ctx, "run", "--rm", "--network", net2, img, "true")
			switch {
			case err == nil:
				results["overlay"] = "UNSAFE: the join succeeded"
			case strings.Contains(err.Error(), "Docker overlay sandbox"):
				results["overlay"] = "works (refused, overlay device named)"
			default:
				results["overlay"] = "degraded: " + oneLine(err.Error())
			}
		}()
		keys := []string{"enable", "join", "hidden-pid", "hidden-mnt", "overlay"}
		var line []string
		for _, k := range keys {
			if r, ok := results[k]; ok {
				line = append(line, fmt.Sprintf("%s: %s", k, r))
			}
		}
		report = append(report, fmt.Sprintf("PRIVILEGES %-22s %s", v.name, strings.Join(line, " | ")))
		t.Log(report[len(report)-1])
		_, _ = n.Docker(context.Background(), "plugin", "rm", "-f", name)
	}
	for _, l := range report {
		t.Log(l)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if i := strings.Index(s, "Error response from daemon: "); i >= 0 {
		s = s[i+len("Error response from daemon: "):]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
