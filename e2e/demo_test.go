package e2e

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/e2e/vxsafe"
)

// demoRows are the summary lines of a demo that told its story: each row's columns (step, what, Docker
// overlay, vxsafe/overlay, time) as regular expressions.
var demoRows = []*regexp.Regexp{
	regexp.MustCompile(`^\s+-\s+setup: bundle, swarm, plugin\s+built into dockerd\s+installed on n1, n2\s+[\d.]+s$`),
	regexp.MustCompile(`^\s+1\s+a container on n1\s+running, 10\.0\.1\.\d+\s+running, 10\.0\.2\.\d+\s+[\d.]+s$`),
	regexp.MustCompile(`^\s+2\s+stale device planted on n2\s+vx-001[0-9a-f]{3}-[0-9a-z]{5}, DOWN\s+vx-100000-[0-9a-z]{5}, DOWN\s+[\d.]+s$`),
	regexp.MustCompile(`^\s+3\s+docker run on n2\s+FAILED after [\d.]+s: file exists\s+running \([\d.]+s\), removed stale device\s+[\d.]+s$`),
	regexp.MustCompile(`^\s+4\s+ping n2 -> n1 across hosts\s+-\s+3/3 replies\s+[\d.]+s$`),
	regexp.MustCompile(`^\s+a live device on VNI 4100\s+-\s+refused, named vxlive1, kept it\s+[\d.]+s$`),
	regexp.MustCompile(`^\s+5\s+vxsafe doctor --fix on n2\s+found, fixed, runs again\s+-\s+[\d.]+s$`),
}

var (
	demoClusterRE = regexp.MustCompile(`(?m)clean-up: cluster (` + regexp.QuoteMeta(demoPrefix) + `-[0-9a-f]{4}) removed in [\d.]+s \(.*\); nothing left$`)
	demoBundleRE  = regexp.MustCompile(`=> plugin bundle (\S+) \(config\.json \+ rootfs/\) built`)
	demoOKRE      = regexp.MustCompile(`^demo: OK in ([\d.]+)s$`)
	demoStepRE    = regexp.MustCompile(`^\[\s*[\d.]+s\] step (\d)/6  `)
)

const demoPrefix = "vxd"

// TestDemo runs `make demo` as a user would, without a terminal, and checks its summary: every step
// behaved as the story says, output without colour, and nothing left on the machine.
func TestDemo(t *testing.T) {
	requireCluster(t)
	root, err := vxsafe.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if mk, err := exec.LookPath("make"); err == nil {
		cmd = exec.CommandContext(ctx, mk, "--no-print-directory", "demo", "GO="+goBinary())
	} else {
		cmd = exec.CommandContext(ctx, goBinary(), "run", "./e2e/demo")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	out, code, took := runDemo(t, cmd, root, nil)
	t.Logf("TIMING make demo (compile + run): %.1fs, exit status %d", took.Seconds(), code)
	if code != 0 {
		t.Errorf("make demo: exit status %d", code)
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour codes in output that is not a terminal")
	}
	lines := strings.Split(out, "\n")
	steps := map[string]bool{}
	for _, l := range lines {
		if m := demoStepRE.FindStringSubmatch(l); m != nil {
			steps[m[1]] = true
		}
	}
	for i := 1; i <= 6; i++ {
		if !steps[strconv.Itoa(i)] {
			t.Errorf("no progress line for step %d/6", i)
		}
	}
	for _, re := range demoRows {
		if !anyLine(lines, re) {
			t.Errorf("summary lacks a row matching %s", re)
		}
	}
	if !anyLine(lines, regexp.MustCompile(`^\s+result: OK: `)) {
		t.Error("no \"result: OK\" line")
	}
	var demoSecs float64
	for _, l := range lines {
		if m := demoOKRE.FindStringSubmatch(l); m != nil {
			demoSecs, _ = strconv.ParseFloat(m[1], 64)
		}
	}
	if demoSecs == 0 {
		t.Error(`no "demo: OK in Ns" line`)
	} else if demoSecs > 120 {
		t.Errorf("the demo took %.1fs from start to end (compilation aside): the story must fit in two minutes", demoSecs)
	}
	checkDemoLeftovers(t, out)
	if t.Failed() {
		t.Logf("output of make demo:\n%s", out)
	}
}

// TestDemoInterrupted sends Ctrl-C (SIGINT to the process group, as a terminal does) while the demo
// waits for Docker overlay's failing docker run: it must stop, clean up everything and exit 130.
func TestDemoInterrupted(t *testing.T) {
	requireCluster(t)
	root, err := vxsafe.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "demo")
	build := exec.Command(goBinary(), "build", "-o", bin, "./e2e/demo")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./e2e/demo: %v\n%s", err, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	interruptAt := regexp.MustCompile(`Docker overlay's docker run on n2 \(started [\d.]+s ago\), waiting for its answer`)
	var sent time.Time
	out, code, _ := runDemo(t, cmd, root, func(line string, pgid int) {
		if sent.IsZero() && interruptAt.MatchString(line) {
			sent = time.Now()
			syscall.Kill(-pgid, syscall.SIGINT)
		}
	})
	if sent.IsZero() {
		t.Fatalf("the demo never reached the point of the interrupt (exit status %d):\n%s", code, out)
	}
	t.Logf("TIMING interrupted demo ended %.1fs after SIGINT", time.Since(sent).Seconds())
	if code != 130 {
		t.Errorf("exit status %d after SIGINT, want 130", code)
	}
	for _, w := range []string{"interrupted (interrupt): stopping, then cleaning up everything", "result: INTERRUPTED", "demo: INTERRUPTED"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	checkDemoLeftovers(t, out)
	if t.Failed() {
		t.Logf("output of the demo:\n%s", out)
	}
}

// runDemo runs cmd in dir in its own process group, feeding each output line to onLine; when ctx ends
// it sends SIGINT to the group (the demo cleans up on it) and gives it a minute. It returns the combined
// output, the exit status and the wall time.
func runDemo(t *testing.T, cmd *exec.Cmd, dir string, onLine func(line string, pgid int)) (string, int, time.Duration) {
	t.Helper()
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = time.Minute
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var buf bytes.Buffer
	var wg sync.WaitGroup
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			buf.WriteString(sc.Text() + "\n")
			if onLine != nil {
				onLine(sc.Text(), cmd.Process.Pid)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	pw.Close()
	wg.Wait()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		t.Logf("demo: %v", err)
	}
	return buf.String(), code, time.Since(began)
}

// checkDemoLeftovers checks the demo's clean-up line and that nothing of its cluster or bundle is left.
func checkDemoLeftovers(t *testing.T, out string) {
	t.Helper()
	m := demoClusterRE.FindStringSubmatch(out)
	if m == nil {
		t.Errorf("no \"clean-up: cluster %s-XXXX removed ...; nothing left\" line", demoPrefix)
		return
	}
	name := m[1]
	if left := cluster.Leftovers(name); len(left) > 0 {
		t.Errorf("cluster %s left behind: %s", name, strings.Join(left, "; "))
	}
	if dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), name+"-*")); len(dirs) > 0 {
		t.Errorf("cluster %s left directories: %v", name, dirs)
	}
	if b := demoBundleRE.FindStringSubmatch(out); b == nil {
		t.Error("no plugin bundle line")
	} else if _, err := os.Lstat(b[1]); err == nil {
		t.Errorf("plugin bundle %s left behind", b[1])
	}
}

func anyLine(lines []string, re *regexp.Regexp) bool {
	for _, l := range lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// goBinary is the go command: PATH, else the one of the running toolchain.
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}
