package test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/checker"
	"github.com/sluicebus/sluice/internal/testharness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// statusCounter is an HTTP transport that counts the gateways' answers by
// status and the requests that got none.
type statusCounter struct {
	mu       sync.Mutex
	statuses map[int]int
	failed   int
	next     http.RoundTripper
}

func (c *statusCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.failed++
		return nil, err
	}
	c.statuses[resp.StatusCode]++
	return resp, nil
}

// TestRollingRestartUnderLoad restarts every node of the process cluster in
// turn under steady load: each broker leaves in lame duck (leaderships and
// clients move) and is started again once the others are current, then each
// gateway (lame duck: readyz 503, clients told to move), then the workers.
// Producers must see no answer other than 202 and retried 503s; every
// message is acked, none lost, none stored twice.
func TestRollingRestartUnderLoad(t *testing.T) {
	chk := checker.New("billing", "shipping")
	p := startProcessCluster(t, 600, chk, false)
	counter := &statusCounter{statuses: map[int]int{}, next: http.DefaultTransport.(*http.Transport).Clone()}
	client := &http.Client{Timeout: 30 * time.Second, Transport: counter}
	caughtUp := func(name string) {
		testharness.Eventually(t, time.Minute, func() bool { return testharness.ReplicasCurrent(p.js, "orders") },
			"%s restarted: replicas of orders should be current", name)
	}
	caughtUp("cluster up")
	start := time.Now()
	diagnose := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := p.js.Stream(ctx, sluice.StreamName("orders"))
		if err != nil {
			return err.Error()
		}
		out := fmt.Sprintf("stream: %+v cluster: %+v", s.CachedInfo().State, s.CachedInfo().Cluster)
		for _, fam := range families {
			if c, err := s.Consumer(ctx, fam); err == nil {
				ci := c.CachedInfo()
				out += fmt.Sprintf("\n%s: delivered %+v ack floor %+v ack pending %d redelivered %d pending %d waiting %d",
					fam, ci.Delivered, ci.AckFloor, ci.NumAckPending, ci.NumRedelivered, ci.NumPending, ci.NumWaiting)
			}
		}
		return out
	}
	r := driveSync(t, chk, "", p.gateways(), 2*time.Second, func() {
		for i := 1; i <= 3; i++ {
			name := fmt.Sprintf("broker-%d", i)
			p.do("stop", name)
			p.do("restart", name)
			caughtUp(name)
		}
		for i := 1; i <= 2; i++ {
			name := fmt.Sprintf("gateway-%d", i)
			p.do("stop", name)
			p.do("restart", name)
		}
		p.readers.restart()
	}, nil, diagnose, sluice.WithHTTPClient(client))
	counter.mu.Lock()
	defer counter.mu.Unlock()
	t.Logf("rolling restart of 3 brokers, 2 gateways and the workers in %v: %s; answers %v, no answer %d",
		time.Since(start).Round(time.Second), r.Row("rolling restart"), counter.statuses, counter.failed)
	if r.Acked == 0 || r.Definite != 0 || r.Unknown != 0 {
		t.Errorf("every publish should end acked: %+v", r)
	}
	if r.Lost != 0 || r.Unexpected != 0 || r.StoredTwice != 0 {
		t.Errorf("lost, unexpected or stored twice: %+v", r)
	}
	if counter.failed != 0 {
		t.Errorf("%d requests got no answer: clients should have moved off a stopping gateway", counter.failed)
	}
	for status, n := range counter.statuses {
		if status != http.StatusAccepted && status != http.StatusServiceUnavailable {
			t.Errorf("%d answers with status %d; only 202 and retried 503 are allowed", n, status)
		}
	}
}
