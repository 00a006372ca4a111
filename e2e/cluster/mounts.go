package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/vxsafe/overlay/dataplane"
	"golang.org/x/sys/unix"
)

// unescapeMountinfo undoes the octal escapes (\040 etc.) of /proc/*/mountinfo.
func unescapeMountinfo(s string) string { return dataplane.UnescapeMountPath(s) }

// mountsBelow lists the mount points of this mount namespace that lie below
// one of the prefixes (each ending in "/"), deepest first.
func mountsBelow(prefixes ...string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		for _, p := range prefixes {
			if p != "" && p != "/" && strings.HasPrefix(mp+"/", p) {
				out = append(out, mp)
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, nil
}

// unmountBelow lazily unmounts everything mounted below the prefixes
// (overlay and shm mounts of containers, netns bind mounts of the exec root,
// plugin propagated mounts, the UTS namespace file, ...).
func unmountBelow(prefixes ...string) error {
	var last []string
	for round := 0; round < 10; round++ {
		mps, err := mountsBelow(prefixes...)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		last = mps
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
		}
	}
	return fmt.Errorf("mounts left after 10 rounds of unmounting: %s", strings.Join(last, ", "))
}
