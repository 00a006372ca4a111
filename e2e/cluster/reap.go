package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// owner is written to RUNDIR/owner so that ReapStale can tell clusters of a
// dead process (a test binary killed by a timeout skips its cleanups) from
// live ones.
type owner struct {
	Pid    int    `json:"pid"`
	Start  string `json:"start"` // process start time (clock ticks since boot)
	Dir    string `json:"dir,omitempty"`
	OwnDir bool   `json:"own_dir,omitempty"`
}

func procStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22 of stat: starttime
}

func writeOwner(runDir string) error {
	o := owner{Pid: os.Getpid(), Start: procStart(os.Getpid())}
	return saveOwner(runDir, o)
}

func saveOwner(runDir string, o owner) error {
	b, _ := json.Marshal(o)
	if err := os.WriteFile(filepath.Join(runDir, "owner"), b, 0o644); err != nil {
		return fmt.Errorf("cluster owner file: %w", err)
	}
	return nil
}

func readOwner(runDir string) (owner, error) {
	var o owner
	b, err := os.ReadFile(filepath.Join(runDir, "owner"))
	if err != nil {
		return o, err
	}
	return o, json.Unmarshal(b, &o)
}

// Leftovers lists what is left on this machine of the cluster: Leftovers(Name)
// plus mounts below Dir, Dir itself (unless kept on failure or given in
// Options.Dir) and plugin socket dirs of the nodes' plugins. Empty after a
// successful Close.
func (c *Cluster) Leftovers() []string {
	left := Leftovers(c.name)
	if c.dir != "" {
		if mps, err := mountsBelow(c.dir + "/"); err == nil {
			for _, mp := range mps {
				left = append(left, "mount "+mp)
			}
		}
		c.mu.Lock()
		keep := c.failed && c.opts.KeepOnFailure
		c.mu.Unlock()
		if _, err := os.Lstat(c.dir); err == nil && c.ownDir && !keep {
			left = append(left, "dir "+c.dir)
		}
	}
	for _, id := range c.pluginIDs {
		if _, err := os.Lstat(filepath.Join(PluginExecRoot, id)); err == nil {
			left = append(left, "plugin dir "+filepath.Join(PluginExecRoot, id))
		}
	}
	return left
}

// Leftovers lists what is left on this machine of the cluster called name
// (Cluster.Name): named network namespaces, mounts below its run dir,
// processes, cgroups and the run directory. Empty after a successful Close.
func Leftovers(name string) []string {
	var left []string
	if ents, err := os.ReadDir(NetnsDir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), name+"-") {
				left = append(left, "netns "+e.Name())
			}
		}
	}
	runDir := filepath.Join(RunBase, name)
	prefixes := []string{runDir + "/"}
	if o, err := readOwner(runDir); err == nil && o.Dir != "" {
		prefixes = append(prefixes, o.Dir+"/")
	}
	if mps, err := mountsBelow(prefixes...); err == nil {
		for _, mp := range mps {
			left = append(left, "mount "+mp)
		}
	}
	if tree, err := matchingTree(func(args []string) bool { return argsMention(args, runDir+"/") }); err == nil {
		for _, p := range tree {
			left = append(left, fmt.Sprintf("process %d %s", p.pid, strings.Join(p.args, " ")))
		}
	}
	if _, err := os.Lstat(runDir); err == nil {
		left = append(left, "dir "+runDir)
	}
	if mps, err := cgroupMounts(); err == nil {
		for _, mp := range mps {
			if m, _ := filepath.Glob(filepath.Join(mp, name+"-*")); len(m) > 0 {
				left = append(left, "cgroup "+strings.Join(m, " "))
			}
		}
	}
	return left
}

// ReapStale removes the leftovers of clusters named prefix-* whose owning
// process is gone: kills their processes, unmounts, deletes their
// namespaces and directories. Clusters of live processes are not touched.
// Start calls it for its own prefix.
func ReapStale(prefix string, log io.Writer) error {
	ents, err := os.ReadDir(RunBase)
	if err != nil {
		return fmt.Errorf("reap: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, prefix+"-") || strings.Count(name, "-") != strings.Count(prefix, "-")+1 {
			continue
		}
		runDir := filepath.Join(RunBase, name)
		o, err := readOwner(runDir)
		if err != nil {
			// Being created right now, or not ours: only reap old ones.
			if st, serr := os.Stat(runDir); serr != nil || time.Since(st.ModTime()) < 10*time.Minute {
				continue
			}
		} else if o.Start != "" && procStart(o.Pid) == o.Start {
			continue // owner alive
		}
		if log != nil {
			fmt.Fprintf(log, "reaping stale cluster %s (owner pid %d gone)\n", name, o.Pid)
		}
		errs = append(errs, killMatching(func(args []string) bool { return argsMention(args, runDir+"/") }, 5*time.Second))
		prefixes := []string{runDir + "/"}
		if o.Dir != "" {
			prefixes = append(prefixes, o.Dir+"/")
		}
		errs = append(errs, unmountBelow(prefixes...))
		if o.Dir != "" {
			roots, _ := filepath.Glob(filepath.Join(o.Dir, "n*", "data"))
			for _, r := range roots {
				errs = append(errs, removePluginExecDirs(r))
			}
		}
		if nss, err := os.ReadDir(NetnsDir); err == nil {
			for _, ns := range nss {
				if strings.HasPrefix(ns.Name(), name+"-") {
					errs = append(errs, (&nsRef{name: ns.Name(), h: netns.None()}).close())
				}
			}
		}
		if mps, err := cgroupMounts(); err == nil {
			for _, mp := range mps {
				m, _ := filepath.Glob(filepath.Join(mp, name+"-*"))
				for _, d := range m {
					errs = append(errs, removeCgroups(filepath.Base(d), 2*time.Second))
				}
			}
		}
		errs = append(errs, os.RemoveAll(runDir))
		if o.Dir != "" && o.OwnDir {
			errs = append(errs, os.RemoveAll(o.Dir))
		}
	}
	return errors.Join(errs...)
}
