package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vxsafe/overlay/engine"
	vxmigrate "github.com/vxsafe/overlay/migrate"
)

const migrateUsage = `usage: vxsafe migrate [--docker-host H] [--dry-run] [--yes] [--subnet CIDR] [--name NEWNAME]
                      [--keep-subnet] [--resume] [--revert] [--driver vxsafe/overlay:latest] [--timeout 5m] NETWORK

Moves the swarm network NETWORK's services and standalone containers to a vxsafe/overlay twin without an
outage: the twin first on every service (a rolling update each) and container, then the old network off
each, then the old network removed. Run it against a swarm manager's engine. It prints the plan and asks
first; every step derives from the live state, so it can run again at any point. --keep-subnet ends on
NETWORK's own subnet and name, through a temporary twin: every service makes two rolling updates.
`

// migrate is `vxsafe migrate ...`: see package migrate. It returns the exit status: 0 done (or nothing to
// do, or the dry run), 1 stopped or failed, 2 usage.
func migrate(args []string, stdout, stderr io.Writer, stdin io.Reader) int {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, migrateUsage, "\nflags:\n"); fs.PrintDefaults() }
	defHost := os.Getenv("DOCKER_HOST")
	if defHost == "" {
		defHost = "unix:///var/run/docker.sock"
	}
	host := fs.String("docker-host", defHost, "a swarm manager's engine API (default: DOCKER_HOST, else the local socket)")
	o := vxmigrate.Options{Out: stdout, In: stdin}
	fs.BoolVar(&o.DryRun, "dry-run", false, "print the plan and change nothing")
	fs.BoolVar(&o.Yes, "yes", false, "do not ask before acting")
	fs.StringVar(&o.Subnet, "subnet", "", "the twin's subnet (default: a free one of the old one's size)")
	fs.StringVar(&o.Name, "name", "", "the twin's name (default: NETWORK-vxsafe)")
	fs.BoolVar(&o.KeepSubnet, "keep-subnet", false, "end on NETWORK's own subnet (and name, unless --name): a second pass through a temporary twin, so a second rolling update of every service")
	fs.BoolVar(&o.Resume, "resume", false, "continue a migration that stopped (its twin must exist)")
	fs.BoolVar(&o.Revert, "revert", false, "move everything back to NETWORK and remove the twin")
	fs.StringVar(&o.Driver, "driver", vxmigrate.DefaultDriver, "the twin's network driver")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long one service's rolling update may take")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	if o.Revert && o.Resume {
		fmt.Fprintln(stderr, "vxsafe migrate: --revert and --resume go opposite ways: give one")
		return 2
	}
	if o.KeepSubnet && o.Subnet != "" {
		fmt.Fprintln(stderr, "vxsafe migrate: --keep-subnet ends on the network's own subnet: leave out --subnet")
		return 2
	}
	o.Network = fs.Arg(0)
	cl, err := engine.New(*host, 30*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "vxsafe migrate: %v\n", err)
		return 2
	}
	if err := vxmigrate.New(cl, o).Run(); err != nil {
		fmt.Fprintf(stderr, "vxsafe migrate: %v\n", err)
		return 1
	}
	return 0
}
