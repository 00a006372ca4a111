package dataplane

// Swarm service VIPs: Docker load-balances a service's virtual IP only for its own overlay driver, so vxsafe
// programs it itself, with one nftables table (family ip) per network inside each container's network
// namespace. Only locally originated traffic is concerned (the container's own connections), so every
// chain hooks output.
//
// Layout of table vxsafe-<network id, 12 chars>, built so that the batch that programs it has a number of
// messages that grows with the number of distinct backend counts, not with the number of services
// (elements go in bulk into three sets), and so that a packet costs two hash lookups whatever the number
// of services:
//
//	map dispatch { type ipv4_addr : verdict; elements = { VIP : goto pick-N, ... } }   VIPs with N backends
//	map backends { type ipv4_addr . integer : ipv4_addr; elements = { VIP . i : backend i, ... } }
//	set vips     { type ipv4_addr; elements = { every VIP } }
//	chain nat-output    { type nat hook output priority -100; ip daddr vmap @dispatch }
//	chain pick-N        { dnat to ip daddr . numgen random mod N map @backends }   one per distinct N
//	chain filter-output { type filter hook output priority 0; ip daddr @vips reject }
//
// A packet to a VIP with backends is DNATed to one picked at random (all protocols: Docker's VIP forwards
// every port, and answers ping); the nat chain sees only a connection's first packet, later ones follow
// their conntrack entry, so an established connection keeps its backend when the table is replaced. A
// packet that still carries a VIP at filter priority was not DNATed — its VIP has no backends — and is
// refused at once with ICMP port unreachable: connect fails with ECONNREFUSED; a UDP send fails at once
// with EPERM (netfilter dropped a local packet), and the next call of a connected socket with
// ECONNREFUSED; a ping send fails with EPERM too, and ping gets "port unreachable".
//
// Reprogramming replaces the table whole in one netlink batch (add table, delete it, build it again),
// which nf_tables commits atomically: no packet ever sees a half-built table.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Service is one swarm service's virtual IP on a network and the addresses of its tasks.
type Service struct {
	VIP      net.IP   // IPv4
	Backends []net.IP // IPv4; empty: connections to the VIP are refused at once (ICMP port unreachable), as a VIP without tasks
}

// ServiceTablePrefix starts the name of every nftables table vxsafe owns; no other table is ever touched.
const ServiceTablePrefix = "vxsafe-"

// Names inside a service table.
const (
	svcChainNAT    = "nat-output"
	svcChainFilter = "filter-output"
	svcChainPick   = "pick-" // + number of backends
	svcMapDispatch = "dispatch"
	svcMapBackends = "backends"
	svcSetVIPs     = "vips"
)

// svcElemBudget bounds the encoded size of the elements sent in one netlink message: they are one nested
// attribute, whose length is 16 bits, and the library truncates a longer one silently (the kernel then
// reads garbage and fails the batch, with ENOENT).
const svcElemBudget = 48 << 10

// svcSockBuf is the socket buffer size asked for (SO_SNDBUFFORCE / SO_RCVBUFFORCE) on the netlink socket:
// a batch is sent in one sendmsg, and the kernel queues every ack before the first one is read, so the
// default buffers (net.core.[rw]mem_default) would cap the size of a batch, and an overflow loses acks
// (ENOBUFS) of a batch that did commit.
const svcSockBuf = 16 << 20

// ServiceTableName is the name of vxsafe's nftables table (family ip) for network netID in a container
// namespace: "vxsafe-" + first 12 chars of netID.
func ServiceTableName(netID string) string {
	if len(netID) > 12 {
		netID = netID[:12]
	}
	return ServiceTablePrefix + netID
}

