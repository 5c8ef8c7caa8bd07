package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/status"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// wallClock is a host's wall clock set off the broker's by an offset that
// may jump. Its readings carry no monotonic reading, as a stepped wall
// clock's would not: code measuring durations on it would see the jumps.
type wallClock struct{ offset atomic.Int64 }

func newWallClock(d time.Duration) *wallClock {
	c := &wallClock{}
	c.set(d)
	return c
}

func (c *wallClock) set(d time.Duration) { c.offset.Store(int64(d)) }
func (c *wallClock) get() time.Duration  { return time.Duration(c.offset.Load()) }
func (c *wallClock) now() time.Time      { return time.Now().Round(0).Add(c.get()) }

// TestClockSkew runs one broker with a gateway and a worker whose wall
// clocks are an hour ahead of the broker's, an hour behind, or jumping from
// an hour ahead to an hour behind while an alarm is up and messages wait.
// The broker runs in this process: the test's clock is the bus's. Each
// must go on as if its clock were kept: API keys expire by the bus's
// clock, duplicates are the bus's, alarm, status and dead-letter times
// read in the bus's clock, and both nodes measure their offset.
func TestClockSkew(t *testing.T) {
	cases := []struct {
		name       string
		skew, jump time.Duration // jump: the offset once the alarm is up (0: none)
	}{
		{"ahead 1h", time.Hour, 0},
		{"behind 1h", -time.Hour, 0},
		{"jumping", time.Hour, -time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { clockSkew(t, tc.skew, tc.jump) })
	}
}

