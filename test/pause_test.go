//go:build chaos

package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// pauseFor is how long a paused process stays stopped: longer than the
// families' ack_wait (30 s in configs/cluster) and than the bus's ping
// timeout (a ping every 2 s, 3 outstanding).
const pauseFor = 40 * time.Second

// TestPauses (make chaos) stops a process with SIGSTOP for pauseFor under
// load through both gateways and resumes it with SIGCONT: the stream
// leader (asked of the stream), a gateway with requests in flight, and a
// worker holding messages. The checker must find nothing lost in any
// family, stored twice, unexpected, corrupted or left unsettled; no answer
// may be a 5xx other than 503, and every 429 and 503 carries Retry-After.
func TestPauses(t *testing.T) {
	scenarios := []struct {
		name  string
		fault func(t *testing.T, c *chaosRun, l *publisher)
		// worker: a `sluice worker` process of billing beside the test's
		// reader, its deliveries read from its log.
		worker bool
	}{
		{"SIGSTOP the stream leader for 40 s", func(t *testing.T, c *chaosRun, l *publisher) {
			l.busy(t)
			leader := c.p.leader()
			c.p.pause(t, leader, func() {
				harness.Eventually(t, pauseFor, func() bool {
					now, err := c.p.leaderNow()
					return err == nil && now != "" && now != leader
				}, "the stream should elect a leader other than the paused %s", leader)
				now, _ := c.p.leaderNow()
				t.Logf("paused leader %s; %s leads the stream", leader, now)
			})
			c.p.current(t, leader+" resumed")
		}, false},
		{"SIGSTOP a gateway with requests in flight for 40 s", func(t *testing.T, c *chaosRun, l *publisher) {
			l.busy(t)
			gw := strings.TrimPrefix(c.p.gateways()[0], "http://")
			harness.Eventually(t, 10*time.Second, func() bool { return c.counter.inFlightTo(gw) > 0 },
				"no request in flight at gateway-1")
			c.p.pause(t, "gateway-1", func() {
				time.Sleep(2 * time.Second)
				if n := c.counter.inFlightTo(gw); n == 0 {
					t.Error("no request in flight at the paused gateway-1")
				} else {
					t.Logf("%d requests in flight at the paused gateway-1", n)
				}
			})
			harness.Eventually(t, time.Minute, func() bool { return httpReady(c.p.gateways()[0]) },
				"gateway-1 should be ready again after SIGCONT")
		}, false},
		{"SIGSTOP a worker holding messages for 40 s", func(t *testing.T, c *chaosRun, l *publisher) {
			l.busy(t)
			pauseWorkerHolding(t, c, "worker-billing-1", "billing")
		}, true},
	}
	rows := []string{history.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			c := newChaosRun(t, 800, false)
			if sc.worker {
				c.p.do("restart", "worker-billing-1")
				c.collect = workerLog(c.p, "worker-billing-1", c.chk, "billing")
			}
			c.p.current(t, "cluster up")
			rows = append(rows, c.run(t, sc.name, func(l *publisher) { sc.fault(t, c, l) }))
		})
	}
	fmt.Println("\n" + strings.Join(rows, "\n"))
}

