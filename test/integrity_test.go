package test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// The integrity scenarios: what an operator or the network does to a topic
// (creating it, deleting a family's consumer or the topic's stream, cutting a
// gateway off) while a bounded concurrent publisher has publishes in flight,
// judged by the checker. Readers count a message as reaching a family only
// once its handler succeeded (or it is in the family's dead letters), so a
// message terminated unhandled is caught. After the load, unknown outcomes
// are settled by publishing again with the same key and payload, the
// readers are watched until quiet, and the topic's final state is checked.

// exchange is one request to a gateway as the producers' transport saw it.
type exchange struct {
	host           string
	sent, answered time.Time
	status         int    // 0: no answer
	problem        string // an error answer's problem type
	detail         string
}

// wire is the producers' HTTP transport: it records when each request was
// sent, by idempotency key, and every exchange.
type wire struct {
	next http.RoundTripper

	mu        sync.Mutex
	lastSent  map[string]time.Time
	exchanges []exchange
}

func newWire() *wire {
	return &wire{next: http.DefaultTransport.(*http.Transport).Clone(), lastSent: map[string]time.Time{}}
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	key := r.Header.Get(sluice.HeaderIdempotencyKey)
	ex := exchange{host: r.URL.Host, sent: time.Now()}
	if key != "" {
		w.mu.Lock()
		w.lastSent[key] = ex.sent
		w.mu.Unlock()
	}
	resp, err := w.next.RoundTrip(r)
	ex.answered = time.Now()
	if err == nil {
		ex.status = resp.StatusCode
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
			var p sluice.Problem
			if rerr == nil && json.Unmarshal(body, &p) == nil {
				ex.problem, ex.detail = p.Type, p.Detail
			}
		}
	}
	w.mu.Lock()
	w.exchanges = append(w.exchanges, ex)
	w.mu.Unlock()
	return resp, err
}

// sentAt is when the last request with key was sent: for a publish that
// ended in a 202, the request that got it.
func (w *wire) sentAt(key string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastSent[key]
}

// with lists the exchanges for which keep holds.
func (w *wire) with(keep func(exchange) bool) []exchange {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []exchange
	for _, ex := range w.exchanges {
		if keep(ex) {
			out = append(out, ex)
		}
	}
	return out
}

