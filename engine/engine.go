// Package engine is a minimal client of the Docker Engine API (plain net/http; no Docker client module),
// shared by the doctor and the plugin: it reads the daemon's networks and its swarm status. Every request
// is bounded by the client's timeout (a caller must answer even when dockerd hangs), and no connection is
// kept alive between requests.
package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// maxAnswer bounds an answer's body.
const maxAnswer = 32 << 20

// Client talks to one Docker daemon.
type Client struct {
	host    string // as given, e.g. unix:///var/run/docker.sock
	scheme  string // unix, tcp or http
	base    string // URL prefix, e.g. http://docker
	timeout time.Duration
	c       *http.Client
}

// New makes a client of the daemon at host, unix:///path or tcp://host:port (http://host:port), whose
// every request takes at most timeout.
func New(host string, timeout time.Duration) (*Client, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("docker host %q: %w", host, err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	c := &Client{host: host, scheme: u.Scheme, timeout: timeout, c: &http.Client{Transport: tr, Timeout: timeout}}
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
		c.base = "http://docker"
	case "tcp", "http":
		c.base = "http://" + u.Host
	default:
		return nil, fmt.Errorf("docker host %q: scheme %q not supported (unix:// or tcp://)", host, u.Scheme)
	}
	return c, nil
}

// Host is the daemon's address as given to New.
func (c *Client) Host() string { return c.host }

// TCP reports whether the daemon is reached over TCP (tcp:// or http://) rather than a unix socket.
func (c *Client) TCP() bool { return c.scheme != "unix" }

// Get reads the JSON answer of GET path into v. Its errors name the path and the daemon.
//
// Paths are unversioned on purpose: every daemon serves them at its own default (newest) API version,
// which its minimum can never exceed (Docker 20.10: 1.41; moby v2: 1.56, minimum 1.40 by default,
// raisable by the operator with min-api-version), so no engine refuses them; a pinned /v1.41 would be
// refused where the minimum is raised above it. The fields vxsafe reads (Info.Swarm, Network) are the
// same from API 1.41 to 1.56.
func (c *Client) Get(path string, v any) error {
	return c.Do(http.MethodGet, path, nil, v)
}

// Do sends method path with in as its JSON body (none when nil) and decodes a JSON answer into out (when
// not nil and the answer has a body). Any 2xx answer is a success; otherwise the error names the method,
// the path, the daemon and the daemon's own message. Paths are unversioned, as for Get.
func (c *Client) Do(method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encoding the request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is a placeholder for the socket: name the socket instead
		}
		return fmt.Errorf("%s %s from %s: %w", method, path, c.host, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s %s from %s: reading the answer: %w", method, path, c.host, err)
	}
	if resp.StatusCode/100 != 2 {
		return &APIError{Method: method, Path: path, Host: c.host, Status: resp.Status, Code: resp.StatusCode, Message: daemonMessage(answer)}
	}
	if out == nil || len(bytes.TrimSpace(answer)) == 0 {
		return nil
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("%s %s from %s: decoding the answer: %w", method, path, c.host, err)
	}
	return nil
}

// APIError is a daemon's answer other than 2xx.
type APIError struct {
	Method, Path, Host, Status string
	Code                       int
	Message                    string // the daemon's {"message": ...}, or the body as it came
}

func (e *APIError) Error() string {
	if e.Method == http.MethodGet {
		return fmt.Sprintf("GET %s from %s: %s: %s", e.Path, e.Host, e.Status, e.Message)
	}
	return fmt.Sprintf("%s %s to %s: %s: %s", e.Method, e.Path, e.Host, e.Status, e.Message)
}

// daemonMessage is the "message" of a daemon's error body, or the body itself.
func daemonMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		return m.Message
	}
	return strings.TrimSpace(string(body))
}

// Network is a network as GET /networks and GET /networks/{id} describe it (the fields vxsafe reads).
type Network struct {
	Name       string                     `json:"Name"`
	ID         string                     `json:"Id"`
	Driver     string                     `json:"Driver"`
	Scope      string                     `json:"Scope"`
	Attachable bool                       `json:"Attachable"`
	Internal   bool                       `json:"Internal"`
	Ingress    bool                       `json:"Ingress"`
	EnableIPv6 bool                       `json:"EnableIPv6"`
	IPAM       IPAM                       `json:"IPAM"`
	Options    map[string]string          `json:"Options"`
	Labels     map[string]string          `json:"Labels"`
	Containers map[string]json.RawMessage `json:"Containers"` // this node's containers attached to it
	Peers      []struct {
		Name string `json:"Name"`
		IP   string `json:"IP"`
	} `json:"Peers"` // a swarm network's nodes that have it, as this node's network gossip knows them
}

