package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/control"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/driver"
	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
	"github.com/vxsafe/overlay/vip"
)

// settings are what an operator tunes, from the plugin's environment (`docker plugin set`).
type settings struct {
	LogLevel      logrus.Level
	StateDir      string // the state mount; resolveStateDir finds vxsafe's directory in it
	Socket        string
	VNIMin        uint32
	VNIMax        uint32
	Port          int
	MTU           int
	VTEP          string
	GossipPort    int
	GossipKey     []byte
	GossipLabel   string
	Peers         []string
	DockerSocket  string // the docker-socket mount; resolveDockerSocket finds the socket behind it
	MetricsAddr   string
	SweepInterval time.Duration
	// NodeGoneGrace: endpoints of a node that swarm reports gone are removed this long after its
	// plugin is silent too. PluginDownGrace: how long the endpoints of a node whose plugin is silent
	// but whose host is still in the swarm are kept (its containers still work).
	NodeGoneGrace   time.Duration
	PluginDownGrace time.Duration
	// ProbeInterval and ProbeTimeout: memberlist's failure detection (a member is probed once an
	// interval; a probe not answered within the timeout is retried through other members). A zero
	// ProbeTimeout is the gossip agent's default.
	ProbeInterval, ProbeTimeout time.Duration
	// VIPRefresh: how often the engine is read for the services of networks with local containers.
	VIPRefresh time.Duration
}

