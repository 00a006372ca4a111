package dataplane

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
)

// EmbeddedDNS is the address of Docker's embedded DNS server inside a container on a user-defined or swarm
// network (the engine redirects it to its resolver's real port).
const EmbeddedDNS = "127.0.0.11:53"

// ErrTruncated: the answer did not fit in one UDP message.
var ErrTruncated = errors.New("DNS answer truncated")

// ResolveIn asks the DNS server at server (EmbeddedDNS) from inside the network namespace at nsPath for
// the IPv4 addresses of name, and waits at most timeout. A name that does not exist answers no address
// and no error.
func (m *Manager) ResolveIn(nsPath, name, server string, timeout time.Duration) ([]net.IP, error) {
	conn, err := dialUDPIn(nsPath, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var idb [2]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, err
	}
	id := binary.BigEndian.Uint16(idb[:])
	qname, err := dnsmessage.NewName(name + ".")
	if err != nil {
		return nil, fmt.Errorf("DNS name %q: %w", name, err)
	}
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: qname, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	pkt, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("DNS query for %q: %w", name, err)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(pkt); err != nil {
		return nil, fmt.Errorf("DNS query for %q to %s in %s: %w", name, server, nsDesc(nsPath), err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("DNS answer for %q from %s in %s: %w", name, server, nsDesc(nsPath), err)
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil || h.ID != id || !h.Response {
			continue // not ours
		}
		if h.Truncated {
			return nil, fmt.Errorf("DNS answer for %q from %s: %w", name, server, ErrTruncated)
		}
		switch h.RCode {
		case dnsmessage.RCodeSuccess:
		case dnsmessage.RCodeNameError:
			return nil, nil
		default:
			return nil, fmt.Errorf("DNS answer for %q from %s: %s", name, server, h.RCode)
		}
		if err := p.SkipAllQuestions(); err != nil {
			return nil, fmt.Errorf("DNS answer for %q: %w", name, err)
		}
		var out []net.IP
		for {
			rh, err := p.AnswerHeader()
			if errors.Is(err, dnsmessage.ErrSectionDone) {
				return out, nil
			}
			if err != nil {
				return nil, fmt.Errorf("DNS answer for %q: %w", name, err)
			}
			if rh.Type != dnsmessage.TypeA {
				if err := p.SkipAnswer(); err != nil {
					return nil, fmt.Errorf("DNS answer for %q: %w", name, err)
				}
				continue
			}
			a, err := p.AResource()
			if err != nil {
				return nil, fmt.Errorf("DNS answer for %q: %w", name, err)
			}
			out = append(out, net.IP(append([]byte(nil), a.A[:]...)))
		}
	}
}

// dialUDPIn makes a UDP socket connected to addr in the network namespace at nsPath ("" for the
// calling process's own). The socket keeps its namespace; the thread that made it is switched back first,
// and dies with its goroutine instead if that fails.
func dialUDPIn(nsPath, addr string) (net.Conn, error) {
	if nsPath == "" {
		return net.Dial("udp4", addr)
	}
	fd, err := openNetNS(nsPath)
	if err != nil {
		return nil, err
	}
	target := netns.NsHandle(fd)
	defer target.Close()
	var c net.Conn
	err = inNetNS(target, func() error {
		var derr error
		c, derr = net.Dial("udp4", addr)
		return derr
	})
	if err != nil && c != nil { // made, but the thread could not return from the namespace
		c.Close()
		c = nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", nsDesc(nsPath), err)
	}
	return c, nil
}
