package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Where config.json's mounts appear inside the plugin. Both mount a directory that every Linux host has
// (/var/lib and /var/run), not the files vxsafe needs: Docker creates nothing for a plugin mount and runc
// refuses to start the plugin when a mount's source is missing, so a mount of /var/lib/vxsafe or
// /var/run/docker.sock would fail `docker plugin enable` on a fresh host, or on one whose engine listens
// elsewhere. Both mounts are non-recursive ("bind", not "rbind"): Docker's own mounts below /var/lib
// (overlay2 layers, container shm) and below /run (network namespaces) are not copied into the plugin,
// so it can never keep one of them alive.
const (
	// stateMount holds the host's /var/lib, or the directory `state.source` names.
	stateMount = "/host/var/lib"
	// stateDirName is vxsafe's directory inside stateMount: /var/lib/vxsafe on the host by default.
	stateDirName = "vxsafe"
	// dockerSocketMount holds the host's /var/run, or the directory or socket `docker-socket.source`
	// names.
	dockerSocketMount = "/host/run"
	// dockerSocketName is the Docker API socket inside a directory mounted at dockerSocketMount.
	dockerSocketName = "docker.sock"
	// stateFile is the bbolt database in the state directory.
	stateFile = "vxsafe.db"
)

// resolveStateDir returns the directory holding vxsafe's database below the state mount, creating it
// (mode 0700) when it does not exist yet: mount/vxsafe. An operator who set `state.source` to the
// state directory itself, as releases before this layout told them to (their database sits directly in
// the mount), keeps it there: mount is used when mount/vxsafe.db exists.
func resolveStateDir(mount string) (string, error) {
	st, err := os.Stat(mount)
	if err != nil {
		return "", fmt.Errorf("state mount %s: %w (check the plugin's state.source: `docker plugin inspect -f '{{.Settings.Mounts}}' vxsafe/overlay:latest`)", mount, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("state mount %s is not a directory: set state.source to an existing directory (default /var/lib)", mount)
	}
	if _, err := os.Stat(filepath.Join(mount, stateFile)); err == nil {
		return mount, nil
	}
	dir := filepath.Join(mount, stateDirName)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("state directory %s: %w", dir, err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", fmt.Errorf("state directory %s: exists and is not a directory", dir)
	}
	return dir, nil
}

// resolveDockerSocket returns the Docker API socket behind the docker-socket mount: the mount itself
// when `docker-socket.source` names a socket, else docker.sock inside the mounted directory. The path
// may not exist (the engine listens elsewhere, or not on a unix socket): the plugin then works without
// the Docker API, seeded by libnetwork's DiscoverNew, remembered peers and PEERS.
func resolveDockerSocket(mount string) string {
	st, err := os.Stat(mount)
	if err == nil && st.IsDir() {
		return filepath.Join(mount, dockerSocketName)
	}
	return mount
}
