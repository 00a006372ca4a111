package cluster

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procInfo is what the harness needs to know about a process.
type procInfo struct {
	pid, ppid int
	state     byte
	args      []string
}

func (p procInfo) zombie() bool { return p.state == 'Z' || p.state == 'X' }

func readProc(pid int) (procInfo, bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// "pid (comm) state ppid ...": comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return procInfo{}, false
	}
	fields := strings.Fields(string(stat[i+2:]))
	if len(fields) < 2 {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(fields[1])
	p := procInfo{pid: pid, ppid: ppid, state: fields[0][0]}
	if cl, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil && len(cl) > 0 {
		p.args = strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
	}
	return p, true
}

func listProcs() (map[int]procInfo, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	procs := make(map[int]procInfo, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			procs[pid] = p
		}
	}
	return procs, nil
}

func argsMention(args []string, s string) bool {
	for _, a := range args {
		if strings.Contains(a, s) {
			return true
		}
	}
	return false
}

// matchingTree returns the live (non-zombie) processes whose command line
// matches, plus all their descendants.
func matchingTree(match func(args []string) bool) ([]procInfo, error) {
	return processTree(match, true)
}

// processTree returns the live descendants of the processes whose command
// line matches, and with includeRoots those processes too.
func processTree(match func(args []string) bool, includeRoots bool) ([]procInfo, error) {
	procs, err := listProcs()
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	in, roots := map[int]bool{}, map[int]bool{}
	for pid, p := range procs {
		if pid != self && len(p.args) > 0 && match(p.args) {
			in[pid] = true
			roots[pid] = true
		}
	}
	for grew := true; grew; {
		grew = false
		for pid, p := range procs {
			if !in[pid] && in[p.ppid] && pid != self {
				in[pid] = true
				grew = true
			}
		}
	}
	var out []procInfo
	for pid := range in {
		if p := procs[pid]; !p.zombie() && (includeRoots || !roots[pid]) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out, nil
}

// killMatching SIGKILLs every process whose command line matches, and all
// their descendants, until none is left or wait has passed. Zombies count as
// gone (their parent, maybe init, reaps them).
func killMatching(match func(args []string) bool, wait time.Duration) error {
	return killTree(match, true, wait)
}

// killDescendants is killMatching without the matching processes themselves.
func killDescendants(match func(args []string) bool, wait time.Duration) error {
	return killTree(match, false, wait)
}

// killTree kills, waits, and then removes the sockets containerd shims among
// the killed processes leave in /run/containerd/s.
func killTree(match func(args []string) bool, includeRoots bool, wait time.Duration) error {
	var shimSockets []string
	defer func() {
		for _, s := range shimSockets {
			os.Remove(s)
		}
	}()
	deadline := time.Now().Add(wait)
	for {
		tree, err := processTree(match, includeRoots)
		if err != nil {
			return err
		}
		if len(tree) == 0 {
			return nil
		}
		for _, p := range tree {
			if s := shimSocketPath(p.args); s != "" {
				shimSockets = append(shimSockets, s)
			}
		}
		if time.Now().After(deadline) {
			var s []string
			for _, p := range tree {
				s = append(s, fmt.Sprintf("%d %s", p.pid, strings.Join(p.args, " ")))
			}
			return fmt.Errorf("processes still alive after SIGKILL: %s", strings.Join(s, "; "))
		}
		for _, p := range tree {
			if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill %d (%s): %w", p.pid, strings.Join(p.args, " "), err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shimSocketRoot is where containerd 1.6 shims (v2) put their sockets,
// whatever containerd's own state dir is.
const shimSocketRoot = "/run/containerd/s"

// ShimArgs reads the containerd namespace, task id and containerd address (without "unix://") from
// the command line of a containerd shim; ok is false for any other process or an incomplete line.
func ShimArgs(args []string) (namespace, id, address string, ok bool) {
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
		return "", "", "", false
	}
	for i := 0; i+1 < len(args); i++ {
		switch strings.TrimLeft(args[i], "-") {
		case "namespace":
			namespace = args[i+1]
		case "id":
			id = args[i+1]
		case "address":
			address = strings.TrimPrefix(args[i+1], "unix://")
		}
	}
	return namespace, id, address, namespace != "" && id != "" && address != ""
}

// shimSocketPath returns the socket a containerd-shim-runc-v2 with these
// arguments listens on: shimSocketRoot/sha256(address/namespace/id), as in
// containerd's runtime/v2/shim.SocketAddress. A killed shim leaves it behind.
func shimSocketPath(args []string) string {
	ns, id, addr, ok := ShimArgs(args)
	if !ok {
		return ""
	}
	sum := sha256.Sum256([]byte(filepath.Join(addr, ns, id)))
	return filepath.Join(shimSocketRoot, fmt.Sprintf("%x", sum))
}
