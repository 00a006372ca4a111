// Package cluster builds a real multi-node Docker swarm on one Linux machine
// for end-to-end tests, demos and benchmarks.
//
// Every node is a network namespace (plus a UTS namespace, so each node has its
// own hostname) with its own dockerd, data root and exec root. The nodes are
// wired to a Linux bridge that lives in a dedicated "switch" network namespace,
// so the machine's root namespace (its interfaces, iptables and br_netfilter
// settings) is never touched. Every object carries the cluster name
// (Options.Prefix plus a random suffix), so parallel runs never collide.
//
// Layout of a cluster named NAME (e.g. "vxe2e-3f9a"):
//
//	/var/run/netns/NAME-sw          switch namespace, bridge Options.Prefix+"br"
//	/var/run/netns/NAME-n1 ...      node namespaces, underlay "eth0" 192.168.X.i/24
//	/run/NAME/n1/                   dockerd exec root (containerd sockets, netns mounts)
//	/run/NAME/n1.sock               dockerd API socket
//	/run/docker/plugins/<id>/       managed plugins' sockets (dockerd 20.10 hard-codes this
//	                                dir, shared by every daemon; plugin IDs are unique)
//	DIR/n1/{data,uts,dockerd.log,dockerd.pid,daemon.json,key.json,vxsafe-state}
//	/sys/fs/cgroup/*/NAME-n1/       the node's --cgroup-parent
//	/run/containerd/s/<hash>        shim sockets (containerd 1.6 hard-codes this dir)
//
// DIR is Options.Dir or a fresh directory from os.MkdirTemp.
//
// Close kills every process of the cluster (dockerd, the containerd it
// started, shims, containers, plugins), lazily unmounts everything below DIR
// and the run dir, removes the cgroups, the plugin and shim socket leftovers,
// the namespaces and the directories. A process that dies without Close
// (go test -timeout) takes its dockerds with it (Pdeathsig), but shims,
// containers, mounts and namespaces stay: the next Start with the same
// prefix removes them (ReapStale), and Leftovers lists them.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Defaults for Options.
const (
	DefaultPrefix = "vxe2e"
	DefaultImage  = "vxsafe-busybox:latest"
	// RunBase holds the exec roots and API sockets: they hold unix sockets
	// (sun_path has 108 bytes), so they must not depend on how long Dir is.
	RunBase = "/run"
	// PluginExecRoot is where dockerd 20.10 puts managed plugins' sockets,
	// whatever its --exec-root: <PluginExecRoot>/<plugin id>/<socket>.
	PluginExecRoot = "/run/docker/plugins"
	// StateDirName is the per-node directory bound to a plugin's "state" mount.
	StateDirName = "vxsafe-state"
	// maxPrefixLen keeps the switch bridge name (prefix + "br") within 15 bytes.
	maxPrefixLen = 13
)

