package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/jsbatch"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Below atomicMinR1 messages, a commit to a single-replica topic publishes
// its messages one by one, pipelined. nats-server stages an R1 file
// stream's atomic batch in a file store of its own, made and synced for
// each batch: about 5 ms whatever its size, against about 0.2 ms per message
// (one fsync each) one by one. Replicated topics stage batches in memory,
// and a batch is one Raft proposal: atomic pays from 2 messages, when
// CommitAtomicReplicated allows it at all. (Measured with nats-server
// 2.15.2 on the project's 2-core machine.)
const atomicMinR1 = 32

// never: no commit is that large, so it is published one by one.
const never = MaxCommitBatch + 1

// entry is one message on its way to the bus through a committer.
type entry struct {
	// id is the deduplication id (sluice.TenantDedupID: tenant, key and
	// digest).
	id       string
	msg      *nats.Msg
	deadline time.Time // publish timeout from when it was submitted
	// family: a redrive, for this family only; empty: every family.
	family string

	// Set by the committer before done.Done().
	seq uint64
	dup bool
	err error

	done *sync.WaitGroup
}

// committer is a topic's group commit at one gateway. Messages of
// concurrent requests queue up while earlier commits are in flight; each
// commit takes what has queued (up to CommitBatchMax messages and
// CommitBatchBytes) and stores it with one JetStream atomic batch: one
// durable write, one fsync on a single broker, one Raft proposal on R3.
// Nothing waits for a batch to fill: with fewer than CommitsInFlight
// commits in flight, a message is sent at once.
//
// An atomic batch is all or nothing, so one refused message (a key already
// stored, a full stream) would fail its neighbours. A refused batch is
// therefore published again message by message, each with its own key: each
// message then gets its own answer, and the keys keep any message of the
// batch from being stored twice.
//
// It holds what it uses (commitSettings, commitDeps), not the gateway: it
// stores, proves, classifies and counts a commit, and answers each entry.
type committer struct {
	commitSettings
	commitDeps
	stream string
	// atomicMin: fewer messages are published one by one.
	atomicMin int

	mu sync.Mutex
	q  commitQueue
	// closed: the gateway has stopped; what is submitted now is refused
	// unsent.
	closed bool
	wg     sync.WaitGroup // commit goroutines

	// young: a duplicate's first store may have missed a family whose
	// consumer is younger than this (the topic's duplicate window and a
	// margin); margin allows for the brokers' clocks.
	young, margin time.Duration
}

// commitSettings are a topic's group-commit bounds and what the commit
// must know of the topic.
type commitSettings struct {
	topic    string
	replicas int
	// commitsInFlight, batchMax and batchBytes: CommitsInFlight,
	// CommitBatchMax, CommitBatchBytes.
	commitsInFlight, batchMax, batchBytes int
	// atomicReplicated: CommitAtomicReplicated.
	atomicReplicated bool
	// publishTimeout bounds each entry from its submission.
	publishTimeout  time.Duration
	duplicateWindow time.Duration
	// retryAfterMin and retryAfterMax clamp a refusal's fixed Retry-After.
	retryAfterMin, retryAfterMax time.Duration
}

// commitDeps is what a committer uses of its gateway.
type commitDeps struct {
	// nc publishes atomic batches and reads stored messages; js publishes
	// one by one.
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *zap.Logger
	metrics commitMetrics
	// retryAfter is the topic's computed Retry-After (its drain), for a
	// topic the bus refused as full or busy; shedRetryAfter is a
	// gateway-side shed's.
	retryAfter, shedRetryAfter func() time.Duration
	// interest proves every family's consumer took part in a commit.
	interest *interest
}

// newCommitter is a committer of set's topic using d.
func newCommitter(set commitSettings, d commitDeps) *committer {
	c := &committer{commitSettings: set, commitDeps: d, stream: sluice.StreamName(set.topic), atomicMin: never,
		q:     newCommitQueue(set.commitsInFlight, set.batchMax, set.batchBytes),
		young: set.duplicateWindow + set.publishTimeout + clockMargin}
	if set.replicas > 1 {
		c.margin = clockMargin
	}
	switch {
	case set.replicas <= 1:
		c.atomicMin = atomicMinR1
	case set.atomicReplicated:
		c.atomicMin = 2
	}
	return c
}

// store publishes msg under key (its deduplication id is the tenant, the
// key and the digest of msg: "" is open mode), for family only when set (a
// redrive), and waits for its answer, bounded by the publish timeout from
// now. The receipt gives the key back as sent.
func (c *committer) store(family, tenant, key string, msg *nats.Msg) (Receipt, error) {
	var done sync.WaitGroup
	done.Add(1)
	e := &entry{id: sluice.TenantDedupID(tenant, key, digest(msg)), msg: msg, family: family,
		deadline: time.Now().Add(c.publishTimeout), done: &done}
	c.submit(e)
	done.Wait()
	if e.err != nil {
		return Receipt{}, e.err
	}
	return Receipt{Topic: c.topic, Seq: e.seq, ID: key, Duplicate: e.dup}, nil
}

// submit queues entries; each one's done is called once it has its answer.
func (c *committer) submit(es ...*entry) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		// A handler that outlived the shutdown: nothing is sent.
		for _, e := range es {
			e.err = fmt.Errorf("%w: the gateway is stopping; nothing was sent", errBusUnavailable)
			c.record(false, e.err)
			e.done.Done()
		}
		return
	}
	c.q.push(es...)
	c.startLocked()
	c.mu.Unlock()
}

