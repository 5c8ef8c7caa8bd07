package sluice

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/pkg/sluice/busclock"
	"github.com/sluicebus/sluice/pkg/sluice/internal/credit"
)

// ErrFamilyNotFound means the family's durable consumer does not exist.
var ErrFamilyNotFound = errors.New("sluice: family not found")

// Worker is one member of a family: it pulls the family's messages with
// credit (it never holds more than WithCredit messages, pulled or being
// handled), runs the handler on each, and acks, retries or dead-letters it.
// Several workers of one family, in one process or many, share the work.
type Worker struct {
	js      jetstream.JetStream
	topic   string
	family  string
	handler Handler

	credit     int
	pullExpiry time.Duration
	log        *zap.Logger
	reg        prometheus.Registerer
	// clock is the bus's clock: retry deadlines and dead-letter times are
	// judged and written in it (see package busclock).
	clock *busclock.Clock

	started atomic.Bool
	// warnedOffset is the clock offset last warned about (ns).
	warnedOffset atomic.Int64
	drainOnce    sync.Once
	draining     chan struct{} // closed by Drain
	done         chan struct{} // closed when Run returns
}

// WorkerOption configures a Worker.
type WorkerOption func(*Worker) error

// WithCredit sets how many messages the worker may hold at once, counting
// those asked for and those being handled (default 16). Each is handled in
// its own goroutine, so this is also the worker's concurrency.
func WithCredit(n int) WorkerOption {
	return func(w *Worker) error {
		if n < 1 {
			return fmt.Errorf("%w: credit must be at least 1", ErrInvalidOption)
		}
		w.credit = n
		return nil
	}
}

// WithMiddleware wraps the handler; the first middleware is the outermost.
func WithMiddleware(mw ...Middleware) WorkerOption {
	return func(w *Worker) error {
		w.handler = Chain(w.handler, mw...)
		return nil
	}
}

// WithWorkerLogger sets the logger (default: none).
func WithWorkerLogger(l *zap.Logger) WorkerOption {
	return func(w *Worker) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		w.log = l
		return nil
	}
}

// WithRegisterer registers the worker's metrics on reg (default: none).
// Workers sharing a registerer share the metrics.
func WithRegisterer(reg prometheus.Registerer) WorkerOption {
	return func(w *Worker) error {
		w.reg = reg
		return nil
	}
}

// WithPullExpiry sets how long one pull request waits on the broker for
// messages (default 1 s). Drain waits at most this long for open pulls: a
// draining worker never cancels a pull, because a message the broker has just sent to a
// cancelled pull would wait a whole ack wait before redelivery.
func WithPullExpiry(d time.Duration) WorkerOption {
	return func(w *Worker) error {
		if d < 100*time.Millisecond {
			return fmt.Errorf("%w: pull expiry must be at least 100ms", ErrInvalidOption)
		}
		w.pullExpiry = d
		return nil
	}
}

// WithWorkerClock sets the worker's wall clock (default time.Now). The
// worker judges retry deadlines and stamps dead letters in the bus's clock,
// read from the broker's answers and advanced by the monotonic clock, so
// this clock only gives sluice_worker_clock_offset_seconds and stands in
// for the bus's with a server too old to tell its time. For tests of a
// skewed or jumping clock.
func WithWorkerClock(now func() time.Time) WorkerOption {
	return func(w *Worker) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		w.clock.SetWall(now)
		return nil
	}
}

// busClockRefresh is how often a worker reads the bus's clock again: often
// enough to follow a change of the broker that answers (its clock may
// differ by what NTP leaves) and the monotonic clock's drift (parts per
// million), rarely enough to cost nothing.
const busClockRefresh = time.Minute

