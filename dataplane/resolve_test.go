package dataplane

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/vxsafe/overlay/internal/nstest"
	"golang.org/x/net/dns/dnsmessage"
)

// A DNS server on 127.0.0.11:53 in a fresh namespace, as Docker's embedded one appears in a container:
// ResolveIn reads its A records, an unknown name as none, and refuses a truncated answer.
func TestResolveIn(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "vxsdns")
	lo, err := ns.NL.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.NL.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	var pc net.PacketConn
	inNS(t, ns.Handle, func() { pc, err = net.ListenPacket("udp4", EmbeddedDNS) })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var q dnsmessage.Message
			if q.Unpack(buf[:n]) != nil || len(q.Questions) != 1 {
				continue
			}
			a := dnsmessage.Message{Header: dnsmessage.Header{ID: q.ID, Response: true}, Questions: q.Questions}
			switch q.Questions[0].Name.String() {
			case "tasks.web.":
				for _, ip := range [][4]byte{{10, 0, 1, 3}, {10, 0, 1, 4}} {
					a.Answers = append(a.Answers, dnsmessage.Resource{
						Header: dnsmessage.ResourceHeader{Name: q.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 600},
						Body:   &dnsmessage.AResource{A: ip}})
				}
			case "tasks.big.":
				a.Truncated = true
			default:
				a.RCode = dnsmessage.RCodeNameError
			}
			out, _ := a.Pack()
			pc.WriteTo(out, from)
		}
	}()
	m, _, _ := newManager(t)
	ips, err := m.ResolveIn(ns.Path(), "tasks.web", EmbeddedDNS, time.Second)
	if err != nil || len(ips) != 2 || ips[0].String() != "10.0.1.3" || ips[1].String() != "10.0.1.4" {
		t.Errorf("tasks.web = %v, %v; want [10.0.1.3 10.0.1.4]", ips, err)
	}
	if ips, err := m.ResolveIn(ns.Path(), "tasks.gone", EmbeddedDNS, time.Second); err != nil || len(ips) != 0 {
		t.Errorf("tasks.gone = %v, %v; want no address and no error", ips, err)
	}
	if _, err := m.ResolveIn(ns.Path(), "tasks.big", EmbeddedDNS, time.Second); !errors.Is(err, ErrTruncated) {
		t.Errorf("tasks.big: %v, want ErrTruncated", err)
	}
	if _, err := m.ResolveIn(writeFile(t), "tasks.web", EmbeddedDNS, time.Second); !errors.Is(err, ErrDeviceGone) {
		t.Errorf("in a plain file: %v, want ErrDeviceGone", err)
	}
}
