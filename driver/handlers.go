package driver

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vxsafe/overlay/dataplane"
	"github.com/vxsafe/overlay/gossip"
	"github.com/vxsafe/overlay/netconfig"
	"github.com/vxsafe/overlay/store"
)

// GetCapabilities: global scope (swarm-wide networks, node discovery events).
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: network.GlobalScope, ConnectivityScope: network.GlobalScope}, nil
}

// AllocateNetwork runs on swarm managers: it picks the network's VNI and returns every option, so that
// each node's CreateNetwork gets them.
func (d *Driver) AllocateNetwork(req *network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	if err := netconfig.ValidateID("network", req.NetworkID); err != nil {
		return nil, err
	}
	requested, _, _, err := netconfig.ParseAllocateOptions(req.Options)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", netconfig.ShortID(req.NetworkID), err)
	}
	// A network without an IPv4 pool (swarm allocates none when only IPv6 subnets are given) is refused
	// here, before a VNI is taken, rather than at its first container.
	pools := 0
	for _, d := range req.IPv4Data {
		if d.Pool != "" {
			pools++
		}
	}
	if err := netconfig.RequireIPv4(req.NetworkID, nil, pools); err != nil {
		return nil, err
	}
	v6pools := 0
	for _, p := range req.IPv6Data {
		if p.Pool != "" {
			v6pools++
		}
	}
	if err := netconfig.RefuseDockerIPv6(req.NetworkID, map[string]interface{}{netconfig.OptEnableIPv6: req.Options[netconfig.OptEnableIPv6]}, v6pools); err != nil {
		return nil, err
	}
	v, err := d.alloc.Allocate(req.NetworkID, requested)
	if err != nil {
		return nil, fmt.Errorf("allocating a VNI for network %s: %w", netconfig.ShortID(req.NetworkID), err)
	}
	opts := make(map[string]string, len(req.Options)+1)
	for k, val := range req.Options {
		opts[k] = val
	}
	opts[netconfig.OptVNIList] = strconv.FormatUint(uint64(v), 10)
	if err := d.allocateKeys(req.NetworkID, opts, requested != 0); err != nil {
		return nil, err
	}
	d.log.WithFields(logrus.Fields{"network": req.NetworkID, "vni": v, "key": keyID(opts)}).Info("allocated VNI")
	return &network.AllocateNetworkResponse{Options: opts}, nil
}

// allocateKeys puts the network's gossip key and the public half of its key authority into opts, the
// options every node's CreateNetwork gets through swarm. Options that already hold them (a new leader
// allocates every network again, with what the last allocation returned) keep them: all nodes keep one
// key. A network whose options hold a VNI but no key was allocated before networks had keys (or was
// created with a VNI option): giving it a key now would split its nodes into those with and those
// without, so it stays unkeyed. The authority's private half stays in this manager's state.
func (d *Driver) allocateKeys(netID string, opts map[string]string, vniGiven bool) error {
	short := netconfig.ShortID(netID)
	key, hasKey := opts[netconfig.OptKey]
	switch {
	case hasKey && key != netconfig.KeyAuto:
		if _, err := netconfig.ParseKey(key); err != nil {
			return fmt.Errorf("network %s: %w (or %s=%s to have one made)", short, err, netconfig.OptKey, netconfig.KeyAuto)
		}
		if a, ok := opts[netconfig.OptKeyAuthority]; ok {
			if _, err := netconfig.ParseKeyAuthority(a); err != nil {
				return fmt.Errorf("network %s: %w", short, err)
			}
			return nil
		}
	case hasKey || !vniGiven:
		k := make([]byte, gossip.KeySize)
		if _, err := rand.Read(k); err != nil {
			return fmt.Errorf("network %s: making its gossip key: %w", short, err)
		}
		opts[netconfig.OptKey] = hex.EncodeToString(k)
	default:
		d.log.WithField("network", netID).Warn("network has a VNI option but no gossip key: it stays unkeyed (records of it " +
			"are not signed) because it may be a network allocated before networks had keys; create new networks with " +
			"-o " + netconfig.OptKey + "=" + netconfig.KeyAuto + " next to a VNI option")
		return nil
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("network %s: making its key authority: %w", short, err)
	}
	auth := store.AuthorityRecord{Private: priv, Keys: store.NetworkKeys{Primary: opts[netconfig.OptKey], Authority: hex.EncodeToString(pub)}}
	if err := d.st.PutAuthority(netID, auth); err != nil {
		return fmt.Errorf("network %s: keeping its key authority: %w", short, err)
	}
	opts[netconfig.OptKeyAuthority] = auth.Keys.Authority
	if k, ok := d.cfg.Control.(KeyedControl); ok {
		k.Authority(netID, auth)
	}
	return nil
}

