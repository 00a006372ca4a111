package cluster

import (
	"context"
	"os/exec"
	"path/filepath"
	"time"
)

// DockerCommand returns the docker CLI command Docker runs for args against the node's daemon (same
// binary, -H, private config dir and environment), for callers that want stdout, stderr and the exit
// status apart. The caller sets Stdout and Stderr and runs it.
func (n *Node) DockerCommand(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"-H", "unix://" + n.Socket}, args...)
	cmd := exec.CommandContext(ctx, dockerCLI(), full...)
	cmd.Env = cliEnv(filepath.Join(n.c.dir, "docker-cli"))
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// FormSwarm forms the swarm of a cluster started with Options.NoSwarm: swarm init on n1, the others
// join, and it waits until every node is Ready. A plugin enabled before the swarm forms is part of the
// node descriptions from the start; one enabled later is only announced at the swarm agent's next
// periodic node update (every 20 s), and a network attachment asked for in between waits for it.
func (c *Cluster) FormSwarm(ctx context.Context) error {
	return c.formSwarm(ctx)
}
