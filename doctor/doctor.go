// Package doctor is `vxsafe doctor`: it lists every VXLAN device of a host, in every network namespace
// (bind-mounted ones, as Docker's sandboxes and `ip netns` are, and those of processes), says whose each is
// (a vxsafe network, a Docker overlay network, or unknown) and judges it live, stale or conflict; with
// --fix it removes the stale ones. It automates, for Docker's own overlay devices too, the manual cure of
// `error creating vxlan interface: file exists`: find the device that holds the VNI, check it is unused,
// delete it.
//
// The scanning and the rules come from package dataplane (ScanSockets, Classify): the doctor judges a device
// exactly as the plugin does before it deletes one, and adds what only an operator's view needs: owners
// from the Docker API, and conflicts (two devices on one VNI and port, or a live device holding what a
// known network needs).
package doctor

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"golang.org/x/sys/unix"
)

// Exit statuses.
const (
	ExitClean = 0 // no stale device
	ExitStale = 1 // stale devices exist (or remain after --fix)
	ExitError = 2 // the doctor could not do its job
)

// Options of a doctor run (the command-line flags).
type Options struct {
	JSON       bool
	Fix        bool
	Yes        bool
	NetNS      string // "host" namespace path; empty: the current one
	DockerHost string // unix:///path or tcp://host:port; empty: DOCKER_HOST, else the default socket
	ProcRoot   string
	Getenv     func(string) string
}

// DockerStatus tells what the Docker API gave.
type DockerStatus struct {
	Host      string `json:"host"`
	Reachable bool   `json:"reachable"`
	Networks  int    `json:"networks"`
	Error     string `json:"error,omitempty"`
}

// Report is the doctor's finding; --json prints it.
type Report struct {
	HostNamespace string       `json:"host_namespace"`
	Docker        DockerStatus `json:"docker"`
	Devices       []Entry      `json:"devices"`
	Live          int          `json:"live"`
	Stale         int          `json:"stale"`
	Conflict      int          `json:"conflict"`
	Fix           *FixResult   `json:"fix,omitempty"`
}

// FixResult is what --fix did.
type FixResult struct {
	Confirmed  bool      `json:"confirmed"`
	Removed    []Outcome `json:"removed"`
	Kept       []Outcome `json:"kept"`   // no longer stale on the second look, or gone already
	Failed     []Outcome `json:"failed"` // deletion failed
	StaleAfter int       `json:"stale_after"`
}

// Outcome is the fate of one stale device under --fix.
type Outcome struct {
	Name      string `json:"name"`
	Index     int    `json:"ifindex"`
	Namespace string `json:"namespace"`
	Reason    string `json:"reason"`
}

// Run is `vxsafe doctor ARGS`; it returns the exit status.
func Run(args []string, stdout, stderr io.Writer, stdin io.Reader) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitClean
	}
	if err != nil {
		fmt.Fprintf(stderr, "vxsafe doctor: %v\n", err)
		return ExitError
	}
	d, err := open(opts)
	if err != nil {
		fmt.Fprintf(stderr, "vxsafe doctor: %v\n", err)
		return ExitError
	}
	defer d.close()
	return d.run(stdout, stderr, stdin)
}