// keyID names the network key in opts for logs ("" without one).
func keyID(opts map[string]string) string {
	k, err := netconfig.ParseKey(opts[netconfig.OptKey])
	if err != nil {
		return ""
	}
	return gossip.KeyID(k)
}

// FreeNetwork releases the network's VNI on the manager.
func (d *Driver) FreeNetwork(req *network.FreeNetworkRequest) error {
	if err := netconfig.ValidateID("network", req.NetworkID); err != nil {
		return err
	}
	v, ok, err := d.alloc.Release(req.NetworkID)
	if err != nil {
		return fmt.Errorf("releasing the VNI of network %s: %w", netconfig.ShortID(req.NetworkID), err)
	}
	if ok {
		d.log.WithFields(logrus.Fields{"network": req.NetworkID, "vni": v}).Info("released VNI")
	}
	if err := d.st.DeleteAuthority(req.NetworkID); err != nil {
		return fmt.Errorf("network %s: %w", netconfig.ShortID(req.NetworkID), err)
	}
	return nil
}

// CreateNetwork records the network on this node. The device is made on the first Join.
func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) error {
	n, err := netconfig.ParseCreateOptions(req.NetworkID, req.Options, req.IPv4Data)
	if err != nil {
		return err
	}
	if err := netconfig.RequireIPv4(n.ID, req.Options, len(n.IPv4)); err != nil {
		return err
	}
	v6pools := 0
	for _, p := range req.IPv6Data {
		if p != nil && p.Pool != "" {
			v6pools++
		}
	}
	if err := netconfig.RefuseDockerIPv6(n.ID, req.Options, v6pools); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, other := range d.networks {
		if id != n.ID && other.rec.VNI == n.VNI && other.spec.Port == d.portOf(n.Port) {
			return fmt.Errorf("network %s: VNI %d is already used on this host by vxsafe network %s: "+
				"choose another with -o %s=N", netconfig.ShortID(n.ID), n.VNI, netconfig.ShortID(id), netconfig.OptVNIList)
		}
	}
	rec := store.NetworkRecord{ID: n.ID, VNI: n.VNI, Port: n.Port, MTU: n.MTU, IPv4: n.IPv4, Options: n.Options, Created: time.Now()}
	if old, ok := d.networks[n.ID]; ok {
		rec.Created = old.rec.Created
	}
	// Keys rotated since are in the stored record (the control plane writes them there); the options
	// hold only the first key.
	if stored, ok, err := d.st.GetNetwork(n.ID); err == nil && ok && stored.Options[netconfig.OptKey] == rec.Options[netconfig.OptKey] {
		rec.Keys = stored.Keys
	}
	if err := d.st.PutNetwork(rec); err != nil {
		return fmt.Errorf("saving network %s: %w", netconfig.ShortID(n.ID), err)
	}
	if old, ok := d.networks[n.ID]; ok {
		old.rec = rec
	} else {
		d.networks[n.ID] = d.newNetState(rec)
	}
	d.declare(rec)
	d.log.WithFields(logrus.Fields{"network": n.ID, "vni": n.VNI, "interface": netconfig.DeviceName(n.VNI, n.ID)}).Info("network created")
	return nil
}

func (d *Driver) portOf(p uint16) int {
	if p == 0 {
		return d.cfg.Port
	}
	return int(p)
}

