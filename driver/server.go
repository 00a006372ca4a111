package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// MaxRequestBytes bounds a request body. libnetwork's largest requests (CreateNetwork with options and
// IPAM data) are a few KiB.
const MaxRequestBytes = 1 << 20

// Observer is told the duration and outcome of every request (for metrics); nil observes nothing.
type Observer func(method string, took time.Duration, err error)

// Handler serves the NetworkDriver protocol of go-plugins-helpers' types for drv. It replaces
// network.NewHandler's mux to add what a production socket needs: a bound on request size, decode errors
// that name the offending field, and a recovered panic answered as an error instead of a dropped
// connection.
func Handler(drv network.Driver, log *logrus.Entry, obs Observer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
		fmt.Fprintln(w, `{"Implements": ["NetworkDriver"]}`)
	})
	type call struct {
		name string
		new  func() any
		do   func(req any) (any, error)
	}
	empty := struct{}{}
	calls := []call{
		{"GetCapabilities", func() any { return &struct{}{} }, func(any) (any, error) { return drv.GetCapabilities() }},
		{"AllocateNetwork", func() any { return &network.AllocateNetworkRequest{} }, func(r any) (any, error) {
			return drv.AllocateNetwork(r.(*network.AllocateNetworkRequest))
		}},
		{"FreeNetwork", func() any { return &network.FreeNetworkRequest{} }, func(r any) (any, error) {
			return empty, drv.FreeNetwork(r.(*network.FreeNetworkRequest))
		}},
		{"CreateNetwork", func() any { return &network.CreateNetworkRequest{} }, func(r any) (any, error) {
			return empty, drv.CreateNetwork(r.(*network.CreateNetworkRequest))
		}},
		{"DeleteNetwork", func() any { return &network.DeleteNetworkRequest{} }, func(r any) (any, error) {
			return empty, drv.DeleteNetwork(r.(*network.DeleteNetworkRequest))
		}},
		{"CreateEndpoint", func() any { return &network.CreateEndpointRequest{} }, func(r any) (any, error) {
			return drv.CreateEndpoint(r.(*network.CreateEndpointRequest))
		}},
		{"DeleteEndpoint", func() any { return &network.DeleteEndpointRequest{} }, func(r any) (any, error) {
			return empty, drv.DeleteEndpoint(r.(*network.DeleteEndpointRequest))
		}},
		{"EndpointOperInfo", func() any { return &network.InfoRequest{} }, func(r any) (any, error) {
			return drv.EndpointInfo(r.(*network.InfoRequest))
		}},
		{"Join", func() any { return &network.JoinRequest{} }, func(r any) (any, error) {
			if nj, ok := drv.(namedJoiner); ok {
				return nj.JoinNamed(r.(*network.JoinRequest))
			}
			return drv.Join(r.(*network.JoinRequest))
		}},
		{"Leave", func() any { return &network.LeaveRequest{} }, func(r any) (any, error) {
			return empty, drv.Leave(r.(*network.LeaveRequest))
		}},
		{"DiscoverNew", func() any { return &network.DiscoveryNotification{} }, func(r any) (any, error) {
			return empty, drv.DiscoverNew(r.(*network.DiscoveryNotification))
		}},
		{"DiscoverDelete", func() any { return &network.DiscoveryNotification{} }, func(r any) (any, error) {
			return empty, drv.DiscoverDelete(r.(*network.DiscoveryNotification))
		}},
		{"GwAllocCheck", func() any { return &GwAllocCheckRequest{} }, func(any) (any, error) {
			return &GwAllocCheckResponse{}, nil
		}},
		{"ProgramExternalConnectivity", func() any { return &network.ProgramExternalConnectivityRequest{} }, func(r any) (any, error) {
			return empty, drv.ProgramExternalConnectivity(r.(*network.ProgramExternalConnectivityRequest))
		}},
		{"RevokeExternalConnectivity", func() any { return &network.RevokeExternalConnectivityRequest{} }, func(r any) (any, error) {
			return empty, drv.RevokeExternalConnectivity(r.(*network.RevokeExternalConnectivityRequest))
		}},
	}
	for _, c := range calls {
		c := c
		mux.HandleFunc("/NetworkDriver."+c.name, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			var err error
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("%s: internal error: %v", c.name, p)
					log.WithField("method", c.name).Errorf("recovered from panic: %v", p)
					writeError(w, err)
				}
				if obs != nil {
					obs(c.name, time.Since(start), err)
				}
			}()
			req := c.new()
			if err = decode(w, r, c.name, req); err != nil {
				writeError(w, err)
				return
			}
			var resp any
			resp, err = c.do(req)
			if err != nil {
				log.WithField("method", c.name).WithError(err).Warn("request failed")
				writeError(w, err)
				return
			}
			if resp == nil || isNilPtr(resp) {
				resp = empty
			}
			sdk.EncodeResponse(w, resp, false)
		})
	}
	return mux
}

