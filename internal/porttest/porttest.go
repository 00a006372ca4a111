// Package porttest finds free ports for tests that run real listeners (gossip agents) on loopback.
package porttest

import (
	"net"
	"strconv"
	"testing"
)

// Free returns a port free for both TCP and UDP on every address of ips (default 127.0.0.1).
func Free(t testing.TB, ips ...string) int {
	t.Helper()
	if len(ips) == 0 {
		ips = []string{"127.0.0.1"}
	}
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if free(ips, port) {
			l.Close()
			return port
		}
		l.Close()
	}
	t.Fatal("no free port")
	return 0
}

// free reports whether port can be bound for UDP on every ip, and for TCP on every ip but the first
// (which the caller holds).
func free(ips []string, port int) bool {
	var closers []interface{ Close() error }
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for i, ip := range ips {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		closers = append(closers, u)
		if i > 0 {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return false
			}
			closers = append(closers, l)
		}
	}
	return true
}