// DeleteNetwork removes the network's device (if still there) and its records.
func (d *Driver) DeleteNetwork(req *network.DeleteNetworkRequest) error {
	if err := netconfig.ValidateID("network", req.NetworkID); err != nil {
		return err
	}
	ns, ok := d.lookup(req.NetworkID)
	if !ok {
		return nil
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if err := d.dp.DeleteVXLAN(ns.spec); err != nil {
		d.log.WithError(err).WithField("network", req.NetworkID).Warn("deleting network: device left alone")
	}
	ns.vxIndex = 0
	if d.cfg.Control != nil {
		for epID := range ns.joined {
			d.cfg.Control.Withdraw(req.NetworkID, epID)
		}
	}
	if err := d.st.DeleteNetwork(req.NetworkID); err != nil {
		return fmt.Errorf("deleting network %s from %s: %w", netconfig.ShortID(req.NetworkID), d.st.Path(), err)
	}
	d.mu.Lock()
	delete(d.networks, req.NetworkID)
	d.mu.Unlock()
	d.forget(req.NetworkID)
	d.log.WithField("network", req.NetworkID).Info("network deleted")
	return nil
}

// CreateEndpoint records the endpoint; its interface is made in Join. The MAC is derived from the IP as
// Docker overlay does, unless libnetwork set one; neither address nor MAC set by libnetwork is returned.
// On a network with netconfig.OptIPv6 the endpoint's IPv6 address, derived from its IPv4 one, is
// returned (netconfig.IPv6For).
// An interface name asked for with netconfig.OptIfName is kept for Join. The other options (driver
// options such as com.docker.network.endpoint.sysctls, port mappings, DNS servers) are libnetwork's
// business: it applies the sysctls itself once the interface is in the container.
func (d *Driver) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	ns, err := d.endpointNetwork(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	if req.Interface == nil || req.Interface.Address == "" {
		return nil, fmt.Errorf("endpoint %s: Interface.Address is missing: vxsafe needs an IPv4 address from IPAM", netconfig.ShortID(req.EndpointID))
	}
	ip, ipnet, err := net.ParseCIDR(req.Interface.Address)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("endpoint %s: Interface.Address %q is not an IPv4 CIDR", netconfig.ShortID(req.EndpointID), req.Interface.Address)
	}
	dstName, err := netconfig.ParseIfName(req.Options)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s of network %s: %w", netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID), err)
	}
	resp := &network.CreateEndpointResponse{}
	mac := req.Interface.MacAddress
	if mac == "" {
		mac = netconfig.MACFromIP(ip).String()
		resp.Interface = &network.EndpointInterface{MacAddress: mac}
	} else if _, err := net.ParseMAC(mac); err != nil {
		return nil, fmt.Errorf("endpoint %s: Interface.MacAddress %q: %w", netconfig.ShortID(req.EndpointID), mac, err)
	}
	var v6 string
	if pfx := ns.ipv6(); pfx != nil {
		ones, _ := pfx.Mask.Size()
		v6 = (&net.IPNet{IP: netconfig.IPv6For(pfx, ip), Mask: net.CIDRMask(ones, 128)}).String()
		if req.Interface.AddressIPv6 != "" {
			if a, _, err := net.ParseCIDR(req.Interface.AddressIPv6); err != nil || !a.Equal(netconfig.IPv6For(pfx, ip)) {
				return nil, fmt.Errorf("endpoint %s of network %s: IPv6 address %s was given, but on this network (%s=%s) "+
					"vxsafe derives each endpoint's IPv6 address from its IPv4 one: %s here; leave --ip6 out",
					netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID), req.Interface.AddressIPv6,
					netconfig.OptIPv6, pfx, v6)
			}
		} else {
			// Returned without a gateway: an IPv6 gateway would make the engine drop the endpoint's IPv4
			// default route through docker_gwbridge. The prefix is on-link on the interface.
			if resp.Interface == nil {
				resp.Interface = &network.EndpointInterface{}
			}
			resp.Interface.AddressIPv6 = v6
		}
	} else if req.Interface.AddressIPv6 != "" {
		// CreateNetwork refuses Docker's --ipv6: an address here comes from an engine that did not ask.
		return nil, fmt.Errorf("endpoint %s of network %s: the engine gave it IPv6 address %s, which other nodes may "+
			"give too (swarm allocates no IPv6, moby/moby#48116); re-create the network without --ipv6 and with -o %s=PREFIX",
			netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID), req.Interface.AddressIPv6, netconfig.OptIPv6)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	rec := store.EndpointRecord{NetworkID: req.NetworkID, EndpointID: req.EndpointID,
		IP: (&net.IPNet{IP: ip.To4(), Mask: ipnet.Mask}).String(), IPv6: v6, MAC: mac,
		IfName: netconfig.EndpointIfName(req.EndpointID), DstName: dstName, Updated: time.Now()}
	if err := d.st.PutEndpoint(rec); err != nil {
		return nil, fmt.Errorf("saving endpoint %s of network %s: %w", netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID), err)
	}
	d.log.WithFields(logrus.Fields{"network": req.NetworkID, "endpoint": req.EndpointID, "address": rec.IP, "address_ipv6": v6, "mac": mac}).Debug("endpoint created")
	return resp, nil
}

