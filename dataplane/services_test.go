package dataplane

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/vxsafe/overlay/internal/nstest"
	"golang.org/x/sys/unix"
)

// Test topology: a client namespace and a server namespace joined by a veth pair; the server holds the
// backend addresses and answers on each, with its own address, over TCP, UDP (and ICMP echo, the kernel).
const (
	svcTestNet  = "5e7c1ce5e7c1ce0123456789"
	svcTestPort = 8080
)

var (
	svcClientIP = net.IPv4(10, 77, 0, 1).To4()
	svcVIP      = net.IPv4(10, 77, 0, 100).To4()
	svcBackends = []net.IP{net.IPv4(10, 77, 0, 11).To4(), net.IPv4(10, 77, 0, 12).To4(), net.IPv4(10, 77, 0, 13).To4()}
)

type vipLab struct {
	m              *Manager
	client, server *nstest.NS
}

// newVIPLab builds the topology, with the Manager in a third namespace of its own (the client is reached
// by path, as a container is).
func newVIPLab(t *testing.T) *vipLab {
	t.Helper()
	m, _, _ := newManager(t)
	l := &vipLab{m: m, client: nstest.New(t, "vxstc"), server: nstest.New(t, "vxsts")}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vxst-c"}, PeerName: "vxst-s",
		PeerNamespace: netlink.NsFd(l.server.Handle)}
	if err := l.client.NL.LinkAdd(veth); err != nil {
		t.Fatalf("veth pair: %v", err)
	}
	up := func(ns *nstest.NS, name string, ips ...net.IP) {
		link, err := ns.NL.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range ips {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}}
			if err := ns.NL.AddrAdd(link, a); err != nil {
				t.Fatalf("address %v on %s: %v", ip, name, err)
			}
		}
		if err := ns.NL.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
	up(l.client, "vxst-c", svcClientIP)
	up(l.server, "vxst-s", svcBackends...)
	// Until linkwatch has seen the carrier (it may take up to a second), a device keeps the noop qdisc and
	// drops what is sent: a first SYN then waits for its retransmission.
	for _, e := range []struct {
		ns   *nstest.NS
		name string
	}{{l.client, "vxst-c"}, {l.server, "vxst-s"}} {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			link, err := e.ns.NL.LinkByName(e.name)
			if err != nil {
				t.Fatal(err)
			}
			if link.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is %v after 5 s", e.name, link.Attrs().OperState)
			}
		}
	}
	for _, b := range svcBackends {
		serveTCP(t, l.server, b)
		serveUDP(t, l.server, b)
	}
	return l
}

// inNS runs fn on an OS thread that is in ns; sockets fn creates stay in ns.
func inNS(t testing.TB, ns netns.NsHandle, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return // the thread stays locked and dies with the goroutine
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			done <- fmt.Errorf("returning to the original namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// serveTCP answers every connection to ip:svcTestPort with ip, then every line with ip and the line.
func serveTCP(t *testing.T, ns *nstest.NS, ip net.IP) {
	t.Helper()
	var ln net.Listener
	var err error
	inNS(t, ns.Handle, func() { ln, err = net.Listen("tcp4", net.JoinHostPort(ip.String(), fmt.Sprint(svcTestPort))) })
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fmt.Fprintf(c, "%s\n", ip)
				r := bufio.NewScanner(c)
				for r.Scan() {
					fmt.Fprintf(c, "%s %s\n", ip, r.Text())
				}
			}()
		}
	}()
}

// serveUDP answers every datagram to ip:svcTestPort with ip.
func serveUDP(t *testing.T, ns *nstest.NS, ip net.IP) {
	t.Helper()
	var pc net.PacketConn
	var err error
	inNS(t, ns.Handle, func() { pc, err = net.ListenPacket("udp4", net.JoinHostPort(ip.String(), fmt.Sprint(svcTestPort))) })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(ip.String()), from)
		}
	}()
}

// dialVIP opens a TCP connection from the client namespace to the VIP and returns it with the backend
// that answered.
func (l *vipLab) dialVIP(t *testing.T) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := l.tryDial(t, svcVIP, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("reading the backend's greeting: %v", err)
	}
	return c, r, strings.TrimSpace(line)
}

