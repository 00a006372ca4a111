// Command demo tells vxsafe/overlay's story with real output: Docker's overlay driver and vxsafe/overlay
// side by side on a two-node swarm, each blocked (or not) by the stale VXLAN device the seed found.
//
// It runs as root on the end-to-end suite's test swarm (package e2e/cluster): every node is a network
// namespace with its own dockerd, data root and socket; the machine's own Docker engine and interfaces are
// never touched. Everything it makes is removed at the end, on failure and on Ctrl-C.
//
//	make demo                 # = go run ./e2e/demo
//
// As root it first installs what it lacks (docker.io, busybox-static, iproute2, ...) with the install
// step it shares with `make test` and CI (scripts/install-deps packages).
//
// Exit status: 0 the story held, 1 a step did not behave as the story says, 2 the demo could not run,
// 130 interrupted.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vxsafe/overlay/e2e/cluster"
	"github.com/vxsafe/overlay/e2e/vxsafe"
)

// Prefix starts the name of every namespace, directory and bridge the demo's cluster creates.
const Prefix = "vxd"

// installStep is the install step the demo shares with `make test` and CI: it installs the missing apt
// packages (docker.io, busybox-static, iproute2, ...) and says which.
const installStep = "scripts/install-deps packages"

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

// preflight checks that the demo can run and, as root, installs what is missing (installStep). It
// returns 0 to go on, or the exit status.
func preflight(ctx context.Context, u *ui) int {
	problems := missing()
	if len(problems) == 0 {
		return 0
	}
	if os.Geteuid() != 0 {
		u.printf("%s", missingMessage(problems))
		return 2
	}
	u.printf("vxsafe demo: this machine lacks what the demo needs (%s); installing it: %s\n", strings.Join(problems, "; "), installStep)
	if err := install(ctx, u); err != nil {
		u.printf("vxsafe demo: installing failed: %v\n", err)
		return 2
	}
	if problems := missing(); len(problems) > 0 {
		u.printf("vxsafe demo: still missing after the install: %s\n", strings.Join(problems, "; "))
		return 2
	}
	return 0
}

// missingMessage says what is missing and how to get it (as root the demo installs it itself).
func missingMessage(problems []string) string {
	var b strings.Builder
	b.WriteString("vxsafe demo: this machine lacks what the demo needs:\n")
	for _, p := range problems {
		fmt.Fprintf(&b, "  - %s\n", p)
	}
	b.WriteString("It runs as root (it creates network namespaces and starts its own dockerd), and as root it\ninstalls what is missing itself:\n  sudo make demo\n")
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

// install runs the shared install step from the checkout.
func install(ctx context.Context, u *ui) error {
	root, err := vxsafe.RepoRoot()
	if err != nil {
		return err
	}
	fields := strings.Fields(installStep)
	cmd := exec.CommandContext(ctx, filepath.Join(root, fields[0]), fields[1:]...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = u.w, u.w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", installStep, err)
	}
	return nil
}