// ProgramServices makes the table of network netID in the network namespace at nsPath hold exactly svcs,
// in one atomic netlink batch: create the table if missing, delete it and build it again, all in the same
// transaction, so no packet ever sees a half table; established connections keep their conntrack NAT.
// nsPath "" means the Manager's own (host) namespace.
//
// VIPs and backends must be IPv4, no VIP given twice, no backend twice in one service. The error wraps
// ErrDeviceGone when nsPath is no longer a network namespace.
func (m *Manager) ProgramServices(nsPath, netID string, svcs []Service) error {
	fail := func(err error) error {
		return fmt.Errorf("programming services of network %s in %s: %w", shortID(netID), nsDesc(nsPath), err)
	}
	if netID == "" {
		return fail(errors.New("empty network ID"))
	}
	p, err := planServices(svcs)
	if err != nil {
		return fail(err)
	}
	if err := m.hooks.check(StepProgramServices); err != nil {
		return fail(err)
	}
	c, done, err := m.nftIn(nsPath, true)
	if err != nil {
		return fail(err)
	}
	defer done()
	t := &nftables.Table{Name: ServiceTableName(netID), Family: nftables.TableFamilyIPv4}
	c.AddTable(t) // NLM_F_CREATE without EXCL: no error if it exists, so that the delete always has a target
	c.DelTable(t)
	c.AddTable(t)
	if err := p.build(c, t); err != nil {
		return fail(err)
	}
	if err := c.Flush(); err != nil {
		return fail(fmt.Errorf("nftables batch for table %s: %w", t.Name, err))
	}
	return nil
}

// RemoveServices deletes the table of network netID in the network namespace at nsPath ("" the
// Manager's own). A table already gone is no error (nil). A namespace already gone is reported distinctly:
// the error wraps ErrDeviceGone (nothing is left to remove; callers treat it as done) when nsPath is no
// longer a network namespace. Any other error is a real failure.
func (m *Manager) RemoveServices(nsPath, netID string) error {
	fail := func(err error) error {
		return fmt.Errorf("removing services of network %s in %s: %w", shortID(netID), nsDesc(nsPath), err)
	}
	if netID == "" {
		return fail(errors.New("empty network ID"))
	}
	c, done, err := m.nftIn(nsPath, false)
	if err != nil {
		return fail(err)
	}
	defer done()
	// Create-if-missing then delete, in one batch: deleting a table that is not there would fail the
	// batch with ENOENT, and looking first would race with a concurrent ProgramServices.
	t := &nftables.Table{Name: ServiceTableName(netID), Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fail(fmt.Errorf("deleting table %s: %w", t.Name, err))
	}
	return nil
}

// ServiceTables reads back every vxsafe-* table (family ip) in the namespace at nsPath ("" the
// Manager's own): table name -> services, VIP and backends as programmed, backends sorted. Used by tests,
// e2e checks and the doctor. The error wraps ErrDeviceGone when nsPath is no longer a network namespace.
//
// Services come sorted by VIP. A table whose contents do not follow the layout ProgramServices writes
// (a pick chain whose modulus is not the number of backends of its VIPs, a hole in a VIP's backend
// indices, a missing set) is an error naming the table.
func (m *Manager) ServiceTables(nsPath string) (map[string][]Service, error) {
	fail := func(err error) error {
		return fmt.Errorf("reading service tables in %s: %w", nsDesc(nsPath), err)
	}
	c, done, err := m.nftIn(nsPath, true)
	if err != nil {
		return nil, fail(err)
	}
	defer done()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fail(fmt.Errorf("listing tables: %w", err))
	}
	out := map[string][]Service{}
	var chains []*nftables.Chain
	for _, t := range tables {
		if !strings.HasPrefix(t.Name, ServiceTablePrefix) {
			continue
		}
		if chains == nil {
			if chains, err = c.ListChainsOfTableFamily(nftables.TableFamilyIPv4); err != nil {
				return nil, fail(fmt.Errorf("listing chains: %w", err))
			}
		}
		// A read can come back inconsistent with nothing changing the table: TestServicesMany saw a map
		// dumped one element short about once in 15 runs. A table that still reads inconsistent after
		// three reads is reported.
		var svcs []Service
		for attempt := 0; attempt < 3; attempt++ {
			if svcs, err = readServiceTable(c, t, chains); err == nil {
				break
			}
		}
		if err != nil {
			return nil, fail(fmt.Errorf("table %s: %w", t.Name, err))
		}
		out[t.Name] = svcs
	}
	return out, nil
}

// svcPlan is a validated set of services, ready to be written.
type svcPlan struct {
	vips     [][]byte
	dispatch map[int][][]byte // number of backends -> VIPs
	backends []nftables.SetElement
}