func (l *vipLab) tryDial(t *testing.T, ip net.IP, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	d := net.Dialer{Timeout: timeout}
	inNS(t, l.client.Handle, func() { c, err = d.Dial("tcp4", net.JoinHostPort(ip.String(), fmt.Sprint(svcTestPort))) })
	return c, err
}

// askVIP makes one TCP connection to the VIP and returns the backend that answered.
func (l *vipLab) askVIP(t *testing.T) string {
	t.Helper()
	c, _, who := l.dialVIP(t)
	c.Close()
	return who
}

func (l *vipLab) program(t *testing.T, svcs ...Service) {
	t.Helper()
	if err := l.m.ProgramServices(l.client.Path(), svcTestNet, svcs); err != nil {
		t.Fatal(err)
	}
}

func sameServices(a, b []Service) bool {
	return slices.EqualFunc(a, b, func(x, y Service) bool {
		return x.VIP.Equal(y.VIP) && slices.EqualFunc(x.Backends, y.Backends, net.IP.Equal)
	})
}

func TestServiceTableName(t *testing.T) {
	if got := ServiceTableName("0123456789abcdef0123"); got != "vxsafe-0123456789ab" {
		t.Fatalf("ServiceTableName = %q", got)
	}
	if got := ServiceTableName("abc"); got != "vxsafe-abc" {
		t.Fatalf("ServiceTableName of a short ID = %q", got)
	}
}