// EndpointInfo returns what vxsafe knows of the endpoint.
func (d *Driver) EndpointInfo(req *network.InfoRequest) (*network.InfoResponse, error) {
	if err := netconfig.ValidateID("endpoint", req.EndpointID); err != nil {
		return nil, err
	}
	ns, err := d.network(req.NetworkID)
	if err != nil {
		return nil, err
	}
	ep, ok, err := d.st.GetEndpoint(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, fmt.Errorf("reading endpoint %s: %w", netconfig.ShortID(req.EndpointID), err)
	}
	if !ok {
		return nil, fmt.Errorf("endpoint %s of network %s is not known to vxsafe", netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID))
	}
	return &network.InfoResponse{Value: map[string]string{
		"interface": ep.IfName, "mac": ep.MAC, "address": ep.IP, "address_ipv6": ep.IPv6, "vxlan": ns.spec.Name,
		"vni": strconv.FormatUint(uint64(ns.spec.VNI), 10),
	}}, nil
}

// endpointNetwork validates the IDs of an endpoint request and returns the endpoint's network.
func (d *Driver) endpointNetwork(netID, epID string) (*netState, error) {
	if err := netconfig.ValidateID("network", netID); err != nil {
		return nil, err
	}
	if err := netconfig.ValidateID("endpoint", epID); err != nil {
		return nil, err
	}
	return d.network(netID)
}

// DeleteEndpoint removes the endpoint's record and answers; its interface (once libnetwork moved it back)
// is deleted in the background, and then the network's device when no endpoint of the network is joined
// on this host any more (cleanup.go).
func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	ns, err := d.endpointNetwork(req.NetworkID, req.EndpointID)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if err := d.st.DeleteEndpoint(req.NetworkID, req.EndpointID); err != nil {
		return fmt.Errorf("deleting endpoint %s from %s: %w", netconfig.ShortID(req.EndpointID), d.st.EndpointsPath(), err)
	}
	delete(ns.joined, req.EndpointID)
	d.cfg.Services.Left(req.EndpointID)
	d.deleteLater(ns, req.NetworkID, req.EndpointID, netconfig.EndpointIfName(req.EndpointID))
	return nil
}

// JoinResponse is go-plugins-helpers' network.JoinResponse with the interface's name in the container
// (InterfaceName.DstName), which that package does not carry. The current engine's remote driver reads
// it (moby v2 daemon/libnetwork/drivers/remote: api.InterfaceName.DstName, passed to SetNames in Join);
// Docker 20.10's ignores the field.
type JoinResponse struct {
	network.JoinResponse
	InterfaceName InterfaceName
}

// InterfaceName is network.InterfaceName with DstName, the exact name in the container; empty, the
// name is DstPrefix and a number.
type InterfaceName struct {
	network.InterfaceName
	DstName string `json:",omitempty"`
}

// Join is JoinNamed for go-plugins-helpers' network.Driver interface, without DstName.
func (d *Driver) Join(req *network.JoinRequest) (*network.JoinResponse, error) {
	r, err := d.JoinNamed(req)
	if err != nil {
		return nil, err
	}
	out := r.JoinResponse
	out.InterfaceName = r.InterfaceName.InterfaceName
	return &out, nil
}

