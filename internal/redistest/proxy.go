package redistest

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// Proxy forwards TCP connections to a Server and can withhold the server's
// answers while the commands still reach it: a Redis that runs a write but
// whose answer is late or lost, as when go-redis gives up a read after its
// timeout and sends the command again. Commands are never held back, so the
// server runs every one a client sends. Disconnect cuts the proxy's clients
// off instead: a Redis out of their reach that others still use.
type Proxy struct {
	target string
	ln     net.Listener

	mu       sync.Mutex
	once     []byte // withhold the answers of the next connection that sends this
	each     []byte // withhold the answers of every connection that sends this
	after    []byte // withhold every answer once a connection sends this
	before   []byte // run hook before forwarding the next command that holds this
	hook     func() // what BeforeOnce runs
	all      bool   // every answer is withheld
	cut      bool   // connections are closed and new ones refused (Disconnect)
	resumed  int    // Resume calls: a connection held before the last one is served again
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
	shutdown bool
}

// Proxy starts a Proxy to s on a free loopback port, closed at the test's
// cleanup (its connections too).
func (s *Server) Proxy() *Proxy {
	s.tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.tb.Fatalf("redistest: proxy: %v", err)
	}
	p := &Proxy{target: s.Addr(), ln: ln, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	s.tb.Cleanup(p.close)
	return p
}

// Addr is host:port of the proxy.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// WithholdOnce makes the next connection that sends a command containing
// trigger (compared as bytes, so give the case go-redis sends: "evalsha")
// get no answer to it or to anything after it, until Resume; other
// connections are served.
func (p *Proxy) WithholdOnce(trigger string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.once = []byte(trigger)
}

// WithholdEach makes every connection that sends a command containing
// trigger get no answer to it or to anything after it, until Resume; other
// connections are served.
func (p *Proxy) WithholdEach(trigger string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.each = []byte(trigger)
}

// WithholdAfter makes the proxy withhold every answer, on every
// connection, from the moment a client sends a command containing trigger
// until Resume.
func (p *Proxy) WithholdAfter(trigger string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.after = []byte(trigger)
}

// BeforeOnce runs f once, before the proxy forwards the next command
// containing trigger (compared as WithholdOnce compares): the command then
// reaches the server after whatever f did, as if another client had acted
// just before it. f must not use the proxy.
func (p *Proxy) BeforeOnce(trigger string, f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.before, p.hook = []byte(trigger), f
}

// Disconnect closes every connection of the proxy and refuses new ones
// (each is closed as soon as it is accepted) until Resume: to its clients,
// Redis is unreachable, as in a network partition, while the server runs on
// for everyone else. A command that reached the server whole before the
// cut is run and its answer lost; Redis runs nothing of one cut short.
func (p *Proxy) Disconnect() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Resume forwards answers again (to answers yet to come; those withheld
// are lost), forgets the triggers and ends a Disconnect.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.once, p.each, p.after, p.all, p.cut = nil, nil, nil, false, false
	p.before, p.hook = nil, nil
	p.resumed++
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.shutdown {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			return
		}
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			continue
		}
		p.conns[c], p.conns[s] = true, true
		p.wg.Add(2)
		p.mu.Unlock()
		held := -1 // p.resumed when this connection's answers began to be withheld; guarded by p.mu
		go p.pipe(c, s, func(b []byte) {
			p.mu.Lock()
			var hook func()
			if p.before != nil && bytes.Contains(b, p.before) {
				hook, p.before, p.hook = p.hook, nil, nil
			}
			p.mu.Unlock()
			if hook != nil {
				hook()
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.once != nil && bytes.Contains(b, p.once) {
				p.once, held = nil, p.resumed
			}
			if p.each != nil && bytes.Contains(b, p.each) {
				held = p.resumed
			}
			if p.after != nil && bytes.Contains(b, p.after) {
				p.after, p.all = nil, true
			}
		}, nil)
		go p.pipe(s, c, nil, func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return held == p.resumed || p.all
		})
	}
}

// pipe copies from src to dst until either fails, calling seen with what
// it read before forwarding it and dropping what it read while drop
// reports true.
func (p *Proxy) pipe(src, dst net.Conn, seen func([]byte), drop func() bool) {
	defer p.wg.Done()
	defer func() { _ = src.Close(); _ = dst.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if seen != nil {
				seen(buf[:n])
			}
			if drop == nil || !drop() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil { // EOF, or a side closed: the other goes too
			return
		}
	}
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.shutdown = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}