func planServices(svcs []Service) (*svcPlan, error) {
	p := &svcPlan{dispatch: map[int][][]byte{}}
	seen := map[[4]byte]bool{}
	for _, s := range svcs {
		vip := s.VIP.To4()
		if vip == nil {
			return nil, fmt.Errorf("service VIP %v is not an IPv4 address", s.VIP)
		}
		if seen[[4]byte(vip)] {
			return nil, fmt.Errorf("service VIP %v given twice", vip)
		}
		seen[[4]byte(vip)] = true
		p.vips = append(p.vips, vip)
		if len(s.Backends) == 0 {
			continue
		}
		mine := map[[4]byte]bool{}
		for i, b := range s.Backends {
			b4 := b.To4()
			if b4 == nil {
				return nil, fmt.Errorf("backend %v of service VIP %v is not an IPv4 address", b, vip)
			}
			if mine[[4]byte(b4)] {
				return nil, fmt.Errorf("backend %v of service VIP %v given twice", b4, vip)
			}
			mine[[4]byte(b4)] = true
			p.backends = append(p.backends, nftables.SetElement{Key: backendKey(vip, uint32(i)), Val: slices.Clone(b4)})
		}
		n := len(s.Backends)
		p.dispatch[n] = append(p.dispatch[n], vip)
	}
	return p, nil
}

// backendKey is the key of backend i of vip in the backends map: the VIP then i as numgen writes it (a
// 32-bit register in host byte order).
func backendKey(vip net.IP, i uint32) []byte {
	return append(slices.Clone(vip.To4()), binaryutil.NativeEndian.PutUint32(i)...)
}

// build queues the table's contents on c (after the table itself).
func (p *svcPlan) build(c *nftables.Conn, t *nftables.Table) error {
	var setID uint32 // ours, not the library's global counter (racy between Conns)
	addSet := func(s *nftables.Set, elems []nftables.SetElement) error {
		setID++
		s.ID, s.Table = setID, t
		chunks := chunkElems(elems)
		if err := c.AddSet(s, chunks[0]); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		for _, more := range chunks[1:] {
			if err := c.SetAddElements(s, more); err != nil {
				return fmt.Errorf("elements of set %s: %w", s.Name, err)
			}
		}
		return nil
	}

	// Sets first: rules refer to them.
	vips := &nftables.Set{Name: svcSetVIPs, KeyType: nftables.TypeIPAddr}
	var ve []nftables.SetElement
	for _, v := range p.vips {
		ve = append(ve, nftables.SetElement{Key: v})
	}
	if err := addSet(vips, ve); err != nil {
		return err
	}
	backends := &nftables.Set{Name: svcMapBackends, IsMap: true, DataType: nftables.TypeIPAddr,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInteger)}
	if err := addSet(backends, p.backends); err != nil {
		return err
	}

	// The pick chains must exist before the dispatch map's verdicts name them.
	counts := make([]int, 0, len(p.dispatch))
	for n := range p.dispatch {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	var de []nftables.SetElement
	for _, n := range counts {
		ch := c.AddChain(&nftables.Chain{Name: svcChainPick + strconv.Itoa(n), Table: t})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			// ip daddr . numgen random mod n  ->  backends  ->  dnat
			&expr.Payload{DestRegister: unix.NFT_REG32_00, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Numgen{Register: unix.NFT_REG32_01, Modulus: uint32(n), Type: unix.NFT_NG_RANDOM},
			&expr.Lookup{SourceRegister: unix.NFT_REG32_00, DestRegister: unix.NFT_REG_1, IsDestRegSet: true,
				SetName: backends.Name, SetID: backends.ID},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: unix.NFT_REG_1},
		}})
		for _, v := range p.dispatch[n] {
			de = append(de, nftables.SetElement{Key: v, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: ch.Name}})
		}
	}
	dispatch := &nftables.Set{Name: svcMapDispatch, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
	if err := addSet(dispatch, de); err != nil {
		return err
	}

	nat := c.AddChain(&nftables.Chain{Name: svcChainNAT, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: []expr.Any{
		&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_VERDICT, IsDestRegSet: true,
			SetName: dispatch.Name, SetID: dispatch.ID},
	}})
	filter := c.AddChain(&nftables.Chain{Name: svcChainFilter, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: []expr.Any{
		&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: vips.Name, SetID: vips.ID},
		&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3 /* ICMP_PORT_UNREACH */},
	}})
	return nil
}