// Options configures Start.
type Options struct {
	// Prefix starts every name the cluster creates (default "vxe2e"); a random
	// suffix is added. At most 13 characters.
	Prefix string
	// Nodes is the number of swarm nodes (default 2).
	Nodes int
	// Managers is the number of managers among the nodes (default 1); node 1
	// is always a manager.
	Managers int
	// Dir holds data roots, logs and the image tarball. Default: a new
	// directory from os.MkdirTemp, removed by Close.
	Dir string
	// Image is the name the busybox image is imported as on every node
	// (default "vxsafe-busybox:latest").
	Image string
	// WithIperf3 adds /usr/bin/iperf3 and its libraries to the image.
	WithIperf3 bool
	// Log receives progress lines (nil: discarded).
	Log io.Writer
	// KeepOnFailure keeps Dir (logs, data roots) when Start fails or the
	// cluster was marked failed with MarkFailed. Processes, mounts and
	// namespaces are always removed.
	KeepOnFailure bool
	// Subnet3 is the third octet X of the underlay 192.168.X.0/24 (default:
	// derived from the random suffix, 100..199). The underlay is private to
	// the cluster's namespaces, so any value works.
	Subnet3 int
	// DockerdArgs are extra dockerd arguments (e.g. "--debug").
	DockerdArgs []string
	// IPTables runs dockerd with --iptables=true --ip-masq=true. The rules go
	// into each node's own network namespace (the root namespace is not
	// touched); containers then reach addresses outside their networks
	// (e.g. another node's underlay address) through docker_gwbridge with
	// NAT, as on a real host. Default: --iptables=false --ip-masq=false, so
	// that traffic leaving through docker_gwbridge keeps its container source
	// address, which the other nodes cannot answer.
	IPTables bool
	// NoSwarm leaves the daemons standalone (no swarm init/join).
	NoSwarm bool
	// FreshHost runs every node's dockerd in a mount namespace of its own that looks like a new machine
	// where Docker was just installed: /var/lib is an empty directory of the node's (FreshVarLib) and /run
	// an empty tmpfs (keeping only the cluster's run dir, which holds the exec roots and API sockets).
	// A plugin installed with the defaults then mounts exactly what a real fresh host would give it.
	// n1 also listens on /var/run/docker.sock there, as a host's engine does by default; the other
	// nodes' engines listen only elsewhere. Mounts made by the node's dockerd are not visible to the
	// machine (the namespace is a slave of it); they go with the namespace when Close kills the node.
	FreshHost bool
	// StopTimeout, if set, makes Close stop every dockerd gracefully (SIGTERM)
	// for at most this long before killing what is left. By default Close
	// kills at once: a graceful stop takes 1-3 s per node and often longer in
	// swarm mode (a worker whose manager stops at the same time hangs), and
	// Close removes mounts, cgroups and namespaces itself anyway.
	StopTimeout time.Duration
}

// Cluster is a running set of nodes. Create it with Start, release it with Close.
type Cluster struct {
	opts    Options
	name    string // prefix + "-" + suffix
	dir     string
	ownDir  bool // dir created by us (removed by Close)
	runDir  string
	subnet3 int
	began   time.Time

	nodes []*Node
	hosts []*Host // AddHost's namespaces
	sw    *nsRef

	imageTar  string
	pluginIDs []string // plugins seen by Close (for Leftovers)

	mu       sync.Mutex
	failed   bool
	closed   bool
	closeErr error
}

// Name is the cluster's unique name, e.g. "vxe2e-3f9a". Every namespace and
// directory of the cluster starts with it.
func (c *Cluster) Name() string { return c.name }

// Dir is the directory holding data roots, logs and the image tarball.
func (c *Cluster) Dir() string { return c.dir }

// Nodes returns the nodes in order (n1 first).
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// Node returns node i (1-based, as in its name "n<i>").
func (c *Cluster) Node(i int) *Node {
	if i < 1 || i > len(c.nodes) {
		return nil
	}
	return c.nodes[i-1]
}

// Manager returns the node that initialised the swarm (n1).
func (c *Cluster) Manager() *Node { return c.nodes[0] }

// Image is the name of the busybox image imported on every node.
func (c *Cluster) Image() string { return c.opts.Image }

// SwitchNetnsPath is the bind-mount path of the switch namespace.
func (c *Cluster) SwitchNetnsPath() string { return netnsPath(c.switchName()) }

// MarkFailed makes Close keep Dir when Options.KeepOnFailure is set.
func (c *Cluster) MarkFailed() {
	c.mu.Lock()
	c.failed = true
	c.mu.Unlock()
}

func (c *Cluster) switchName() string { return c.name + "-sw" }

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Log == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(c.opts.Log, "[%s %6.2fs] %s\n", c.name, time.Since(c.began).Seconds(), msg)
}