// IPAM is a network's address management.
type IPAM struct {
	Driver  string            `json:"Driver,omitempty"`
	Config  []IPAMConfig      `json:"Config"`
	Options map[string]string `json:"Options,omitempty"`
}

// IPAMConfig is one subnet of a network.
type IPAMConfig struct {
	Subnet  string `json:"Subnet,omitempty"`
	IPRange string `json:"IPRange,omitempty"`
	Gateway string `json:"Gateway,omitempty"`
}

// Networks lists the daemon's networks.
func (c *Client) Networks() ([]Network, error) {
	var out []Network
	if err := c.Get("/networks", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Network inspects network id.
func (c *Client) Network(id string) (Network, error) {
	var n Network
	err := c.Get("/networks/"+url.PathEscape(id), &n)
	return n, err
}

// Info is GET /info (the fields vxsafe reads).
type Info struct {
	Swarm struct {
		NodeID           string `json:"NodeID"`
		LocalNodeState   string `json:"LocalNodeState"` // active, inactive, pending, error, locked
		ControlAvailable bool   `json:"ControlAvailable"`
		// Cluster is set on managers.
		Cluster *struct {
			DataPathPort int `json:"DataPathPort"`
		} `json:"Cluster"`
		RemoteManagers []struct {
			Addr string `json:"Addr"`
		} `json:"RemoteManagers"`
	} `json:"Swarm"`
}

// Info reads the daemon's system information.
func (c *Client) Info() (Info, error) {
	var info Info
	err := c.Get("/info", &info)
	return info, err
}

// SwarmManagers returns the addresses (without port) of the swarm's managers the daemon knows.
func (c *Client) SwarmManagers() ([]string, error) {
	info, err := c.Info()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range info.Swarm.RemoteManagers {
		if host, _, err := net.SplitHostPort(m.Addr); err == nil {
			out = append(out, host)
		}
	}
	return out, nil
}

// Service is a swarm service on a network as this node's engine knows it: its virtual IP and the
// addresses of its tasks on the network, on every node.
type Service struct {
	Name     string
	VIP      net.IP   // nil: the service has no VIP on the network (endpoint mode dnsrr)
	Backends []net.IP // the tasks' addresses, sorted
}

// networkVerbose is the part of GET /networks/{id}?verbose=true that NetworkServices reads. The field
// is the same from API 1.41 (Docker 20.10) to 1.56: Services maps a service's name to its VIP and tasks.
type networkVerbose struct {
	Services map[string]struct {
		VIP   string `json:"VIP"`
		Tasks []struct {
			Name       string `json:"Name"`
			EndpointIP string `json:"EndpointIP"`
		} `json:"Tasks"`
	} `json:"Services"`
}

// NetworkServices lists the swarm services on network id with their VIP and tasks, sorted by name, as
// the engine's verbose inspect tells them (on workers too, tasks of other nodes included). Addresses
// may carry a prefix length; it is dropped. Entries whose addresses do not parse are left out.
func (c *Client) NetworkServices(id string) ([]Service, error) {
	var n networkVerbose
	if err := c.Get("/networks/"+url.PathEscape(id)+"?verbose=true", &n); err != nil {
		return nil, err
	}
	return servicesOf(n), nil
}

func servicesOf(n networkVerbose) []Service {
	out := make([]Service, 0, len(n.Services))
	for name, s := range n.Services {
		if name == "" {
			continue // the engine's own load-balancer endpoint, on overlay
		}
		svc := Service{Name: name, VIP: parseAddr(s.VIP)}
		seen := map[string]bool{}
		for _, t := range s.Tasks {
			if ip := parseAddr(t.EndpointIP); ip != nil && !seen[ip.String()] {
				seen[ip.String()] = true
				svc.Backends = append(svc.Backends, ip)
			}
		}
		sort.Slice(svc.Backends, func(i, j int) bool { return bytes.Compare(svc.Backends[i], svc.Backends[j]) < 0 })
		out = append(out, svc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// parseAddr reads an IPv4 address, with or without a prefix length; nil for anything else.
func parseAddr(s string) net.IP {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "/")
	if ip := net.ParseIP(s).To4(); ip != nil {
		return ip
	}
	return nil
}

// SwarmNodeAddrs returns the addresses of the swarm's nodes (GET /nodes, Status.Addr), which only a
// manager answers: the nodes that are members now, whether up or down; a node removed from the swarm is
// not among them.
func (c *Client) SwarmNodeAddrs() ([]string, error) {
	var nodes []struct {
		Status struct {
			Addr string `json:"Addr"`
		} `json:"Status"`
	}
	if err := c.Get("/nodes", &nodes); err != nil {
		return nil, err
	}
	var out []string
	for _, n := range nodes {
		if ip := net.ParseIP(n.Status.Addr); ip != nil {
			out = append(out, ip.String())
		}
	}
	return out, nil
}