// pauseWorkerHolding stops the worker process name of family with SIGSTOP
// once it holds an unacked message (the family's ack floor stays below it
// while the test's reader acks what comes after), checks that the message
// is redelivered to the other worker and acked within the pause (after
// ack_wait), resumes the worker and checks that it goes on handling.
func pauseWorkerHolding(t *testing.T, c *chaosRun, name, family string) {
	t.Helper()
	handled := func() int { return countHandled(t, c.p, name) }
	harness.Eventually(t, 30*time.Second, func() bool { return handled() > 0 }, "%s handled nothing", name)
	floor := func() (jetstream.SequenceInfo, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := c.p.js.Consumer(ctx, sluice.StreamName("orders"), family)
		if err != nil {
			return jetstream.SequenceInfo{}, -1
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return jetstream.SequenceInfo{}, -1
		}
		return ci.AckFloor, ci.NumAckPending
	}
	for try := 1; ; try++ {
		c.p.signal(name, syscall.SIGSTOP)
		stopped := time.Now()
		resume := sync.OnceFunc(func() { c.p.signal(name, syscall.SIGCONT) })
		t.Cleanup(resume)
		// The reader acks what it holds at once; what stays unacked
		// below the floor is the paused worker's.
		time.Sleep(5 * time.Second)
		f1, pending := floor()
		time.Sleep(5 * time.Second)
		f2, _ := floor()
		if pending > 0 && f1.Stream == f2.Stream {
			t.Logf("%s paused holding messages (try %d): %s ack floor stuck at stream seq %d, %d acks pending",
				name, try, family, f1.Stream, pending)
			harness.Eventually(t, pauseFor, func() bool {
				f, _ := floor()
				return f.Stream > f1.Stream
			}, "the message held by the paused %s should be redelivered and acked after ack_wait", name)
			t.Logf("%s's held message redelivered and acked by the other worker %v after the pause began",
				name, time.Since(stopped).Round(time.Second))
			time.Sleep(time.Until(stopped.Add(pauseFor)))
			before := handled()
			resume()
			harness.Eventually(t, time.Minute, func() bool { return handled() > before },
				"%s should go on handling after SIGCONT", name)
			t.Logf("%s resumed after %v: handled %d so far, %d after the pause", name,
				time.Since(stopped).Round(time.Second), handled(), handled()-before)
			return
		}
		resume()
		if try == 5 {
			t.Fatalf("%s held no message at any of %d pauses", name, try)
		}
		time.Sleep(2 * time.Second)
	}
}

// pause stops name with SIGSTOP for pauseFor, running during (if not nil)
// meanwhile, and resumes it with SIGCONT (also when the test fails).
func (p *processCluster) pause(t *testing.T, name string, during func()) {
	t.Helper()
	p.signal(name, syscall.SIGSTOP)
	stopped := time.Now()
	resume := sync.OnceFunc(func() { p.signal(name, syscall.SIGCONT) })
	t.Cleanup(resume)
	if during != nil {
		during()
	}
	time.Sleep(time.Until(stopped.Add(pauseFor)))
	resume()
}

// leaderNow is the broker leading the topic's stream, or an error when the
// stream does not answer.
func (p *processCluster) leaderNow() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil {
		return "", err
	}
	if s.CachedInfo().Cluster == nil {
		return "", fmt.Errorf("stream %s has no cluster info", sluice.StreamName("orders"))
	}
	return s.CachedInfo().Cluster.Leader, nil
}

// current waits until every replica of orders is current.
func (p *processCluster) current(t *testing.T, why string) {
	t.Helper()
	begin := time.Now()
	harness.Eventually(t, 2*time.Minute, func() bool { return harness.ReplicasCurrent(p.js, "orders") },
		"%s: every replica of orders should be current", why)
	t.Logf("%s: replicas current after %v", why, time.Since(begin).Round(100*time.Millisecond))
}

// httpReady reports whether base/readyz answers 200.
func httpReady(base string) bool {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// handledLine is a demo worker's "handled" log line.
type handledLine struct {
	Msg, Family, ID string
	Seq             uint64
	Copy            bool
}

// logPath is the log file of the cluster's process name.
func (p *processCluster) logPath(name string) string {
	return filepath.Join(p.runDir, "logs", name+".log")
}

// workerLog returns a collect function for drive: each call records in chk
// the deliveries to family that the worker process name logged since the
// call before.
func workerLog(p *processCluster, name string, chk *history.Checker, family string) func() {
	var offset int
	return func() {
		data, err := os.ReadFile(p.logPath(name))
		if err != nil || len(data) <= offset {
			return
		}
		data = data[offset:]
		end := bytes.LastIndexByte(data, '\n') + 1 // a line still being written waits for the next call
		offset += end
		sc := bufio.NewScanner(bytes.NewReader(data[:end]))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var h handledLine
			if json.Unmarshal(sc.Bytes(), &h) != nil || h.Msg != "handled" || h.Family != family {
				continue
			}
			if h.Copy {
				chk.DeliveredUnseenCopy(h.Family, h.ID, h.Seq)
			} else {
				chk.DeliveredUnseen(h.Family, h.ID, h.Seq)
			}
		}
	}
}

// countHandled is how many "handled" lines the process name logged.
func countHandled(t *testing.T, p *processCluster, name string) int {
	t.Helper()
	data, err := os.ReadFile(p.logPath(name))
	if err != nil {
		return 0
	}
	return bytes.Count(data, []byte(`"msg":"handled"`))
}
