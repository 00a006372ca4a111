package doctor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
)

// DefaultDockerHost is where the Docker API is looked for when neither --docker-host nor DOCKER_HOST is set.
const DefaultDockerHost = "unix:///var/run/docker.sock"

// dockerTimeout bounds every Docker API request: the doctor must answer even when dockerd hangs.
const dockerTimeout = 2 * time.Second

// Network is a Docker network as the doctor needs it.
type Network struct {
	ID     string
	Name   string
	Driver string
	VNIs   []uint32
	Port   int // UDP port its VXLAN devices use
}

// kind is "vxsafe" for vxsafe's networks, "overlay" for Docker's overlay driver, else "".
func (n Network) kind() string {
	d := n.Driver
	if i := strings.LastIndex(d, ":"); i > 0 && !strings.Contains(d[i:], "/") {
		d = d[:i]
	}
	switch {
	case d == "overlay":
		return kindOverlay
	case strings.Contains(d, "vxsafe"): // vxsafe/overlay, or a re-tagged copy such as registry/vxsafe/overlay
		return kindVxsafe
	}
	return ""
}

// dockerAPI is the doctor's view of the Docker API.
type dockerAPI struct {
	c *engine.Client
}

// dockerHost picks the API address: the flag, else DOCKER_HOST, else the default socket.
func dockerHost(flagValue string, getenv func(string) string) string {
	if flagValue != "" {
		return flagValue
	}
	if h := getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return DefaultDockerHost
}

func newDockerAPI(host string, getenv func(string) string) (*dockerAPI, error) {
	c, err := engine.New(host, dockerTimeout)
	if err != nil {
		return nil, err
	}
	if c.TCP() && getenv("DOCKER_TLS_VERIFY") != "" {
		return nil, fmt.Errorf("docker host %q: TLS (DOCKER_TLS_VERIFY) is not supported by vxsafe doctor; "+
			"use the daemon's unix socket with --docker-host unix:///PATH", host)
	}
	return &dockerAPI{c: c}, nil
}

// Networks lists the daemon's networks with their VNIs. Docker overlay networks use the swarm's
// data-path port when a manager reports it, else 4789; vxsafe networks their vxsafe.port option, else 4789.
func (a *dockerAPI) Networks() ([]Network, error) {
	raw, err := a.c.Networks()
	if err != nil {
		return nil, err
	}
	overlayPort := netconfig.DefaultPort
	if info, err := a.c.Info(); err == nil && info.Swarm.Cluster != nil && info.Swarm.Cluster.DataPathPort > 0 {
		overlayPort = info.Swarm.Cluster.DataPathPort
	}
	out := make([]Network, 0, len(raw))
	for _, r := range raw {
		n := Network{ID: r.ID, Name: r.Name, Driver: r.Driver, Port: netconfig.DefaultPort}
		n.VNIs = parseVNIList(r.Options[netconfig.OptVNIList])
		switch n.kind() {
		case kindOverlay:
			n.Port = overlayPort
		case kindVxsafe:
			if p, err := strconv.Atoi(r.Options[netconfig.OptPort]); err == nil && p > 0 && p < 65536 {
				n.Port = p
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// LocalContainers is the number of this node's containers attached to network id.
func (a *dockerAPI) LocalContainers(id string) (int, error) {
	n, err := a.c.Network(id)
	if err != nil {
		return 0, err
	}
	return len(n.Containers), nil
}

func parseVNIList(s string) []uint32 {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err == nil && v > 0 && v < 1<<24 {
			out = append(out, uint32(v))
		}
	}
	return out
}

func osGetenv(k string) string { return os.Getenv(k) }