func parseFlags(args []string, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("vxsafe doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	fs.BoolVar(&o.Fix, "fix", false, "remove the stale devices, after showing them and asking")
	fs.BoolVar(&o.Yes, "yes", false, "with --fix: do not ask")
	fs.StringVar(&o.NetNS, "netns", "", "scan from the network namespace at `PATH` as the host (a swarm node that is a namespace); "+
		"only devices in it or whose UDP socket is in it are shown")
	fs.StringVar(&o.DockerHost, "docker-host", "", "Docker API address, `unix:///path` or tcp://host:port "+
		"(default: $DOCKER_HOST, else "+DefaultDockerHost+")")
	fs.StringVar(&o.ProcRoot, "proc", "/proc", "where the host's /proc is mounted")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: vxsafe doctor [--json] [--fix [--yes]] [--netns PATH] [--docker-host unix:///PATH] [--proc DIR]

Lists every VXLAN device of this host in every network namespace, whose it is (a vxsafe network, a
Docker overlay network, or unknown), and a verdict with its reason:
  live      in use, or not provably unused
  stale     provably unused: down, a Docker overlay sandbox without containers, or up with nothing attached
  conflict  in use, and holding a VNI/port another device of the same socket namespace holds, or a name
            or VNI that a known Docker or vxsafe network needs
Exit status: 0 no stale device, 1 stale devices exist (or remain after --fix), 2 error.

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.Yes && !o.Fix {
		return o, errors.New("--yes is only meaningful with --fix")
	}
	o.Getenv = osGetenv
	return o, nil
}

type doctor struct {
	opts Options
	m    *dataplane.Manager
	api  *dockerAPI
	host string // the host namespace, for the report
	apiE error  // why the API client could not be built
}

func open(opts Options) (*doctor, error) {
	if opts.Getenv == nil {
		opts.Getenv = osGetenv
	}
	d := &doctor{opts: opts, host: "namespace of this process"}
	log := logrus.New()
	log.SetOutput(io.Discard)
	if opts.NetNS != "" {
		d.host = opts.NetNS
	}
	m, err := dataplane.New(dataplane.Options{NSPath: opts.NetNS, ProcRoot: opts.ProcRoot, Log: logrus.NewEntry(log)})
	if err != nil {
		return nil, err
	}
	d.m = m
	d.api, d.apiE = newDockerAPI(dockerHost(opts.DockerHost, opts.Getenv), opts.Getenv)
	return d, nil
}

func (d *doctor) close() {
	d.m.Close()
}

// check scans and judges every device.
func (d *doctor) check() (*Report, error) {
	rep := &Report{HostNamespace: d.host, Docker: DockerStatus{Host: dockerHost(d.opts.DockerHost, d.opts.Getenv)}}
	var nets []Network
	var liveNetwork func(string) bool
	if d.apiE != nil {
		rep.Docker.Error = d.apiE.Error()
	} else if n, err := d.api.Networks(); err != nil {
		rep.Docker.Error = err.Error()
	} else {
		nets, rep.Docker.Reachable, rep.Docker.Networks = n, true, len(n)
		cache := map[string]bool{}
		liveNetwork = func(id string) bool {
			if v, ok := cache[id]; ok {
				return v
			}
			c, err := d.api.LocalContainers(id)
			cache[id] = err == nil && c > 0
			return cache[id]
		}
	}
	devs, err := d.m.ScanSockets(d.opts.NetNS == "")
	if err != nil {
		return nil, err
	}
	rep.Devices = judge(devs, nets, rep.Docker.Reachable, liveNetwork)
	for _, e := range rep.Devices {
		switch e.Verdict {
		case VerdictLive:
			rep.Live++
		case VerdictStale:
			rep.Stale++
		case VerdictConflict:
			rep.Conflict++
		}
	}
	return rep, nil
}

func (d *doctor) run(stdout, stderr io.Writer, stdin io.Reader) int {
	rep, err := d.check()
	if err != nil {
		fmt.Fprintf(stderr, "vxsafe doctor: %v\n", err)
		return ExitError
	}
	// Human messages go to stdout with the table, to stderr when stdout carries JSON.
	say := stdout
	if d.opts.JSON {
		say = stderr
	} else {
		writeTable(stdout, rep, d.opts)
	}
	if !d.opts.Fix {
		if d.opts.JSON {
			return d.emitJSON(stdout, stderr, rep, exitFor(rep.Stale))
		}
		if rep.Stale > 0 {
			fmt.Fprintln(stdout, "`vxsafe doctor --fix` removes the stale ones.")
		}
		return exitFor(rep.Stale)
	}

	fix := &FixResult{Removed: []Outcome{}, Kept: []Outcome{}, Failed: []Outcome{}}
	rep.Fix = fix
	var stale []Entry
	for _, e := range rep.Devices {
		if e.Verdict == VerdictStale {
			stale = append(stale, e)
		}
	}
	if len(stale) == 0 {
		fmt.Fprintln(say, "Nothing to fix.")
		return d.emitJSON(stdout, stderr, rep, ExitClean)
	}
	fmt.Fprintf(say, "\nStale VXLAN devices to remove (%d):\n", len(stale))
	for _, e := range stale {
		fmt.Fprintf(say, "  %s (ifindex %d, %s): it %s\n", e.Name, e.Index, e.Namespace, e.Reason)
	}
	if !d.opts.Yes {
		fmt.Fprint(say, "Remove them? [y/N] ")
		yes := readYes(stdin)
		if !isTerminal(stdin) {
			fmt.Fprintln(say) // the answer did not echo a newline
		}
		if !yes {
			fmt.Fprintln(say, "Nothing removed.")
			fix.StaleAfter = rep.Stale
			return d.emitJSON(stdout, stderr, rep, ExitStale)
		}
	}
	fix.Confirmed = true

	// A second look right before deleting: a device may have come into use while the question waited.
	again, err := d.check()
	if err != nil {
		fmt.Fprintf(stderr, "vxsafe doctor: %v\n", err)
		return ExitError
	}
	type key struct {
		ino  uint64
		idx  int
		name string
	}
	now := map[key]Entry{}
	for _, e := range again.Devices {
		now[key{e.NamespaceInode, e.Index, e.Name}] = e
	}
	for _, e := range stale {
		o := Outcome{Name: e.Name, Index: e.Index, Namespace: e.Namespace, Reason: e.Reason}
		cur, ok := now[key{e.NamespaceInode, e.Index, e.Name}]
		switch {
		case !ok:
			o.Reason = "no longer there"
			fix.Kept = append(fix.Kept, o)
			fmt.Fprintf(say, "%s (ifindex %d, %s) is no longer there\n", e.Name, e.Index, e.Namespace)
			continue
		case cur.Verdict != VerdictStale:
			o.Reason = fmt.Sprintf("now %s: it %s", cur.Verdict, cur.Reason)
			fix.Kept = append(fix.Kept, o)
			fmt.Fprintf(say, "kept %s (ifindex %d, %s): %s\n", e.Name, e.Index, e.Namespace, o.Reason)
			continue
		}
		o.Reason = cur.Reason
		switch err := d.m.DeleteDevice(cur.dev); {
		case err == nil:
			fix.Removed = append(fix.Removed, o)
			fmt.Fprintf(say, "removed %s (ifindex %d, %s): it %s\n", e.Name, e.Index, e.Namespace, cur.Reason)
		case errors.Is(err, dataplane.ErrDeviceGone):
			o.Reason = "no longer there"
			fix.Kept = append(fix.Kept, o)
			fmt.Fprintf(say, "%s (ifindex %d, %s) is no longer there\n", e.Name, e.Index, e.Namespace)
		default:
			o.Reason = err.Error()
			fix.Failed = append(fix.Failed, o)
			fmt.Fprintf(stderr, "vxsafe doctor: %v\n", err)
		}
	}

	after, err := d.check()
	if err != nil {
		fmt.Fprintf(stderr, "vxsafe doctor: %v\n", err)
		return ExitError
	}
	fix.StaleAfter = after.Stale
	if after.Stale > 0 {
		fmt.Fprintf(say, "%d stale device(s) remain.\n", after.Stale)
	} else {
		fmt.Fprintln(say, "No stale device remains.")
	}
	code := exitFor(after.Stale)
	if len(fix.Failed) > 0 {
		code = ExitError
	}
	return d.emitJSON(stdout, stderr, rep, code)
}

func exitFor(stale int) int {
	if stale > 0 {
		return ExitStale
	}
	return ExitClean
}

// emitJSON prints the report when --json is set, and passes code through.
func (d *doctor) emitJSON(stdout, stderr io.Writer, rep *Report, code int) int {
	if !d.opts.JSON {
		return code
	}
	if rep.Devices == nil {
		rep.Devices = []Entry{}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintf(stderr, "vxsafe doctor: writing the report: %v\n", err)
		return ExitError
	}
	return code
}

func readYes(r io.Reader) bool {
	if r == nil {
		return false
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func writeTable(w io.Writer, rep *Report, opts Options) {
	if len(rep.Devices) == 0 {
		fmt.Fprintln(w, "No VXLAN device found.")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tIFINDEX\tVNI\tPORT\tSTATE\tNAMESPACE\tOWNER\tVERDICT\tREASON")
		for _, e := range rep.Devices {
			where := shortNS(e.Namespace)
			if sock := shortNS(e.SocketNamespace); sock != where {
				where += " (socket: " + sock + ")"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n",
				e.Name, e.Index, e.VNI, e.Port, e.State, where, e.Owner, e.Verdict, e.Reason)
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	if rep.Docker.Reachable {
		fmt.Fprintf(w, "Docker API at %s: %d networks.\n", rep.Docker.Host, rep.Docker.Networks)
	} else {
		fmt.Fprintf(w, "Docker API not reachable (%s): owners show the network ID prefix the device carries.\n",
			rep.Docker.Error)
	}
	scope := "every network namespace"
	if opts.NetNS != "" {
		scope = "devices in " + opts.NetNS + " or with their UDP socket there"
	}
	noun := "devices"
	if len(rep.Devices) == 1 {
		noun = "device"
	}
	fmt.Fprintf(w, "%d VXLAN %s (%s): %d live, %d stale, %d conflict.\n",
		len(rep.Devices), noun, scope, rep.Live, rep.Stale, rep.Conflict)
}

// shortNS shortens dataplane's namespace descriptions for the table.
func shortNS(desc string) string {
	switch {
	case desc == "host namespace":
		return "host"
	case strings.HasPrefix(desc, "netns mounted at "):
		return strings.TrimPrefix(desc, "netns mounted at ")
	case strings.HasPrefix(desc, "netns of "):
		return strings.TrimPrefix(desc, "netns of ")
	}
	return desc
}
