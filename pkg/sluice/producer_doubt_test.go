package sluice_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// stub is an HTTP server answering the n-th request (from 0) with answer(n).
func stub(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) string {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(int(n.Add(1)-1), w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func problem(w http.ResponseWriter, status int, ptype string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":%q,"title":"t","status":%d,"detail":"d"}`, ptype, status)
}

func fastRetry(n int) sluice.ProducerOption {
	return sluice.WithRetry(n, time.Microsecond, time.Millisecond)
}

func TestProducerKeepsDoubtAcrossLaterAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		first  func(w http.ResponseWriter)
		then   func(w http.ResponseWriter)
		doubt  bool
		target error
	}{
		{"unknown then 404", func(w http.ResponseWriter) { problem(w, 503, sluice.ProblemOutcomeUnknown) },
			func(w http.ResponseWriter) { problem(w, 404, sluice.ProblemTopicNotFound) }, true, sluice.ErrTopicNotFound},
		{"unknown then 500", func(w http.ResponseWriter) { problem(w, 503, sluice.ProblemOutcomeUnknown) },
			func(w http.ResponseWriter) { w.WriteHeader(500) }, true, sluice.ErrInternal},
		{"proxy 504 then 413", func(w http.ResponseWriter) { w.WriteHeader(504) },
			func(w http.ResponseWriter) { problem(w, 413, sluice.ProblemMessageTooLarge) }, true, sluice.ErrMessageTooLarge},
		{"plain 503 then 429s", func(w http.ResponseWriter) { w.WriteHeader(503) },
			func(w http.ResponseWriter) { problem(w, 429, sluice.ProblemTopicFull) }, true, sluice.ErrThrottled},
		{"bus unavailable then 429s: nothing stored", func(w http.ResponseWriter) { problem(w, 503, sluice.ProblemBusUnavailable) },
			func(w http.ResponseWriter) { problem(w, 429, sluice.ProblemTopicFull) }, false, sluice.ErrThrottled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := stub(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 0 {
					tc.first(w)
				} else {
					tc.then(w)
				}
			})
			p, _ := sluice.NewProducer([]string{url}, fastRetry(3))
			_, err := p.Publish(context.Background(), "orders", []byte("x"))
			if errors.Is(err, sluice.ErrOutcomeUnknown) != tc.doubt || !errors.Is(err, tc.target) {
				t.Fatalf("err = %v; want ErrOutcomeUnknown=%v and %v", err, tc.doubt, tc.target)
			}
		})
	}
}

func TestProducerDoesNotSleepAfterItsLastAttempt(t *testing.T) {
	url := stub(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "30")
		problem(w, 429, sluice.ProblemTopicFull)
	})
	p, _ := sluice.NewProducer([]string{url}, sluice.WithRetry(1, time.Millisecond, time.Millisecond))
	done := make(chan error, 1)
	go func() {
		_, err := p.Publish(context.Background(), "orders", []byte("x"))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, sluice.ErrThrottled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(10 * time.Second): // it would sleep the 30 s Retry-After
		t.Fatal("Publish slept after its only attempt")
	}
}

func TestPublishBatchDoubtIsPerMessage(t *testing.T) {
	// Line 1 always gets an unknown outcome, line 2 always a full topic.
	url := stub(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		sc := bufio.NewScanner(r.Body)
		for line := 1; sc.Scan(); line++ {
			if line == 1 {
				fmt.Fprintf(w, `{"line":1,"type":%q,"title":"t","status":503}`+"\n", sluice.ProblemOutcomeUnknown)
			} else {
				fmt.Fprintf(w, `{"line":%d,"type":%q,"title":"t","status":429}`+"\n", line, sluice.ProblemTopicFull)
			}
		}
	})
	p, _ := sluice.NewProducer([]string{url}, fastRetry(2))
	res, err := p.PublishBatch(context.Background(), "orders", []sluice.BatchMessage{{Data: []byte("a")}, {Data: []byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, sluice.ErrOutcomeUnknown) {
		t.Errorf("line 1: %v, want ErrOutcomeUnknown", res[0].Err)
	}
	if !errors.Is(res[1].Err, sluice.ErrThrottled) || errors.Is(res[1].Err, sluice.ErrOutcomeUnknown) {
		t.Errorf("line 2: %v, want ErrThrottled only", res[1].Err)
	}
}

func TestPublishBatchShortAnswerIsNotSuccess(t *testing.T) {
	// The answer stops before message b's result: b may be stored.
	url := stub(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		sc := bufio.NewScanner(r.Body)
		for line := 1; sc.Scan(); line++ {
			if !strings.Contains(sc.Text(), `"id":"a"`) {
				return
			}
			fmt.Fprintf(w, `{"line":%d,"topic":"orders","seq":1,"id":"a","duplicate":false}`+"\n", line)
		}
	})
	p, _ := sluice.NewProducer([]string{url}, fastRetry(2))
	res, err := p.PublishBatch(context.Background(), "orders", []sluice.BatchMessage{{ID: "a", Data: []byte("a")}, {ID: "b", Data: []byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[0].Seq != 1 {
		t.Errorf("line 1: %+v", res[0])
	}
	if !errors.Is(res[1].Err, sluice.ErrOutcomeUnknown) || res[1].Seq != 0 {
		t.Errorf("line 2: %+v, want ErrOutcomeUnknown", res[1])
	}
}