// NewWorker returns a worker of family on topic over conn. It does no I/O;
// Run looks the family up and starts pulling.
func NewWorker(conn *nats.Conn, topic, family string, h Handler, opts ...WorkerOption) (*Worker, error) {
	if conn == nil || h == nil {
		return nil, fmt.Errorf("%w: a connection and a handler are required", ErrInvalidOption)
	}
	if err := ValidateName(topic); err != nil {
		return nil, fmt.Errorf("%w: topic: %v", ErrInvalidOption, err)
	}
	if err := ValidateName(family); err != nil {
		return nil, fmt.Errorf("%w: family: %v", ErrInvalidOption, err)
	}
	js, err := jetstream.New(conn)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		js: js, topic: topic, family: family, handler: h,
		credit: 16, pullExpiry: time.Second, log: zap.NewNop(), clock: busclock.New(nil),
		draining: make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, o := range opts {
		if err := o(w); err != nil {
			return nil, err
		}
	}
	w.log = w.log.With(zap.String("topic", topic), zap.String("family", family))
	return w, nil
}

// policy is the family's retry policy, read from its consumer's metadata.
type policy struct {
	maxAttempts  int
	curve        string // schedule, exponential, linear
	backoff      []time.Duration
	initial, max time.Duration
	jitter       bool
	deadline     time.Duration
	ackWait      time.Duration
	// expiry is the consumer's BackOff: when the server redelivers a
	// message whose attempt k expired (ack wait + the curve's delay).
	expiry []time.Duration
}

// nakDelay is what to nak with so that the server redelivers after wait.
// With a BackOff the server counts a nak's delay from its redelivery
// deadline for that attempt, BackOff[k-1], minus AckWait (= BackOff[0]):
// the wait would come out BackOff[k-1]-BackOff[0] longer than asked. The
// offset is taken off here; a wait shorter than the offset (a small
// jittered draw) is rounded up to it.
func (p policy) nakDelay(attempt int, wait time.Duration) (nak, actual time.Duration) {
	if len(p.expiry) == 0 {
		return wait, wait
	}
	offset := p.expiry[min(max(attempt-1, 0), len(p.expiry)-1)] - p.expiry[0]
	if wait-offset < time.Millisecond {
		return time.Millisecond, offset + time.Millisecond
	}
	return wait - offset, wait
}

// delay is the wait before the attempt after `attempt` (1-based), with the
// family's jitter.
func (p policy) delay(attempt int) time.Duration {
	d := RetryDelay(p.curve, p.backoff, p.initial, p.max, attempt)
	if p.jitter && d > 0 {
		d = rand.N(d)
	}
	return d
}

// RetryDelay is a family's wait before the attempt after `attempt`
// (1-based), before jitter: for curve "exponential" initial doubled per
// attempt up to max, for "linear" attempt*initial up to max, otherwise
// (the "schedule") the attempt's entry of schedule, its last entry repeated.
// Workers apply it to handler errors; brokers to ack-wait expiry.
func RetryDelay(curve string, schedule []time.Duration, initial, maxDelay time.Duration, attempt int) time.Duration {
	var d time.Duration
	switch curve {
	case "exponential":
		d = initial
		for i := 1; i < attempt && d < maxDelay; i++ {
			d *= 2
		}
		d = min(d, maxDelay)
	case "linear":
		d = min(maxDelay, time.Duration(attempt)*initial)
	default:
		if len(schedule) > 0 {
			d = schedule[min(attempt-1, len(schedule)-1)]
		}
	}
	return d
}

// refusedWait is how long a message waits after its dead letter was
// refused: the family's largest retry delay, within minRefusedWait and
// maxRefusedWait.
func (p policy) refusedWait() time.Duration {
	largest := p.max
	if p.curve != "exponential" && p.curve != "linear" {
		largest = 0
		for _, d := range p.backoff {
			largest = max(largest, d)
		}
	}
	return min(max(largest, minRefusedWait), maxRefusedWait)
}