// producer is an SDK producer for gateways sending through w.
func (w *wire) producer(t *testing.T, gateways []string, opts ...sluice.ProducerOption) *sluice.Producer {
	t.Helper()
	p, err := sluice.NewProducer(gateways, append([]sluice.ProducerOption{
		sluice.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: w})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// answer is what a Publish's result tells the checker, with when the
// request that got a 202 was sent.
func (w *wire) answer(id string, r sluice.Receipt, err error) history.Answer {
	a := answerOf(r, err)
	if a.Outcome == history.OK {
		a.Sent = w.sentAt(id)
	}
	return a
}

// loadSpec shapes a load.
type loadSpec struct {
	gateways    []string
	prefix      string // of every id: prefix + "p" + a number
	concurrency int    // default 4
	batch       int    // lines per NDJSON batch; 0: one message per request
	// timeout bounds one message (all its producer's retries); default 8 s.
	timeout time.Duration
	// retry replaces the producer's retry policy (default 8 attempts,
	// 20 ms to 500 ms).
	retry []sluice.ProducerOption
	pause time.Duration // between one goroutine's publishes; default 5 ms
	// maxMessages and maxTime bound the load (defaults 20,000 and 90 s).
	maxMessages int64
	maxTime     time.Duration
}

// load is a bounded concurrent publisher: it publishes messages, each with
// a payload of its own, through the gateways and records every final answer
// in a checker, until halted or until it has started maxMessages or run
// maxTime (it stops itself).
type load struct {
	spec     loadSpec
	inFlight atomic.Int64
	started  atomic.Int64
	acked    atomic.Int64
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	bounded  atomic.Bool
}

// startLoad starts a load; it is halted when the test ends at the latest.
func startLoad(t *testing.T, chk *history.Checker, w *wire, spec loadSpec) *load {
	t.Helper()
	spec.concurrency = cmp.Or(spec.concurrency, 4)
	spec.timeout = cmp.Or(spec.timeout, 8*time.Second)
	spec.pause = cmp.Or(spec.pause, 5*time.Millisecond)
	spec.maxMessages = cmp.Or(spec.maxMessages, 20_000)
	spec.maxTime = cmp.Or(spec.maxTime, 90*time.Second)
	if spec.retry == nil {
		spec.retry = []sluice.ProducerOption{sluice.WithRetry(8, 20*time.Millisecond, 500*time.Millisecond)}
	}
	l := &load{spec: spec, stop: make(chan struct{})}
	deadline := time.Now().Add(spec.maxTime)
	for range spec.concurrency {
		// A producer each: each moves to another gateway on its own failures.
		p := w.producer(t, spec.gateways, spec.retry...)
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				n := int64(max(spec.batch, 1))
				last := l.started.Add(n)
				if last > spec.maxMessages || time.Now().After(deadline) {
					l.bounded.Store(true)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), spec.timeout)
				l.inFlight.Add(1)
				if spec.batch > 0 {
					l.publishBatch(ctx, chk, p, last-n+1, spec.batch)
				} else {
					id := fmt.Sprintf("%sp%d", spec.prefix, last)
					payload := fmt.Appendf(nil, "%s %016x", id, rand.Uint64())
					r, err := p.Publish(ctx, "orders", payload, sluice.WithID(id))
					a := w.answer(id, r, err)
					l.record(chk, id, payload, a)
				}
				l.inFlight.Add(-1)
				cancel()
				time.Sleep(spec.pause)
			}
		})
	}
	t.Cleanup(l.halt)
	return l
}

func (l *load) record(chk *history.Checker, id string, payload []byte, a history.Answer) {
	chk.Attempted(id, payload, a)
	if a.Outcome == history.OK {
		l.acked.Add(1)
	}
}

// publishBatch publishes messages first.. first+n-1 as one NDJSON batch.
func (l *load) publishBatch(ctx context.Context, chk *history.Checker, p *sluice.Producer, first int64, n int) {
	msgs := make([]sluice.BatchMessage, n)
	for i := range msgs {
		id := fmt.Sprintf("%sp%d", l.spec.prefix, first+int64(i))
		msgs[i] = sluice.BatchMessage{ID: id, Data: fmt.Appendf(nil, "%s %016x", id, rand.Uint64())}
	}
	results, err := p.PublishBatch(ctx, "orders", msgs)
	for i, m := range msgs {
		switch {
		case err == nil:
			l.record(chk, m.ID, m.Data, answerOf(results[i].Receipt, results[i].Err))
		case errors.Is(err, sluice.ErrOutcomeUnknown):
			l.record(chk, m.ID, m.Data, history.Failed(history.Unknown))
		default:
			l.record(chk, m.ID, m.Data, history.Failed(history.Definite))
		}
	}
}

// halt stops the load and waits for the publishes in flight (idempotent).
func (l *load) halt() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// busy waits until a publish is in flight, so that the fault that follows
// strikes under load.
func (l *load) busy(t *testing.T) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, func() bool { return l.inFlight.Load() > 0 || l.bounded.Load() }, "no publish in flight")
	if l.bounded.Load() {
		t.Fatalf("the load reached its bound (%d messages or %v) before the fault", l.spec.maxMessages, l.spec.maxTime)
	}
}

// ackedMore waits until n more publishes than now were acked.
func (l *load) ackedMore(t *testing.T, n int64, why string) {
	t.Helper()
	want := l.acked.Load() + n
	harness.Eventually(t, 45*time.Second, func() bool { return l.acked.Load() >= want || l.bounded.Load() }, "%s: %d more acks", why, n)
	if l.bounded.Load() {
		t.Fatalf("%s: the load reached its bound before %d more acks", why, n)
	}
}

