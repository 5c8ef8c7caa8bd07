package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// holdProxy passes a NATS connection through and can hold what the broker
// sends back (acks, replies) until released.
type holdProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	held   chan struct{} // closed: flowing
	wg     sync.WaitGroup
	conns  []net.Conn
}

func startHoldProxy(t *testing.T, target string) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: strings.TrimPrefix(target, "nats://"), held: make(chan struct{})}
	close(p.held)
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(s, c); s.Close() })
			p.wg.Go(func() { p.copyHeld(c, s) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.release()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *holdProxy) copyHeld(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.held
			p.mu.Unlock()
			<-gate
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *holdProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = make(chan struct{})
}

func (p *holdProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.held:
	default:
		close(p.held)
	}
}

// commitEnv is a gateway on a real broker, its bus connection through a
// holdProxy, its config changed by set and its metrics in a registry, for
// tests of the committer itself.
func commitEnv(t *testing.T, set func(*Config)) (*Gateway, *holdProxy, jetstream.JetStream, *prometheus.Registry) {
	t.Helper()
	topic := topology.DefaultTopic()
	topic.Name = "orders"
	fam := topology.DefaultFamily()
	fam.Name = "billing"
	topic.Families = map[string]topology.Family{"billing": fam}
	topics := map[string]topology.Topic{"orders": topic}
	bcfg := broker.DefaultConfig()
	bcfg.Name, bcfg.DataDir, bcfg.Listen, bcfg.ReadyTimeout, bcfg.Topics = "b", t.TempDir(), "127.0.0.1:-1", 20*time.Second, topics
	b, err := broker.New(bcfg, zaptest.NewLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	proxy := startHoldProxy(t, b.ClientURL())
	nc, err := nats.Connect("nats://"+proxy.ln.Addr().String(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := DefaultConfig()
	cfg.Listen, cfg.Topics = "127.0.0.1:0", topics
	set(&cfg)
	reg := prometheus.NewRegistry()
	g, err := New(cfg, nc, zaptest.NewLogger(t), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	js, _ := jetstream.New(direct)
	return g, proxy, js, reg
}

func newEntry(key, data string, deadline time.Time, done *sync.WaitGroup) *entry {
	m := nats.NewMsg(sluice.Subject("orders"))
	m.Data = []byte(data)
	done.Add(1)
	return &entry{id: sluice.DedupID(key, digest(m)), msg: m, deadline: deadline, done: done}
}

// TestCommitKeepsEachEntrysDeadline: one commit holds an entry submitted
// long ago and one just now. Acks that come after the older one's deadline
// but before the newer one's make only the older an unknown outcome; the
// commit's deadline used to be its oldest entry's, cutting the newer short.
func TestCommitKeepsEachEntrysDeadline(t *testing.T) {
	g, proxy, _, _ := commitEnv(t, func(*Config) {})
	c := g.commits["orders"]
	var warm sync.WaitGroup
	c.submit(newEntry("warm", "warm", time.Now().Add(10*time.Second), &warm))
	warm.Wait()

	proxy.hold()
	var done sync.WaitGroup
	old := newEntry("old", "a", time.Now().Add(2*time.Second), &done)
	fresh := newEntry("new", "b", time.Now().Add(time.Minute), &done)
	c.submit(old, fresh)
	time.Sleep(3 * time.Second) // past old's deadline, acks held
	proxy.release()
	done.Wait()
	if !errors.Is(old.err, errOutcomeUnknown) {
		t.Errorf("old entry: %v, want an unknown outcome past its deadline", old.err)
	}
	if fresh.err != nil || fresh.seq == 0 {
		t.Errorf("new entry: seq %d err %v, want stored: its deadline had not passed", fresh.seq, fresh.err)
	}
}

// TestSubmitAfterCloseIsRefusedUnsent: a handler that outlives the
// shutdown timeout submits after the gateway waited for its commits: it is
// answered "nothing stored", and nothing is.
func TestSubmitAfterCloseIsRefusedUnsent(t *testing.T) {
	g, _, js, _ := commitEnv(t, func(*Config) {})
	c := g.commits["orders"]
	c.close()
	var done sync.WaitGroup
	e := newEntry("late", "late", time.Now().Add(10*time.Second), &done)
	c.submit(e)
	done.Wait()
	if !errors.Is(e.err, errBusUnavailable) {
		t.Fatalf("submit after close: %v, want bus unavailable (nothing sent)", e.err)
	}
	s, err := js.Stream(context.Background(), sluice.StreamName("orders"))
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.LastSeq; n != 0 {
		t.Fatalf("the topic got %d messages after close", n)
	}
}