// GwAllocCheckRequest is the body of /NetworkDriver.GwAllocCheck (moby v2
// daemon/libnetwork/drivers/remote/api.GwAllocCheckerRequest): the network's options, sent before
// CreateNetwork by an engine that knows the call, and only to a driver that declares the capability
// GwAllocChecker. go-plugins-helpers knows neither.
type GwAllocCheckRequest struct {
	Options map[string]any
}

// GwAllocCheckResponse says whether the engine may skip reserving the network's gateway addresses.
// vxsafe does not declare GwAllocChecker, so the engine does not ask and reserves them as Docker 20.10
// does; if asked anyway, it answers the same: reserve both (SkipIPv4 and SkipIPv6 false). For a
// swarm-scoped network the swarm manager reserves the IPv4 gateway whatever the driver says, and
// overlay, whose place vxsafe takes, keeps it too.
type GwAllocCheckResponse struct {
	SkipIPv4 bool
	SkipIPv6 bool
}

// namedJoiner is a driver whose Join can name the interface in the container (JoinResponse.DstName).
type namedJoiner interface {
	JoinNamed(*network.JoinRequest) (*JoinResponse, error)
}

func isNilPtr(v any) bool {
	switch p := v.(type) {
	case *network.CapabilitiesResponse:
		return p == nil
	case *network.AllocateNetworkResponse:
		return p == nil
	case *network.CreateEndpointResponse:
		return p == nil
	case *network.InfoResponse:
		return p == nil
	case *network.JoinResponse:
		return p == nil
	case *JoinResponse:
		return p == nil
	}
	return false
}

// decode reads one JSON request of at most MaxRequestBytes; its errors name the method and the field.
func decode(w http.ResponseWriter, r *http.Request, method string, req any) error {
	if r.Method != http.MethodPost {
		return fmt.Errorf("%s: method %s not allowed, use POST", method, r.Method)
	}
	body := http.MaxBytesReader(w, r.Body, MaxRequestBytes)
	err := json.NewDecoder(body).Decode(req)
	if err == nil || (errors.Is(err, io.EOF) && method == "GetCapabilities") {
		return nil
	}
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &mbe):
		return fmt.Errorf("%s: request body larger than %d bytes", method, MaxRequestBytes)
	case errors.As(err, &ute):
		return fmt.Errorf("%s: field %q: %s is not a valid %s", method, ute.Field, ute.Value, ute.Type)
	case errors.As(err, &se):
		return fmt.Errorf("%s: malformed JSON at byte %d: %w", method, se.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: malformed JSON: the body ends in the middle of a value", method)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%s: empty request body", method)
	}
	return fmt.Errorf("%s: decoding the request: %w", method, err)
}

func writeError(w http.ResponseWriter, err error) {
	sdk.EncodeResponse(w, network.NewErrorResponse(err.Error()), true)
}

// Serve serves h on the plugin socket path (dockerd finds managed plugins' sockets in
// /run/docker/plugins). It returns when the listener fails or closes. onPeer, when not nil, is told the
// PID of the process behind every new connection (dockerd: the plugin shares the host's PID namespace).
func Serve(l net.Listener, h http.Handler, onPeer func(pid int)) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	if onPeer != nil {
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if pid := peerPID(c); pid > 0 {
				onPeer(pid)
			}
			return ctx
		}
	}
	return srv.Serve(l)
}

// peerPID is the PID of the process at the other end of a unix connection (SO_PEERCRED); 0 if unknown.
func peerPID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// Listen creates the unix socket, replacing a leftover socket file from an earlier run.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the socket directory %s: %w", filepath.Dir(path), err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("removing the old socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	return l, nil
}