// readServiceTable decodes one table written by ProgramServices; chains is every chain of family ip.
func readServiceTable(c *nftables.Conn, t *nftables.Table, chains []*nftables.Chain) ([]Service, error) {
	elems := func(name string) ([]nftables.SetElement, error) {
		s, err := c.GetSetByName(t, name)
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
		e, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("elements of set %s: %w", name, err)
		}
		return e, nil
	}
	vips, err := elems(svcSetVIPs)
	if err != nil {
		return nil, err
	}
	dispatch, err := elems(svcMapDispatch)
	if err != nil {
		return nil, err
	}
	backends, err := elems(svcMapBackends)
	if err != nil {
		return nil, err
	}

	// Modulus of every pick chain, from its rule.
	modulus := map[string]uint32{}
	for _, ch := range chains {
		if ch.Table.Name != t.Name || !strings.HasPrefix(ch.Name, svcChainPick) {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ng, ok := e.(*expr.Numgen); ok {
					modulus[ch.Name] = ng.Modulus
				}
			}
		}
	}

	byVIP := map[[4]byte]map[uint32]net.IP{}
	for _, e := range backends {
		if len(e.Key) != 8 || len(e.Val) != 4 {
			return nil, fmt.Errorf("map %s: element of key %x value %x is not ipv4_addr . integer : ipv4_addr", svcMapBackends, e.Key, e.Val)
		}
		k := [4]byte(e.Key[:4])
		if byVIP[k] == nil {
			byVIP[k] = map[uint32]net.IP{}
		}
		byVIP[k][binaryutil.NativeEndian.Uint32(e.Key[4:])] = net.IP(slices.Clone(e.Val))
	}
	picked := map[[4]byte]uint32{} // VIP -> modulus of its pick chain
	for _, e := range dispatch {
		if len(e.Key) != 4 {
			return nil, fmt.Errorf("map %s: key %x is not an IPv4 address", svcMapDispatch, e.Key)
		}
		chain, err := verdictChain(e)
		if err != nil {
			return nil, fmt.Errorf("map %s, VIP %v: %w", svcMapDispatch, net.IP(e.Key), err)
		}
		n, ok := modulus[chain]
		if !ok {
			return nil, fmt.Errorf("map %s: VIP %v goes to chain %q, which is no pick chain with a numgen", svcMapDispatch, net.IP(e.Key), chain)
		}
		picked[[4]byte(e.Key)] = n
	}

	var out []Service
	for _, e := range vips {
		if len(e.Key) != 4 {
			return nil, fmt.Errorf("set %s: key %x is not an IPv4 address", svcSetVIPs, e.Key)
		}
		k := [4]byte(e.Key)
		s := Service{VIP: net.IP(slices.Clone(e.Key))}
		n, ok := picked[k]
		if !ok && len(byVIP[k]) > 0 {
			return nil, fmt.Errorf("VIP %v has backends but no entry in map %s", s.VIP, svcMapDispatch)
		}
		if uint32(len(byVIP[k])) != n {
			return nil, fmt.Errorf("VIP %v: %d backends in map %s, but its pick chain draws among %d", s.VIP, len(byVIP[k]), svcMapBackends, n)
		}
		for i := range n {
			b, ok := byVIP[k][i]
			if !ok {
				return nil, fmt.Errorf("VIP %v: no backend %d in map %s", s.VIP, i, svcMapBackends)
			}
			s.Backends = append(s.Backends, b)
		}
		delete(byVIP, k)
		slices.SortFunc(s.Backends, compareIP)
		out = append(out, s)
	}
	for k := range byVIP {
		return nil, fmt.Errorf("map %s holds backends of %v, which is not in set %s", svcMapBackends, net.IP(k[:]), svcSetVIPs)
	}
	slices.SortFunc(out, func(a, b Service) int { return compareIP(a.VIP, b.VIP) })
	return out, nil
}

