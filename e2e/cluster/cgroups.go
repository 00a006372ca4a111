package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// cgroupMounts lists the mount points of cgroup (v1) and cgroup2 hierarchies.
func cgroupMounts() ([]string, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out, nil
}

// removeCgroups removes the cgroup directory "name" (the node's
// --cgroup-parent) and everything below it in every hierarchy. Cgroup
// directories can only be rmdir'ed, deepest first, once their tasks are gone;
// it retries for up to limit.
func removeCgroups(name string, limit time.Duration) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		var left []string
		var lastErr error
		for _, mp := range mounts {
			root := filepath.Join(mp, name)
			var dirs []string
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
			for _, d := range dirs {
				if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
					left = append(left, d)
					lastErr = err
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups left: %s: %w", strings.Join(left, ", "), lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