// idNumber is the number in a load's id (prefix + "p" + number).
func idNumber(id string) int {
	i := strings.LastIndexByte(id, 'p')
	n, _ := strconv.Atoi(id[i+1:])
	return n
}

// failure decides whether family's handler fails a delivery (nil: it
// succeeds).
type failure func(family string, m *sluice.Message) error

// handlers run one worker per family that counts a message in the checker
// once its handler succeeded: Deliver (a copy on the family's redrive
// subject as a copy) and Handled.
type handlers struct {
	t      *testing.T
	nc     *nats.Conn
	chk    *history.Checker
	fail   failure
	credit int
	stops  []func()
}

func startHandlers(t *testing.T, nc *nats.Conn, chk *history.Checker, credit int, fail failure) *handlers {
	t.Helper()
	h := &handlers{t: t, nc: nc, chk: chk, fail: fail, credit: credit}
	for _, fam := range chk.Families() {
		h.stops = append(h.stops, h.start(fam))
	}
	return h
}

func (h *handlers) start(fam string) func() {
	log := zaptest.NewLogger(h.t, zaptest.Level(zap.ErrorLevel)).Named(fam) // failing dead letters, not each one
	return harness.RunWorker(h.t, h.nc, "orders", fam, func(_ context.Context, m *sluice.Message) error {
		if h.fail != nil {
			if err := h.fail(fam, m); err != nil {
				return err
			}
		}
		h.chk.Deliver(fam, harness.DeliveryOf(m))
		h.chk.Handled(fam, m.ID)
		return nil
	}, sluice.WithCredit(h.credit), sluice.WithWorkerLogger(log))
}

// restart stops each family's worker (what it holds goes back to the
// family) and starts a new one.
func (h *handlers) restart() {
	for i, fam := range h.chk.Families() {
		h.stops[i]()
		h.stops[i] = h.start(fam)
	}
}

// integrity is one scenario's checker and the means to conclude it.
type integrity struct {
	chk      *history.Checker
	js       jetstream.JetStream // reads the final state
	wire     *wire
	gateways []string // settling publishes through them
	dead     *harness.DeadLetterFollower
	// settleSeen: before settling, wait until the families have nothing
	// pending and settle what they received without publishing it again
	// (a short duplicate window may have passed since).
	settleSeen bool
}

func newIntegrity(js jetstream.JetStream, gateways []string) *integrity {
	chk := history.New(families...)
	return &integrity{chk: chk, js: js, wire: newWire(), gateways: gateways,
		dead: harness.NewDeadLetterFollower(js, "orders", chk)}
}

// start starts a load through the scenario's wire.
func (in *integrity) start(t *testing.T, spec loadSpec) *load {
	t.Helper()
	if spec.gateways == nil {
		spec.gateways = in.gateways
	}
	return startLoad(t, in.chk, in.wire, spec)
}

