package harness

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
)

// Proxy is a TCP proxy in front of a broker that can hold everything the
// broker sends back (acks, replies) while letting client bytes through: the
// broker stores a publish but the client never hears of it. It can also cut
// its connections, and it forwards through a Link that shapes them.
type Proxy struct {
	ln     net.Listener
	target string // the link's address
	link   *Link

	mu      sync.Mutex
	cond    *sync.Cond
	holding bool
	cut     bool
	closed  bool
	conns   []net.Conn
	dialed  int // connections forwarded so far
	wg      sync.WaitGroup
}

// StartProxy proxies to target (host:port) until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	link := StartLink(t, target) // stopped after the proxy
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: link.Addr(), link: link}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// ConnectThrough starts a proxy in front of broker URL natsURL and opens a
// client connection through it (connected before any hold, so the
// handshake completes).
func ConnectThrough(t testing.TB, natsURL string) (*Proxy, *nats.Conn) {
	t.Helper()
	p := StartProxy(t, strings.TrimPrefix(natsURL, "nats://"))
	nc, err := nats.Connect(p.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return p, nc
}

// URL is the proxy's NATS URL.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Port is the port the proxy listens on (Loss drops its packets).
func (p *Proxy) Port() int { return portOf(p.ln.Addr()) }

// Connections is how many connections the proxy forwarded so far (a
// client that lost its connection and came back counts again).
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dialed
}

// Link is the link the proxy forwards through: its upstream is what the
// proxy's clients send, its downstream what the broker sends back.
func (p *Proxy) Link() *Link { return p.link }

// HoldReplies stops (true) or resumes (false) forwarding broker bytes.
func (p *Proxy) HoldReplies(hold bool) {
	p.mu.Lock()
	p.holding = hold
	p.mu.Unlock()
	p.cond.Broadcast()
}

// Cut drops every connection and refuses new ones (true), as a network
// partition would, or lets connections through again (false).
func (p *Proxy) Cut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// Close stops the proxy and its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.cond.Broadcast()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			client.Close()
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		p.conns = append(p.conns, client, server)
		p.dialed++
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(server, client, false) })
		p.wg.Go(func() { p.pipe(client, server, true) })
	}
}

// pipe copies src to dst; held pipes wait while replies are held.
func (p *Proxy) pipe(dst, src net.Conn, held bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if held && !p.waitOpen() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitOpen blocks while replies are held; false once the proxy is closed.
func (p *Proxy) waitOpen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.holding && !p.closed {
		p.cond.Wait()
	}
	return !p.closed
}
