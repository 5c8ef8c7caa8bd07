//go:build chaos

package test

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// netEnv is the fault environment of TestFaults (its routes go through
// links that can be shaped) with the first gateway reaching b1 only,
// through a proxy whose link can be shaped too, and the gateways' answers
// counted per gateway while a fault lasts.
type netEnv struct {
	*faultEnv
	answers *answersByHost
}

// startNetEnv starts the environment; with leaderAtGateway b1, the only
// broker the first gateway reaches, is made the stream's leader.
func startNetEnv(t *testing.T, leaderAtGateway bool) *netEnv {
	t.Helper()
	ne := &netEnv{faultEnv: startFaultEnv(t, false, true)}
	ne.answers = &answersByHost{next: ne.http, counts: map[string]map[int]int{}, hosts: map[string]string{
		strings.TrimPrefix(ne.gateways[0].URL, "http://"): "gateway 1",
		strings.TrimPrefix(ne.gateways[1].URL, "http://"): "gateway 2",
	}}
	if leaderAtGateway {
		ne.c.MoveLeader(t, ne.js, "orders", 0)
		ne.c.WaitCurrent(t, ne.js, "orders", "after moving the leader")
	}
	return ne
}

// run is faultEnv.run with the answers also counted per gateway.
func (ne *netEnv) run(t *testing.T, fault func(l *publisher)) history.Report {
	t.Helper()
	d := drive{chk: ne.chk, js: ne.js, gateways: []string{ne.gateways[0].URL, ne.gateways[1].URL},
		load: time.Second, quiet: 3 * time.Second,
		opts: []sluice.ProducerOption{sluice.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: ne.answers})}}
	return d.run(t, fault)
}

// leader is the stream leader's index; the test fails without one.
func (ne *netEnv) leader(t *testing.T) int {
	t.Helper()
	var i int
	harness.Eventually(t, 30*time.Second, func() bool { i = ne.c.Leader(t, ne.js, "orders"); return i >= 0 }, "no stream leader")
	return i
}

// hold keeps a fault for d, counting the gateways' answers, and logs who
// led the stream as each broker saw it meanwhile (each change, "-" for
// none or no answer).
func (ne *netEnv) hold(t *testing.T, d time.Duration) {
	t.Helper()
	views := make([]jetstream.JetStream, len(ne.c.Nodes))
	for i, n := range ne.c.Nodes {
		nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		views[i], _ = jetstream.New(nc)
	}
	seen := make([][]string, len(views))
	ne.answers.count()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		for i, js := range views {
			name := "-"
			if l := ne.c.Leader(t, js, "orders"); l >= 0 {
				name = ne.c.Nodes[l].Name
			}
			if len(seen[i]) == 0 || seen[i][len(seen[i])-1] != name {
				seen[i] = append(seen[i], name)
			}
		}
	}
	t.Logf("answers while the fault lasted (status: count, 0 = no answer): %s", ne.answers.stop())
	for i, s := range seen {
		t.Logf("stream leader as %s saw it: %s", ne.c.Nodes[i].Name, strings.Join(s, " -> "))
	}
}

// answersByHost is an HTTP transport counting, while on, each gateway's
// answers by status (0: no answer); it sends through next.
type answersByHost struct {
	next  http.RoundTripper
	hosts map[string]string // host:port -> gateway

	mu     sync.Mutex
	on     bool
	counts map[string]map[int]int
}

func (a *answersByHost) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := a.next.RoundTrip(r)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.on {
		gw := a.hosts[r.URL.Host]
		if a.counts[gw] == nil {
			a.counts[gw] = map[int]int{}
		}
		a.counts[gw][status]++
	}
	return resp, err
}

// count starts counting anew.
func (a *answersByHost) count() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.on, a.counts = true, map[string]map[int]int{}
}

// stop stops counting and describes what was counted.
func (a *answersByHost) stop() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.on = false
	var parts []string
	for _, gw := range slices.Sorted(maps.Keys(a.counts)) {
		parts = append(parts, fmt.Sprintf("%s %v", gw, a.counts[gw]))
	}
	return strings.Join(parts, ", ")
}

// dropped logs how many packets the loss rules dropped; none fails the
// test (the fault did not happen).
func dropped(t *testing.T) {
	t.Helper()
	_, n, err := harness.LossRules()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("the loss rules dropped no packet")
	}
	t.Logf("%d packets dropped", n)
}

// leaderRoutes is both directions of every route of node i.
func leaderRoutes(c *harness.Cluster, i int) []harness.Flow {
	return append(c.Sends(i), c.Receives(i)...)
}