// verdictChain returns the chain a verdict map element jumps or goes to. google/nftables (v0.3.0) does
// not decode an element's verdict into VerdictData: Val holds the raw NFTA_VERDICT_* attributes.
func verdictChain(e nftables.SetElement) (string, error) {
	if e.VerdictData != nil {
		return e.VerdictData.Chain, nil
	}
	ad, err := mdnetlink.NewAttributeDecoder(e.Val)
	if err != nil {
		return "", fmt.Errorf("decoding verdict: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	var code int32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return "", fmt.Errorf("decoding verdict: %w", err)
	}
	if code != unix.NFT_GOTO || chain == "" {
		return "", fmt.Errorf("verdict %d %q is not a goto", code, chain)
	}
	return chain, nil
}

// chunkElems splits elems into runs that each fit in one message (svcElemBudget); always one run at least.
func chunkElems(elems []nftables.SetElement) [][]nftables.SetElement {
	var out [][]nftables.SetElement
	start, size := 0, 0
	for i, e := range elems {
		n := 64 + len(e.Key) + len(e.Val) // attribute headers and padding: 40 at most
		if e.VerdictData != nil {
			n += len(e.VerdictData.Chain)
		}
		if size+n > svcElemBudget {
			out = append(out, elems[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(out, elems[start:])
}

func compareIP(a, b net.IP) int { return slices.Compare(a.To16(), b.To16()) }

// nftIn returns an nftables connection in the namespace at nsPath ("" the Manager's) and its release.
// One lasting netlink socket serves every request of the connection.
//
// With background set, the release closes the socket in the background: closing an nfnetlink socket
// makes the kernel (6.x, nft_rcv_nl_event) wait, holding the namespace's nf_tables commit lock, for the
// destruction of what earlier transactions deleted (here the previous table), which takes an RCU grace
// period: 10-15 ms measured, against 1-2 ms for a whole 100-service batch. A batch is committed when
// Flush returns; only the freeing of the old objects is left. So a caller that programs many namespaces
// in turn does not pay a grace period for each (the next call in the same namespace still waits for the
// lock). At most svcBackgroundCloses closes wait at once; past that the caller closes, and waits, itself.
// A socket pins its namespace until it is closed, so RemoveServices, after which the namespace usually
// goes, closes in the foreground.
func (m *Manager) nftIn(nsPath string, background bool) (*nftables.Conn, func(), error) {
	fd := int(m.ns)
	closeNS := func() {}
	if nsPath != "" {
		var err error
		if fd, err = openNetNS(nsPath); err != nil {
			return nil, nil, err
		}
		closeNS = func() { unix.Close(fd) }
	}
	c, err := nftables.New(nftables.WithNetNSFd(fd), nftables.AsLasting(), nftables.WithSockOptions(bigBuffers))
	if err != nil {
		closeNS()
		return nil, nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	return c, func() {
		closeNS() // the socket holds its own reference to the namespace
		if !background {
			_ = c.CloseLasting()
			return
		}
		select {
		case backgroundCloses <- struct{}{}:
			go func() {
				_ = c.CloseLasting()
				<-backgroundCloses
			}()
		default:
			_ = c.CloseLasting()
		}
	}, nil
}

const svcBackgroundCloses = 32

var backgroundCloses = make(chan struct{}, svcBackgroundCloses)

// openNetNS opens the network namespace at path. The error wraps ErrDeviceGone when nothing is there, or
// something that is no namespace (a bind mount's file left behind, a /proc/<pid> of an exited process).
func openNetNS(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return -1, fmt.Errorf("netns %s: %w (%v)", path, ErrDeviceGone, err)
	}
	if err != nil {
		return -1, fmt.Errorf("opening netns %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("statfs of netns %s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w: not a namespace any more", path, ErrDeviceGone)
	}
	if t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err == nil && t != unix.CLONE_NEWNET {
		unix.Close(fd)
		return -1, fmt.Errorf("%s is a namespace but not a network namespace", path)
	}
	return fd, nil
}

// bigBuffers raises the netlink socket's buffers (see svcSockBuf); without CAP_NET_ADMIN it falls back to
// what net.core.[rw]mem_max allow.
func bigBuffers(c *mdnetlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], svcSockBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], svcSockBuf)
			}
		}
	})
}

func nsDesc(nsPath string) string {
	if nsPath == "" {
		return "the host netns"
	}
	return "netns " + nsPath
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