// JoinNamed makes the network's device (on the first endpoint), creates the endpoint's interface on it
// and hands it to libnetwork, which moves it into the container as eth<N>, or under the name the
// container asked for in CreateEndpoint (netconfig.OptIfName).
func (d *Driver) JoinNamed(req *network.JoinRequest) (*JoinResponse, error) {
	ns, err := d.endpointNetwork(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	log := d.log.WithFields(logrus.Fields{"network": req.NetworkID, "endpoint": req.EndpointID, "vni": ns.spec.VNI})
	ep, ok, err := d.st.GetEndpoint(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, fmt.Errorf("join of endpoint %s: reading its record: %w", netconfig.ShortID(req.EndpointID), err)
	}
	if !ok {
		return nil, fmt.Errorf("join of endpoint %s: no CreateEndpoint was seen for it on network %s", netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID))
	}
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil {
		return nil, fmt.Errorf("join of endpoint %s: stored MAC %q: %w", netconfig.ShortID(req.EndpointID), ep.MAC, err)
	}
	// State first: a crash after this point leaves a record the sweep and the reconcile understand.
	ep.Joined, ep.SandboxKey, ep.Updated = true, req.SandboxKey, time.Now()
	if err := d.st.PutEndpoint(ep); err != nil {
		return nil, fmt.Errorf("join of endpoint %s: saving its record: %w", netconfig.ShortID(req.EndpointID), err)
	}
	// Joined from now on, as the record says: no remote endpoint may take its addresses.
	ns.joined[req.EndpointID] = localOf(ep)
	undo := func() {
		delete(ns.joined, req.EndpointID)
		ep.Joined = false
		if err := d.st.PutEndpoint(ep); err != nil {
			log.WithError(err).Warn("join failed and its record could not be reverted")
		}
		d.releaseDeviceLocked(ns)
	}
	if ns.vxIndex == 0 {
		if err := d.ensureDeviceLocked(ns, log); err != nil {
			undo()
			return nil, fmt.Errorf("join of endpoint %s on network %s: %w", netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID), err)
		}
	}
	if len(ns.pending) > 0 {
		if err := d.takePendingNamed(ns, ep.IfName); err != nil {
			undo()
			return nil, fmt.Errorf("join of endpoint %s on network %s: %w", netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID), err)
		}
	}
	// The device's cached ifindex is trusted, without a lookup (a netlink request waits on the kernel's
	// rtnl lock, behind every link change on the machine): the kernel refuses a macvlan on an ifindex that
	// is gone (ifindexes are not reused in a namespace: the kernel hands them out cyclically) and on one
	// that is no device a macvlan can sit on. Then the device is made again, with every check of a first
	// Join (EnsureVXLAN: ours and current, or stale and removed, or a conflict refused), and the interface
	// created once more.
	spec := dataplane.EndpointSpec{NetworkID: req.NetworkID, EndpointID: req.EndpointID,
		Name: ep.IfName, ParentIndex: ns.vxIndex, MAC: mac, MTU: ns.spec.MTU}
	removed, err := d.dp.CreateEndpointIf(spec)
	d.countRemoved(removed)
	if errors.Is(err, dataplane.ErrParentGone) {
		log.WithError(err).WithField("interface", ns.spec.Name).Warn("the network's vxlan interface is gone or was replaced; making it again")
		ns.vxIndex = 0
		if err := d.ensureDeviceLocked(ns, log); err != nil {
			undo()
			return nil, fmt.Errorf("join of endpoint %s on network %s: %w", netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID), err)
		}
		spec.ParentIndex, spec.MTU = ns.vxIndex, ns.spec.MTU
		removed, err = d.dp.CreateEndpointIf(spec)
		d.countRemoved(removed)
	}
	if err != nil {
		undo()
		return nil, fmt.Errorf("join of endpoint %s on network %s: %w", netconfig.ShortID(req.EndpointID), netconfig.ShortID(req.NetworkID), err)
	}
	if d.cfg.Control != nil {
		d.cfg.Control.Publish(d.published(ep))
	}
	d.cfg.Services.Joined(req.NetworkID, req.EndpointID, req.SandboxKey)
	log.WithFields(logrus.Fields{"interface": ep.IfName, "name_in_container": ep.DstName}).Debug("joined")
	return &JoinResponse{InterfaceName: InterfaceName{
		InterfaceName: network.InterfaceName{SrcName: ep.IfName, DstPrefix: "eth"}, DstName: ep.DstName}}, nil
}

