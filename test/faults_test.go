package test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/checker"
	"github.com/sluicebus/sluice/internal/testharness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// faultEnv is a 3-broker cluster with R3 topics, two gateways reaching every
// broker, SDK producers failing over between them, and two families whose
// workers record every delivery in a checker.
type faultEnv struct {
	c        *testharness.Cluster
	js       jetstream.JetStream
	gateways []*httptest.Server
	chk      *checker.Checker
}

func startFaultEnv(t *testing.T, slowFamily bool) *faultEnv {
	t.Helper()
	topic := testharness.Topic("orders", "billing", "shipping")
	topic.Replicas = 3
	for name, f := range topic.Families {
		f.MaxAttempts = 20 // brokers going away must not exhaust deliveries
		topic.Families[name] = f
	}
	topics := map[string]topology.Topic{"orders": topic}
	e := &faultEnv{c: testharness.StartCluster(t, 3, topics), chk: checker.New("billing", "shipping")}
	e.js, _ = jetstream.New(e.c.Connect(t))
	e.c.WaitCurrent(t, e.js, "orders", "cluster not settled")
	for range 2 {
		cfg := testharness.GatewayConfig(topics)
		cfg.PublishTimeout = 2 * time.Second
		_, srv := testharness.StartGateway(t, cfg, e.c.Connect(t))
		e.gateways = append(e.gateways, srv)
	}
	slow := time.Duration(0)
	if slowFamily {
		slow = 5 * time.Millisecond
	}
	startReaders(t, e.c.Connect(t), e.chk, 4, slow)
	return e
}

// readers are one worker per family recording every delivery in a checker.
type readers struct {
	t      *testing.T
	nc     *nats.Conn
	chk    *checker.Checker
	credit int
	slow   time.Duration
	stops  []func() // one per family, as in families
}

var families = []string{"billing", "shipping"}

// startReaders runs a worker of each family on nc (credit each) that records
// every delivery in chk; shipping's handler takes slowShipping per message.
func startReaders(t *testing.T, nc *nats.Conn, chk *checker.Checker, credit int, slowShipping time.Duration) *readers {
	t.Helper()
	rs := &readers{t: t, nc: nc, chk: chk, credit: credit, slow: slowShipping}
	for _, fam := range families {
		rs.stops = append(rs.stops, rs.start(fam))
	}
	return rs
}

func (rs *readers) start(fam string) (stop func()) {
	rs.t.Helper()
	delay := time.Duration(0)
	if fam == "shipping" {
		delay = rs.slow
	}
	return testharness.RunWorker(rs.t, rs.nc, "orders", fam, func(_ context.Context, m *sluice.Message) error {
		rs.chk.Delivered(fam, m.ID, m.Seq)
		if delay > 0 {
			time.Sleep(delay)
		}
		return nil
	}, sluice.WithCredit(rs.credit))
}

// restart stops each family's worker (what it holds is handed back) and
// starts a new one.
func (rs *readers) restart() {
	for i, fam := range families {
		rs.stops[i]()
		rs.stops[i] = rs.start(fam)
	}
}

// current: the topic has a leader and two current followers.
func (e *faultEnv) current() bool { return e.c.Current(e.js, "orders") }

// run writes steadily from two writers while fault runs, then lets the
// readers catch up and returns the checker's report.
func (e *faultEnv) run(t *testing.T, fault func()) checker.Report {
	t.Helper()
	return drive(t, e.chk, []string{e.gateways[0].URL, e.gateways[1].URL}, time.Second, fault)
}

// drive publishes from two SDK writers through gateways, recording each
// final outcome in chk, for settle before fault, during fault and settle
// after (opts add to the producers' options); then it waits for the readers to receive every acked message and
// returns the report.
func drive(t *testing.T, chk *checker.Checker, gateways []string, settle time.Duration, fault func(), opts ...sluice.ProducerOption) checker.Report {
	t.Helper()
	return driveSync(t, chk, "", gateways, settle, fault, nil, nil, opts...)
}

