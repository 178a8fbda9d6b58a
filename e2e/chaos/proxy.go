package chaos

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DelayProxy forwards TCP connections from a listener inside one namespace
// to an upstream dialled from a (possibly other) namespace, delaying every
// chunk of data by a settable latency in each direction, in order. It is
// how the suite adds latency without the netem qdisc, which this kernel
// lacks: it sits in the path of a member's etcd traffic and of every
// connection to its PostgreSQL (clients, HAProxy, replicas).
type DelayProxy struct {
	ln       net.Listener
	dialNS   string
	upstream string
	delay    atomic.Int64 // nanoseconds, each direction

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// StartDelayProxy listens on listenAddr in listenNS and forwards to
// upstream, dialled from dialNS.
func StartDelayProxy(listenNS, listenAddr, dialNS, upstream string) (*DelayProxy, error) {
	ln, err := ListenIn(listenNS, listenAddr)
	if err != nil {
		return nil, err
	}
	p := &DelayProxy{ln: ln, dialNS: dialNS, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// SetDelay sets the one-way latency added to new and open connections.
func (p *DelayProxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *DelayProxy) serve(c net.Conn) {
	defer p.untrack(c)
	up, err := DialIn(context.Background(), p.dialNS, p.upstream, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, c); done <- struct{}{} }()
	go func() { p.pipe(c, up); done <- struct{}{} }()
	<-done
	// One direction ended: end both (a half-open proxied connection would
	// hide a dead peer).
	c.Close()
	up.Close()
	<-done
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, releasing each chunk no earlier than its arrival
// plus the delay.
func (p *DelayProxy) pipe(dst, src net.Conn) {
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				ch <- chunk{b: b[:n], at: time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Duration(p.delay.Load()); d > 0 {
			if wait := time.Until(c.at.Add(d)); wait > 0 {
				time.Sleep(wait)
			}
		}
		if _, err := dst.Write(c.b); err != nil {
			src.Close()
			for range ch {
			}
			return
		}
	}
	if tc, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
}

// Close stops the proxy and every connection through it.
func (p *DelayProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
