//go:build chaos

package test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
)

// TestChaos (make chaos) runs the fault scenarios against the process
// cluster with real SIGKILL and SIGSTOP, for minutes, each fault striking
// while publishes are in flight, and prints the checker table; the checker
// must find nothing lost in any family, stored twice, unexpected, corrupted
// or left unsettled, and the topic's final state must be empty.
func TestChaos(t *testing.T) {
	scenarios := []struct {
		name  string
		slow  bool
		fault func(t *testing.T, p *processCluster, l *publisher, counter *statusCounter)
	}{
		{"SIGKILL a broker, restart after 10 s", false, func(t *testing.T, p *processCluster, l *publisher, _ *statusCounter) {
			l.busy(t)
			p.signal("broker-2", syscall.SIGKILL)
			time.Sleep(10 * time.Second)
			p.do("restart", "broker-2")
		}},
		{"SIGKILL the stream leader, 3 times", false, func(t *testing.T, p *processCluster, l *publisher, _ *statusCounter) {
			for range 3 {
				leader := p.leader()
				l.busy(t)
				p.signal(leader, syscall.SIGKILL)
				time.Sleep(5 * time.Second)
				p.do("restart", leader)
				time.Sleep(5 * time.Second)
			}
		}},
		{"SIGSTOP a broker for 15 s", false, func(t *testing.T, p *processCluster, l *publisher, _ *statusCounter) {
			l.busy(t)
			p.signal("broker-3", syscall.SIGSTOP)
			time.Sleep(15 * time.Second)
			p.signal("broker-3", syscall.SIGCONT)
		}},
		{"SIGKILL all brokers, restart", false, func(t *testing.T, p *processCluster, l *publisher, _ *statusCounter) {
			l.busy(t)
			for i := 1; i <= 3; i++ {
				p.signal(fmt.Sprintf("broker-%d", i), syscall.SIGKILL)
			}
			time.Sleep(3 * time.Second)
			for i := 1; i <= 3; i++ {
				cmd := p.script("restart", fmt.Sprintf("broker-%d", i))
				cmd.Env = append(cmd.Env, "WAIT=0") // a lone broker waits for a quorum
				if out, err := cmd.CombinedOutput(); err != nil {
					p.t.Fatalf("restart: %v\n%s", err, out)
				}
			}
		}},
		{"SIGKILL a gateway with requests in flight, restart", false, func(t *testing.T, p *processCluster, l *publisher, counter *statusCounter) {
			l.busy(t)
			// With every broker stopped, gateway-1's requests wait for
			// the bus (publish_timeout 5 s): they are in flight at the kill.
			gw := strings.TrimPrefix(p.gateways()[0], "http://")
			for i := 1; i <= 3; i++ {
				p.signal(fmt.Sprintf("broker-%d", i), syscall.SIGSTOP)
			}
			harness.Eventually(t, 2*time.Second, func() bool { return counter.inFlightTo(gw) > 0 },
				"no request in flight at gateway-1")
			unanswered, inFlight := counter.noAnswer(), counter.inFlightTo(gw)
			p.signal("gateway-1", syscall.SIGKILL)
			for i := 1; i <= 3; i++ {
				p.signal(fmt.Sprintf("broker-%d", i), syscall.SIGCONT)
			}
			harness.Eventually(t, 10*time.Second, func() bool { return counter.noAnswer() > unanswered },
				"%d requests in flight at gateway-1's kill: some should have got no answer", inFlight)
			t.Logf("gateway-1 killed with %d requests in flight", inFlight)
			time.Sleep(5 * time.Second)
			p.do("restart", "gateway-1")
		}},
		{"slow family while another is fast", true, func(t *testing.T, p *processCluster, l *publisher, _ *statusCounter) {
			l.busy(t)
			time.Sleep(20 * time.Second)
		}},
	}
	rows := []string{history.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			c := newChaosRun(t, 700, sc.slow)
			rows = append(rows, c.run(t, sc.name, func(l *publisher) { sc.fault(t, c.p, l, c.counter) }))
		})
	}
	fmt.Println("\n" + strings.Join(rows, "\n"))
}

// chaosRun is one scenario of the process cluster's fault tables: the load
// through both gateways (drive), the fault, the checker's report, and what
// the clients were answered.
type chaosRun struct {
	p       *processCluster
	chk     *history.Checker
	counter *statusCounter
	load    time.Duration // before and after the fault
	quiet   time.Duration
	collect func() // deliveries to workers outside the process (nil: none)
}

// newChaosRun starts a process cluster at offset for one scenario (see
// startProcessCluster for slowShipping).
func newChaosRun(t *testing.T, offset int, slowShipping bool) *chaosRun {
	chk := history.New(families...)
	return &chaosRun{p: startProcessCluster(t, offset, chk, slowShipping), chk: chk, counter: newStatusCounter(),
		load: 10 * time.Second, quiet: 10 * time.Second}
}

// run drives the load with fault (it strikes after l.busy) and returns the
// row of the table, failing the test when the checker finds a problem, an
// answer was a 5xx other than 503, or a 429/503 came without Retry-After.
func (c *chaosRun) run(t *testing.T, name string, fault func(l *publisher)) string {
	t.Helper()
	d := drive{chk: c.chk, js: c.p.js, gateways: c.p.gateways(), load: c.load, quiet: c.quiet,
		collect: c.collect, diagnose: c.p.diagnose, opts: httpClient(c.counter)}
	var begin, end time.Time
	r := d.run(t, func(l *publisher) {
		begin = time.Now()
		fault(l)
		end = time.Now()
	})
	t.Logf("%s: fault lasted %v", name, end.Sub(begin).Round(time.Second))
	checkAnswers(t, name, c.counter)
	return judge(t, name, r)
}