// driveSync is drive for readers outside the test process, with ids
// starting with prefix: diagnose (if not nil) describes the bus when
// deliveries are missing; collect (if not nil) records their deliveries in chk, and is called until none is missing.
func driveSync(t *testing.T, chk *checker.Checker, prefix string, gateways []string, settle time.Duration, fault, collect func(), diagnose func() string, opts ...sluice.ProducerOption) checker.Report {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			p, err := sluice.NewProducer(gateways, append([]sluice.ProducerOption{sluice.WithRetry(8, 20*time.Millisecond, 500*time.Millisecond)}, opts...)...)
			if err != nil {
				t.Error(err)
				return
			}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("%sw%d-%d", prefix, w, n)
				ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
				_, err := p.Publish(ctx, "orders", []byte(id), sluice.WithID(id))
				cancel()
				switch {
				case err == nil:
					chk.Attempted(id, checker.OK)
				case errors.Is(err, sluice.ErrOutcomeUnknown):
					chk.Attempted(id, checker.Unknown)
				default:
					chk.Attempted(id, checker.Definite)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer halt() // also when fault fails the test
	time.Sleep(settle)
	fault()
	time.Sleep(settle)
	halt()
	// Redeliveries of deliveries lost while clients move follow the
	// families' expiry (ack wait + backoff: 31 s, 35 s, 60 s in the
	// cluster configs): allow for three in a row.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if collect != nil {
			collect()
		}
		if chk.Missing() == 0 {
			break
		}
		if time.Now().After(deadline) {
			state := ""
			if diagnose != nil {
				state = diagnose()
			}
			t.Fatalf("readers should receive every acked message: %d deliveries missing after 3 min, e.g. %v\n%s",
				chk.Missing(), chk.MissingSample(5), state)
		}
		if collect != nil {
			time.Sleep(time.Second) // reading the readers' logs is not free
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return chk.Report()
}

// TestFaults runs each fault scenario under steady load; each must show
// lost = 0, unexpected = 0 and stored twice = 0.
func TestFaults(t *testing.T) {
	scenarios := []struct {
		name  string
		slow  bool
		fault func(t *testing.T, e *faultEnv)
	}{
		{"broker stopped and restarted", false, func(t *testing.T, e *faultEnv) {
			e.c.Stop(1)
			time.Sleep(2 * time.Second)
			e.c.Restart(1)
		}},
		{"stream leader stopped 3 times", false, func(t *testing.T, e *faultEnv) {
			for range 3 {
				leader := e.c.Leader(t, e.js, "orders")
				if leader < 0 {
					t.Fatal("no leader")
				}
				e.c.Stop(leader)
				time.Sleep(time.Second)
				e.c.Restart(leader)
				testharness.Eventually(t, 30*time.Second, e.current, "replicas current again")
			}
		}},
		{"minority partition 10 s", false, func(t *testing.T, e *faultEnv) {
			e.c.Isolate(2)
			time.Sleep(10 * time.Second)
			e.c.Heal(2)
		}},
		{"all brokers stopped and restarted", false, func(t *testing.T, e *faultEnv) {
			for i := range e.c.Nodes {
				e.c.Stop(i)
			}
			time.Sleep(time.Second)
			e.c.RestartAll()
		}},
		{"gateway killed mid-request", false, func(t *testing.T, e *faultEnv) {
			e.gateways[0].CloseClientConnections()
			e.gateways[0].Close()
		}},
		{"slow family while another is fast", true, func(t *testing.T, e *faultEnv) {
			time.Sleep(2 * time.Second)
		}},
	}
	rows := []string{checker.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			e := startFaultEnv(t, sc.slow)
			r := e.run(t, func() { sc.fault(t, e) })
			rows = append(rows, r.Row(sc.name))
			if r.Acked == 0 {
				t.Fatal("nothing was acked")
			}
			if r.Lost != 0 || r.Unexpected != 0 || r.StoredTwice != 0 {
				t.Errorf("%s: %+v", sc.name, r)
			}
		})
	}
	t.Log("\n" + strings.Join(rows, "\n"))
}
