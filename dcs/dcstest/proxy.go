package dcstest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 in front of one upstream address. Tests
// point a client at it to cut that client off from etcd (a partition: the
// connection goes silent, nothing is refused) or to delay etcd's answers.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	cut     bool
	latency time.Duration
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	closed  bool
}

// StartProxy listens on a free 127.0.0.1 port and forwards to upstream
// (host:port). It is closed when the test ends.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy as an http endpoint URL.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Cut makes the path silent in both directions, like a network partition:
// bytes are swallowed, connections stay open, new ones are accepted and go
// nowhere.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// Restore ends a cut. Connections that lived through it are closed (their
// streams lost bytes), so clients reconnect cleanly.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// SetLatency delays every chunk sent from the upstream back to the client.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Close stops the proxy and all its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		if p.closed {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c, true) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.track(client, false)
	defer client.Close()
	up, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
	if err != nil {
		return
	}
	if !p.track(up, true) {
		up.Close()
		return
	}
	defer p.track(up, false)
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, client, false); done <- struct{}{} }()
	go func() { p.pipe(client, up, true); done <- struct{}{} }()
	<-done
}

// pipe copies src to dst, dropping bytes while cut and delaying the
// upstream→client direction by the latency.
func (p *Proxy) pipe(dst io.Writer, src io.Reader, delayed bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			cut, lat := p.cut, p.latency
			p.mu.Unlock()
			if delayed && lat > 0 {
				time.Sleep(lat)
				p.mu.Lock()
				cut = p.cut
				p.mu.Unlock()
			}
			if !cut {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			if c, ok := dst.(net.Conn); ok {
				c.Close()
			}
			return
		}
	}
}
