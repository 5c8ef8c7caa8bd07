//go:build unix

package gateway_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/testkit/harness"
)

// TestSlowloris holds 500 connections that send their request header a few
// bytes at a time and never finish it, against a gateway served by Run (the
// http.Server with the configured timeouts). Normal clients must not notice:
// their median latency while the slow connections are held stays within
// twice the baseline (with a floor for scheduler noise), every request
// succeeds, and read_header_timeout cuts every slow connection soon after
// it passes.
func TestSlowloris(t *testing.T) {
	const (
		slowConns = 500
		// Long enough that the window while every slow connection is
		// held is seconds wide even on a loaded machine.
		headerTimeout = 4 * time.Second
		cutSlack      = 5 * time.Second // a cut within headerTimeout+cutSlack
		trickleEvery  = 250 * time.Millisecond
		workers       = 2 // normal clients: one keep-alive, one new connection per request
		maxSamples    = 5000
	)
	needFDs(t, 2*slowConns+300) // both ends of each slow connection are in this process

	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.ReadHeaderTimeout = headerTimeout
	g, err := gateway.New(cfg, nc, harness.Logger(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := runGateway(t, g)
	url := "http://" + addr
	harness.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "gateway not ready")

	keepAlive := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t.Cleanup(keepAlive.CloseIdleConnections)
	clients := [workers]*http.Client{keepAlive, fresh}
	var failures atomic.Int64
	// measure sends up to n publishes from the normal clients until
	// deadline, and returns their latencies.
	measure := func(n int, deadline time.Time) []time.Duration {
		var (
			mu   sync.Mutex
			lats []time.Duration
			left atomic.Int64
			wg   sync.WaitGroup
		)
		left.Store(int64(n))
		for _, c := range clients {
			wg.Go(func() {
				for left.Add(-1) >= 0 && time.Now().Before(deadline) {
					start := time.Now()
					resp, err := c.Post(url+"/v1/topics/orders/messages", "text/plain", bytes.NewReader([]byte("hello")))
					if err != nil {
						failures.Add(1)
						t.Errorf("normal client: %v", err)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					lat := time.Since(start)
					if resp.StatusCode != http.StatusAccepted {
						failures.Add(1)
						t.Errorf("normal client: %s", resp.Status)
						continue
					}
					mu.Lock()
					lats = append(lats, lat)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return lats
	}

	measure(50, time.Now().Add(30*time.Second)) // warm up: connections, group commit, stream
	base := measure(maxSamples, time.Now().Add(headerTimeout-250*time.Millisecond))

	// The slow connections: each sends a request line, then a header field
	// that never ends, two bytes every trickleEvery.
	type slow struct {
		c      net.Conn
		opened time.Time
		cut    time.Duration // from opened until the server closed it; 0: not yet
		err    error
	}
	conns := make([]*slow, slowConns)
	var (
		dialWG sync.WaitGroup
		next   atomic.Int64
	)
	openStart := time.Now()
	for range 50 {
		dialWG.Go(func() {
			for i := int(next.Add(1)) - 1; i < slowConns; i = int(next.Add(1)) - 1 {
				s := &slow{opened: time.Now()}
				conns[i] = s
				s.c, s.err = net.DialTimeout("tcp", addr, 5*time.Second)
				if s.err == nil {
					_, s.err = fmt.Fprintf(s.c, "POST /v1/topics/orders/messages HTTP/1.1\r\nHost: %s\r\nX-Slow: ", addr)
				}
			}
		})
	}
	dialWG.Wait()
	opened := time.Since(openStart)
	for i, s := range conns {
		if s.err != nil {
			t.Fatalf("slow connection %d: %v", i, s.err)
		}
		t.Cleanup(func() { s.c.Close() })
	}
	var (
		slowWG sync.WaitGroup
		cuts   atomic.Int64
	)
	for _, s := range conns {
		stop := make(chan struct{})
		slowWG.Go(func() { // trickle
			tick := time.NewTicker(trickleEvery)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := s.c.Write([]byte("ab")); err != nil {
						return
					}
				}
			}
		})
		slowWG.Go(func() { // wait for the server to close it (or answer)
			defer close(stop)
			_ = s.c.SetReadDeadline(s.opened.Add(headerTimeout + cutSlack))
			_, err := s.c.Read(make([]byte, 512))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return // not cut: reported below
			}
			s.cut = time.Since(s.opened)
			cuts.Add(1)
		})
	}

	// Normal clients while every slow connection is held and trickling:
	// until shortly before the first could be cut.
	during := measure(maxSamples, openStart.Add(headerTimeout-250*time.Millisecond))
	cutEarly := cuts.Load()

	slowWG.Wait() // every slow connection cut or timed out
	after := measure(maxSamples, time.Now().Add(500*time.Millisecond))

	var cutTimes []time.Duration
	for i, s := range conns {
		if s.cut == 0 {
			t.Errorf("slow connection %d still open %v after it was opened: read_header_timeout %v did not cut it", i, headerTimeout+cutSlack, headerTimeout)
			continue
		}
		cutTimes = append(cutTimes, s.cut)
	}
	p := func(d []time.Duration, q float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		d = slices.Clone(d)
		slices.Sort(d)
		return d[min(len(d)-1, int(q*float64(len(d))))]
	}
	t.Logf("baseline: %d publishes, p50 %v, p90 %v, max %v", len(base), p(base, 0.5), p(base, 0.9), p(base, 1))
	t.Logf("%d slow connections opened in %v; during (all held): %d publishes, p50 %v, p90 %v, max %v",
		slowConns, opened.Round(time.Millisecond), len(during), p(during, 0.5), p(during, 0.9), p(during, 1))
	t.Logf("after (all cut): %d publishes, p50 %v, p90 %v", len(after), p(after, 0.5), p(after, 0.9))
	t.Logf("slow connections cut %v..%v after opening (p50 %v), read_header_timeout %v",
		p(cutTimes, 0).Round(time.Millisecond), p(cutTimes, 1).Round(time.Millisecond), p(cutTimes, 0.5).Round(time.Millisecond), headerTimeout)

	if failures.Load() > 0 {
		t.Fatalf("%d normal requests failed", failures.Load())
	}
	if cutEarly > 0 {
		t.Fatalf("%d slow connections were cut while the normal clients were measured: not held", cutEarly)
	}
	// Served, not starved: normal requests go on while every slow
	// connection is held (their latency is logged above, not asserted:
	// it follows the machine's load).
	if len(during) < 10 {
		t.Fatalf("only %d publishes while the slow connections were held (opening them took %v)", len(during), opened)
	}
	if early := p(cutTimes, 0); early < headerTimeout-100*time.Millisecond {
		t.Errorf("a slow connection was cut after %v, before read_header_timeout %v", early, headerTimeout)
	}
}

// needFDs skips the test when the process may not open n files.
func needFDs(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if lim.Cur < n {
		t.Skipf("needs %d file descriptors, ulimit -n is %d", n, lim.Cur)
	}
}
