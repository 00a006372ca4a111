// Package vxsafe builds this checkout's vxsafe/overlay plugin bundle and installs it on a test cluster
// (package cluster), with the settings the end-to-end tests and the demo use.
package vxsafe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vxsafe/overlay/e2e/cluster"
)

// Plugin is the reference the end-to-end tests and the demo install vxsafe/overlay under. In swarm
// mode networks must name the driver with its tag.
const Plugin = "vxsafe/overlay:latest"

// vxsafeModule is the module path of the checkout BuildBundle builds from.
const vxsafeModule = "github.com/vxsafe/overlay"

// Settings are the plugin settings InstallVxsafe applies on every node unless env overrides them:
// debug logs, the node's own dockerd socket as the Docker API (nodes have no /var/run/docker.sock) and a
// short sweep interval. InstallPlugin also points the "state" mount at the node's StateDir.
func Settings() map[string]string {
	return map[string]string{"LOG_LEVEL": "debug", "docker-socket.source": "{socket}", "SWEEP_INTERVAL": "5s"}
}

// Install installs the plugin bundle in bundleDir as Plugin on every node of c, with
// Settings overridden by env, and enables it.
func Install(ctx context.Context, c *cluster.Cluster, bundleDir string, env map[string]string) error {
	all := Settings()
	for k, v := range env {
		all[k] = v
	}
	return c.InstallPlugin(ctx, bundleDir, Plugin, all)
}

// RepoRoot returns the root of the vxsafe/overlay checkout: the first directory upwards from the working
// directory whose go.mod declares the module, or else the one this file was compiled from.
func RepoRoot() (string, error) {
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if isVxsafeRoot(dir) {
				return dir, nil
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Dir(filepath.Dir(filepath.Dir(file)))
		if isVxsafeRoot(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no checkout of %s (a go.mod declaring it) above the working directory", vxsafeModule)
}

func isVxsafeRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == vxsafeModule
		}
	}
	return false
}

// goTool finds the go command: PATH, then $GOROOT/bin, then the GOROOT this binary was built with.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	for _, root := range []string{os.Getenv("GOROOT"), runtime.GOROOT(), "/usr/local/go"} {
		if root == "" {
			continue
		}
		if p := filepath.Join(root, "bin", "go"); isExecutable(p) {
			return p
		}
	}
	return "go"
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// BuildBundle writes a vxsafe/overlay plugin bundle into dir (which must exist): the checkout's
// config.json and a rootfs/ holding a static vxsafe built from ./plugin with main.version set to version,
// plus the empty files and directories the plugin's mounts need. It is what `make rootfs` makes in the
// checkout, in a directory of its own, so a stale rootfs/ can never be what is tested. The binary,
// DIR/rootfs/vxsafe, also runs on the host (`vxsafe doctor`).
func BuildBundle(ctx context.Context, dir, version string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	for _, d := range []string{"rootfs/run/docker/plugins", "rootfs/proc", "rootfs/sys", "rootfs/dev", "rootfs/tmp", "rootfs/etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("plugin bundle %s: %w", dir, err)
		}
	}
	for _, f := range []string{"rootfs/etc/hosts", "rootfs/etc/resolv.conf", "rootfs/etc/hostname"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			return fmt.Errorf("plugin bundle %s: %w", dir, err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(root, "config.json"))
	if err != nil {
		return fmt.Errorf("plugin bundle %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		return fmt.Errorf("plugin bundle %s: %w", dir, err)
	}
	cmd := exec.CommandContext(ctx, goTool(), "build", "-ldflags", "-s -w -X main.version="+version,
		"-o", filepath.Join(dir, "rootfs", "vxsafe"), "./plugin")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return fmt.Errorf("plugin bundle %s: building the plugin in %s: %w\n%s", dir, root, err, out)
	}
	return nil
}
