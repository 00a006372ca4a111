package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Node is one swarm node: a network namespace with its own dockerd.
type Node struct {
	Name     string // "n1", "n2", ...; also the switch-side veth name
	Index    int    // 1-based
	Hostname string // "<cluster>-n1": the node's UTS hostname, shown by docker node ls
	NetNS    string // network namespace name ("<cluster>-n1")
	Addr     string // underlay IPv4 address on eth0 (192.168.X.Index)
	Socket   string // dockerd API socket path
	DataRoot string
	ExecRoot string
	LogFile  string // dockerd (and containerd, plugin) output
	PidFile  string
	SwarmID  string // swarm node ID once joined
	Pid      int    // dockerd PID of the current run (0 when stopped)

	c       *Cluster
	dir     string
	utsPath string
	ns      *nsRef

	mu      sync.Mutex
	proc    *os.Process
	exited  chan struct{} // closed when the current dockerd has exited
	waitErr error
}

func (c *Cluster) newNode(i int) *Node {
	name := fmt.Sprintf("n%d", i)
	dir := filepath.Join(c.dir, name)
	return &Node{
		Name:     name,
		Index:    i,
		Hostname: c.name + "-" + name,
		NetNS:    c.name + "-" + name,
		Addr:     fmt.Sprintf("192.168.%d.%d", c.subnet3, i),
		Socket:   filepath.Join(c.runDir, name+".sock"),
		DataRoot: filepath.Join(dir, "data"),
		ExecRoot: filepath.Join(c.runDir, name),
		LogFile:  filepath.Join(dir, "dockerd.log"),
		PidFile:  filepath.Join(dir, "dockerd.pid"),
		c:        c,
		dir:      dir,
		utsPath:  filepath.Join(dir, "uts"),
	}
}

// Dir is the node's directory (data root, log, plugin state).
func (n *Node) Dir() string { return n.dir }

// NetnsPath is the bind-mount path of the node's network namespace
// (/var/run/netns/NAME), usable with nsenter --net=PATH.
func (n *Node) NetnsPath() string { return netnsPath(n.NetNS) }

// UTSPath is the bind-mount path of the node's UTS namespace.
func (n *Node) UTSPath() string { return n.utsPath }

// StateDir is the host directory bound to a plugin's "state" mount on this node.
func (n *Node) StateDir() string { return filepath.Join(n.dir, StateDirName) }

// Handle returns a netlink handle inside the node's network namespace. The
// caller closes it.
func (n *Node) Handle() (*netlink.Handle, error) {
	if n.ns == nil || !n.ns.h.IsOpen() {
		return nil, fmt.Errorf("node %s: network namespace not open", n.Name)
	}
	h, err := netlink.NewHandleAt(n.ns.h)
	if err != nil {
		return nil, fmt.Errorf("node %s: netlink handle: %w", n.Name, err)
	}
	return h, nil
}