func loadSettings(env func(string) string) (settings, error) {
	get := func(k, def string) string {
		if v := strings.TrimSpace(env(k)); v != "" {
			return v
		}
		return def
	}
	var s settings
	var err error
	if s.LogLevel, err = logrus.ParseLevel(get("LOG_LEVEL", "info")); err != nil {
		return s, fmt.Errorf("setting LOG_LEVEL: %w", err)
	}
	s.StateDir = get("STATE_DIR", stateMount)
	s.Socket = get("SOCKET", "/run/docker/plugins/vxsafe.sock")
	if s.VNIMin, s.VNIMax, err = netconfig.ParseVNIRange(get("VNI_RANGE", netconfig.DefaultVNIRange)); err != nil {
		return s, fmt.Errorf("setting VNI_RANGE: %w", err)
	}
	p, err := netconfig.ParsePort(get("VXLAN_PORT", "4789"))
	if err != nil {
		return s, fmt.Errorf("setting VXLAN_PORT: %w", err)
	}
	s.Port = int(p)
	if v := get("MTU", ""); v != "" {
		if s.MTU, err = netconfig.ParseMTU(v); err != nil {
			return s, fmt.Errorf("setting MTU: %w", err)
		}
	}
	if s.VTEP = get("VTEP", ""); s.VTEP != "" && net.ParseIP(s.VTEP) == nil {
		return s, fmt.Errorf("setting VTEP: %q is not an IP address", s.VTEP)
	}
	gp, err := netconfig.ParsePort(get("GOSSIP_PORT", "7947"))
	if err != nil {
		return s, fmt.Errorf("setting GOSSIP_PORT: %w", err)
	}
	s.GossipPort = int(gp)
	if s.GossipPort == 7946 {
		return s, errors.New("setting GOSSIP_PORT: 7946 is swarm's own gossip port; choose another (default 7947)")
	}
	if k := get("GOSSIP_KEY", ""); k != "" {
		if s.GossipKey, err = parseKey(k); err != nil {
			return s, fmt.Errorf("setting GOSSIP_KEY: %w", err)
		}
	}
	s.GossipLabel = get("GOSSIP_LABEL", "vxsafe")
	for _, p := range strings.FieldsFunc(get("PEERS", ""), func(r rune) bool { return r == ',' || r == ' ' }) {
		if net.ParseIP(p) == nil {
			if _, _, err := net.SplitHostPort(p); err != nil {
				return s, fmt.Errorf("setting PEERS: %q is not an address", p)
			}
		}
		s.Peers = append(s.Peers, p)
	}
	s.DockerSocket = get("DOCKER_SOCKET", dockerSocketMount)
	s.MetricsAddr = get("METRICS_ADDR", "")
	if s.MetricsAddr != "" && s.MetricsAddr != "off" {
		host, _, err := net.SplitHostPort(s.MetricsAddr)
		if err != nil {
			return s, fmt.Errorf("setting METRICS_ADDR: %w", err)
		}
		if ip := net.ParseIP(host); host != "" && host != "localhost" && ip == nil {
			return s, fmt.Errorf("setting METRICS_ADDR: %q is not an address", host)
		}
	}
	if s.SweepInterval, err = time.ParseDuration(get("SWEEP_INTERVAL", "30s")); err != nil || s.SweepInterval < time.Second {
		return s, fmt.Errorf("setting SWEEP_INTERVAL: want a duration of at least 1s, got %q", get("SWEEP_INTERVAL", ""))
	}
	if s.NodeGoneGrace, err = time.ParseDuration(get("NODE_GONE_GRACE", "10s")); err != nil || s.NodeGoneGrace < 0 {
		return s, fmt.Errorf("setting NODE_GONE_GRACE: want a duration of 0s or more, got %q", get("NODE_GONE_GRACE", ""))
	}
	if s.PluginDownGrace, err = time.ParseDuration(get("PLUGIN_DOWN_GRACE", "10m")); err != nil || s.PluginDownGrace < s.NodeGoneGrace {
		return s, fmt.Errorf("setting PLUGIN_DOWN_GRACE: want a duration of at least NODE_GONE_GRACE (%s), got %q", s.NodeGoneGrace, get("PLUGIN_DOWN_GRACE", ""))
	}
	if s.ProbeInterval, err = time.ParseDuration(get("GOSSIP_PROBE_INTERVAL", "1s")); err != nil || s.ProbeInterval < 100*time.Millisecond || s.ProbeInterval > time.Minute {
		return s, fmt.Errorf("setting GOSSIP_PROBE_INTERVAL: want a duration from 100ms to 1m, got %q", get("GOSSIP_PROBE_INTERVAL", ""))
	}
	if v := get("GOSSIP_PROBE_TIMEOUT", ""); v != "" { // empty: the gossip agent's default, min(500ms, interval/2)
		if s.ProbeTimeout, err = time.ParseDuration(v); err != nil || s.ProbeTimeout < 10*time.Millisecond || s.ProbeTimeout > s.ProbeInterval {
			return s, fmt.Errorf("setting GOSSIP_PROBE_TIMEOUT: want a duration from 10ms to GOSSIP_PROBE_INTERVAL (%s), got %q", s.ProbeInterval, v)
		}
	}
	if s.VIPRefresh, err = time.ParseDuration(get("VIP_REFRESH", "250ms")); err != nil || s.VIPRefresh < 50*time.Millisecond || s.VIPRefresh > time.Minute {
		return s, fmt.Errorf("setting VIP_REFRESH: want a duration from 50ms to 1m, got %q", get("VIP_REFRESH", ""))
	}
	return s, nil
}

// parseKey accepts 16, 24 or 32 bytes given as hex or base64.
func parseKey(k string) ([]byte, error) {
	if b, err := hex.DecodeString(k); err == nil {
		if n := len(b); n == 16 || n == 24 || n == 32 {
			return b, nil
		}
	}
	if b, err := base64.StdEncoding.DecodeString(k); err == nil {
		if n := len(b); n == 16 || n == 24 || n == 32 {
			return b, nil
		}
	}
	return nil, errors.New("want 16, 24 or 32 bytes, hex- or base64-encoded (e.g. `openssl rand -hex 32`)")
}

