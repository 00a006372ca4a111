package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// formSwarm initialises the swarm on n1, joins managers one by one and
// workers concurrently, and waits until the manager lists every node Ready.
func (c *Cluster) formSwarm(ctx context.Context) error {
	began := time.Now()
	m := c.Manager()
	if _, err := m.Docker(ctx, "swarm", "init", "--advertise-addr", m.Addr); err != nil {
		return err
	}
	var workerToken, managerToken string
	var err error
	if len(c.nodes) > c.opts.Managers {
		if workerToken, err = m.Docker(ctx, "swarm", "join-token", "-q", "worker"); err != nil {
			return err
		}
	}
	if c.opts.Managers > 1 {
		if managerToken, err = m.Docker(ctx, "swarm", "join-token", "-q", "manager"); err != nil {
			return err
		}
	}
	join := func(n *Node, token string) error {
		_, err := n.Docker(ctx, "swarm", "join", "--token", token, "--advertise-addr", n.Addr, m.Addr+":2377")
		return err
	}
	// Raft membership changes one at a time: managers sequentially.
	for _, n := range c.nodes[1:c.opts.Managers] {
		if err := join(n, managerToken); err != nil {
			return err
		}
	}
	if err := eachNode(c.nodes[c.opts.Managers:], func(n *Node) error { return join(n, workerToken) }); err != nil {
		return err
	}
	if err := c.each(func(n *Node) error {
		id, err := n.Docker(ctx, "info", "--format", "{{.Swarm.NodeID}}")
		if err != nil {
			return err
		}
		n.SwarmID = id
		return nil
	}); err != nil {
		return err
	}
	if err := c.WaitNodesReady(ctx, 60*time.Second); err != nil {
		return err
	}
	c.logf("swarm of %d nodes (%d managers) ready in %.2fs", len(c.nodes), c.opts.Managers, time.Since(began).Seconds())
	return nil
}

// WaitNodesReady polls `docker node ls` on the manager until every node of
// the cluster is Ready (or limit passes).
func (c *Cluster) WaitNodesReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last string
	for {
		out, err := c.Manager().Docker(ctx, "node", "ls", "--format", "{{.ID}} {{.Status}}")
		if err == nil {
			last = out
			status := map[string]string{}
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) == 2 {
					status[f[0]] = f[1]
				}
			}
			ready := 0
			for _, n := range c.nodes {
				if status[n.SwarmID] == "Ready" {
					ready++
				}
			}
			if ready == len(c.nodes) {
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("swarm nodes not all ready: %w; last node ls: %s", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// FormSwarm forms the swarm of a cluster started with Options.NoSwarm: swarm init on n1, the others
// join, and it waits until every node is Ready. A plugin enabled before the swarm forms is part of the
// node descriptions from the start; one enabled later is only announced at the swarm agent's next
// periodic node update (every 20 s), and a network attachment asked for in between waits for it.
func (c *Cluster) FormSwarm(ctx context.Context) error {
	return c.formSwarm(ctx)
}
