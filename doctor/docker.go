package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

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

// dockerAPI is a minimal client of the Docker Engine API (plain net/http; no Docker client module).
type dockerAPI struct {
	host string // as given, e.g. unix:///var/run/docker.sock
	base string // URL prefix, e.g. http://docker
	c    *http.Client
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
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("docker host %q: %w", host, err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	a := &dockerAPI{host: host, c: &http.Client{Transport: tr, Timeout: dockerTimeout}}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			path = u.Opaque
		}
		if path == "" {
			return nil, fmt.Errorf("docker host %q: no socket path", host)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		a.base = "http://docker"
	case "tcp", "http":
		if getenv("DOCKER_TLS_VERIFY") != "" {
			return nil, fmt.Errorf("docker host %q: TLS (DOCKER_TLS_VERIFY) is not supported by vxsafe doctor; "+
				"use the daemon's unix socket with --docker-host unix:///PATH", host)
		}
		a.base = "http://" + u.Host
	default:
		return nil, fmt.Errorf("docker host %q: scheme %q not supported (unix:// or tcp://)", host, u.Scheme)
	}
	return a, nil
}

func (a *dockerAPI) get(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is a placeholder for the socket: name the socket instead
		}
		return fmt.Errorf("GET %s from %s: %w", path, a.host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("GET %s from %s: reading the answer: %w", path, a.host, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s from %s: %s: %s", path, a.host, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s from %s: decoding the answer: %w", path, a.host, err)
	}
	return nil
}

type apiNetwork struct {
	Name       string                     `json:"Name"`
	ID         string                     `json:"Id"`
	Driver     string                     `json:"Driver"`
	Options    map[string]string          `json:"Options"`
	Containers map[string]json.RawMessage `json:"Containers"`
}

// Networks lists the daemon's networks with their VNIs. Docker overlay networks use the swarm's
// data-path port when a manager reports it, else 4789; vxsafe networks their vxsafe.port option, else 4789.
func (a *dockerAPI) Networks() ([]Network, error) {
	var raw []apiNetwork
	if err := a.get("/networks", &raw); err != nil {
		return nil, err
	}
	overlayPort := netconfig.DefaultPort
	var info struct {
		Swarm struct {
			Cluster *struct {
				DataPathPort int `json:"DataPathPort"`
			} `json:"Cluster"`
		} `json:"Swarm"`
	}
	if err := a.get("/info", &info); err == nil && info.Swarm.Cluster != nil && info.Swarm.Cluster.DataPathPort > 0 {
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
	var n apiNetwork
	if err := a.get("/networks/"+url.PathEscape(id), &n); err != nil {
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
