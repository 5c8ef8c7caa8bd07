package test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/internal/topology"
)

// faultEnv is a 3-broker cluster with R3 topics, two gateways reaching the
// brokers, SDK producers failing over between them, and two families whose
// workers record every delivery in a checker.
type faultEnv struct {
	c        *harness.Cluster
	js       jetstream.JetStream
	gateways []*httptest.Server
	chk      *history.Checker
	http     *statusCounter // the publishers' transport
	// The first gateway's requests in its handler, its bus connection
	// and, when started proxied, the proxy between it and its broker.
	inGateway0 atomic.Int64
	gw0Conn    *nats.Conn
	gw0Proxy   *harness.Proxy
}

// startFaultEnv starts the cluster, gateways and readers: with slowFamily
// shipping takes 5 ms per message; with proxied the first gateway reaches
// a single broker through a proxy that can hold the bus's answers.
func startFaultEnv(t *testing.T, slowFamily, proxied bool) *faultEnv {
	t.Helper()
	return startFaultEnvWith(t, slowFamily, proxied, nil, func(topics map[string]topology.Topic) *harness.Cluster {
		return harness.StartCluster(t, 3, topics)
	})
}

// startFaultEnvWith is startFaultEnv on the cluster start gives, with the
// gateways' configs changed by gw (if not nil).
func startFaultEnvWith(t *testing.T, slowFamily, proxied bool, gw func(*gateway.Config),
	start func(map[string]topology.Topic) *harness.Cluster) *faultEnv {
	t.Helper()
	topic := harness.Topic("orders", "billing", "shipping")
	topic.Replicas = 3
	for name, f := range topic.Families {
		f.MaxAttempts = 20 // brokers going away must not exhaust deliveries
		topic.Families[name] = f
	}
	topics := map[string]topology.Topic{"orders": topic}
	e := &faultEnv{c: start(topics), chk: history.New(families...), http: newStatusCounter()}
	e.js, _ = jetstream.New(e.c.Connect(t))
	e.c.WaitCurrent(t, e.js, "orders", "cluster not settled")
	for i := range 2 {
		cfg := harness.GatewayConfig(topics)
		cfg.PublishTimeout = 2 * time.Second
		if gw != nil {
			gw(&cfg)
		}
		nc := e.c.Connect(t)
		if i == 0 && proxied {
			e.gw0Proxy, nc = harness.ConnectThrough(t, e.c.Nodes[0].URL())
		}
		if i > 0 {
			_, srv := harness.StartGateway(t, cfg, nc)
			e.gateways = append(e.gateways, srv)
			continue
		}
		e.gw0Conn = nc
		_, srv := harness.StartGatewayWith(t, cfg, nc, func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost {
					e.inGateway0.Add(1)
					defer e.inGateway0.Add(-1)
				}
				h.ServeHTTP(w, r)
			})
		})
		e.gateways = append(e.gateways, srv)
	}
	slow := time.Duration(0)
	if slowFamily {
		slow = 5 * time.Millisecond
	}
	startReaders(t, e.c.Connect(t), e.chk, 4, slow)
	return e
}

// current: the topic has a leader and two current followers.
func (e *faultEnv) current() bool { return e.c.Current(e.js, "orders") }

// run loads both gateways while fault runs and returns the checker's report
// (drive.run).
func (e *faultEnv) run(t *testing.T, fault func(l *publisher)) history.Report {
	t.Helper()
	d := drive{chk: e.chk, js: e.js, gateways: []string{e.gateways[0].URL, e.gateways[1].URL},
		load: time.Second, quiet: 3 * time.Second, opts: httpClient(e.http)}
	return d.run(t, fault)
}

// killGateway0 kills the first gateway as a crash would: its client
// connections, its bus connection and its server go at once. It returns
// how many requests were in its handler just before.
func (e *faultEnv) killGateway0() int64 {
	n := e.inGateway0.Load()
	e.gateways[0].CloseClientConnections()
	e.gw0Conn.Close()
	e.gateways[0].Close()
	return n
}

// TestFaults runs each fault scenario under a bounded concurrent load, the
// fault striking while publishes are in flight; the checker must find
// nothing lost in any family, stored twice, unexpected, corrupted or left
// unsettled, and the topic's final state must be empty.
func TestFaults(t *testing.T) {
	scenarios := []struct {
		name          string
		slow, proxied bool
		fault         func(t *testing.T, e *faultEnv, l *publisher)
	}{
		{"broker stopped and restarted", false, false, func(t *testing.T, e *faultEnv, l *publisher) {
			l.busy(t)
			e.c.Stop(1)
			time.Sleep(2 * time.Second)
			e.c.Restart(1)
		}},
		{"stream leader stopped 3 times", false, false, func(t *testing.T, e *faultEnv, l *publisher) {
			for range 3 {
				leader := e.c.Leader(t, e.js, "orders")
				if leader < 0 {
					t.Fatal("no leader")
				}
				l.busy(t)
				e.c.Stop(leader)
				time.Sleep(time.Second)
				e.c.Restart(leader)
				harness.Eventually(t, 30*time.Second, e.current, "replicas current again")
			}
		}},
		{"minority partition 10 s", false, false, func(t *testing.T, e *faultEnv, l *publisher) {
			l.busy(t)
			e.c.Isolate(2)
			time.Sleep(10 * time.Second)
			e.c.Heal(2)
		}},
		{"all brokers stopped and restarted", false, false, func(t *testing.T, e *faultEnv, l *publisher) {
			l.busy(t)
			for i := range e.c.Nodes {
				e.c.Stop(i)
			}
			time.Sleep(time.Second)
			e.c.RestartAll()
		}},
		{"gateway killed mid-request", false, true, func(t *testing.T, e *faultEnv, l *publisher) {
			l.busy(t)
			// The bus stores what the first gateway sends but its answers
			// are held: every request there stays in flight until the kill.
			e.gw0Proxy.HoldReplies(true)
			harness.Eventually(t, time.Second, func() bool { return e.inGateway0.Load() > 0 },
				"no request in flight at the first gateway")
			for end := time.Now().Add(500 * time.Millisecond); e.inGateway0.Load() < int64(l.concurrency) && time.Now().Before(end); {
				time.Sleep(5 * time.Millisecond) // give every publisher the time to be caught
			}
			unanswered := e.http.noAnswer()
			killed := e.killGateway0()
			e.gw0Proxy.HoldReplies(false)
			if killed == 0 {
				t.Fatal("no request was in flight at the first gateway when it was killed")
			}
			harness.Eventually(t, 10*time.Second, func() bool { return e.http.noAnswer() > unanswered },
				"%d requests in flight at the kill: some should have got no answer", killed)
			t.Logf("gateway killed with %d requests in its handler; %d requests got no answer", killed, e.http.noAnswer()-unanswered)
		}},
		{"slow family while another is fast", true, false, func(t *testing.T, e *faultEnv, l *publisher) {
			l.busy(t)
			time.Sleep(2 * time.Second)
		}},
	}
	rows := []string{history.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			e := startFaultEnv(t, sc.slow, sc.proxied)
			r := e.run(t, func(l *publisher) { sc.fault(t, e, l) })
			rows = append(rows, judge(t, sc.name, r))
			if sc.proxied {
				t.Logf("%d publishes retried after the kill were acked as duplicates of what the killed gateway stored", r.DuplicateAcks)
				if r.DuplicateAcks == 0 {
					t.Errorf("no publish retried after the kill was acked as a duplicate: the requests in flight should have been stored (%+v)", r)
				}
			}
		})
	}
	t.Log("\n" + strings.Join(rows, "\n"))
}
