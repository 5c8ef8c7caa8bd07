package test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
)

// TestRollingRestartUnderLoad restarts every node of the process cluster in
// turn under steady load: each broker leaves in lame duck (leaderships and
// clients move) and is started again once the others are current, then each
// gateway (lame duck: readyz 503, clients told to move), then the workers.
// Each restart begins with publishes in flight. Producers must see no
// answer other than 202 and retried 503s; every message is acked, the
// checker finds nothing wrong and the topic ends empty.
func TestRollingRestartUnderLoad(t *testing.T) {
	chk := history.New(families...)
	p := startProcessCluster(t, 600, chk, false)
	counter := newStatusCounter()
	caughtUp := func(name string) {
		harness.Eventually(t, time.Minute, func() bool { return harness.ReplicasCurrent(p.js, "orders") },
			"%s restarted: replicas of orders should be current", name)
	}
	caughtUp("cluster up")
	start := time.Now()
	d := drive{chk: chk, js: p.js, gateways: p.gateways(), load: 2 * time.Second, quiet: 5 * time.Second,
		diagnose: p.diagnose, opts: httpClient(counter)}
	r := d.run(t, func(l *publisher) {
		for i := 1; i <= 3; i++ {
			name := fmt.Sprintf("broker-%d", i)
			l.busy(t)
			p.do("stop", name)
			p.do("restart", name)
			caughtUp(name)
		}
		for i := 1; i <= 2; i++ {
			name := fmt.Sprintf("gateway-%d", i)
			l.busy(t)
			p.do("stop", name)
			p.do("restart", name)
		}
		l.busy(t)
		p.readers.restart()
	})
	counter.mu.Lock()
	defer counter.mu.Unlock()
	t.Logf("rolling restart of 3 brokers, 2 gateways and the workers in %v: %s; answers %v, no answer %d",
		time.Since(start).Round(time.Second), r.Row("rolling restart"), counter.statuses, counter.failed)
	if r.Acked == 0 || r.Definite != 0 || r.Unknown != 0 {
		t.Errorf("every publish should end acked: %+v", r)
	}
	if problems := r.Problems(); len(problems) > 0 {
		t.Errorf("%v: %+v", problems, r)
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