// startLocked starts commits of what is queued while the queue gives
// batches (fewer than CommitsInFlight in flight).
func (c *committer) startLocked() {
	for {
		batch := c.q.next()
		if batch == nil {
			return // at the bound, or every queued key is in flight: the commits' ends restart this
		}
		c.wg.Go(func() {
			before := c.commit(batch)
			// Acked or failed: the slot and the keys are free; proving
			// the families took part takes a reading of its own.
			c.mu.Lock()
			c.q.done(batch)
			c.startLocked()
			c.mu.Unlock()
			c.settle(batch, before)
		})
	}
}

// close refuses what is submitted from now on and waits until every
// commit has ended (on shutdown).
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	c.interest.stop()
}

// commit stores batch, leaving each entry's seq or error; it returns the
// reading of the families the commit was sent under (nil: nothing sent).
func (c *committer) commit(batch []*entry) *reading {
	now := time.Now()
	var deadline time.Time
	live := batch[:0:0]
	for _, e := range batch {
		if now.After(e.deadline) {
			// Queued for its whole publish timeout; never sent.
			e.err = refuse("publish_window", c.shedRetryAfter(),
				fmt.Errorf("%w: waited %v for the bus behind earlier publishes", errOverloaded, c.publishTimeout))
			continue
		}
		// The newest entry's deadline: each older one is answered by
		// its own (oneByOne), never cut short by another's.
		if e.deadline.After(deadline) {
			deadline = e.deadline
		}
		live = append(live, e)
	}
	if len(live) == 0 {
		return nil
	}
	if !c.nc.IsConnected() {
		err := fmt.Errorf("%w: not connected to any broker (%s)", errBusUnavailable, c.nc.Status())
		for _, e := range live {
			e.err = err
		}
		return nil
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	before := c.interest.latest(ctx)
	if before.err != nil || len(before.missing(nil, c.interest.families)) > 0 {
		// Refuse only on news: the family may be back.
		before = c.interest.fresh(ctx)
	}
	if live = c.refuseMissing(live, before); len(live) == 0 {
		return nil
	}
	start := time.Now()
	defer func() { c.metrics.publishDuration.WithLabelValues(c.topic).Observe(time.Since(start).Seconds()) }()
	if len(live) < c.atomicMin {
		c.oneByOne(ctx, live)
		return before
	}
	c.metrics.commitSize.WithLabelValues(c.topic).Observe(float64(len(live)))
	err := c.atomic(ctx, live)
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
	case errors.As(err, &apiErr):
		// Refused as a whole: nothing of it was stored.
		c.metrics.commitFallbacks.WithLabelValues(c.topic, strconv.Itoa(int(apiErr.ErrorCode))).Inc()
		if c.log.Core().Enabled(zap.DebugLevel) {
			c.log.Debug("atomic batch refused, publishing its messages one by one",
				zap.String("topic", c.topic), zap.Int("messages", len(live)), zap.Error(err))
		}
		c.oneByOne(ctx, live)
	case errors.Is(err, errBusUnavailable):
		for _, e := range live {
			e.err = err
		}
	default:
		err = c.classify(err)
		if errors.Is(err, errOutcomeUnknown) {
			c.log.Warn("batch publish outcome unknown", zap.String("topic", c.topic), zap.Int("messages", len(live)), zap.Error(err))
		}
		for _, e := range live {
			e.err = err
		}
	}
	return before
}

// atomic stores batch as one JetStream atomic batch and sets each entry's
// seq: the batch is stored contiguously.
func (c *committer) atomic(ctx context.Context, batch []*entry) error {
	msgs := make([]*nats.Msg, len(batch))
	for i, e := range batch {
		e.msg.Header.Set(jetstream.MsgIDHeader, e.id)
		e.msg.Header.Set(jetstream.ExpectedStreamHeader, c.stream)
		msgs[i] = e.msg
	}
	first, err := jsbatch.Publish(ctx, c.nc, c.stream, msgs)
	if errors.Is(err, jsbatch.ErrNotSent) {
		return fmt.Errorf("%w: %v", errBusUnavailable, err)
	}
	if err != nil {
		return err
	}
	for i, e := range batch {
		e.seq = first + uint64(i)
	}
	return nil
}

// oneByOne publishes each entry on its own, pipelined, and waits for
// every ack.
func (c *committer) oneByOne(ctx context.Context, batch []*entry) {
	futs := make([]jetstream.PubAckFuture, len(batch))
	for i, e := range batch {
		var err error
		futs[i], err = c.js.PublishMsgAsync(e.msg, jetstream.WithMsgID(e.id), jetstream.WithExpectStream(c.stream))
		if err != nil {
			e.err = c.classifyUnsent(err)
		}
	}
	for i, e := range batch {
		if futs[i] == nil {
			continue
		}
		ectx, cancel := context.WithDeadline(ctx, e.deadline)
		ack, err := awaitAck(ectx, futs[i])
		cancel()
		switch {
		case err != nil:
			e.err = c.classify(err)
		default:
			// A duplicate proves itself: its id holds the digest of
			// what it carries (sluice.DedupID).
			e.seq, e.dup = ack.Sequence, ack.Duplicate
		}
		if errors.Is(e.err, errOutcomeUnknown) {
			c.log.Warn("publish outcome unknown", zap.String("topic", c.topic), zap.String("id", e.id), zap.Error(e.err))
		}
	}
}

// awaitAck waits for f's answer until ctx ends; an answer already in wins
// over the end of ctx, so a stored message is never reported unknown.
func awaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	default:
	}
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
