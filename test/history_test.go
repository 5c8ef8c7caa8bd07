package test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// The fault scenarios' history: a bounded concurrent publisher records every
// answer in a checker, readers record every delivery, the fault strikes while
// publishes are in flight, and afterwards unknown outcomes are settled, the
// readers watched until quiet and the bus's final state checked.

// readers are one worker per family recording every delivery in a checker.
type readers struct {
	t      *testing.T
	nc     *nats.Conn
	chk    *history.Checker
	credit int
	slow   time.Duration
	stops  []func() // one per family, as in families
}

var families = []string{"billing", "shipping"}

// startReaders runs a worker of each family on nc (credit each) that records
// every delivery in chk; shipping's handler takes slowShipping per message.
func startReaders(t *testing.T, nc *nats.Conn, chk *history.Checker, credit int, slowShipping time.Duration) *readers {
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
	return harness.RunWorker(rs.t, rs.nc, "orders", fam, func(_ context.Context, m *sluice.Message) error {
		rs.chk.Deliver(fam, harness.DeliveryOf(m)) // a repair copy counts as a copy
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

// answerOf is what a Publish's result tells the checker.
func answerOf(r sluice.Receipt, err error) history.Answer {
	switch {
	case err == nil:
		return history.Ack(r.Seq, r.Duplicate)
	case errors.Is(err, sluice.ErrOutcomeUnknown):
		return history.Failed(history.Unknown)
	default:
		return history.Failed(history.Definite)
	}
}

// statusCounter is an HTTP transport that counts the gateways' answers by
// status, the requests that got none, and the requests in flight per host.
type statusCounter struct {
	mu       sync.Mutex
	statuses map[int]int
	failed   int
	// noRetryAfter counts 429 and 503 answers without Retry-After.
	noRetryAfter int
	inFlight     map[string]int // host:port -> requests sent and not answered
	next         http.RoundTripper
}

func newStatusCounter() *statusCounter {
	return &statusCounter{statuses: map[int]int{}, inFlight: map[string]int{},
		next: http.DefaultTransport.(*http.Transport).Clone()}
}

func (c *statusCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.inFlight[r.URL.Host]++
	c.mu.Unlock()
	resp, err := c.next.RoundTrip(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight[r.URL.Host]--
	if err != nil {
		c.failed++
		return nil, err
	}
	c.statuses[resp.StatusCode]++
	if (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) && resp.Header.Get("Retry-After") == "" {
		c.noRetryAfter++
	}
	return resp, nil
}

// answers is how many answers of each status came so far, and how many
// 429 and 503 answers had no Retry-After.
func (c *statusCounter) answers() (map[int]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.statuses), c.noRetryAfter
}

// noAnswer is how many requests got no answer so far.
func (c *statusCounter) noAnswer() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// inFlightTo is how many requests to host are waiting for an answer.
func (c *statusCounter) inFlightTo(host string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight[host]
}

// publisher is a bounded concurrent load: concurrency goroutines publish
// through the gateways, each message with a payload of its own, and record
// every final answer in a checker, until halted, or until maxMessages were
// started or maxTime passed (it stops itself).
type publisher struct {
	concurrency int
	inFlight    atomic.Int64
	started     atomic.Int64
	stop        chan struct{}
	stopOnce    sync.Once
	wg          sync.WaitGroup
	bounded     atomic.Bool // stopped itself at a bound
}

const (
	loadConcurrency = 4
	loadMaxMessages = 50_000
	loadMaxTime     = 3 * time.Minute
)

// startPublisher starts the load; ids are prefix + "p" + a number.
func startPublisher(t *testing.T, chk *history.Checker, gateways []string, prefix string, opts ...sluice.ProducerOption) *publisher {
	t.Helper()
	l := &publisher{concurrency: loadConcurrency, stop: make(chan struct{})}
	deadline := time.Now().Add(loadMaxTime)
	for range l.concurrency {
		// A producer each: each moves to the other gateway on its own failures.
		p, err := sluice.NewProducer(gateways, append([]sluice.ProducerOption{sluice.WithRetry(8, 20*time.Millisecond, 500*time.Millisecond)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				n := l.started.Add(1)
				if n > loadMaxMessages || time.Now().After(deadline) {
					l.bounded.Store(true)
					return
				}
				id := fmt.Sprintf("%sp%d", prefix, n)
				payload := fmt.Appendf(nil, "%s %016x", id, rand.Uint64())
				ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
				l.inFlight.Add(1)
				r, err := p.Publish(ctx, "orders", payload, sluice.WithID(id))
				l.inFlight.Add(-1)
				cancel()
				chk.Attempted(id, payload, answerOf(r, err))
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	t.Cleanup(l.halt) // also when the fault fails the test
	return l
}

// halt stops the load and waits for the publishes in flight (idempotent).
func (l *publisher) halt() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// busy waits until at least one publish is in flight, so that the fault
// that follows strikes under load, and returns how many are.
func (l *publisher) busy(t *testing.T) int64 {
	t.Helper()
	var n int64
	harness.Eventually(t, 10*time.Second, func() bool {
		n = l.inFlight.Load()
		return n > 0 || l.bounded.Load()
	}, "no publish in flight")
	if l.bounded.Load() {
		t.Fatalf("the publisher reached its bound (%d messages or %v) before the fault", loadMaxMessages, loadMaxTime)
	}
	return n
}

// drive is one scenario's run: load through gateways with a fault, then
// settling, quiescing and the final state.
type drive struct {
	chk      *history.Checker
	js       jetstream.JetStream // reads the final state
	gateways []string
	prefix   string        // of every id
	load     time.Duration // of load before and after the fault
	quiet    time.Duration // watched for late deliveries after none is missing
	// collect (if not nil) records the deliveries of readers outside the
	// process; it is called until none is missing.
	collect func()
	// diagnose (if not nil) describes the bus when deliveries are missing.
	diagnose func() string
	opts     []sluice.ProducerOption
}

// run starts the publisher, lets it publish for d.load, calls fault (which
// strikes after l.busy), publishes d.load more and halts the load; then it
// settles every unknown outcome by publishing again with the same id,
// waits until the readers have every stored message and d.quiet has passed
// without deliveries, checks the topic's final state, and returns the
// checker's report.
func (d drive) run(t *testing.T, fault func(l *publisher)) history.Report {
	t.Helper()
	l := startPublisher(t, d.chk, d.gateways, d.prefix, d.opts...)
	loadStart := time.Now()
	time.Sleep(d.load)
	faultBegin := time.Now()
	fault(l)
	faultEnd := time.Now()
	time.Sleep(d.load)
	l.halt()
	d.chk.Phases(loadStart, faultBegin, faultEnd, time.Now())
	if l.bounded.Load() {
		t.Errorf("the publisher reached its bound (%d messages or %v) before the end", loadMaxMessages, loadMaxTime)
	}
	begin := time.Now()
	d.settle(t)
	settled := time.Now()
	poll := 50 * time.Millisecond
	if d.collect != nil {
		poll = time.Second // reading the readers' logs is not free
	}
	// Redeliveries of deliveries lost while clients move follow the
	// families' expiry (ack wait + backoff: 31 s, 35 s, 60 s in the
	// cluster configs): allow for three in a row.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := d.chk.Quiesce(ctx, d.quiet, poll, d.collect); err != nil {
		state := ""
		if d.diagnose != nil {
			state = d.diagnose()
		}
		t.Fatalf("readers should receive every stored message: %v\n%s", err, state)
	}
	quiesced := time.Now()
	harness.CheckFinalState(t, d.js, "orders", d.chk, 30*time.Second)
	t.Logf("after the load (%d publishes started): settled in %v, quiet in %v, final state in %v", min(l.started.Load(), loadMaxMessages),
		settled.Sub(begin).Round(time.Millisecond), quiesced.Sub(settled).Round(time.Millisecond), time.Since(quiesced).Round(time.Millisecond))
	return d.chk.Report()
}

// settle publishes every unknown outcome again with its id and payload,
// within the topic's duplicate window, until each is answered.
func (d drive) settle(t *testing.T) {
	t.Helper()
	p, err := sluice.NewProducer(d.gateways, append([]sluice.ProducerOption{sluice.WithRetry(30, 50*time.Millisecond, time.Second)}, d.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	republish := func(ctx context.Context, id string, payload []byte) history.Answer {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return answerOf(p.Publish(ctx, "orders", payload, sluice.WithID(id)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 3 { // an answer still unknown is asked again; the report counts what stays unsettled
		if d.chk.Settle(ctx, republish) == 0 {
			return
		}
	}
}

// httpClient makes producers send through c.
func httpClient(c *statusCounter) []sluice.ProducerOption {
	return []sluice.ProducerOption{sluice.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: c})}
}

// judge fails the test when nothing of scenario was acked or the report
// has problems, and returns its row of the checker table.
func judge(t *testing.T, scenario string, r history.Report) string {
	t.Helper()
	if r.Acked == 0 {
		t.Fatal("nothing was acked")
	}
	if p := r.Problems(); len(p) > 0 {
		t.Errorf("%s: %v\n%+v", scenario, p, r)
	}
	row := r.Row(scenario)
	t.Log(row)
	tableRow(t, row)
	return row
}

// tableRow appends row to the file SLUICE_CHAOS_TABLE names, if set: make
// chaos prints every scenario's row from it as one table.
func tableRow(t *testing.T, row string) {
	t.Helper()
	path := os.Getenv("SLUICE_CHAOS_TABLE")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("chaos table: %v", err)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		row = history.Header + "\n" + row
	}
	if _, err := fmt.Fprintln(f, row); err != nil {
		t.Errorf("chaos table %s: %v", path, err)
	}
}

// checkAnswers fails the test when a gateway answered a 5xx other than 503,
// or a 429 or 503 without Retry-After, and logs the answers by status.
func checkAnswers(t *testing.T, scenario string, c *statusCounter) {
	t.Helper()
	statuses, noRetryAfter := c.answers()
	t.Logf("%s: answers by status %v, no answer %d", scenario, statuses, c.noAnswer())
	for status, n := range statuses {
		if status >= 500 && status != 503 {
			t.Errorf("%s: %d answers with status %d", scenario, n, status)
		}
	}
	if noRetryAfter > 0 {
		t.Errorf("%s: %d 429/503 answers without Retry-After", scenario, noRetryAfter)
	}
}
