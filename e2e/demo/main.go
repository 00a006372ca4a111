// Command demo tells vxsafe/overlay's story with real output: Docker's overlay driver and vxsafe/overlay
// side by side on a two-node swarm, each blocked (or not) by the stale VXLAN device the seed found.
//
// It runs as root on the end-to-end suite's test swarm (package e2e/cluster): every node is a network
// namespace with its own dockerd, data root and socket; the machine's own Docker engine and interfaces are
// never touched. Everything it makes is removed at the end, on failure and on Ctrl-C.
//
//	make demo                 # = go run ./e2e/demo
//	DEMO_INSTALL=1 make demo  # first install docker.io, busybox-static and iproute2 with apt-get
//
// Exit status: 0 the story held, 1 a step did not behave as the story says, 2 the demo could not run,
// 130 interrupted.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vxsafe/overlay/e2e/cluster"
)

// Prefix starts the name of every namespace, directory and bridge the demo's cluster creates.
const Prefix = "vxd"

// installPackages is what the demo needs from apt (dockerd, containerd, runc and the CLI; a static
// busybox for the image; ip for the fixtures; iptables, which dockerd wants even with --iptables=false).
var installPackages = []string{"docker.io", "busybox-static", "iproute2", "iptables"}

// installHint is the line the demo prints when something is missing.
const installHint = "apt-get install docker.io busybox-static iproute2"

func main() { os.Exit(run()) }

func run() int {
	u := newUI(os.Stdout)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	d := &demo{ui: u, ctx: ctx}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		n := 0
		for s := range sigs {
			n++
			if n == 1 {
				d.interrupted.Store(true)
				u.printf("\n%s%s\n", u.paint(dim, u.stamp()), u.paint(yellow, fmt.Sprintf("interrupted (%s): stopping, then cleaning up everything", s)))
				cancel()
			} else {
				u.printf("%s%s\n", u.paint(dim, u.stamp()), u.paint(yellow, "still cleaning up; it takes a few seconds"))
			}
		}
	}()

	if code := preflight(ctx, u); code != 0 {
		return code
	}
	return d.run()
}

// preflight checks that the demo can run, and installs what is missing with DEMO_INSTALL=1. It returns
// 0 to go on, or the exit status.
func preflight(ctx context.Context, u *ui) int {
	problems := missing()
	if len(problems) == 0 {
		return 0
	}
	if os.Geteuid() != 0 {
		u.printf("vxsafe demo: it must run as root (it creates network namespaces and starts its own dockerd):\n  sudo make demo\n")
		return 2
	}
	if os.Getenv("DEMO_INSTALL") != "1" {
		u.printf("%s", missingMessage(problems))
		return 2
	}
	u.printf("vxsafe demo: installing %s (DEMO_INSTALL=1)\n", strings.Join(installPackages, " "))
	if err := aptInstall(ctx, u); err != nil {
		u.printf("vxsafe demo: installing failed: %v\n", err)
		return 2
	}
	if problems := missing(); len(problems) > 0 {
		u.printf("vxsafe demo: still missing after the install: %s\n", strings.Join(problems, "; "))
		return 2
	}
	return 0
}

// missingMessage says what is missing and exactly what to install.
func missingMessage(problems []string) string {
	var b strings.Builder
	b.WriteString("vxsafe demo: this machine lacks what the demo needs:\n")
	for _, p := range problems {
		fmt.Fprintf(&b, "  - %s\n", p)
	}
	fmt.Fprintf(&b, "Install it with:\n  %s\nor let the demo install it:\n  DEMO_INSTALL=1 make demo\n", installHint)
	return b.String()
}

// missing lists what the demo needs and does not find.
func missing() []string {
	var p []string
	if err := cluster.Available(); err != nil {
		msg := strings.TrimPrefix(err.Error(), "e2e cluster unavailable: ")
		if i := strings.Index(msg, "; install with:"); i >= 0 {
			msg = msg[:i]
		}
		p = append(p, msg)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		p = append(p, "ip (iproute2) not found")
	}
	return p
}

// aptInstall installs installPackages. A policy-rc.d that forbids starting services is put in place for
// the install (unless one exists), so that the docker.io package does not start the machine's own Docker
// engine: the demo never needs it.
func aptInstall(ctx context.Context, u *ui) error {
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# written by vxsafe's demo during apt-get install\nexit 101\n"), 0o755); err != nil {
			return fmt.Errorf("writing %s: %w", policy, err)
		}
		defer os.Remove(policy)
	}
	for _, args := range [][]string{
		{"update", "-qq"},
		append([]string{"install", "-y", "-qq", "--no-install-recommends"}, installPackages...),
	} {
		u.printf("  # apt-get %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", args[0], err)
		}
	}
	return nil
}
