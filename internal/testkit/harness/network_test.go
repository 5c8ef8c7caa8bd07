package harness

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

// echoServer echoes every connection's bytes back until the test ends.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup // the clients close their connections first
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln
}

// TestLinkLatencyKeepsOrder: bytes delayed with jitter through a link
// arrive whole and in order.
func TestLinkLatencyKeepsOrder(t *testing.T) {
	ln := echoServer(t)
	l := StartLink(t, ln.Addr().String())
	Latency(t, l.Flows(), 5, 4)
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sent bytes.Buffer
	for i := range 200 {
		chunk := fmt.Appendf(nil, "chunk %d;", i)
		sent.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, sent.Len())
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent.Bytes()) {
		t.Fatalf("echoed %q, sent %q", got, sent.Bytes())
	}
}

// TestBlackholeIsOneWay: with the upstream blackholed, the server's bytes
// still reach the client but the client's never reach the server; healing
// closes the connection rather than deliver a stream with a hole.
func TestBlackholeIsOneWay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := StartLink(t, ln.Addr().String())
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	heal := Blackhole(t, []Flow{{l, Upstream}})
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Write([]byte("kept")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "kept" {
		t.Fatalf("client read %q, %v: want the server's bytes", got, err)
	}
	heal()
	rest, err := io.ReadAll(srv)
	if len(rest) > 0 {
		t.Fatalf("server got %q through a blackhole (%v)", rest, err)
	}
}

// TestLossRulesRemoved: Loss adds a rule per port and direction and removes
// them when the test ends.
func TestLossRulesRemoved(t *testing.T) {
	if err := iptablesUsable(); err != nil {
		t.Skip(err)
	}
	before, _, err := LossRules()
	if err != nil {
		t.Fatal(err)
	}
	ln := echoServer(t)
	t.Run("lossy", func(t *testing.T) {
		Loss(t, 0.05, portOf(ln.Addr()))
		if n, _, err := LossRules(); err != nil || n != before+2 {
			t.Fatalf("%d rules (%v), want %d", n, err, before+2)
		}
		l := StartLink(t, ln.Addr().String())
		c, err := net.Dial("tcp", l.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Echo until a packet was dropped (TCP retransmits it): each
		// round's bytes must come back whole.
		msg := bytes.Repeat([]byte("x"), 256<<10)
		for round := 0; ; round++ {
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = c.Write(msg) })
			got := make([]byte, len(msg))
			_, err := io.ReadFull(c, got)
			wg.Wait()
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo through loss: %v", err)
			}
			_, dropped, err := LossRules()
			if err != nil {
				t.Fatal(err)
			}
			if dropped > 0 {
				break
			}
			if round == 1000 {
				t.Fatal("no packet dropped in 1000 rounds")
			}
		}
	})
	if n, _, err := LossRules(); err != nil || n != before {
		t.Fatalf("%d rules left (%v), want %d", n, err, before)
	}
}
