package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// maxUnixPath is the longest usable unix socket path (sun_path is 108 bytes
// including the terminating NUL).
const maxUnixPath = 107

// pluginConfig is the part of a managed plugin's config.json the harness reads.
type pluginConfig struct {
	Interface struct {
		Socket string `json:"socket"`
	} `json:"interface"`
	Mounts []struct {
		Name     string   `json:"name"`
		Settable []string `json:"settable"`
	} `json:"mounts"`
	Env []struct {
		Name     string   `json:"name"`
		Settable []string `json:"settable"`
	} `json:"env"`
}

func readPluginConfig(bundleDir string) (*pluginConfig, error) {
	b, err := os.ReadFile(filepath.Join(bundleDir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("plugin bundle %s: %w", bundleDir, err)
	}
	var cfg pluginConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("plugin bundle %s: config.json: %w", bundleDir, err)
	}
	if st, err := os.Stat(filepath.Join(bundleDir, "rootfs")); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("plugin bundle %s: no rootfs/ directory (build it first)", bundleDir)
	}
	return &cfg, nil
}

// PluginSocketPath is where dockerd dials a managed plugin's socket on the
// host: /run/docker/plugins/<64 hex id>/<socket>. dockerd 20.10 uses that
// directory whatever its --exec-root (it only coincides with
// <exec-root>/plugins for the default exec root /var/run/docker).
func PluginSocketPath(pluginID, socket string) string {
	return filepath.Join(PluginExecRoot, pluginID, socket)
}

// pluginIDs lists the IDs of the managed plugins installed in a data root.
func pluginIDs(dataRoot string) []string {
	ents, err := os.ReadDir(filepath.Join(dataRoot, "plugins"))
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range ents {
		if len(e.Name()) == 64 && strings.Trim(e.Name(), "0123456789abcdef") == "" {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// removePluginExecDirs removes /run/docker/plugins/<id> of the plugins of a
// data root: a daemon that is killed, not stopped, leaves them behind.
func removePluginExecDirs(dataRoot string) error {
	var errs []error
	for _, id := range pluginIDs(dataRoot) {
		dir := filepath.Join(PluginExecRoot, id)
		errs = append(errs, unmountBelow(dir+"/"))
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove plugin dir %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// ExpandNodeVars replaces {node}, {hostname} and {addr} in s with the node's
// name, hostname and underlay address.
func (n *Node) ExpandNodeVars(s string) string {
	return strings.NewReplacer("{node}", n.Name, "{hostname}", n.Hostname, "{addr}", n.Addr, "{socket}", n.Socket).Replace(s)
}

// Plugin mounts whose source InstallPlugin sets per node.
const (
	StateMount        = "state"         // source: the node's StateDir
	DockerSocketMount = "docker-socket" // source: the node's dockerd API socket
)

// InstallPlugin installs a managed plugin on every node concurrently:
// `docker plugin create NAME BUNDLEDIR`, then `docker plugin set` for the
// node-specific settings, then `docker plugin enable NAME`.
//
// If config.json declares a mount named "state", its source is set to the
// node's StateDir (DIR/<node>/vxsafe-state, created first); a mount named
// "docker-socket" gets the node's API socket (nodes have no
// /var/run/docker.sock). Every env entry is set as KEY=VALUE; {node},
// {hostname} and {addr} in a value are replaced per node (ExpandNodeVars).
func (c *Cluster) InstallPlugin(ctx context.Context, bundleDir, name string, env map[string]string) error {
	bundleDir, err := filepath.Abs(bundleDir)
	if err != nil {
		return fmt.Errorf("plugin bundle %s: %w", bundleDir, err)
	}
	cfg, err := readPluginConfig(bundleDir)
	if err != nil {
		return err
	}
	if s := cfg.Interface.Socket; s != "" {
		if p := PluginSocketPath(strings.Repeat("0", 64), s); len(p) > maxUnixPath {
			return fmt.Errorf("plugin %s: socket path %s is %d bytes, longer than the %d a unix socket allows: use a shorter socket name", name, p, len(p), maxUnixPath)
		}
	}
	hasState, hasSocket := false, false
	for _, m := range cfg.Mounts {
		switch m.Name {
		case StateMount:
			hasState = true
		case DockerSocketMount:
			hasSocket = true
		}
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	err = c.each(func(n *Node) error {
		set := []string{"plugin", "set", name}
		if hasState {
			if err := os.MkdirAll(n.StateDir(), 0o755); err != nil {
				return fmt.Errorf("node %s: plugin state dir: %w", n.Name, err)
			}
			set = append(set, StateMount+".source="+n.StateDir())
		}
		if hasSocket {
			set = append(set, DockerSocketMount+".source="+n.Socket)
		}
		for _, k := range keys {
			set = append(set, k+"="+n.ExpandNodeVars(env[k]))
		}
		if _, err := n.Docker(ctx, "plugin", "create", name, bundleDir); err != nil {
			return err
		}
		if len(set) > 3 {
			if _, err := n.Docker(ctx, set...); err != nil {
				return err
			}
		}
		if _, err := n.Docker(ctx, "plugin", "enable", name); err != nil {
			return fmt.Errorf("%w; log tail:\n%s", err, n.LogTail(15))
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.logf("plugin %s installed and enabled on %d nodes", name, len(c.nodes))
	return nil
}

// RemovePlugin disables (forced) and removes a plugin on every node; a node
// without the plugin is not an error.
func (c *Cluster) RemovePlugin(ctx context.Context, name string) error {
	return c.each(func(n *Node) error {
		if _, err := n.Docker(ctx, "plugin", "inspect", "--format", "{{.ID}}", name); err != nil {
			return nil
		}
		if _, err := n.Docker(ctx, "plugin", "disable", "-f", name); err != nil && !strings.Contains(err.Error(), "already disabled") {
			return err
		}
		_, err := n.Docker(ctx, "plugin", "rm", "-f", name)
		return err
	})
}

// PluginID returns the full ID of an installed plugin on the node.
func (n *Node) PluginID(ctx context.Context, name string) (string, error) {
	return n.Docker(ctx, "plugin", "inspect", "--format", "{{.ID}}", name)
}
