package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/vxsafe/overlay/control"
	"github.com/vxsafe/overlay/engine"
	"github.com/vxsafe/overlay/netconfig"
)

// rotatePath is the operator socket's endpoint for a key rotation.
const rotatePath = "/vxsafe/RotateKey"

// adminSocket is the operator's socket, beside the engine's (root only, like it): on the host it is
// /run/docker/plugins/<plugin id>/vxsafe-admin.sock.
func adminSocket(engineSocket string) string {
	return filepath.Join(filepath.Dir(engineSocket), "vxsafe-admin.sock")
}

type rotateRequest struct {
	Network string `json:"network"`
}

// rotateHandler serves rotatePath: the plugin rotates the network's key (control.Plane.RotateKey).
func rotateHandler(ctl *control.Plane) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req rotateRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			http.Error(w, "decode rotation request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := netconfig.ValidateID("network", req.Network); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := ctl.RotateKey(req.Network, 15*time.Second)
		w.Header().Set("Content-Type", "application/json")
		out := struct {
			control.RotateResult
			Err string `json:"error,omitempty"`
		}{RotateResult: res}
		if err != nil {
			out.Err = err.Error()
			w.WriteHeader(http.StatusConflict)
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

// rotateKey is `vxsafe rotate-key [--socket PATH] [--docker-host HOST] NETWORK`, run as root on the
// manager that created the network: it asks that node's plugin to rotate the network's gossip key.
func rotateKey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rotate-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "the plugin's operator socket (default: the one vxsafe-admin.sock under /run/docker/plugins)")
	host := fs.String("docker-host", "unix:///var/run/docker.sock", "the engine API, to resolve a network name")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: vxsafe rotate-key [--socket PATH] [--docker-host HOST] NETWORK")
		return 2
	}
	id := fs.Arg(0)
	if cl, err := engine.New(*host, 10*time.Second); err == nil {
		if n, err := cl.Network(id); err == nil && n.ID != "" {
			id = n.ID
		}
	}
	if *socket == "" {
		found, _ := filepath.Glob("/run/docker/plugins/*/vxsafe-admin.sock")
		if len(found) != 1 {
			fmt.Fprintf(stderr, "vxsafe rotate-key: %d plugin sockets found under /run/docker/plugins (%v): name one with --socket\n", len(found), found)
			return 1
		}
		*socket = found[0]
	}
	body, _ := json.Marshal(rotateRequest{Network: id})
	cl := &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", *socket)
		}}}
	resp, err := cl.Post("http://vxsafe"+rotatePath, "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "vxsafe rotate-key: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	var out struct {
		control.RotateResult
		Err string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		fmt.Fprintf(stderr, "vxsafe rotate-key: the plugin answered %s: %v\n", resp.Status, err)
		return 1
	}
	if out.Err != "" {
		fmt.Fprintf(stderr, "vxsafe rotate-key: %s\n", out.Err)
		return 1
	}
	r := out.RotateResult
	fmt.Fprintf(stdout, "network %s: key %s replaced by %s (epoch %d) in %s\n", netconfig.ShortID(r.Network), r.OldKey, r.NewKey, r.Epoch, r.Took)
	fmt.Fprintf(stdout, "  acknowledged by: %v\n", r.Members)
	if len(r.Without) > 0 {
		fmt.Fprintf(stdout, "  nodes without the network (they ask a manager when they create it): %v\n", r.Without)
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(stdout, "  gossip members that are not swarm nodes, sent nothing: %v\n", r.Skipped)
	}
	return 0
}