func clockSkew(t *testing.T, skew, jump time.Duration) {
	start := time.Now()
	// sane: a time the bus's clock could have read during the test, with a
	// margin far below the skew and far above any machine's slowness.
	sane := func(what string, at time.Time) {
		t.Helper()
		if at.Before(start.Add(-time.Minute)) || at.After(time.Now().Add(time.Minute)) {
			t.Errorf("%s %v: not in the bus's time of the test (%v to now)", what, at.UTC(), start.UTC())
		}
	}
	topic := harness.Topic("orders", "billing")
	topic.MaxMessages = 4
	tm := harness.Topics(topic)
	b := harness.StartBroker(t, tm)

	fresh, freshHash, err := tenant.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	stale, staleHash, err := tenant.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := harness.GatewayConfig(tm)
	cfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{"acme": {
		Keys: []tenant.Key{
			{ID: "fresh", Hash: freshHash, Expires: start.Add(30 * time.Minute)},
			{ID: "stale", Hash: staleHash, Expires: start.Add(-30 * time.Minute)},
		},
		Publish: []string{"*"}, Read: []string{"*"}, Redrive: []string{"*"}, Ops: true,
	}}}
	cfg.Alarms.Interval, cfg.Alarms.Hold = 100*time.Millisecond, 500*time.Millisecond
	gwClock, wkClock := newWallClock(skew), newWallClock(skew)
	url, reg := startClockedGateway(t, cfg, b, gwClock)
	api := &client{t: t, url: url, key: fresh}

	// Keys expire by the bus's clock: an hour ahead would refuse the fresh
	// key, an hour behind take the stale one.
	keys := func() {
		t.Helper()
		if code, _ := api.post("orders", "k-"+fmt.Sprint(time.Now().UnixNano()), fresh); code != http.StatusAccepted {
			t.Errorf("a key valid for 30 minutes more: %d, want 202", code)
		}
		if code, _ := api.post("orders", "k-stale", stale); code != http.StatusUnauthorized {
			t.Errorf("a key expired 30 minutes ago: %d, want 401", code)
		}
	}
	keys()
	// Duplicates are the bus's: the same id twice is one message.
	p, err := sluice.NewProducer([]string{url}, sluice.WithAPIKey(fresh), sluice.WithProducerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	first, err := p.Publish(context.Background(), "orders", []byte("bad"), sluice.WithID("bad"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.Publish(context.Background(), "orders", []byte("bad"), sluice.WithID("bad"))
	if err != nil || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("the same id again: %+v, %v; want a duplicate of seq %d", again, err, first.Seq)
	}

	// Fill the topic (no worker yet): a 429 raises topic_throttled.
	refused := false
	for i := 0; i < 50 && !refused; i++ {
		code, h := api.post("orders", fmt.Sprintf("fill-%d", i), fresh)
		switch code {
		case http.StatusAccepted:
		case http.StatusTooManyRequests:
			refused = true
			if h.Get("Retry-After") == "" || h.Get(gateway.HeaderAlarm) != alarm.ID(alarm.TopicThrottled, "orders") {
				t.Errorf("429 with Retry-After %q, alarm %q", h.Get("Retry-After"), h.Get(gateway.HeaderAlarm))
			}
		default:
			t.Fatalf("fill %d: %d", i, code)
		}
	}
	if !refused {
		t.Fatal("a topic of 4 messages took 50")
	}
	raised := api.alarm(alarm.TopicThrottled, "orders", false)
	sane("raised at", raised.RaisedAt)
	if jump != 0 {
		gwClock.set(jump)
		wkClock.set(jump)
	}

	// A worker drains the topic, dead-lettering one message: the refusals
	// stop, and the alarm clears after its hold.
	reg2 := prometheus.NewRegistry()
	w, err := sluice.NewWorker(harness.Connect(t, b), "orders", "billing", sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		if m.ID == "bad" {
			return sluice.Permanent(errors.New("cannot be billed"))
		}
		return nil
	}), sluice.WithWorkerClock(wkClock.now), sluice.WithRegisterer(reg2), sluice.WithWorkerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	runWorker(t, w)
	cleared := api.alarm(alarm.TopicThrottled, "orders", true)
	sane("cleared at", *cleared.ClearedAt)
	if cleared.ClearedAt.Before(cleared.RaisedAt.Add(-time.Second)) {
		t.Errorf("cleared at %v, before it was raised at %v", cleared.ClearedAt, cleared.RaisedAt)
	}

	admin, err := sluice.NewAdmin(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin.SetAPIKey(fresh)
	var page sluice.DeadLetterPage
	harness.Eventually(t, 30*time.Second, func() bool {
		page, err = admin.ListDeadLetters(context.Background(), "orders", "billing", 0, 10)
		return err == nil && len(page.DeadLetters) == 1
	}, "the bad message should be dead-lettered (%v)", err)
	if d := page.DeadLetters[0]; d.ID != "bad" || d.Reason != sluice.ReasonPermanent {
		t.Errorf("dead letter %+v", d)
	}
	sane("dead at", page.DeadLetters[0].DeadAt)

	var st status.Status
	api.get("/v1/status", &st)
	sane("status time", st.Time)
	keys()

	// The nodes measured their clocks' offsets (the gateway's live, the
	// worker's as of its last reading of the bus's clock).
	if got := offsetGauge(t, reg, "sluice_gateway_clock_offset_seconds"); (got - gwClock.get()).Abs() > time.Minute {
		t.Errorf("gateway clock offset %v, want about %v", got, gwClock.get())
	}
	if jump == 0 {
		if got := offsetGauge(t, reg2, "sluice_worker_clock_offset_seconds"); (got - skew).Abs() > time.Minute {
			t.Errorf("worker clock offset %v, want about %v", got, skew)
		}
	}
}

// startClockedGateway serves a gateway on clock over its own connection to
// b and waits until it is ready.
func startClockedGateway(t *testing.T, cfg gateway.Config, b *broker.Broker, clock *wallClock) (string, *prometheus.Registry) {
	t.Helper()
	return harness.StartGatewayReg(t, cfg, harness.Connect(t, b), gateway.WithClock(clock.now))
}

// runWorker runs w until the test ends.
func runWorker(t *testing.T, w *sluice.Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// client is a bare HTTP client of one gateway.
type client struct {
	t        *testing.T
	url, key string
}

// post publishes one message with id under key and returns the status.
func (c *client) post(topic, id, key string) (int, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.url+"/v1/topics/"+topic+"/messages", bytes.NewReader([]byte("x")))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set(sluice.HeaderIdempotencyKey, id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// get decodes the JSON answer to GET path.
func (c *client) get(path string, v any) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.url+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
}

// alarm waits until name's alarm for subject is active (or, with cleared,
// among the cleared) at the gateway and returns it.
func (c *client) alarm(name alarm.Name, subject string, cleared bool) alarm.Alarm {
	c.t.Helper()
	id := alarm.ID(name, subject)
	var found *alarm.Alarm
	harness.Eventually(c.t, 30*time.Second, func() bool {
		var v alarm.View
		c.get("/v1/alarms", &v)
		list := v.Active
		if cleared {
			list = v.Cleared
		}
		for _, a := range list {
			if a.ID == id {
				found = &a
				return true
			}
		}
		return false
	}, "alarm %s (cleared %v)", id, cleared)
	return *found
}

// offsetGauge is the clock offset gauge named name on reg.
func offsetGauge(t *testing.T, reg *prometheus.Registry, name string) time.Duration {
	t.Helper()
	return time.Duration(harness.Gauge(t, reg, name) * float64(time.Second))
}

// TestClockJumpsUnderLoad drives steady load through two gateways, one an
// hour ahead of the broker and one an hour behind, to a worker of each
// family likewise skewed, whose handlers fail every fifth message's first
// attempt (so retries are judged against the families' retry_deadline);
// mid-load every clock jumps three hours the other way. The checker
// decides: nothing lost, nothing stored twice, every family got every
// message, no 500, every refusal with Retry-After; and no message was
// dead-lettered (judged on a clock an hour ahead, the deadline would have
// taken every retried one).
func TestClockJumpsUnderLoad(t *testing.T) {
	topic := harness.Topic("orders", families...)
	for name, f := range topic.Families {
		f.MaxAttempts, f.Backoff, f.RetryDeadline = 5, []time.Duration{100 * time.Millisecond}, 30*time.Second
		topic.Families[name] = f
	}
	tm := harness.Topics(topic)
	b := harness.StartBroker(t, tm)
	chk := history.New(families...)
	clocks := map[string]*wallClock{
		"gateway-0": newWallClock(time.Hour), "gateway-1": newWallClock(-time.Hour),
		"billing": newWallClock(time.Hour), "shipping": newWallClock(-time.Hour),
	}
	var urls []string
	for _, name := range []string{"gateway-0", "gateway-1"} {
		url, _ := startClockedGateway(t, harness.GatewayConfig(tm), b, clocks[name])
		urls = append(urls, url)
	}
	nc := harness.Connect(t, b)
	for _, fam := range families {
		harness.RunWorker(t, nc, "orders", fam, func(_ context.Context, m *sluice.Message) error {
			chk.Deliver(fam, harness.DeliveryOf(m))
			if m.Attempt == 1 && m.Seq%5 == 0 {
				return errors.New("first attempts of every fifth message fail")
			}
			return nil
		}, sluice.WithCredit(4), sluice.WithWorkerClock(clocks[fam].now))
	}
	counter := newStatusCounter()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	d := drive{chk: chk, js: js, gateways: urls, load: time.Second, quiet: 2 * time.Second, opts: httpClient(counter)}
	r := d.run(t, func(l *publisher) {
		l.busy(t)
		for _, c := range clocks {
			c.set(-3 * c.get()) // an hour ahead to two behind, and back
		}
	})
	const scenario = "clock skew ±1h, then jumps of 3h (gateways, workers)"
	judge(t, scenario, r)
	checkAnswers(t, scenario, counter)
	for _, fam := range families {
		s, err := js.Stream(context.Background(), sluice.DeadLetterStream("orders", fam))
		if err != nil {
			t.Fatal(err)
		}
		if info, err := s.Info(context.Background()); err != nil || info.State.Msgs != 0 {
			t.Errorf("%s: dead letters %v (%v), want none: every retry came within its deadline", fam, info.State.Msgs, err)
		}
	}
}
