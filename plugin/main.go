// Command vxsafe is the vxsafe/overlay Docker network plugin (run by dockerd from the plugin bundle), and
// the operator's tool on a host: `vxsafe doctor` lists every VXLAN device of the host and finds stale ones,
// `vxsafe migrate` moves a network's services and containers to vxsafe/overlay.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
)

var version = "dev"

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		if err := serve(ctx, os.Getenv); err != nil {
			logrus.WithError(err).Error("vxsafe stopped")
			os.Exit(1)
		}
	case "doctor":
		os.Exit(doctor(args, os.Stdout, os.Stderr, os.Stdin))
	case "migrate":
		os.Exit(migrate(args, os.Stdout, os.Stderr, os.Stdin))
	case "rotate-key":
		os.Exit(rotateKey(args, os.Stdout, os.Stderr))
	case "version", "--version":
		fmt.Println("vxsafe", version)
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "vxsafe: unknown command %q\n", cmd)
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  vxsafe [serve]            run the network plugin (dockerd starts this from the plugin bundle)
  vxsafe doctor [flags]     list the host's VXLAN devices and their verdicts; --fix removes stale ones
  vxsafe migrate NETWORK    move a swarm network's services and containers to a vxsafe/overlay twin, without
                            an outage (--dry-run, --resume, --revert; on a manager: vxsafe migrate --help)
  vxsafe rotate-key NETWORK replace a network's gossip key on every node (on the manager that created it)
  vxsafe version
`)
}
