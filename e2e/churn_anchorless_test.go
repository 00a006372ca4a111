package e2e

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
)

// churnFailure is one failed `docker run` of the anchorless churn.
type churnFailure struct {
	node, network string
	round         int
	at            time.Time
	took          time.Duration
	err           string
}

// TestChurnWithoutAnchors runs `docker run --rm --network N IMAGE true` on both nodes at once, round
// after round, with no other container of N on either node: every run makes the node create the network
// locally (an attachment task, CreateNetwork, the device at the first Join) and delete it again after the
// container exits, and the next run starts while that deletion may still be under way. A vxsafe network
// and a Docker overlay network churn at the same time, so both drivers see the same load. Every vxsafe
// run must succeed, with one exception that is the engine's (engineAttachRace); the overlay count is
// reported beside it. VXE2E_CHURN_ROUNDS sets the rounds (default 100: 200 runs per driver);
// VXE2E_CHURN_STRICT=1 fails on the engine's race too.
func TestChurnWithoutAnchors(t *testing.T) {
	late := os.Getenv("VXE2E_CHURN_LATE") != "" // install on a running swarm (diagnosis)
	c := startCluster(t, cluster.Options{Prefix: "vxa", Nodes: 2, NoSwarm: !late})
	// Installed before the nodes join, as the README advises: the swarm knows the plugin at once.
	installVxsafe(t, c, map[string]string{"LOG_LEVEL": "info", "METRICS_ADDR": metricsAddr})
	if !late {
		if err := c.FormSwarm(ctxT(t, 2*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	m := c.Manager()
	img := c.Image()
	nets := []struct{ name, driver string }{{"anc-vxs", pluginName}, {"anc-ovl", "overlay"}}
	// VXE2E_CHURN_ONLY=vxsafe|overlay churns one driver alone (for diagnosis: a tighter cycle per network).
	switch os.Getenv("VXE2E_CHURN_ONLY") {
	case "vxsafe":
		nets = nets[:1]
	case "overlay":
		nets = nets[1:]
	}
	for i, n := range nets {
		docker(t, m, "network", "create", "-d", n.driver, "--attachable", "--subnet", fmt.Sprintf("10.0.%d.0/24", 80+i), n.name)
	}
	rounds := envInt("VXE2E_CHURN_ROUNDS", 100)
	runs := map[string]int{}
	var failures []churnFailure
	var slowest = map[string]time.Duration{}
	began := time.Now()
	for r := 0; r < rounds; r++ {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, net := range nets {
			for _, n := range c.Nodes() {
				wg.Add(1)
				go func(n *cluster.Node) {
					defer wg.Done()
					start := time.Now()
					_, err := n.Docker(ctxT(t, 2*time.Minute), "run", "--rm", "--network", net.name, img, "true")
					took := time.Since(start)
					mu.Lock()
					defer mu.Unlock()
					runs[net.name]++
					if took > slowest[net.name] {
						slowest[net.name] = took
					}
					if err != nil {
						failures = append(failures, churnFailure{node: n.Name, network: net.name, round: r, at: start, took: took, err: err.Error()})
					}
				}(n)
			}
		}
		wg.Wait()
	}
	failed := map[string]int{}
	for _, f := range failures {
		failed[f.network]++
		t.Logf("FAILED round %d on %s, %s, after %.1fs: %s", f.round, f.node, f.network, f.took.Seconds(), lastLine(f.err))
	}
	for _, net := range nets {
		t.Logf("CHURN engine %s, %s (%s): %d of %d runs failed; slowest run %.1fs", cluster.EngineName(), net.name, net.driver,
			failed[net.name], runs[net.name], slowest[net.name].Seconds())
	}
	t.Logf("TIMING %d anchorless runs on 2 nodes in %.0fs", runs["anc-vxs"]+runs["anc-ovl"], time.Since(began).Seconds())
	// vxsafe's own share of each run: the mean time its handlers took (a remote driver's calls are what
	// widen dockerd's window between a network's local deletion and the next attachment).
	for _, n := range c.Nodes() {
		tot, err := handlerTotals(n)
		if err != nil {
			t.Errorf("node %s: %v", n.Name, err)
			continue
		}
		var parts []string
		for _, method := range []string{"CreateNetwork", "CreateEndpoint", "Join", "Leave", "DeleteEndpoint", "DeleteNetwork"} {
			if v := tot[method]; v[1] > 0 {
				parts = append(parts, fmt.Sprintf("%s %.1f ms (%d)", method, 1000*v[0]/v[1], int(v[1])))
			}
		}
		t.Logf("HANDLERS node %s, mean per call: %s", n.Name, strings.Join(parts, ", "))
	}
	// The race is the engine's only while the plugin answered every call: a CreateNetwork that failed in
	// an attachment task shows the same "attaching to network failed" text.
	pluginErrors := 0
	for _, n := range c.Nodes() {
		fams, err := scrapeNode(n)
		if err != nil {
			t.Errorf("node %s: %v", n.Name, err)
			continue
		}
		for _, mt := range fams["vxsafe_request_duration_seconds"].GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == "error" {
					pluginErrors += int(mt.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	t.Logf("HANDLERS requests answered with an error, all nodes: %d", pluginErrors)
	if failed["anc-vxs"] > 0 && runs["anc-vxs"] > 0 {
		f := failures[0]
		for _, x := range failures {
			if x.network == "anc-vxs" {
				f = x
				break
			}
		}
		for _, n := range c.Nodes() {
			t.Logf("node %s log around the first vxsafe failure (%s):\n%s", n.Name, f.at.Format(time.RFC3339Nano), logWindow(n, f.at.Add(-2*time.Second), f.at.Add(f.took+2*time.Second)))
		}
		race, other := 0, 0
		for _, x := range failures {
			if x.network != "anc-vxs" {
				continue
			}
			if engineAttachRace(x.err) {
				race++
			} else {
				other++
			}
		}
		switch {
		case pluginErrors > 0:
			t.Errorf("%d of %d vxsafe runs failed without anchors, and the plugin answered %d requests with an error (overlay: %d of %d)",
				failed["anc-vxs"], runs["anc-vxs"], pluginErrors, failed["anc-ovl"], runs["anc-ovl"])
		case other > 0 || os.Getenv("VXE2E_CHURN_STRICT") != "":
			t.Errorf("%d of %d vxsafe runs failed without anchors, %d of them not the engine's attachment race (overlay: %d of %d)",
				failed["anc-vxs"], runs["anc-vxs"], other, failed["anc-ovl"], runs["anc-ovl"])
		case race*100 > runs["anc-vxs"]*maxAttachRacePercent:
			t.Errorf("%d of %d vxsafe runs hit the engine's attachment race, more than %d%% (overlay: %d of %d)",
				race, runs["anc-vxs"], maxAttachRacePercent, failed["anc-ovl"], runs["anc-ovl"])
		default:
			t.Logf("UPSTREAM engine %s: %d of %d vxsafe runs hit the engine's attachment race (networkdb's JoinNetwork waits "+
				"on a bulk sync with the other node while that node leaves the network; see engineAttachRace), tolerated up to %d%%",
				cluster.EngineName(), race, runs["anc-vxs"], maxAttachRacePercent)
		}
	}
	for _, net := range nets {
		if failed[net.name] == 0 {
			removeSwarmNetwork(t, m, net.name)
			continue
		}
		removeNetworkAfterAttachRace(t, c, net.name)
	}
}

// removeNetworkAfterAttachRace removes swarm network name after some of its attachments hit the
// engine's race (engineAttachRace). The attachment task of the run that timed out can stay behind on its
// node ("is in use by task" at `docker network rm`) until that node's dockerd restarts; the nodes are
// restarted only when it does.
func removeNetworkAfterAttachRace(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	removeHeldNetwork(t, c.Manager(), name, 45*time.Second, c.Nodes(), "the attachment task of a run that hit the race")
}

// maxAttachRacePercent bounds the share of vxsafe runs that may fail with the engine's attachment race
// (1 to 6% were seen on 20.10, in sets of 200 runs).
const maxAttachRacePercent = 15

// engineAttachRace reports whether a failed `docker run` is the engine's anchorless attachment race
// rather than an error of vxsafe's (the test also requires that the plugin answered no request with an
// error). Seen on Debian's 20.10 (goroutine dumps taken 12 s into stuck runs):
// the attachment task sits in libnetwork's NewNetwork -> joinCluster -> networkdb JoinNetwork ->
// bulkSyncNode, waiting for the other node to answer a bulk sync of the network that node is leaving at
// that moment; the plugin's CreateNetwork has already returned and no Join comes. dockerd gives up after
// 20 s ("attaching to network failed ... context deadline exceeded"), and the node's next run of the
// same network, still stuck behind that join, says "network ... not found" after 10 s. Docker's
// overlay runs the same path and hits the same race (0 or 1 of 200 runs per set, with the
// same stack), less often than vxsafe (2 to 11 of 200): its network lives a shorter time on each node
// (no remote-driver round trips, DeleteEndpoint 60 ms in vxsafe), so the two nodes' joins and leaves
// overlap less.
// The CLI may print a line after the daemon's error ("error waiting for container: context canceled"),
// so every line is looked at.
func engineAttachRace(err string) bool {
	for _, line := range strings.Split(err, "\n") {
		line = strings.TrimSpace(line)
		if strings.Contains(line, "attaching to network failed, make sure your network options are correct and check manager logs: context deadline exceeded") ||
			(strings.Contains(line, "Error response from daemon: network ") && strings.HasSuffix(strings.TrimSuffix(line, "."), " not found")) {
			return true
		}
	}
	return false
}

// TestEngineAttachRaceText pins what engineAttachRace takes for the engine's race (no cluster needed).
func TestEngineAttachRaceText(t *testing.T) {
	for _, c := range []struct {
		err  string
		race bool
	}{
		{"exit status 125: docker: Error response from daemon: attaching to network failed, make sure your network options are correct and check manager logs: context deadline exceeded.", true},
		{"exit status 125: docker: Error response from daemon: attaching to network failed, make sure your network options are correct and check manager logs: context deadline exceeded.\ntime=\"2026-12-02T14:57:54Z\" level=error msg=\"error waiting for container: context canceled\"", true},
		{"exit status 125: docker: Error response from daemon: network 4dyfs8ulogmmerk50j0xakakc not found.", true},
		{"exit status 125: docker: Error response from daemon: NetworkDriver.Join: join of endpoint 9ae85eeaedf3: not deleting a live interface.", false},
		{"exit status 125: docker: Error response from daemon: NetworkDriver.CreateEndpoint: endpoint 9ae85eeaedf3 not found.", false},
	} {
		if got := engineAttachRace(c.err); got != c.race {
			t.Errorf("engineAttachRace(%q) = %v, want %v", c.err, got, c.race)
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// logWindow returns the lines of node n's dockerd log stamped between from and to (dockerd's own
// time="..." stamps, RFC 3339), without the kernel-parameter noise of these machines.
func logWindow(n *cluster.Node, from, to time.Time) string {
	var b strings.Builder
	for _, line := range strings.Split(n.Log(), "\n") {
		i := strings.Index(line, `time="`)
		if i < 0 {
			continue
		}
		rest := line[i+6:]
		j := strings.IndexByte(rest, '"')
		if j < 0 {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, rest[:j])
		if err != nil || ts.Before(from.Add(-time.Second)) || ts.After(to) || strings.Contains(line, "net.ipv4.vs") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}