func readPolicy(cfg jetstream.ConsumerConfig) (policy, error) {
	p := policy{ackWait: cfg.AckWait, expiry: cfg.BackOff}
	if v := cfg.Metadata[MetadataAckWait]; v != "" {
		// With a BackOff the consumer's AckWait is its first entry (ack
		// wait plus the first retry delay); the family's own is here.
		d, err := time.ParseDuration(v)
		if err != nil {
			return p, fmt.Errorf("consumer %s: bad %s %q", cfg.Durable, MetadataAckWait, v)
		}
		p.ackWait = d
	}
	ma, ok := cfg.Metadata[MetadataMaxAttempts]
	if !ok {
		return p, fmt.Errorf("consumer %s has no %s metadata: not provisioned by a Sluice broker", cfg.Durable, MetadataMaxAttempts)
	}
	n, err := strconv.Atoi(ma)
	if err != nil || n < 1 {
		return p, fmt.Errorf("consumer %s: bad %s %q", cfg.Durable, MetadataMaxAttempts, ma)
	}
	p.maxAttempts = n
	p.curve = cfg.Metadata[MetadataBackoffCurve]
	if p.curve == "" {
		p.curve = "schedule" // a family provisioned before curves existed
	}
	durations := map[string]*time.Duration{
		MetadataBackoffInitial: &p.initial, MetadataBackoffMax: &p.max, MetadataRetryDeadline: &p.deadline,
	}
	for key, dst := range durations {
		if v := cfg.Metadata[key]; v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return p, fmt.Errorf("consumer %s: bad %s %q", cfg.Durable, key, v)
			}
			*dst = d
		}
	}
	p.jitter = cfg.Metadata[MetadataBackoffJitter] == "true"
	if bo := cfg.Metadata[MetadataBackoff]; bo != "" {
		for _, s := range strings.Split(bo, ",") {
			d, err := time.ParseDuration(s)
			if err != nil {
				return p, fmt.Errorf("consumer %s: bad %s %q", cfg.Durable, MetadataBackoff, bo)
			}
			p.backoff = append(p.backoff, d)
		}
	}
	return p, nil
}

// family is what a worker knows of its family once running.
type family struct {
	topic, name string
	policy      policy
	deadLetters jetstream.Stream
	log         *zap.Logger
	// created is when the family's consumer was created (Unix ns). A seq
	// names a message only together with it: deleting a topic's stream
	// deletes its consumers, and provisioning it again restarts the
	// sequences and creates the consumers anew.
	created atomic.Int64
	// reread is set by a failed pull (the consumer may have been deleted
	// and created again): created is read again before the next pull.
	reread atomic.Bool
}

func (f *family) createdAt() time.Time { return time.Unix(0, f.created.Load()).UTC() }

// deadLettered reports whether the message at seq with idempotency key id
// is already in the family's dead letters: whether the last dead letter
// of its seq is its copy. A failed lookup answers false: the handler then
// runs again, which at-least-once delivery allows.
func (f *family) deadLettered(ctx context.Context, seq uint64, id string) bool {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	subj := DeadLetterSubject(f.topic, f.name, seq)
	dl, err := f.deadLetters.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			f.log.Warn("dead-letter lookup failed", zap.String("subject", subj), zap.Error(err))
		}
		return false
	}
	return f.isCopy(dl.Header, id)
}

// isCopy reports whether the dead letter with headers h, found under a
// message's seq, is that message's copy rather than one of an older
// message at the same seq (before the topic's stream was recreated): its
// original id must be the message's, and the family's creation too. A dead
// letter written before HeaderOriginalFamilyCreated existed matches on a
// non-empty id only, and not when it died before the family was created.
func (f *family) isCopy(h nats.Header, id string) bool {
	if h.Get(HeaderOriginalID) != id {
		return false
	}
	created := f.created.Load()
	if v := h.Get(HeaderOriginalFamilyCreated); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		return err == nil && t.UnixNano() == created
	}
	if id == "" {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, h.Get(HeaderDeadAt))
	return err != nil || at.UnixNano() >= created
}