func (o Options) withDefaults() (Options, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Managers == 0 {
		o.Managers = 1
	}
	if o.Image == "" {
		o.Image = DefaultImage
	}
	switch {
	case o.Nodes < 1 || o.Nodes > 99:
		return o, fmt.Errorf("cluster options: nodes %d: want 1..99", o.Nodes)
	case o.Managers < 1 || o.Managers > o.Nodes:
		return o, fmt.Errorf("cluster options: managers %d: want 1..%d", o.Managers, o.Nodes)
	case len(o.Prefix) > maxPrefixLen:
		return o, fmt.Errorf("cluster options: prefix %q: at most %d characters (bridge name %q must fit 15)", o.Prefix, maxPrefixLen, o.Prefix+"br")
	case strings.ContainsAny(o.Prefix, "/ \t\n"):
		return o, fmt.Errorf("cluster options: prefix %q: must not contain '/' or spaces", o.Prefix)
	case o.Subnet3 < 0 || o.Subnet3 > 254:
		return o, fmt.Errorf("cluster options: subnet octet %d: want 0..254", o.Subnet3)
	}
	return o, nil
}

// Start builds the underlay, starts one dockerd per node, forms the swarm and
// imports the busybox image on every node. On error everything it made is
// removed again (Dir is kept when Options.KeepOnFailure is set).
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.WithIperf3 {
		if _, err := os.Stat(iperf3Path); err != nil {
			return nil, fmt.Errorf("iperf3 %s: %w (install with: apt-get install -y iperf3)", iperf3Path, err)
		}
	}
	if opts.IPTables {
		if _, err := lookPathIn("iptables", os.Getenv("PATH")+":"+sbinPath); err != nil {
			return nil, fmt.Errorf("IPTables needs iptables: %w (install with: apt-get install -y iptables)", err)
		}
	}
	c := &Cluster{opts: opts, began: time.Now()}
	if err := ReapStale(opts.Prefix, opts.Log); err != nil {
		return nil, fmt.Errorf("reap stale clusters: %w", err)
	}
	if err := c.allocateName(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.MarkFailed()
			if cerr := c.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup after failed start: %w", cerr))
			}
		}
	}()
	c.logf("dir %s, run dir %s, engine %s (%s)", c.dir, c.runDir, EngineName(), EngineVersion())

	// The image tarball does not depend on the daemons: build it meanwhile.
	imgErr := make(chan error, 1)
	go func() { imgErr <- c.buildImage() }()

	if err := c.buildUnderlay(); err != nil {
		<-imgErr
		return nil, err
	}
	c.logf("underlay 192.168.%d.0/24 up (%d nodes)", c.subnet3, len(c.nodes))

	if err := c.each(func(n *Node) error { return n.StartDaemon(ctx) }); err != nil {
		<-imgErr
		return nil, err
	}
	c.logf("%d dockerd answering", len(c.nodes))

	if err := <-imgErr; err != nil {
		return nil, err
	}
	// Import the image while the swarm forms: both are mostly waiting.
	impErr := make(chan error, 1)
	go func() {
		impErr <- c.each(func(n *Node) error { return n.importImage(ctx, c.imageTar, c.opts.Image) })
	}()
	var swarmErr error
	if !opts.NoSwarm {
		swarmErr = c.formSwarm(ctx)
	}
	ierr := <-impErr
	if err := errors.Join(swarmErr, ierr); err != nil {
		return nil, err
	}
	c.logf("image %s imported on every node", c.opts.Image)
	c.logf("cluster ready")
	return c, nil
}

