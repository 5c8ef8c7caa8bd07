package perf

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunHTTPClosedAndOpenLoop loads a real server over keep-alive
// HTTP/1.1 and over h2c, closed loop and open loop at a fixed rate.
func TestRunHTTPClosedAndOpenLoop(t *testing.T) {
	var h2, h1 atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Protocols: ServerProtocols(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2.Add(1)
		} else {
			h1.Add(1)
		}
		w.WriteHeader(http.StatusAccepted)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String() + "/v1/topics/t/messages"

	for _, proto := range []string{"http1", "h2c"} {
		before1, before2 := h1.Load(), h2.Load()
		res, err := RunHTTP(context.Background(), Load{URL: url, Proto: proto, Concurrency: 4, Duration: 300 * time.Millisecond, Size: 64})
		if err != nil {
			t.Fatal(err)
		}
		if res.Msgs == 0 || res.Failed != 0 || res.Status[http.StatusAccepted] != res.Msgs || res.Latency.Count() != uint64(res.Msgs) {
			t.Fatalf("%s: %+v", proto, res)
		}
		// Requests cut off at the end of the previous run may reach the
		// server late: a few of the other protocol are allowed.
		got1, got2 := h1.Load()-before1, h2.Load()-before2
		mine, other := got1, got2
		if proto == "h2c" {
			mine, other = got2, got1
		}
		if mine < res.Requests || other > 8 {
			t.Fatalf("%s: %d requests, server saw %d HTTP/1 and %d HTTP/2", proto, res.Requests, got1, got2)
		}
	}

	res, err := RunHTTP(context.Background(), Load{URL: url, Concurrency: 4, Duration: time.Second, Size: 64, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	// 200/s for 1 s: the scheduler issues what is due by each tick, never
	// more (a loaded machine may issue fewer: how many is the benchmark's
	// business, not a unit test's).
	if res.Requests < 1 || res.Requests > 201 || res.Failed != 0 {
		t.Fatalf("open loop at 200/s for 1 s: %d requests, %d failed", res.Requests, res.Failed)
	}
}