// rereadFamily reads the family's consumer again after a failed pull (it
// may have been deleted with its topic's stream and provisioned again) and
// every busClockRefresh, for the bus's clock its answer carries.
func (w *Worker) rereadFamily(ctx context.Context, cons jetstream.Consumer, fam *family, m *workerMetrics) error {
	sent := time.Now()
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	w.readBusClock(info.TimeStamp, sent, time.Now(), m)
	if c := info.Created.UnixNano(); fam.created.Swap(c) != c {
		w.log.Warn("the family was created anew on the bus (its topic's stream or its consumer was deleted and provisioned again)",
			zap.Time("created", info.Created))
	}
	fam.reread.Store(false)
	return nil
}

// clockWarn is the offset from the bus's clock past which a worker warns:
// more than NTP leaves, so the host's clock is not kept.
const clockWarn = time.Second

// readBusClock records the bus's time from a consumer info answer (see
// busclock.Clock.Observe) and exports this worker's offset from it; an offset
// past clockWarn is logged when it appears or moves by clockWarn.
func (w *Worker) readBusClock(ts, sent, recv time.Time, m *workerMetrics) {
	offset, ok := w.clock.Observe(ts, sent, recv)
	if !ok {
		return
	}
	m.clockOffset.Set(offset.Seconds())
	if last := time.Duration(w.warnedOffset.Load()); (offset.Abs() >= clockWarn) && (offset-last).Abs() >= clockWarn {
		w.warnedOffset.Store(int64(offset))
		w.log.Warn("this host's clock is off the bus's: retry deadlines and dead-letter times use the bus's clock; keep the host's in sync (NTP)",
			zap.Duration("offset", offset.Round(time.Millisecond)))
	}
}

// event is what pulls and handlers report to the owner loop.
type event struct {
	pullEnded bool
	unused    int   // with pullEnded
	err       error // with pullEnded
}

// Run pulls and handles messages until ctx is done (messages being handled
// see their context cancelled and are handed back to the family, which uses
// up one of their attempts: stop with Drain to avoid that) or Drain
// completes. It returns nil after a drain or cancellation, an error if the
// family cannot be found.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: Run called twice", ErrInvalidOption)
	}
	defer close(w.done)
	sent := time.Now()
	cons, err := w.js.Consumer(ctx, StreamName(w.topic), w.family)
	recv := time.Now()
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("%w: %s", ErrTopicNotFound, w.topic)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return fmt.Errorf("%w: %s/%s", ErrFamilyNotFound, w.topic, w.family)
	case err != nil:
		return fmt.Errorf("sluice: worker %s/%s: %w", w.topic, w.family, err)
	}
	pol, err := readPolicy(cons.CachedInfo().Config)
	if err != nil {
		return fmt.Errorf("sluice: worker %s/%s: %w", w.topic, w.family, err)
	}
	dlq, err := w.js.Stream(ctx, DeadLetterStream(w.topic, w.family))
	if err != nil {
		return fmt.Errorf("sluice: worker %s/%s: dead-letter stream: %w", w.topic, w.family, err)
	}
	fam := &family{topic: w.topic, name: w.family, policy: pol, deadLetters: dlq, log: w.log}
	fam.created.Store(cons.CachedInfo().Created.UnixNano())
	m := newWorkerMetrics(w.reg, w.topic, w.family)
	w.readBusClock(cons.CachedInfo().TimeStamp, sent, recv, m)
	m.creditLimit.Add(float64(w.credit))
	defer m.creditLimit.Sub(float64(w.credit))

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	win := credit.NewWindow(w.credit)
	events := make(chan event, w.credit+1)
	drainReq := w.draining
	draining := false
	failures := 0
	var retryTimer <-chan time.Time
	w.log.Info("worker started", zap.Int("credit", w.credit), zap.Int("max_attempts", pol.maxAttempts))

	for {
		if draining && win.Used() == 0 {
			w.log.Info("worker drained")
			return nil
		}
		if !draining && retryTimer == nil {
			if n := win.NextPull(); n > 0 {
				win.StartPull(n)
				m.creditUsed.Add(float64(n))
				wg.Go(func() { w.pull(runCtx, &wg, cons, n, fam, m, events) })
			}
		}
		select {
		case <-ctx.Done():
			// Stop: cancel pulls and handlers, wait for them, return.
			cancel()
			for win.Used() > 0 {
				w.account(win, m, <-events)
			}
			w.log.Info("worker stopped")
			return nil
		case <-drainReq:
			draining, drainReq = true, nil // stop pulling; finish what is held
		case <-retryTimer:
			retryTimer = nil
		case ev := <-events:
			w.account(win, m, ev)
			if ev.pullEnded && ev.err != nil {
				failures++
				wait := backoff{initial: 100 * time.Millisecond, max: 5 * time.Second}.wait(failures)
				w.log.Warn("pull failed", zap.Error(ev.err), zap.Duration("retry_in", wait))
				retryTimer = time.After(wait)
			} else if ev.pullEnded {
				failures = 0
			}
		}
	}
}