// Leave marks the endpoint as gone from its container and withdraws it from the other hosts. The
// interface is still in the container now; libnetwork moves it back before DeleteEndpoint.
func (d *Driver) Leave(req *network.LeaveRequest) error {
	ns, err := d.endpointNetwork(req.NetworkID, req.EndpointID)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if d.cfg.Control != nil {
		d.cfg.Control.Withdraw(req.NetworkID, req.EndpointID)
	}
	ep, ok, err := d.st.GetEndpoint(req.NetworkID, req.EndpointID)
	if err != nil {
		return fmt.Errorf("leave of endpoint %s: reading its record: %w", netconfig.ShortID(req.EndpointID), err)
	}
	if ok && ep.Joined {
		ep.Joined, ep.SandboxKey, ep.Updated = false, "", time.Now()
		if err := d.st.PutEndpoint(ep); err != nil {
			return fmt.Errorf("leave of endpoint %s: saving its record: %w", netconfig.ShortID(req.EndpointID), err)
		}
	}
	delete(ns.joined, req.EndpointID)
	d.cfg.Services.Left(req.EndpointID)
	return nil
}

// DiscoverNew receives node discovery: our own data-path address (Self) and other nodes.
func (d *Driver) DiscoverNew(n *network.DiscoveryNotification) error {
	addr, self, ok := nodeDiscovery(n)
	if !ok {
		return nil
	}
	log := d.log.WithFields(logrus.Fields{"node": addr, "self": self})
	if self {
		d.mu.Lock()
		changed := d.cfg.VTEP == "" && d.vtep != addr
		if changed {
			d.vtep = addr
		}
		d.mu.Unlock()
		if changed {
			log.Info("data-path address of this node")
			if d.cfg.Control != nil {
				d.cfg.Control.SetVTEP(addr)
			}
		}
		return nil
	}
	log.Info("node discovered")
	if d.cfg.Control != nil {
		d.cfg.Control.AddSeed(addr)
		if h, ok := d.cfg.Control.(HostWatcher); ok {
			h.HostBack(addr)
		}
	}
	return nil
}

// HostWatcher is what a control plane may implement to learn from libnetwork's node discovery that a
// host has left the swarm (or failed) and when it is back. Its agent going silent alone does not mean
// the host's containers are gone: their data plane outlives the plugin process (restart, upgrade,
// disable), so their endpoints are kept until the host is reported gone.
type HostWatcher interface {
	HostGone(addr string) int
	HostBack(addr string)
}

// DiscoverDelete: a node left the swarm or failed (dockerd's own gossip says so). The control plane
// removes its endpoints a short grace period after its agent is gone too.
func (d *Driver) DiscoverDelete(n *network.DiscoveryNotification) error {
	addr, self, ok := nodeDiscovery(n)
	if !ok || self {
		return nil
	}
	matched := 0
	if h, ok := d.cfg.Control.(HostWatcher); ok {
		matched = h.HostGone(addr)
	}
	d.log.WithFields(logrus.Fields{"node": addr, "agents": matched}).Info("node gone: its endpoints are removed once its agent is silent for the grace period")
	return nil
}

func nodeDiscovery(n *network.DiscoveryNotification) (addr string, self, ok bool) {
	if n == nil || n.DiscoveryType != 1 { // libnetwork's discoverapi.NodeDiscovery
		return "", false, false
	}
	m, isMap := n.DiscoveryData.(map[string]interface{})
	if !isMap {
		return "", false, false
	}
	a, _ := m["Address"].(string)
	if a == "" {
		a, _ = m["BindAddress"].(string)
	}
	if net.ParseIP(a) == nil {
		return "", false, false
	}
	s, _ := m["Self"].(bool)
	return a, s, true
}

// ProgramExternalConnectivity is a deliberate no-op: as with Docker's overlay, containers reach the
// outside through docker_gwbridge, which libnetwork attaches itself; port publishing is not offered.
func (d *Driver) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return nil
}

// RevokeExternalConnectivity is the no-op counterpart of ProgramExternalConnectivity.
func (d *Driver) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}