// TestNetworkFaults runs bad networks under load through both gateways,
// with the checker: latency with jitter, packet loss, a bandwidth limit,
// connection resets and one-way partitions on the routes, the stream
// leader isolated together with the gateway that reaches only it, and a
// slow lossy link between a gateway and its broker. Nothing acked may be
// lost or stored twice, no answer may be a 5xx other than 503, and every
// 429 and 503 carries Retry-After.
func TestNetworkFaults(t *testing.T) {
	scenarios := []struct {
		name            string
		leaderAtGateway bool
		fault           func(t *testing.T, ne *netEnv, l *publisher)
	}{
		{"latency 100±50 ms on every route 10 s", false, func(t *testing.T, ne *netEnv, l *publisher) {
			l.busy(t)
			defer harness.Latency(t, ne.c.Routes(), 100, 50)()
			ne.hold(t, 10*time.Second)
		}},
		{"5% packet loss on every route 10 s", false, func(t *testing.T, ne *netEnv, l *publisher) {
			l.busy(t)
			defer harness.Loss(t, 0.05, ne.c.RoutePorts()...)()
			ne.hold(t, 10*time.Second)
			dropped(t)
		}},
		{"10% packet loss on every route 5 s", false, func(t *testing.T, ne *netEnv, l *publisher) {
			l.busy(t)
			defer harness.Loss(t, 0.10, ne.c.RoutePorts()...)()
			ne.hold(t, 5*time.Second)
			dropped(t)
		}},
		{"256 KB/s on the stream leader's routes 10 s", false, func(t *testing.T, ne *netEnv, l *publisher) {
			leader := ne.leader(t)
			l.busy(t)
			defer harness.Bandwidth(t, leaderRoutes(ne.c, leader), 256)()
			ne.hold(t, 10*time.Second)
		}},
		{"16 KB/s on the stream leader's routes 10 s", false, func(t *testing.T, ne *netEnv, l *publisher) {
			leader := ne.leader(t)
			l.busy(t)
			defer harness.Bandwidth(t, leaderRoutes(ne.c, leader), 16)()
			ne.hold(t, 10*time.Second)
		}},
		{"connection resets on the stream leader's routes 6 times", false, func(t *testing.T, ne *netEnv, l *publisher) {
			l.busy(t)
			for i := range 6 {
				leader := ne.leader(t) // whoever leads now
				before := ne.c.RouteConnections(leader)
				var heal func()
				if i%2 == 0 { // reset at the next bytes
					heal = harness.ResetPeer(t, leaderRoutes(ne.c, leader), 0)
				} else { // bytes dropped, then closed after 1 s
					heal = harness.Shape(t, leaderRoutes(ne.c, leader), "timeout", map[string]int{"timeout": 1000})
				}
				ne.hold(t, 1500*time.Millisecond)
				harness.Eventually(t, 30*time.Second, func() bool { return ne.c.RouteConnections(leader) > before },
					"the stream leader's routes were not reset")
				answers, _ := ne.http.answers()
				heal()
				// The next round once service is back: replicas current
				// and a publish acked since the heal.
				ne.c.WaitCurrent(t, ne.js, "orders", "after the resets")
				harness.Eventually(t, time.Minute, func() bool {
					now, _ := ne.http.answers()
					return now[http.StatusAccepted] > answers[http.StatusAccepted]
				}, "no publish acked after the resets")
			}
		}},
		{"stream leader's outbound route bytes dropped 15 s", false, func(t *testing.T, ne *netEnv, l *publisher) {
			leader := ne.leader(t)
			l.busy(t)
			defer harness.Blackhole(t, ne.c.Sends(leader))()
			ne.hold(t, 15*time.Second)
		}},
		{"stream leader's inbound route bytes dropped 15 s", false, func(t *testing.T, ne *netEnv, l *publisher) {
			leader := ne.leader(t)
			l.busy(t)
			defer harness.Blackhole(t, ne.c.Receives(leader))()
			ne.hold(t, 15*time.Second)
		}},
		{"stream leader isolated with the gateway reaching only it 15 s", true, func(t *testing.T, ne *netEnv, l *publisher) {
			if leader := ne.leader(t); leader != 0 {
				ne.c.MoveLeader(t, ne.js, "orders", 0) // moved since the start
			}
			l.busy(t)
			ne.c.Isolate(0)
			defer ne.c.Heal(0)
			ne.hold(t, 15*time.Second)
			if u := ne.gw0Conn.ConnectedUrl(); u != ne.gw0Proxy.URL() {
				t.Errorf("the first gateway's bus connection went to %s, not through its link to b1 only", u)
			}
		}},
		{"latency 100±50 ms and 5% loss on a gateway's bus link 10 s", false, func(t *testing.T, ne *netEnv, l *publisher) {
			l.busy(t)
			defer harness.Latency(t, ne.gw0Proxy.Link().Flows(), 100, 50)()
			defer harness.Loss(t, 0.05, ne.gw0Proxy.Port())()
			ne.hold(t, 10*time.Second)
			dropped(t)
			t.Logf("the first gateway's bus connection: %s, %d reconnects", ne.gw0Conn.ConnectedUrl(), ne.gw0Conn.Stats().Reconnects)
		}},
	}
	rows := []string{history.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			ne := startNetEnv(t, sc.leaderAtGateway)
			r := ne.run(t, func(l *publisher) { sc.fault(t, ne, l) })
			rows = append(rows, judge(t, sc.name, r))
			checkAnswers(t, sc.name, ne.http)
		})
	}
	t.Log("\n" + strings.Join(rows, "\n"))
}
