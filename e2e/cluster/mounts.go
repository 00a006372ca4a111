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

// mountEntry is a line of /proc/self/mountinfo: the mount point (unescaped) and the filesystem type.
type mountEntry struct{ point, fstype string }

// readMountinfo lists the mounts of this mount namespace.
func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mount-point options [optional...] - fstype source super-options
		line := sc.Text()
		pre, post, _ := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		if len(fields) < 5 {
			continue
		}
		e := mountEntry{point: dataplane.UnescapeMountPath(fields[4])}
		if pf := strings.Fields(post); len(pf) > 0 {
			e.fstype = pf[0]
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// mountsBelow lists the mount points of this mount namespace that lie below
// one of the prefixes (each ending in "/"), deepest first.
func mountsBelow(prefixes ...string) ([]string, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		for _, p := range prefixes {
			if p != "" && p != "/" && strings.HasPrefix(m.point+"/", p) {
				out = append(out, m.point)
				break
			}
		}
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
