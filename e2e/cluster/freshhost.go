package cluster

import (
	"path/filepath"
)

// DefaultDockerSocket is where a host's engine listens by default.
const DefaultDockerSocket = "/var/run/docker.sock"

// freshHostScript runs as `sh -c SCRIPT sh RUNDIR VARLIB KEEP dockerd ARGS...` in a new mount namespace
// (slave of the machine's): it puts an empty tmpfs on /run with only the cluster's run dir moved back
// into it, binds the node's empty directory on /var/lib, and execs dockerd in place (the PID stays the
// one the harness started).
const freshHostScript = `set -e
run=$1 varlib=$2 keep=$3
shift 3
mkdir -p "$varlib" "$keep"
mount --bind "$run" "$keep"
mount -t tmpfs -o mode=0755 vxe2e-fresh-run /run
mkdir -p "$run"
mount --move "$keep" "$run"
mount --bind "$varlib" /var/lib
exec "$@"
`

// FreshVarLib is the host directory a FreshHost node's dockerd sees as /var/lib.
func (n *Node) FreshVarLib() string { return filepath.Join(n.dir, "fresh-var-lib") }

// freshHostArgs is the command prefix that starts dockerd on a fresh host (Options.FreshHost).
func (n *Node) freshHostArgs() []string {
	return []string{"unshare", "--mount", "--propagation", "slave", "--", "/bin/sh", "-c", freshHostScript, "sh",
		n.c.runDir, n.FreshVarLib(), filepath.Join(n.dir, "fresh-run-keep")}
}
