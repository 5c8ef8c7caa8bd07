package overload

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// generator offers messages open-loop at Factor x Capacity per second from
// a fixed pool of senders; each message is sent once, never retried.
type generator struct {
	url    string
	cfg    Config
	client *http.Client
	body   []byte

	next        atomic.Int64 // message number
	offered     atomic.Int64
	unsent      atomic.Int64
	mu          sync.Mutex
	accepted    []int
	latencies   []time.Duration
	status      map[int]int64
	retryAfter  int64
	transport   int64
	acceptedRun int64 // accepted while load was offered
}

func newGenerator(url string, cfg Config) *generator {
	tr := &http.Transport{MaxIdleConns: cfg.Concurrency, MaxIdleConnsPerHost: cfg.Concurrency, IdleConnTimeout: time.Minute}
	return &generator{
		url:    url + "/v1/topics/" + Topic + "/messages",
		cfg:    cfg,
		client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		body:   bytes.Repeat([]byte("x"), cfg.MessageSize),
		status: map[int]int64{},
	}
}

// run offers load for cfg.Duration from start.
func (g *generator) run(ctx context.Context, start time.Time) {
	tickets := make(chan struct{}, g.cfg.Concurrency)
	var wg sync.WaitGroup
	for range g.cfg.Concurrency {
		wg.Go(func() {
			for range tickets {
				g.send(ctx, true)
			}
		})
	}
	perSecond := g.cfg.Capacity * g.cfg.Factor
	tick := time.NewTicker(time.Millisecond)
	var issued int64
	for now := range tick.C {
		elapsed := now.Sub(start)
		if elapsed >= g.cfg.Duration || ctx.Err() != nil {
			break
		}
		due := int64(elapsed.Seconds() * perSecond)
		for ; issued < due; issued++ {
			g.offered.Add(1)
			select {
			case tickets <- struct{}{}:
			default:
				g.unsent.Add(1) // every sender busy: the generator is the bottleneck
			}
		}
	}
	tick.Stop()
	close(tickets)
	wg.Wait()
}

// send posts one message; it reports whether it was accepted.
func (g *generator) send(ctx context.Context, duringLoad bool) bool {
	n := int(g.next.Add(1))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.url, bytes.NewReader(g.body))
	req.Header.Set("Idempotency-Key", fmt.Sprintf("m-%d", n))
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := g.client.Do(req)
	if err != nil {
		g.mu.Lock()
		g.transport++
		g.mu.Unlock()
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.status[resp.StatusCode]++
	switch resp.StatusCode {
	case http.StatusAccepted:
		g.accepted = append(g.accepted, n)
		g.latencies = append(g.latencies, took)
		if duringLoad {
			g.acceptedRun++
		}
		return true
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if resp.Header.Get("Retry-After") != "" {
			g.retryAfter++
		}
	}
	return false
}

// probeReopen sends one message every 20 ms after the load ends and
// returns how long until one is accepted again.
func (g *generator) probeReopen(ctx context.Context, end time.Time) float64 {
	for ctx.Err() == nil && time.Since(end) < 5*time.Minute {
		if g.send(ctx, false) {
			return time.Since(end).Seconds()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return math.Inf(1)
}

func (g *generator) acceptedIDs() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.accepted)
}

// fill writes the generator's counts into rep; load is how long load was offered.
func (g *generator) fill(rep *Report, load time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	rep.Offered, rep.Unsent = g.offered.Load(), g.unsent.Load()
	rep.Accepted = int64(len(g.accepted))
	rep.TransportErrors = g.transport
	for code, n := range g.status {
		switch code {
		case http.StatusAccepted:
		case http.StatusTooManyRequests:
			rep.Refused429 = n
		case http.StatusServiceUnavailable:
			rep.Refused503 = n
		default:
			rep.OtherStatus[code] = n
		}
	}
	if refused := rep.Refused429 + rep.Refused503; refused > 0 {
		rep.RetryAfterShare = float64(g.retryAfter) / float64(refused)
	} else {
		rep.RetryAfterShare = 1
	}
	rep.Goodput = float64(g.acceptedRun) / load.Seconds()
	rep.GoodputRatio = rep.Goodput / rep.Config.Capacity
	rep.OfferedRate = float64(rep.Offered) / load.Seconds()
	lat := slices.Clone(g.latencies)
	slices.Sort(lat)
	if len(lat) > 0 {
		rep.LatencyP50ms = float64(lat[len(lat)/2].Microseconds()) / 1000
		rep.LatencyP99ms = float64(lat[int(float64(len(lat)-1)*0.99)].Microseconds()) / 1000
	}
}
