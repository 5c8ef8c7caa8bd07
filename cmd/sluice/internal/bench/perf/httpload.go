package perf

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Load is an HTTP load: Concurrency clients post to URL for Duration,
// closed loop (each sends as soon as its previous answer is in) or, with
// Rate, open loop (requests are due at a fixed rate; latency counts from
// when a request was due, so a server that falls behind is not flattered).
type Load struct {
	URL         string
	Proto       string // "http1" (keep-alive HTTP/1.1) or "h2c" (HTTP/2 over cleartext)
	Concurrency int
	Duration    time.Duration
	Rate        float64 // requests per second; 0 = closed loop
	// Size is each message's payload size; Batch > 0 posts NDJSON batches
	// of Batch messages (to URL, which must be a :batch route).
	Size  int
	Batch int
	// Stamp writes the send time into each payload's first 8 bytes
	// (single messages only), for end-to-end latency.
	Stamp bool
	// Progress, if set, is called about every second with the running total.
	Progress func(elapsed time.Duration, msgs int64)
}

// Result of a load: what was sent and accepted, and request latency.
type Result struct {
	Requests int64
	Msgs     int64 // accepted messages (202, or a receipt line of a batch)
	Failed   int64 // requests that failed (transport error or another status) and refused batch lines
	Status   map[int]int64
	Elapsed  time.Duration
	Latency  Hist
	Late     int64 // open loop: requests that could not start when due (every client busy)
}

func client(proto string, conns int) *http.Client {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	if proto == "h2c" {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// body builds request bodies for l; each client has its own.
type body struct {
	l   Load
	buf []byte
}

func newBody(l Load) *body {
	b := &body{l: l}
	if l.Batch == 0 {
		b.buf = bytes.Repeat([]byte("x"), max(l.Size, 8))
		return b
	}
	// "data" is a JSON string: the stored payload (with its quotes) is Size bytes.
	line := `{"data":"` + strings.Repeat("x", max(l.Size-2, 0)) + `"}` + "\n"
	b.buf = []byte(strings.Repeat(line, l.Batch))
	return b
}

func (b *body) next() []byte {
	if b.l.Stamp && b.l.Batch == 0 {
		binary.BigEndian.PutUint64(b.buf, uint64(time.Now().UnixNano()))
	}
	return b.buf
}

// RunHTTP runs l and reports what happened.
func RunHTTP(ctx context.Context, l Load) (*Result, error) {
	if l.Concurrency < 1 || l.Duration <= 0 {
		return nil, fmt.Errorf("perf: concurrency and duration must be positive")
	}
	ctype, want := "application/octet-stream", http.StatusAccepted
	if l.Batch > 0 {
		ctype, want = "application/x-ndjson", http.StatusOK
	}
	hc := client(l.Proto, l.Concurrency)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, l.Duration)
	defer cancel()

	// due carries each open-loop request's due time; closed loop: nil.
	var due chan time.Time
	var late atomic.Int64
	start := time.Now()
	var sched sync.WaitGroup
	if l.Rate > 0 {
		due = make(chan time.Time, l.Concurrency)
		sched.Go(func() {
			defer close(due)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			var issued int64
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-tick.C:
					for n := int64(now.Sub(start).Seconds() * l.Rate); issued < n; issued++ {
						at := start.Add(time.Duration(float64(issued) / l.Rate * float64(time.Second)))
						select {
						case due <- at:
						default:
							late.Add(1)
						}
					}
				}
			}
		})
	}
	var msgs atomic.Int64
	results := make([]*Result, l.Concurrency)
	var wg sync.WaitGroup
	for i := range l.Concurrency {
		r := &Result{Status: map[int]int64{}}
		results[i] = r
		wg.Go(func() {
			b := newBody(l)
			var answer bytes.Buffer
			for ctx.Err() == nil {
				t0 := time.Now()
				if due != nil {
					at, ok := <-due
					if !ok {
						return
					}
					t0 = at
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL, bytes.NewReader(b.next()))
				if err != nil {
					r.Failed++
					return
				}
				req.Header.Set("Content-Type", ctype)
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() != nil {
						return // the run ended mid-request: not counted
					}
					r.Requests++
					r.Failed++
					continue
				}
				answer.Reset()
				_, _ = answer.ReadFrom(resp.Body)
				resp.Body.Close()
				r.Requests++
				r.Status[resp.StatusCode]++
				r.Latency.Record(time.Since(t0))
				n := int64(1)
				if l.Batch > 0 {
					refused := int64(bytes.Count(answer.Bytes(), []byte(`"status":`)))
					n = int64(l.Batch) - refused
					r.Failed += refused
				}
				if resp.StatusCode != want {
					r.Failed++
					continue
				}
				r.Msgs += n
				msgs.Add(n)
			}
		})
	}
	if l.Progress != nil {
		wg.Go(func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					l.Progress(time.Since(start), msgs.Load())
				}
			}
		})
	}
	wg.Wait()
	sched.Wait()
	total := merge(results, min(time.Since(start), l.Duration))
	total.Late = late.Load()
	return total, nil
}

// merge adds up the clients' results.
func merge(results []*Result, elapsed time.Duration) *Result {
	total := &Result{Status: map[int]int64{}, Elapsed: elapsed}
	for _, r := range results {
		total.Requests += r.Requests
		total.Msgs += r.Msgs
		total.Failed += r.Failed
		for s, n := range r.Status {
			total.Status[s] += n
		}
		total.Latency.Merge(&r.Latency)
	}
	return total
}
