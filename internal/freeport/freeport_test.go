package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Ports are distinct, bindable, and below the ephemeral range.
func TestFreeIsDistinctAndOutsideTheEphemeralRange(t *testing.T) {
	seen := map[int]bool{}
	lo := ephemeralLow()
	for range 50 {
		p, err := Free()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if lo-floor >= 1000 && (p < floor || p >= lo) {
			t.Fatalf("port %d outside [%d, %d)", p, floor, lo)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}