func serve(ctx context.Context, env func(string) string) error {
	s, err := loadSettings(env)
	if err != nil {
		return err
	}
	logrus.SetLevel(s.LogLevel)
	logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	logrus.SetOutput(os.Stdout) // dockerd logs a plugin's stdout at info, its stderr at error
	log := logrus.NewEntry(logrus.StandardLogger())
	if s.StateDir, err = resolveStateDir(s.StateDir); err != nil {
		return err
	}
	s.DockerSocket = resolveDockerSocket(s.DockerSocket)
	log.WithFields(logrus.Fields{"version": version, "state": s.StateDir, "docker_socket": s.DockerSocket,
		"vni_range": fmt.Sprintf("%d-%d", s.VNIMin, s.VNIMax), "port": s.Port}).Info("vxsafe starting")

	st, err := store.Open(filepath.Join(s.StateDir, stateFile))
	if err != nil {
		return err
	}
	defer st.Close()
	for _, note := range st.OpenNotes() {
		log.WithField("state", s.StateDir).Warn(note)
	}
	dp, err := dataplane.New(dataplane.Options{Log: log})
	if err != nil {
		return err
	}
	defer dp.Close()
	metrics := newMetrics()
	ctl, err := control.New(ctx, control.Config{GossipPort: s.GossipPort, GossipKey: s.GossipKey, GossipLabel: s.GossipLabel,
		Peers: s.Peers, DockerSocket: s.DockerSocket, NodeGoneGrace: s.NodeGoneGrace, PluginDownGrace: s.PluginDownGrace,
		ProbeInterval: s.ProbeInterval, ProbeTimeout: s.ProbeTimeout}, st, log)
	if err != nil {
		return err
	}
	defer ctl.Close()
	var d *driver.Driver
	vips, err := newBalancer(s, dp, func(netID string) map[string]bool { return d.Reachable(netID) }, log)
	if err != nil {
		return err
	}
	d, err = driver.New(driver.Config{Store: st, Dataplane: dp, VNIMin: s.VNIMin, VNIMax: s.VNIMax, Port: s.Port,
		MTU: s.MTU, VTEP: s.VTEP, Control: ctl.Control(), Log: log, Metrics: metrics, Services: vips})
	if err != nil {
		return err
	}
	ctl.Attach(d)
	metrics.Attach(d, ctl)
	// Listen first: dockerd waits for the socket, and reconcile may take a moment on a big host.
	l, err := driver.Listen(s.Socket)
	if err != nil {
		return err
	}
	d.Reconcile()
	go d.Run(ctx, s.SweepInterval)
	go vips.Run(ctx)
	if s.MetricsAddr != "" && s.MetricsAddr != "off" {
		go metrics.Serve(ctx, s.MetricsAddr, log)
	}
	errc := make(chan error, 1)
	go func() { errc <- driver.Serve(l, driver.Handler(d, log, metrics.Observe), dp.SetEnginePID) }()
	// The operator's socket (vxsafe rotate-key) beside the engine's: its callers are not the engine.
	admin, err := driver.Listen(adminSocket(s.Socket))
	if err != nil {
		return err
	}
	defer admin.Close()
	amux := http.NewServeMux()
	amux.Handle(rotatePath, rotateHandler(ctl))
	go func() { _ = http.Serve(admin, amux) }()
	log.WithField("socket", s.Socket).Info("vxsafe serving")
	select {
	case <-ctx.Done():
		l.Close()
		log.Info("vxsafe stopping")
		flush(d, log)
		return nil
	case err := <-errc:
		flush(d, log)
		return fmt.Errorf("serving %s: %w", s.Socket, err)
	}
}

// flushTimeout bounds the wait for the endpoint interfaces still to be deleted at shutdown (each takes
// the kernel tens of milliseconds; dockerd kills a plugin that does not stop within its own timeout).
const flushTimeout = 10 * time.Second

// flush waits for the endpoint interfaces DeleteEndpoint left to the background; those not deleted in
// time are the sweep's at the next start.
func flush(d *driver.Driver, log *logrus.Entry) {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		log.WithError(err).Warn("stopping before every deleted endpoint's interface is gone; the sweep at the next start deletes the rest")
	}
}

// newBalancer makes the service VIPs' balancer, reading the engine through the docker-socket mount (none
// without a socket there).
func newBalancer(s settings, dp *dataplane.Manager, reachable func(string) map[string]bool, log *logrus.Entry) (*vip.Balancer, error) {
	cfg := vip.Config{Kernel: dp, Reachable: reachable, Refresh: s.VIPRefresh, Log: log, EngineDesc: s.DockerSocket}
	if s.DockerSocket != "" {
		c, err := engine.New("unix://"+s.DockerSocket, 2*time.Second)
		if err != nil {
			return nil, fmt.Errorf("the Docker API client for %s: %w", s.DockerSocket, err)
		}
		cfg.Engine = c
	}
	return vip.New(cfg), nil
}
