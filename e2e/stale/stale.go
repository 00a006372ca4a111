// Package stale reproduces the seed's failure on a test cluster (package cluster): stale VXLAN devices of
// the kind that make Docker's overlay fail with "error creating vxlan interface: file exists".
package stale

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vxsafe/overlay/e2e/cluster"
)

// DockerVXLANPort is the UDP port of Docker's overlay data path (default).
const DockerVXLANPort = 4789

// DockerOverlayVXLANName is the name Docker's overlay driver gives the VXLAN
// device of a network subnet: "vx-" + VNI as 6 hex digits + "-" + the first 5
// characters of the network ID.
func DockerOverlayVXLANName(vni uint32, networkID string) string {
	id := networkID
	if len(id) > 5 {
		id = id[:5]
	}
	return fmt.Sprintf("vx-%06x-%s", vni, id)
}

// PlantVXLAN creates a DOWN VXLAN device called name with the given VNI
// (UDP port 4789, like Docker's) in the node's network namespace: the kind of
// leftover that makes Docker's overlay fail with "error creating vxlan
// interface: file exists".
func PlantVXLAN(n *cluster.Node, name string, vni uint32) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		VxlanId:   int(vni),
		Port:      DockerVXLANPort,
		Learning:  true,
	}
	if err := h.LinkAdd(vx); err != nil {
		return fmt.Errorf("node %s: plant vxlan %s (vni %d): %w", n.Name, name, vni, err)
	}
	return nil
}

// OverlayVNIs returns a Docker overlay network's full ID and VNIs as node n
// sees them (docker network inspect, option
// com.docker.network.driver.overlay.vxlanid_list). Ask a manager: a worker
// only knows networks it has tasks or containers of.
//
// Swarm's allocator gives a new network its VNIs after `docker network
// create` has answered, so the option can be missing from an inspect made
// right away (seen on the current engine): it polls, for up to
// vniAllocateLimit, until the option is there.
func OverlayVNIs(ctx context.Context, n *cluster.Node, network string) (string, []uint32, error) {
	deadline := time.Now().Add(vniAllocateLimit)
	for {
		out, err := n.Docker(ctx, "network", "inspect", "--format",
			`{{.ID}} {{index .Options "com.docker.network.driver.overlay.vxlanid_list"}}`, network)
		if err != nil {
			return "", nil, err
		}
		f := strings.Fields(out)
		if len(f) == 2 {
			var vnis []uint32
			for _, s := range strings.Split(f[1], ",") {
				v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
				if err != nil {
					return "", nil, fmt.Errorf("node %s: network %s: VNI %q: %w", n.Name, network, s, err)
				}
				vnis = append(vnis, uint32(v))
			}
			return f[0], vnis, nil
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("node %s: network %s: no VNI in inspect output %q after %s", n.Name, network, out, vniAllocateLimit)
		}
		select {
		case <-ctx.Done():
			return "", nil, fmt.Errorf("node %s: network %s: waiting for its VNI: %w", n.Name, network, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// vniAllocateLimit bounds OverlayVNIs' wait for swarm's allocator.
const vniAllocateLimit = 30 * time.Second

// PlantDockerVXLAN asks manager for the Docker overlay network's ID and
// first VNI and plants the matching stale device on target. It returns the
// device name and VNI.
func PlantDockerVXLAN(ctx context.Context, manager, target *cluster.Node, network string) (string, uint32, error) {
	id, vnis, err := OverlayVNIs(ctx, manager, network)
	if err != nil {
		return "", 0, err
	}
	name := DockerOverlayVXLANName(vnis[0], id)
	return name, vnis[0], PlantVXLAN(target, name, vnis[0])
}