// allocateName picks a unique name; /run/NAME (created with Mkdir) is the lock.
func (c *Cluster) allocateName() error {
	if err := os.MkdirAll(RunBase, 0o755); err != nil {
		return fmt.Errorf("run base %s: %w", RunBase, err)
	}
	for attempt := 0; attempt < 20; attempt++ {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("random cluster suffix: %w", err)
		}
		name := c.opts.Prefix + "-" + hex.EncodeToString(b[:])
		if _, err := os.Lstat(netnsPath(name + "-sw")); err == nil {
			continue
		}
		runDir := filepath.Join(RunBase, name)
		if err := os.Mkdir(runDir, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return fmt.Errorf("run dir %s: %w", runDir, err)
		}
		c.name, c.runDir = name, runDir
		if err := writeOwner(runDir); err != nil {
			os.Remove(runDir)
			return err
		}
		c.subnet3 = c.opts.Subnet3
		if c.subnet3 == 0 {
			c.subnet3 = 100 + (int(b[0])<<8|int(b[1]))%100
		}
		if c.opts.Dir == "" {
			dir, err := os.MkdirTemp("", name+"-")
			if err != nil {
				os.RemoveAll(runDir)
				return fmt.Errorf("cluster dir: %w", err)
			}
			c.dir, c.ownDir = dir, true
		} else {
			dir, err := filepath.Abs(c.opts.Dir)
			if err != nil {
				os.RemoveAll(runDir)
				return fmt.Errorf("cluster dir %s: %w", c.opts.Dir, err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				os.RemoveAll(runDir)
				return fmt.Errorf("cluster dir %s: %w", dir, err)
			}
			c.dir = dir
		}
		return saveOwner(runDir, owner{Pid: os.Getpid(), Start: procStart(os.Getpid()), Dir: c.dir, OwnDir: c.ownDir})
	}
	return fmt.Errorf("no free cluster name with prefix %q after 20 attempts", c.opts.Prefix)
}

// each runs f on every node concurrently and joins the errors.
func (c *Cluster) each(f func(n *Node) error) error {
	return eachNode(c.nodes, f)
}

func eachNode(nodes []*Node, f func(n *Node) error) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(n)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Each runs f on every node concurrently and returns the joined errors.
func (c *Cluster) Each(f func(n *Node) error) error { return c.each(f) }

// Close stops every process of the cluster (dockerd, its containerd, shims and
// containers), unmounts everything below Dir and the run dir, deletes the
// namespaces and removes the directories. It is idempotent and safe after a
// partial Start.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.closeErr
	}
	c.closed = true
	keep := c.failed && c.opts.KeepOnFailure
	c.mu.Unlock()

	began := time.Now()
	var errs []error
	for _, n := range c.nodes {
		c.pluginIDs = append(c.pluginIDs, pluginIDs(n.DataRoot)...)
	}
	// 1. Processes: (optionally a bounded graceful stop, then) kill.
	errs = append(errs, c.each(func(n *Node) error { return n.shutdown(c.opts.StopTimeout) }))
	// Anything still referencing the run dir (a shim of a crashed daemon, ...).
	errs = append(errs, killMatching(func(args []string) bool { return argsMention(args, c.runDir+"/") }, 5*time.Second))
	// 2. Mounts below our directories.
	var prefixes []string
	if c.runDir != "" {
		prefixes = append(prefixes, c.runDir+"/")
	}
	if c.dir != "" {
		prefixes = append(prefixes, c.dir+"/")
	}
	errs = append(errs, unmountBelow(prefixes...))
	// 3. Namespaces.
	for _, n := range c.nodes {
		errs = append(errs, n.closeNamespaces())
	}
	for _, h := range c.hosts {
		errs = append(errs, h.ns.close())
	}
	if c.sw != nil {
		errs = append(errs, c.sw.close())
	}
	// 4. Directories.
	if c.runDir != "" {
		if err := os.RemoveAll(c.runDir); err != nil {
			errs = append(errs, fmt.Errorf("remove run dir %s: %w", c.runDir, err))
		}
	}
	switch {
	case c.dir == "":
	case keep:
		c.logf("keeping %s for inspection", c.dir)
	case c.ownDir:
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove cluster dir %s: %w", c.dir, err))
		}
	default:
		for _, n := range c.nodes {
			if err := os.RemoveAll(n.dir); err != nil {
				errs = append(errs, fmt.Errorf("remove node dir %s: %w", n.dir, err))
			}
		}
		if c.imageTar != "" {
			os.Remove(c.imageTar)
		}
	}
	err := errors.Join(errs...)
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	if c.name != "" {
		c.logf("closed in %.1fs", time.Since(began).Seconds())
	}
	return err
}