// Log returns the contents of the node's dockerd log (dockerd, its containerd
// and its plugins all write there).
func (n *Node) Log() string {
	b, err := os.ReadFile(n.LogFile)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// LogTail returns the last lines of the dockerd log.
func (n *Node) LogTail(lines int) string {
	s := strings.TrimRight(n.Log(), "\n")
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// Docker runs the docker CLI against this node's daemon and returns its
// trimmed stdout. The error names the command and includes stderr.
func (n *Node) Docker(ctx context.Context, args ...string) (string, error) {
	return n.DockerInput(ctx, nil, args...)
}

// DockerInput is Docker with stdin.
func (n *Node) DockerInput(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	full := append([]string{"-H", "unix://" + n.Socket}, args...)
	cmd := exec.CommandContext(ctx, dockerCLI(), full...)
	cmd.Env = cliEnv(filepath.Join(n.c.dir, "docker-cli"))
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	out := strings.TrimSpace(stdout.String())
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return out, fmt.Errorf("node %s: docker %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Exec runs a host command inside the node's network and UTS namespaces
// (nsenter) and returns its combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	full := append([]string{"--net=" + n.NetnsPath(), "--uts=" + n.utsPath, "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("node %s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Running reports whether the node's dockerd process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runningLocked()
}

func (n *Node) runningLocked() bool {
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

func (n *Node) dockerdArgs() []string {
	args := []string{
		"--config-file", filepath.Join(n.dir, "daemon.json"),
		"--data-root", n.DataRoot,
		"--exec-root", n.ExecRoot,
		"--pidfile", n.PidFile,
		"-H", "unix://" + n.Socket,
		"--containerd-namespace", n.Hostname,
		"--containerd-plugins-namespace", n.Hostname + "-plugins",
		// Own cgroup parent: containers of different daemons never share
		// /sys/fs/cgroup/*/docker, and Close can remove what a killed
		// container leaves.
		"--cgroup-parent", "/" + n.Hostname,
		"--bridge", "none",
	}
	if n.c.opts.FreshHost && n.Index == 1 {
		// The manager of a fresh-host cluster also listens where a host's engine does by default.
		args = append(args, "-H", "unix://"+DefaultDockerSocket)
	}
	if n.c.opts.IPTables {
		// Rules go into the node's own namespace only (iptables is per netns).
		args = append(args, "--iptables=true", "--ip-masq=true")
	} else {
		args = append(args, "--iptables=false", "--ip-masq=false")
	}
	return append(args, n.c.opts.DockerdArgs...)
}

// StartDaemon starts the node's dockerd (same roots as before) inside the
// node's namespaces and waits until it answers /_ping.
func (n *Node) StartDaemon(ctx context.Context) error {
	n.mu.Lock()
	if n.runningLocked() {
		n.mu.Unlock()
		return fmt.Errorf("node %s: dockerd already running (pid %d)", n.Name, n.Pid)
	}
	for _, d := range []string{n.DataRoot, n.ExecRoot} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			n.mu.Unlock()
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	// An own daemon.json: never read the machine's /etc/docker/daemon.json, and
	// keep the engine key (otherwise /etc/docker/key.json, shared by every
	// daemon) in the node dir. dockerd 20.10 has no command-line flag for it.
	daemonJSON := fmt.Sprintf("{%q: %q}\n", "deprecated-key-path", filepath.Join(n.dir, "key.json"))
	if err := os.WriteFile(filepath.Join(n.dir, "daemon.json"), []byte(daemonJSON), 0o644); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("node %s: daemon.json: %w", n.Name, err)
	}
	logf, err := os.OpenFile(n.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("node %s: log file: %w", n.Name, err)
	}
	fmt.Fprintf(logf, "=== %s harness: starting dockerd for node %s\n", time.Now().Format(time.RFC3339Nano), n.Name)
	nsArgs := []string{"--net=" + n.NetnsPath(), "--uts=" + n.utsPath, "--"}
	if n.c.opts.FreshHost {
		nsArgs = append(nsArgs, n.freshHostArgs()...)
	}
	nsArgs = append(nsArgs, dockerdPath())
	cmd := exec.Command("nsenter", append(nsArgs, n.dockerdArgs()...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = daemonEnv()
	cmd.Dir = n.dir
	// Own process group; SIGKILL if this process dies, so a crashed test does
	// not leave daemons behind (dockerd's containerd has Pdeathsig too).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("node %s: start dockerd: %w", n.Name, err)
	}
	exited := make(chan struct{})
	n.proc, n.exited, n.Pid, n.waitErr = cmd.Process, exited, cmd.Process.Pid, nil
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.waitErr = err
		n.mu.Unlock()
		close(exited)
	}()
	n.mu.Unlock()

	began := time.Now()
	if err := n.waitReady(ctx, exited, 90*time.Second); err != nil {
		return err
	}
	n.c.logf("node %s: dockerd pid %d answering after %.1fs", n.Name, n.Pid, time.Since(began).Seconds())
	return nil
}

// waitReady polls GET /_ping on the daemon socket.
func (n *Node) waitReady(ctx context.Context, exited <-chan struct{}, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := n.httpClient()
	defer client.CloseIdleConnections()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			n.mu.Lock()
			werr := n.waitErr
			n.mu.Unlock()
			return fmt.Errorf("node %s: dockerd exited before answering (%v); log tail:\n%s", n.Name, werr, n.LogTail(20))
		case <-ctx.Done():
			return fmt.Errorf("node %s: dockerd not answering on %s: %w; log tail:\n%s", n.Name, n.Socket, ctx.Err(), n.LogTail(20))
		case <-tick.C:
		}
	}
}

// HTTPClient returns an HTTP client talking to this node's Docker API socket
// (use host "docker" in URLs, e.g. http://docker/v1.41/info).
func (n *Node) HTTPClient() *http.Client { return n.httpClient() }

func (n *Node) httpClient() *http.Client {
	sock := n.Socket
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

// StopDaemon stops dockerd gracefully (SIGTERM; dockerd stops its containers,
// plugins and containerd). If ctx ends first, everything of the node that is
// left is killed and the context error returned.
func (n *Node) StopDaemon(ctx context.Context) error {
	n.mu.Lock()
	proc, exited := n.proc, n.exited
	n.mu.Unlock()
	if exited == nil {
		return nil
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("node %s: SIGTERM dockerd %d: %w", n.Name, proc.Pid, err)
	}
	select {
	case <-exited:
	case <-ctx.Done():
		kerr := n.killAll()
		return errors.Join(fmt.Errorf("node %s: dockerd did not stop: %w", n.Name, ctx.Err()), kerr)
	}
	n.mu.Lock()
	n.Pid = 0
	n.mu.Unlock()
	return n.waitContainerdGone(10 * time.Second)
}

// KillDaemon kills dockerd with SIGKILL, as in a crash: its containerd dies
// with it (Pdeathsig), container shims and containers keep running until the
// daemon is started again.
func (n *Node) KillDaemon() error {
	n.mu.Lock()
	proc, exited := n.proc, n.exited
	n.mu.Unlock()
	if exited == nil {
		return nil
	}
	if err := proc.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("node %s: SIGKILL dockerd %d: %w", n.Name, proc.Pid, err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("node %s: dockerd %d still there 10s after SIGKILL", n.Name, proc.Pid)
	}
	n.mu.Lock()
	n.Pid = 0
	n.mu.Unlock()
	return n.waitContainerdGone(10 * time.Second)
}

// RestartDaemon stops dockerd gracefully and starts it again with the same
// roots; it returns once the daemon answers again.
func (n *Node) RestartDaemon(ctx context.Context) error {
	if err := n.StopDaemon(ctx); err != nil {
		return err
	}
	return n.StartDaemon(ctx)
}

// containerdPid reads the pid file dockerd writes for the containerd it
// supervises (0 if none).
func (n *Node) containerdPid() int {
	b, err := os.ReadFile(filepath.Join(n.ExecRoot, "containerd", "containerd.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// waitContainerdGone waits for the containerd of a stopped dockerd to exit,
// then removes its pid file. An orphaned containerd is reaped by PID 1, which
// may take its time (not every init reaps promptly): a restarted dockerd that
// finds the pid file and a zombie behind it takes it for a live containerd,
// waits for its socket and fails with "timeout waiting for containerd to
// start".
func (n *Node) waitContainerdGone(limit time.Duration) error {
	pidFile := filepath.Join(n.ExecRoot, "containerd", "containerd.pid")
	pid := n.containerdPid()
	if pid == 0 {
		return nil
	}
	deadline := time.Now().Add(limit)
	for {
		p, ok := readProc(pid)
		if !ok || p.zombie() || !argsMention(p.args, n.ExecRoot+"/") {
			if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("node %s: remove %s: %w", n.Name, pidFile, err)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: containerd %d still running %s after dockerd stopped", n.Name, pid, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ownsArgs tells whether a command line belongs to this node's daemon tree.
func (n *Node) ownsArgs(args []string) bool {
	for _, a := range args {
		if a == n.ExecRoot || strings.Contains(a, n.ExecRoot+"/") || strings.Contains(a, n.Socket) {
			return true
		}
	}
	return false
}

// killAll SIGKILLs every process of the node: dockerd, containerd, shims and
// their descendants (containers, plugins).
func (n *Node) killAll() error {
	err := killMatching(n.ownsArgs, 5*time.Second)
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited != nil {
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			err = errors.Join(err, fmt.Errorf("node %s: dockerd not reaped", n.Name))
		}
	}
	n.mu.Lock()
	n.Pid = 0
	n.mu.Unlock()
	return err
}

// killContainers SIGKILLs the processes of the node's containers (not of its
// plugins): the children of the shims of the node's containerd namespace.
// dockerd sees them exit as usual, and a following graceful stop is fast.
func (n *Node) killContainers() error {
	return killDescendants(n.isContainerShim, 5*time.Second)
}

// isContainerShim tells a containerd shim of the node's container namespace.
func (n *Node) isContainerShim(args []string) bool {
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") || !n.ownsArgs(args) {
		return false
	}
	for i, a := range args[:len(args)-1] {
		if (a == "-namespace" || a == "--namespace") && args[i+1] == n.Hostname {
			return true
		}
	}
	return false
}

// shutdown is Close's per-node stop. With a timeout it kills the containers
// and stops dockerd gracefully for at most that long; then it kills whatever
// is left of the node (dockerd, containerd, shims, containers, plugins) and
// removes the node's cgroups.
func (n *Node) shutdown(timeout time.Duration) error {
	var errs []error
	if timeout > 0 && n.Running() {
		errs = append(errs, n.killContainers())
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := n.StopDaemon(ctx)
		cancel()
		if err != nil {
			n.c.logf("node %s: graceful stop: %v", n.Name, err)
		} else {
			n.c.logf("node %s: dockerd stopped in %.1fs", n.Name, time.Since(began).Seconds())
		}
	}
	errs = append(errs, n.killAll())
	errs = append(errs, removePluginExecDirs(n.DataRoot))
	if n.Hostname != "" {
		errs = append(errs, removeCgroups(n.Hostname, 5*time.Second))
	}
	return errors.Join(errs...)
}

func (n *Node) closeNamespaces() error {
	return n.ns.close()
}

// dockerdPath finds dockerd: the engine directory's (EngineDir), else the system's (/usr/sbin on Debian).
func dockerdPath() string {
	if p, err := lookPathIn("dockerd", enginePath()); err == nil {
		return p
	}
	return "dockerd"
}

// dockerCLI prefers the CLI shipped with the daemon (docker.io's /usr/bin/docker)
// over another one earlier in PATH; VXE2E_DOCKER overrides.
func dockerCLI() string {
	if p := os.Getenv("VXE2E_DOCKER"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/docker"); err == nil {
		return "/usr/bin/docker"
	}
	if p, err := exec.LookPath("docker"); err == nil {
		return p
	}
	return "docker"
}

const sbinPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// daemonEnv is the environment for dockerd: no DOCKER_* or NOTIFY_SOCKET from
// the caller, and a PATH that finds the engine's runc and containerd (enginePath).
func daemonEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "DOCKER_") || strings.HasPrefix(e, "NOTIFY_SOCKET=") || strings.HasPrefix(e, "PATH=") {
			continue
		}
		env = append(env, e)
	}
	return append(env, "PATH="+enginePath())
}

// cliEnv is the environment for the docker CLI: no DOCKER_HOST/CONTEXT from the
// caller and a private config dir (the machine's ~/.docker may name
// credential helpers or contexts).
func cliEnv(configDir string) []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "DOCKER_") {
			continue
		}
		env = append(env, e)
	}
	return append(env, "DOCKER_CONFIG="+configDir)
}

// CommandEnv is the environment for a program that runs the docker CLI against this node: DOCKER_HOST
// is the node's socket, DOCKER the CLI the harness uses, and the CLI's configuration is private.
func (n *Node) CommandEnv() []string {
	return append(cliEnv(filepath.Join(n.c.dir, "docker-cli")), "DOCKER_HOST=unix://"+n.Socket, "DOCKER="+dockerCLI())
}

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