func (w *Worker) account(win *credit.Window, m *workerMetrics, ev event) {
	if ev.pullEnded {
		win.EndPull(ev.unused)
		m.creditUsed.Sub(float64(ev.unused))
		return
	}
	win.Finish()
	m.creditUsed.Dec()
}

// pull asks for n messages and starts a handler goroutine for each; it
// reports one event per message handled and one when the pull ends.
func (w *Worker) pull(ctx context.Context, wg *sync.WaitGroup, cons jetstream.Consumer, n int, fam *family, m *workerMetrics, events chan<- event) {
	pctx, cancel := context.WithTimeout(ctx, w.pullExpiry)
	defer cancel()
	var err error
	if fam.reread.Load() || w.clock.Stale(busClockRefresh) {
		err = w.rereadFamily(pctx, cons, fam, m)
	}
	got := 0
	if err == nil {
		got, err = w.fetch(ctx, wg, cons, n, fam, m, events)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) {
		err = nil // an expired or stopped pull is not a failure
	}
	if err != nil {
		fam.reread.Store(true)
	}
	events <- event{pullEnded: true, unused: n - got, err: err}
}

// fetch pulls up to n messages, the broker holding the pull for
// pullExpiry, and starts a handler goroutine for each. The client waits for
// the broker's end of the pull (nats.go waits a second past the expiry):
// a pull the client gave up on first would leave a message the broker sent
// near the expiry, delayed on the way, unhandled for a whole ack wait
// (nats.go's FetchContext gives the broker 90% of the context's time, a
// margin of 100 ms at 1 s). For the same reason a stopping worker (Run's
// context done) does not drop its pull: it hands back at once what the
// pull still brings, for another worker, so Run returns within a pull's
// expiry.
func (w *Worker) fetch(ctx context.Context, wg *sync.WaitGroup, cons jetstream.Consumer, n int, fam *family, m *workerMetrics,
	events chan<- event) (got int, err error) {
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(w.pullExpiry))
	if err != nil {
		return 0, err
	}
	for msg := range batch.Messages() {
		if ctx.Err() != nil {
			_ = msg.Nak()
			m.outcome("handed_back")
			continue
		}
		got++
		wg.Go(func() {
			w.handle(ctx, msg, fam, m)
			events <- event{}
		})
	}
	return got, batch.Error()
}

// Drain stops pulling, lets open pulls expire, waits until every held
// message is handled and Run has returned, or until ctx ends (then cancel
// Run's context to stop at once). Safe to call more than once.
func (w *Worker) Drain(ctx context.Context) error {
	w.drainOnce.Do(func() { close(w.draining) })
	if !w.started.Load() {
		return nil
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
