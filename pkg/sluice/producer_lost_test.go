package sluice_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// seen is what a gateway stub received: one idempotency key and body per
// request.
type seen struct {
	mu     sync.Mutex
	keys   []string
	bodies []string
}

func (s *seen) add(r *http.Request, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, r.Header.Get(sluice.HeaderIdempotencyKey))
	s.bodies = append(s.bodies, string(body))
}

// hangUp reads the whole request and closes the connection without an
// answer: the gateway had the message, the producer never hears of it.
func hangUp(t *testing.T, w http.ResponseWriter, r *http.Request, s *seen) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("reading the request: %v", err)
	}
	s.add(r, body)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

// TestProducerConnectionLostAfterSendingIsUnknown: a connection lost after
// the gateway read the request may have stored the message. The producer
// retries with the same key and, whatever the later attempts answer, never
// reports "nothing stored" (ErrUnavailable alone): ErrOutcomeUnknown, or
// the receipt of a retry.
func TestProducerConnectionLostAfterSendingIsUnknown(t *testing.T) {
	for _, tc := range []struct {
		name string
		then func(w http.ResponseWriter) // nil: hang up every time
		ok   bool                        // the retry's receipt comes back
	}{
		{name: "lost every time"},
		{name: "lost, then bus unavailable (nothing stored by that attempt)",
			then: func(w http.ResponseWriter) { problem(w, 503, sluice.ProblemBusUnavailable) }},
		{name: "lost, then overloaded", then: func(w http.ResponseWriter) { problem(w, 503, sluice.ProblemOverloaded) }},
		{name: "lost, then stored", ok: true, then: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"topic":"orders","seq":7,"id":"order-42","duplicate":true}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s seen
			url := stub(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 0 || tc.then == nil {
					hangUp(t, w, r, &s)
					return
				}
				body, _ := io.ReadAll(r.Body)
				s.add(r, body)
				tc.then(w)
			})
			p, _ := sluice.NewProducer([]string{url}, fastRetry(3))
			rc, err := p.Publish(context.Background(), "orders", []byte("payload"), sluice.WithID("order-42"))
			switch {
			case tc.ok:
				if err != nil || rc.Seq != 7 || !rc.Duplicate {
					t.Fatalf("receipt %+v err %v; want the retry's receipt", rc, err)
				}
			case !errors.Is(err, sluice.ErrOutcomeUnknown):
				t.Fatalf("err = %v; want ErrOutcomeUnknown: the first attempt may have stored the message", err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			want := 3
			if tc.ok {
				want = 2
			}
			if len(s.keys) != want {
				t.Fatalf("%d requests reached the gateway, want %d", len(s.keys), want)
			}
			for i := range s.keys {
				if s.keys[i] != "order-42" || s.bodies[i] != "payload" {
					t.Fatalf("request %d: key %q body %q; every attempt must carry the same key and message", i, s.keys[i], s.bodies[i])
				}
			}
		})
	}
}

// TestProducerBatchLostAfterSendingIsUnknown: the same for a batch whose
// connection is lost after the gateway read it: no line was answered, and
// every one may be stored.
func TestProducerBatchLostAfterSendingIsUnknown(t *testing.T) {
	var s seen
	url := stub(t, func(_ int, w http.ResponseWriter, r *http.Request) { hangUp(t, w, r, &s) })
	p, _ := sluice.NewProducer([]string{url}, fastRetry(2))
	res, err := p.PublishBatch(context.Background(), "orders", []sluice.BatchMessage{{ID: "a", Data: []byte("a")}, {ID: "b", Data: []byte("b")}})
	if res != nil || !errors.Is(err, sluice.ErrOutcomeUnknown) {
		t.Fatalf("results %+v err %v; want no results and ErrOutcomeUnknown", res, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bodies) != 2 || s.bodies[0] != s.bodies[1] {
		t.Fatalf("requests %q; want the same batch twice", s.bodies)
	}
}

// TestProducerConnectionClosedBeforeReadingIsUnknown: a gateway that
// accepts the connection and closes it without reading a byte. The request
// was handed to the network, and nothing the producer can see proves the
// gateway did not take it, so it is an unknown outcome too; only a refused
// connection proves nothing was sent (ErrUnavailable alone).
func TestProducerConnectionClosedBeforeReadingIsUnknown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { ln.Close() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	p, _ := sluice.NewProducer([]string{"http://" + ln.Addr().String()}, fastRetry(2))
	if _, err := p.Publish(context.Background(), "orders", []byte("x")); !errors.Is(err, sluice.ErrOutcomeUnknown) {
		t.Fatalf("closed before reading: %v; want ErrOutcomeUnknown", err)
	}

	refused, _ := sluice.NewProducer([]string{deadURL(t)}, fastRetry(2))
	if _, err := refused.Publish(context.Background(), "orders", []byte("x")); !errors.Is(err, sluice.ErrUnavailable) || errors.Is(err, sluice.ErrOutcomeUnknown) {
		t.Fatalf("refused: %v; want ErrUnavailable only", err)
	}
}
