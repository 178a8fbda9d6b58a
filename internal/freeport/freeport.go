// Package freeport hands out TCP ports on 127.0.0.1 for the servers that
// tests and `steward demo` start (etcd, PostgreSQL, MariaDB, agents' APIs,
// HAProxy).
//
// A port from the kernel's ephemeral range (bind to :0) is free when it is
// handed out but can be taken a moment later as the local port of any
// outgoing connection on the machine; a database restarted on it during a
// switchover then fails with "could not create any TCP/IP sockets". Ports
// are therefore drawn at random from below the ephemeral range, where the
// kernel never picks local ports on its own, checked with a bind, and
// never handed out twice by one process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	mu     sync.Mutex
	issued = map[int]bool{}
)

// lowest port handed out; below it are well-known and registered services
// that a developer machine may run.
const floor = 15000

// Free returns a TCP port on 127.0.0.1 that was free a moment ago and is
// outside the kernel's ephemeral port range.
func Free() (int, error) {
	lo, hi := floor, ephemeralLow()
	mu.Lock()
	defer mu.Unlock()
	if hi-lo >= 1000 {
		for range 200 {
			p := lo + rand.IntN(hi-lo)
			if issued[p] || !bindable(p) {
				continue
			}
			issued[p] = true
			return p, nil
		}
	}
	// No room below the ephemeral range: fall back to the kernel's choice.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	p := l.Addr().(*net.TCPAddr).Port
	issued[p] = true
	return p, nil
}

func bindable(p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux
// default 32768).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}