// conclude halts the loads, settles every unknown outcome by publishing it
// again with its key and payload, waits until the readers have every stored
// message and 3 s passed without a delivery, checks the topic's final state
// and logs and returns the checker's report.
func (in *integrity) conclude(t *testing.T, scenario string, loads ...*load) (history.Report, history.FinalState) {
	t.Helper()
	for _, l := range loads {
		l.halt()
		if l.bounded.Load() {
			t.Errorf("a load reached its bound (%d messages or %v) before the end", l.spec.maxMessages, l.spec.maxTime)
		}
	}
	begin := time.Now()
	if in.settleSeen {
		in.caughtUp(t)
		t.Logf("%d unknown outcomes were delivered: settled without publishing again", in.chk.SettleSeen())
	}
	in.settle(t)
	settled := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	collect := func() {
		if err := in.dead.Collect(ctx); err != nil {
			t.Logf("reading dead letters: %v", err)
		}
	}
	if err := in.chk.Quiesce(ctx, 3*time.Second, 200*time.Millisecond, collect); err != nil {
		t.Fatalf("readers should receive every stored message: %v\n%s", err, in.diagnose())
	}
	quiet := time.Now()
	st := harness.CheckFinalState(t, in.js, "orders", in.chk, 30*time.Second)
	r := in.chk.Report()
	t.Logf("settled in %v, quiet in %v, final state in %v\n%s\n%s\n%s", settled.Sub(begin).Round(time.Millisecond),
		quiet.Sub(settled).Round(time.Millisecond), time.Since(quiet).Round(time.Millisecond), history.Header, r.Row(scenario), r.Notes())
	if r.Acked == 0 {
		t.Error("nothing was acked")
	}
	if p := r.Problems(); len(p) > 0 {
		t.Errorf("%s: %v\n%+v\nmissing e.g. %v", scenario, p, r, in.chk.MissingSample(5))
	}
	return r, st
}

// diagnose describes the topic's stream, its families' consumers and
// where the missing messages are, for a failure.
func (in *integrity) diagnose() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	s, err := in.js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil {
		return fmt.Sprintf("stream: %v", err)
	}
	fmt.Fprintf(&b, "stream: %+v\n", s.CachedInfo().State)
	for _, fam := range families {
		c, err := s.Consumer(ctx, fam)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", fam, err)
			continue
		}
		ci := c.CachedInfo()
		dead, _ := streamState(in.js, sluice.DeadLetterStream("orders", fam))
		fmt.Fprintf(&b, "%s: created %v pending %d ack pending %d redelivered %d waiting %d delivered %+v ack floor %+v; dead letters %+v\n", fam,
			ci.Created, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Delivered, ci.AckFloor, dead)
	}
	for fam, ids := range in.chk.MissingSample(5) {
		for _, id := range ids {
			for _, seq := range in.chk.Receipts(id) {
				m, err := s.GetMsg(ctx, seq)
				if err != nil {
					fmt.Fprintf(&b, "%s misses %s (seq %d): %v\n", fam, id, seq, err)
					continue
				}
				fmt.Fprintf(&b, "%s misses %s (seq %d): in the stream, subject %s, headers %v\n", fam, id, seq, m.Subject, m.Header)
			}
		}
	}
	return b.String()
}

// caughtUp waits until every family's consumer has nothing pending or
// unacked: every stored message was handled (or dead-lettered).
func (in *integrity) caughtUp(t *testing.T) {
	t.Helper()
	var last history.FinalState
	harness.Eventually(t, time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := harness.ReadFinalState(ctx, in.js, "orders", in.chk)
		if err != nil {
			return false
		}
		last = st
		for _, fs := range st.Families {
			if fs.Pending > 0 || fs.AckPending > 0 {
				return false
			}
		}
		return true
	}, "the families should catch up: %+v", &last)
}

// settle publishes every unknown outcome again with its key and payload
// until each is answered.
func (in *integrity) settle(t *testing.T) {
	t.Helper()
	p := in.wire.producer(t, in.gateways, sluice.WithRetry(30, 50*time.Millisecond, time.Second))
	republish := func(ctx context.Context, id string, payload []byte) history.Answer {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		r, err := p.Publish(ctx, "orders", payload, sluice.WithID(id))
		return in.wire.answer(id, r, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 3 {
		if in.chk.Settle(ctx, republish) == 0 {
			return
		}
	}
}

// consumerCreated is when family's consumer was created; zero if it does
// not exist (or did not answer).
func consumerCreated(js jetstream.JetStream, family string) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, sluice.StreamName("orders"), family)
	if err != nil {
		return time.Time{}
	}
	return c.CachedInfo().Created
}

// streamState is the topic stream's state; ok false if it does not exist.
func streamState(js jetstream.JetStream, name string) (jetstream.StreamState, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, false
	}
	return s.CachedInfo().State, true
}
