package dataplane

import (
	"fmt"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// echoSocket is a netlink socket in the Manager's namespace for link creations that ask the kernel to
// echo the new link back (NLM_F_ECHO, honoured for RTM_NEWLINK since Linux 6.1). netlink.Handle.LinkAdd
// looks the new link up by name afterwards to learn its ifindex: one more request, which waits on the
// kernel's rtnl lock like every other. The echo carries the ifindex in the creation's own answer.
type echoSocket struct {
	mu  sync.Mutex
	s   *nl.NetlinkSocket
	seq uint32
}

func newEchoSocket(ns netns.NsHandle, given bool) (*echoSocket, error) {
	target := netns.None()
	if given {
		target = ns
	}
	s, err := nl.GetNetlinkSocketAt(target, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	return &echoSocket{s: s}, nil
}

func (e *echoSocket) close() { e.s.Close() }

// addMacvlan creates mv (name, parent, MTU, MAC, mode: what CreateEndpointIf sets) with one request and
// returns its ifindex. The error is the kernel's errno (errors.Is(err, unix.EEXIST) when the name is
// taken). Without an echo (a kernel before 6.1) the ifindex is looked up by name.
func (m *Manager) addMacvlan(mv *netlink.Macvlan) (int, error) {
	index, err := m.echo.execute(newMacvlanRequest(mv), unix.RTM_NEWLINK)
	if err != nil {
		return 0, err
	}
	if index == 0 {
		l, err := m.h.LinkByName(mv.Name)
		if err != nil {
			return 0, fmt.Errorf("looking up the new interface %q: %w", mv.Name, err)
		}
		index = l.Attrs().Index
	}
	return index, nil
}

// newMacvlanRequest is the RTM_NEWLINK (create, exclusive, echoed) for mv, with the attributes
// netlink.Handle.LinkAdd sends for these fields.
func newMacvlanRequest(mv *netlink.Macvlan) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK|unix.NLM_F_ECHO)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	a := mv.Attrs()
	if a.ParentIndex != 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_LINK, nl.Uint32Attr(uint32(a.ParentIndex))))
	}
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(a.Name)))
	if a.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(a.MTU))))
	}
	req.AddData(nl.NewRtAttr(unix.IFLA_TXQLEN, nl.Uint32Attr(0))) // as LinkAdd sends for a zero LinkAttrs.TxQLen
	if a.HardwareAddr != nil {
		req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, []byte(a.HardwareAddr)))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("macvlan"))
	if mode, ok := macvlanModes[mv.Mode]; ok {
		info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.IFLA_MACVLAN_MODE, nl.Uint32Attr(mode))
	}
	req.AddData(info)
	return req
}

var macvlanModes = map[netlink.MacvlanMode]uint32{
	netlink.MACVLAN_MODE_PRIVATE:  nl.MACVLAN_MODE_PRIVATE,
	netlink.MACVLAN_MODE_VEPA:     nl.MACVLAN_MODE_VEPA,
	netlink.MACVLAN_MODE_BRIDGE:   nl.MACVLAN_MODE_BRIDGE,
	netlink.MACVLAN_MODE_PASSTHRU: nl.MACVLAN_MODE_PASSTHRU,
	netlink.MACVLAN_MODE_SOURCE:   nl.MACVLAN_MODE_SOURCE,
}

// execute sends req and reads up to its acknowledgement, returning the ifindex of the echoed message of
// type echoType (0 if none came) or the kernel's error.
func (e *echoSocket) execute(req *nl.NetlinkRequest, echoType uint16) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	req.Seq = e.seq
	if err := e.s.Send(req); err != nil {
		return 0, err
	}
	pid, err := e.s.GetPid()
	if err != nil {
		return 0, err
	}
	index := 0
	for {
		msgs, from, err := e.s.Receive()
		if err != nil {
			return 0, err
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, msg := range msgs {
			if msg.Header.Seq != req.Seq || msg.Header.Pid != pid {
				continue // an answer to an earlier request that was given up on
			}
			switch msg.Header.Type {
			case unix.NLMSG_ERROR:
				if len(msg.Data) < 4 {
					return 0, fmt.Errorf("short netlink error message (%d bytes)", len(msg.Data))
				}
				if errno := int32(nl.NativeEndian().Uint32(msg.Data[0:4])); errno != 0 {
					return 0, syscall.Errno(-errno)
				}
				return index, nil
			case echoType:
				if len(msg.Data) >= unix.SizeofIfInfomsg {
					index = int(nl.DeserializeIfInfomsg(msg.Data).Index)
				}
			}
		}
	}
}