func TestServicesReadBack(t *testing.T) {
	m, _, _ := newManager(t)
	ns := nstest.New(t, "vxstr")
	ip := func(s string) net.IP { return net.ParseIP(s) }
	a := []Service{
		{VIP: ip("10.0.1.2"), Backends: []net.IP{ip("10.0.1.9"), ip("10.0.1.5"), ip("10.0.1.7")}},
		{VIP: ip("10.0.1.3")}, // no tasks
		{VIP: ip("10.0.1.4"), Backends: []net.IP{ip("10.0.1.8")}},
		{VIP: ip("10.0.1.1"), Backends: []net.IP{ip("10.0.1.6"), ip("10.0.1.10"), ip("10.0.1.11")}},
	}
	b := []Service{{VIP: ip("10.0.2.2"), Backends: []net.IP{ip("10.0.2.3"), ip("10.0.2.4")}}}
	const netA, netB = "aaaaaaaaaaaa0000111122223333", "bbbbbbbbbbbb0000111122223333"
	for _, c := range []struct {
		path, netID string
		svcs        []Service
	}{{ns.Path(), netA, a}, {ns.Path(), netB, b}, {"", netA, b}} { // "" is the Manager's (host) namespace
		if err := m.ProgramServices(c.path, c.netID, c.svcs); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.ServiceTables(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	wantA := []Service{ // sorted by VIP, backends sorted
		{VIP: ip("10.0.1.1"), Backends: []net.IP{ip("10.0.1.6"), ip("10.0.1.10"), ip("10.0.1.11")}},
		{VIP: ip("10.0.1.2"), Backends: []net.IP{ip("10.0.1.5"), ip("10.0.1.7"), ip("10.0.1.9")}},
		{VIP: ip("10.0.1.3")},
		{VIP: ip("10.0.1.4"), Backends: []net.IP{ip("10.0.1.8")}},
	}
	if len(got) != 2 || !sameServices(got[ServiceTableName(netA)], wantA) || !sameServices(got[ServiceTableName(netB)], b) {
		t.Fatalf("read back %v\nwant %s: %v, %s: %v", got, ServiceTableName(netA), wantA, ServiceTableName(netB), b)
	}
	got, err = m.ServiceTables("")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !sameServices(got[ServiceTableName(netA)], b) {
		t.Fatalf("host namespace read back %v", got)
	}

	// Reprogramming replaces the contents whole.
	if err := m.ProgramServices(ns.Path(), netA, b); err != nil {
		t.Fatal(err)
	}
	if got, err = m.ServiceTables(ns.Path()); err != nil || !sameServices(got[ServiceTableName(netA)], b) {
		t.Fatalf("after reprogramming: %v, %v", got, err)
	}
	if err := m.ProgramServices(ns.Path(), netA, nil); err != nil {
		t.Fatal(err)
	}
	if got, err = m.ServiceTables(ns.Path()); err != nil || len(got) != 2 || len(got[ServiceTableName(netA)]) != 0 {
		t.Fatalf("after programming no services: %v, %v", got, err)
	}
}

func TestServicesRefuseBadInput(t *testing.T) {
	m, _, _ := newManager(t)
	ip := net.ParseIP
	for name, svcs := range map[string][]Service{
		"ipv6 VIP":          {{VIP: ip("fd00::1"), Backends: []net.IP{ip("10.0.0.1")}}},
		"ipv6 backend":      {{VIP: ip("10.0.0.1"), Backends: []net.IP{ip("fd00::1")}}},
		"nil VIP":           {{Backends: []net.IP{ip("10.0.0.1")}}},
		"duplicate VIP":     {{VIP: ip("10.0.0.1")}, {VIP: ip("10.0.0.1")}},
		"duplicate backend": {{VIP: ip("10.0.0.1"), Backends: []net.IP{ip("10.0.0.2"), ip("10.0.0.2")}}},
	} {
		err := m.ProgramServices("", svcTestNet, svcs)
		if err == nil || !strings.Contains(err.Error(), "network "+svcTestNet[:12]) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if got, err := m.ServiceTables(""); err != nil || len(got) != 0 {
		t.Fatalf("refused input left tables: %v, %v", got, err)
	}
}

func TestServicesInjectedFailureLeavesTable(t *testing.T) {
	hooks := &Hooks{}
	ns := nstest.New(t, "vxsth")
	m, err := New(Options{NS: ns.Handle, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	want := []Service{{VIP: svcVIP, Backends: svcBackends}}
	if err := m.ProgramServices("", svcTestNet, want); err != nil {
		t.Fatal(err)
	}
	hooks.FailNext(StepProgramServices, 1)
	if err := m.ProgramServices("", svcTestNet, nil); !errors.Is(err, ErrInjected) {
		t.Fatalf("err = %v, want ErrInjected", err)
	}
	if got, err := m.ServiceTables(""); err != nil || !sameServices(got[ServiceTableName(svcTestNet)], want) {
		t.Fatalf("after a failed ProgramServices: %v, %v", got, err)
	}
}

func TestServicesSpread(t *testing.T) {
	l := newVIPLab(t)
	l.program(t, Service{VIP: svcVIP, Backends: svcBackends})
	got, err := l.m.ServiceTables(l.client.Path())
	if err != nil {
		t.Fatal(err)
	}
	if want := []Service{{VIP: svcVIP, Backends: svcBackends}}; !sameServices(got[ServiceTableName(svcTestNet)], want) {
		t.Fatalf("read back %v", got)
	}
	hits := map[string]int{}
	for range 60 {
		hits[l.askVIP(t)]++
	}
	t.Logf("60 TCP connections to %v:%d: %v", svcVIP, svcTestPort, hits)
	for _, b := range svcBackends {
		if hits[b.String()] == 0 {
			t.Errorf("backend %v never picked: %v", b, hits)
		}
	}
	if len(hits) != len(svcBackends) {
		t.Errorf("answers from unknown backends: %v", hits)
	}
}

func TestServicesUDPAndPing(t *testing.T) {
	l := newVIPLab(t)
	l.program(t, Service{VIP: svcVIP, Backends: svcBackends})

	// UDP: every datagram of a new socket (a new conntrack entry) is answered by some backend, with the
	// VIP as its source (a connected socket takes nothing else).
	hits := map[string]int{}
	for range 12 {
		var c net.Conn
		var err error
		inNS(t, l.client.Handle, func() {
			c, err = net.Dial("udp4", net.JoinHostPort(svcVIP.String(), fmt.Sprint(svcTestPort)))
		})
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("who")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		c.Close()
		if err != nil {
			t.Fatalf("UDP to the VIP: %v", err)
		}
		hits[string(buf[:n])]++
	}
	t.Logf("12 UDP exchanges with %v:%d: %v", svcVIP, svcTestPort, hits)
	for who := range hits {
		if !slices.ContainsFunc(svcBackends, func(b net.IP) bool { return b.String() == who }) {
			t.Errorf("UDP answer from %q", who)
		}
	}

	// ICMP echo through a raw socket (root): the reply comes back from the VIP.
	var pc net.PacketConn
	var err error
	inNS(t, l.client.Handle, func() { pc, err = net.ListenPacket("ip4:icmp", svcClientIP.String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for seq := 1; seq <= 3; seq++ {
		id := os.Getpid() & 0xffff
		if _, err := pc.WriteTo(echoRequest(id, seq), &net.IPAddr{IP: svcVIP}); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			buf := make([]byte, 1500)
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("no echo reply from the VIP (seq %d): %v", seq, err)
			}
			if n >= 8 && buf[0] == 0 && int(buf[4])<<8|int(buf[5]) == id && int(buf[6])<<8|int(buf[7]) == seq {
				if !from.(*net.IPAddr).IP.Equal(svcVIP) {
					t.Fatalf("echo reply from %v, want the VIP", from)
				}
				break
			}
		}
	}
}

// echoRequest is an ICMP echo request.
func echoRequest(id, seq int) []byte {
	b := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'v', 'x', 's', 'a', 'f', 'e'}
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	sum = sum>>16 + sum&0xffff
	sum += sum >> 16
	b[2], b[3] = byte(^sum>>8), byte(^sum)
	return b
}

func TestServicesUpdateKeepsEstablished(t *testing.T) {
	l := newVIPLab(t)
	l.program(t, Service{VIP: svcVIP, Backends: svcBackends})
	var kept net.Conn
	var kr *bufio.Reader
	for range 100 { // a connection that landed on .12; P(none in 100) = (2/3)^100
		c, r, who := l.dialVIP(t)
		if who == svcBackends[1].String() {
			kept, kr = c, r
			break
		}
		c.Close()
	}
	if kept == nil {
		t.Fatalf("no connection landed on %v", svcBackends[1])
	}
	defer kept.Close()

	l.program(t, Service{VIP: svcVIP, Backends: svcBackends[:1]})
	for range 20 {
		if who := l.askVIP(t); who != svcBackends[0].String() {
			t.Fatalf("new connection answered by %s after the update, want only %v", who, svcBackends[0])
		}
	}
	if _, err := fmt.Fprintf(kept, "still there\n"); err != nil {
		t.Fatalf("established connection after the update: %v", err)
	}
	line, err := kr.ReadString('\n')
	if want := svcBackends[1].String() + " still there\n"; err != nil || line != want {
		t.Fatalf("established connection after the update read %q, %v; want %q", line, err, want)
	}
}

func TestServicesNoBackendsRefused(t *testing.T) {
	l := newVIPLab(t)
	l.program(t, Service{VIP: svcVIP})
	start := time.Now()
	c, err := l.tryDial(t, svcVIP, 5*time.Second)
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatal("connection to a VIP without backends succeeded")
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("connect to a VIP without backends: %v (after %v), want ECONNREFUSED", err, took)
	}
	t.Logf("connect to a VIP without backends refused after %v", took)
	if took > 500*time.Millisecond {
		t.Fatalf("refusal took %v", took)
	}
	// UDP: the send itself fails (netfilter dropped a local packet: EPERM), and the ICMP error the reject
	// sent is queued on the socket for its next call (ECONNREFUSED).
	var u net.Conn
	inNS(t, l.client.Handle, func() {
		u, err = net.Dial("udp4", net.JoinHostPort(svcVIP.String(), fmt.Sprint(svcTestPort)))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := u.Write([]byte("who")); !errors.Is(err, unix.EPERM) {
		t.Fatalf("UDP send to a VIP without backends: %v, want EPERM", err)
	}
	if _, err := u.Read(make([]byte, 64)); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("UDP receive after a send to a VIP without backends: %v, want ECONNREFUSED", err)
	}
	// Ping: port unreachable, which quotes the echo request to the VIP.
	var pc net.PacketConn
	inNS(t, l.client.Handle, func() { pc, err = net.ListenPacket("ip4:icmp", svcClientIP.String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.WriteTo(echoRequest(os.Getpid()&0xffff, 1), &net.IPAddr{IP: svcVIP}); !errors.Is(err, unix.EPERM) {
		t.Fatalf("ping send to a VIP without backends: %v, want EPERM", err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		buf := make([]byte, 1500)
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no ICMP error for a ping to a VIP without backends: %v", err)
		}
		// type 3 code 3, then the quoted IPv4 header (destination at 16) of the echo request
		if n >= 8+20 && buf[0] == 3 && buf[1] == 3 && net.IP(buf[8+16:8+20]).Equal(svcVIP) {
			break
		}
	}
	// Traffic that is not to a VIP goes on: the backends are reachable directly.
	c, err = l.tryDial(t, svcBackends[2], 3*time.Second)
	if err != nil {
		t.Fatalf("direct connection to a backend: %v", err)
	}
	c.Close()
}

func TestServicesRemoveLeavesOthers(t *testing.T) {
	l := newVIPLab(t)
	// A table of someone else's, in both families, with a chain and a rule-free hook.
	c, err := nftables.New(nftables.WithNetNSFd(int(l.client.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyINet} {
		other := c.AddTable(&nftables.Table{Name: "other", Family: fam})
		c.AddChain(&nftables.Chain{Name: "keep", Table: other, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	}
	// And one named like ours in family inet, which is not ours (ours are family ip).
	c.AddTable(&nftables.Table{Name: ServiceTableName(svcTestNet), Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	snapshot := func() []string {
		tables, err := c.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		chains, err := c.ListChains()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tb := range tables {
			out = append(out, fmt.Sprintf("table %d %s", tb.Family, tb.Name))
		}
		for _, ch := range chains {
			out = append(out, fmt.Sprintf("chain %d %s %s", ch.Table.Family, ch.Table.Name, ch.Name))
		}
		slices.Sort(out)
		return out
	}
	before := snapshot()

	l.program(t, Service{VIP: svcVIP, Backends: svcBackends})
	if who := l.askVIP(t); who == "" {
		t.Fatal("no answer")
	}
	if err := l.m.RemoveServices(l.client.Path(), svcTestNet); err != nil {
		t.Fatal(err)
	}
	if got, err := l.m.ServiceTables(l.client.Path()); err != nil || len(got) != 0 {
		t.Fatalf("after RemoveServices: %v, %v", got, err)
	}
	if after := snapshot(); !slices.Equal(before, after) {
		t.Fatalf("foreign tables changed:\nbefore %q\nafter  %q", before, after)
	}
	if err := l.m.RemoveServices(l.client.Path(), svcTestNet); err != nil {
		t.Fatalf("RemoveServices of a missing table: %v", err)
	}
	// The VIP is now just an address nobody holds (the client gets no answer), and the backends are
	// reached directly.
	conn, err := l.tryDial(t, svcBackends[0], 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()

	// A namespace that is gone is reported as such.
	for _, p := range []string{filepath.Join(t.TempDir(), "no-such-netns"), writeFile(t)} {
		err := l.m.RemoveServices(p, svcTestNet)
		if !errors.Is(err, ErrDeviceGone) || !strings.Contains(err.Error(), p) {
			t.Errorf("RemoveServices in %s: %v, want ErrDeviceGone naming the path", p, err)
		}
		if err := l.m.ProgramServices(p, svcTestNet, nil); !errors.Is(err, ErrDeviceGone) {
			t.Errorf("ProgramServices in %s: %v, want ErrDeviceGone", p, err)
		}
		if _, err := l.m.ServiceTables(p); !errors.Is(err, ErrDeviceGone) {
			t.Errorf("ServiceTables in %s: %v, want ErrDeviceGone", p, err)
		}
	}
}

// writeFile is a plain file where a netns bind mount was (what an unmounted /run/netns entry leaves).
func writeFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "unmounted-netns")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// manyServices is n services of k backends each, in 10.80.0.0/12.
func manyServices(n, k int) []Service {
	svcs := make([]Service, n)
	for i := range svcs {
		svcs[i].VIP = net.IPv4(10, 80, byte(i>>8), byte(i)).To4()
		for j := range k {
			b := 1<<16 + i*k + j
			svcs[i].Backends = append(svcs[i].Backends, net.IPv4(10, byte(80+b>>16), byte(b>>8), byte(b)).To4())
		}
	}
	return svcs
}

func TestServicesMany(t *testing.T) {
	m, _, _ := newManager(t)
	ns := nstest.New(t, "vxstm")
	svcs := manyServices(100, 3)
	start := time.Now()
	if err := m.ProgramServices(ns.Path(), svcTestNet, svcs); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	start = time.Now()
	if err := m.ProgramServices(ns.Path(), svcTestNet, svcs); err != nil {
		t.Fatal(err)
	}
	again := time.Since(start)
	start = time.Now()
	got, err := m.ServiceTables(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	read := time.Since(start)
	t.Logf("100 services x 3 backends: programmed in %v (new table), %v (replacing it); read back in %v", first, again, read)
	if !sameServices(got[ServiceTableName(svcTestNet)], svcs) {
		t.Fatalf("read back %d services, not as programmed", len(got[ServiceTableName(svcTestNet)]))
	}

	// Many distinct backend counts (one pick chain each) and many elements: one batch all the same.
	svcs = nil
	for i := range 150 {
		s := manyServices(i+1, i+1)[i]
		svcs = append(svcs, s)
	}
	start = time.Now()
	if err := m.ProgramServices(ns.Path(), svcTestNet, svcs); err != nil {
		t.Fatal(err)
	}
	t.Logf("150 services of 1..150 backends (11325 backends, 150 pick chains): programmed in %v", time.Since(start))
	if got, err = m.ServiceTables(ns.Path()); err != nil || !sameServices(got[ServiceTableName(svcTestNet)], svcs) {
		t.Fatalf("read back: %v", err)
	}
}

// BenchmarkProgramServices100x3 reprograms one namespace over and over: each call waits, at the
// namespace's commit lock, for the previous call's socket close (an RCU grace period, see nftIn).
func BenchmarkProgramServices100x3(b *testing.B) {
	ns := nstest.New(b, "vxstb")
	m, err := New(Options{NS: ns.Handle})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	svcs := manyServices(100, 3)
	for b.Loop() {
		if err := m.ProgramServices("", svcTestNet, svcs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProgramServices100x3Fanout programs 8 namespaces in turn, as the watcher does when a service
// changes on a network with 8 local containers: ns/op is per namespace.
func BenchmarkProgramServices100x3Fanout(b *testing.B) {
	m, err := New(Options{NS: nstest.New(b, "vxstb").Handle})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var paths []string
	for range 8 {
		paths = append(paths, nstest.New(b, "vxstf").Path())
	}
	svcs := manyServices(100, 3)
	i := 0
	for b.Loop() {
		if err := m.ProgramServices(paths[i%len(paths)], svcTestNet, svcs); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// A UDP flow to the VIP keeps its backend while the backend stays (one socket, one conntrack entry), and
// moves to another one once its backend is removed and ForgetBackends has run.
func TestServicesForgetBackendsMovesUDPFlows(t *testing.T) {
	l := newVIPLab(t)
	l.program(t, Service{VIP: svcVIP, Backends: svcBackends[:2]})
	var c net.Conn
	var err error
	inNS(t, l.client.Handle, func() {
		c, err = net.Dial("udp4", net.JoinHostPort(svcVIP.String(), fmt.Sprint(svcTestPort)))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func() (string, error) {
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("who")); err != nil {
			return "", err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	first, err := ask()
	if err != nil {
		t.Fatal(err)
	}
	var other net.IP
	for _, b := range svcBackends[:2] {
		if b.String() != first {
			other = b
		}
	}
	// The flow's backend goes: the table no longer has it, but the flow's entry still does.
	l.program(t, Service{VIP: svcVIP, Backends: []net.IP{other}})
	if who, err := ask(); err != nil || who != first {
		t.Fatalf("before ForgetBackends: answer %q (%v), want the flow to stay on %s (its conntrack entry)", who, err, first)
	}
	n, err := l.m.ForgetBackends(l.client.Path(), svcVIP, []net.IP{net.ParseIP(first).To4()})
	if err != nil || n != 1 {
		t.Fatalf("ForgetBackends = %d, %v; want 1 entry deleted", n, err)
	}
	if who, err := ask(); err != nil || who != other.String() {
		t.Fatalf("after ForgetBackends: answer %q (%v), want %s", who, err, other)
	}
	// Nothing to forget: nothing deleted, no error; a namespace that is gone wraps ErrDeviceGone.
	if n, err := l.m.ForgetBackends(l.client.Path(), svcVIP, []net.IP{net.ParseIP("10.77.0.99").To4()}); err != nil || n != 0 {
		t.Errorf("ForgetBackends of an unused backend = %d, %v", n, err)
	}
	if _, err := l.m.ForgetBackends(writeFile(t), svcVIP, []net.IP{other}); !errors.Is(err, ErrDeviceGone) {
		t.Errorf("ForgetBackends in a plain file: %v, want ErrDeviceGone", err)
	}
}
