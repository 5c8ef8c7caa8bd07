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
			chk := history.New(families...)
			p := startProcessCluster(t, 700, chk, sc.slow)
			counter := newStatusCounter()
			d := drive{chk: chk, js: p.js, gateways: p.gateways(), load: 10 * time.Second, quiet: 10 * time.Second,
				opts: httpClient(counter)}
			r := d.run(t, func(l *publisher) { sc.fault(t, p, l, counter) })
			rows = append(rows, r.Row(sc.name))
			t.Log(r.Row(sc.name))
			if r.Acked == 0 {
				t.Error("nothing was acked")
			}
			if problems := r.Problems(); len(problems) > 0 {
				t.Errorf("%s: %v\n%+v", sc.name, problems, r)
			}
		})
	}
	fmt.Println("\n" + strings.Join(rows, "\n"))
}
