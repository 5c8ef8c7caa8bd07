package sluice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

const (
	// deadLetterTimeout bounds one try at the durable write of a dead letter.
	deadLetterTimeout = 10 * time.Second
	// lookupTimeout bounds the check for an existing dead letter.
	lookupTimeout = 2 * time.Second
	// maxErrorHeader bounds the last-error text kept on a dead letter.
	maxErrorHeader = 1024
	// A message whose dead letter is refused waits the family's largest
	// retry delay, within these bounds, before it is tried again: the
	// refusal needs an operator (spinning helps nobody), and once the
	// dead-letter stream is fixed the message should go soon.
	minRefusedWait = 5 * time.Second
	maxRefusedWait = 30 * time.Second
	// busHeaderPrefix starts the bus's own headers (Nats-Msg-Id,
	// Nats-Batch-*, Nats-Expected-*, ...).
	busHeaderPrefix = "Nats-"
)

// Dead-letter reasons (the Sluice-Dead-Reason header).
const (
	// ReasonPermanent: the handler returned an error wrapped with Permanent.
	ReasonPermanent = "permanent"
	// ReasonMaxAttempts: the handler failed on the family's last attempt.
	ReasonMaxAttempts = "max_attempts"
	// ReasonRetryDeadline: the handler failed and the next attempt would
	// come later than the family's retry deadline.
	ReasonRetryDeadline = "retry_deadline"
	// ReasonDeliveriesExhausted: the message was delivered max-attempts times
	// without a handler error ending the last one: workers stopped or crashed
	// while holding it, or the handler outran the ack wait. Attempts count
	// deliveries, as JetStream does.
	ReasonDeliveriesExhausted = "deliveries_exhausted"
)

// handle runs the handler on one delivery and settles it: ack, nak with the
// family's backoff, or dead-letter.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg, fam *family, m *workerMetrics) {
	md, err := msg.Metadata()
	if err != nil {
		w.log.Error("delivery without metadata; leaving it to redelivery", zap.Error(err))
		return
	}
	id := messageID(msg.Headers())
	attempt := int(md.NumDelivered)
	if attempt > 1 {
		m.redeliveries.Inc()
		if fam.deadLettered(ctx, md.Sequence.Stream, id) {
			// Copied before, and the Term that should have followed was lost
			// (or the worker died in between): finish the job only.
			if err := msg.TermWithReason("already dead-lettered"); err != nil {
				w.log.Warn("term of a dead-lettered message failed", zap.Error(err))
			}
			m.outcome("dead_lettered")
			return
		}
	}
	pol := fam.policy
	if attempt > pol.maxAttempts {
		w.deadLetter(ctx, msg, md, ReasonDeliveriesExhausted, attempt-1,
			fmt.Errorf("delivered %d times without an ack or a handler error (workers stopped or crashed holding it, or the handler outran the ack wait)", attempt-1), fam, m)
		return
	}
	if id == "" {
		// Stored without an id: published on the bus directly (an admin
		// identity; only gateways and admins may publish to a topic). Its
		// place in the topic stands in, stable across redeliveries.
		id = "seq-" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	message := &Message{
		Topic: w.topic, Family: w.family, ID: id,
		Seq: md.Sequence.Stream, Attempt: attempt, Published: md.Timestamp,
		Data: msg.Data(), Header: userHeaders(msg.Headers()),
	}
	start := time.Now()
	herr := w.call(ctx, msg, pol, message)
	m.handlerSeconds.Observe(time.Since(start).Seconds())

	switch {
	case herr == nil:
		if err := msg.Ack(); err != nil {
			w.log.Warn("ack failed; the message will be redelivered", zap.Uint64("seq", message.Seq), zap.Error(err))
		}
		m.outcome("acked")
	case ctx.Err() != nil:
		// Stopping: hand the message back at once for another worker.
		_ = msg.Nak()
		m.outcome("handed_back")
	case errors.Is(herr, ErrPermanent):
		w.deadLetter(ctx, msg, md, ReasonPermanent, attempt, herr, fam, m)
	case attempt >= pol.maxAttempts:
		w.deadLetter(ctx, msg, md, ReasonMaxAttempts, attempt, herr, fam, m)
	default:
		nak, delay := pol.nakDelay(attempt, pol.delay(attempt))
		// The store time is the bus's: judged by the bus's clock, a worker
		// whose own clock is skewed or jumps neither dead-letters at once
		// nor retries forever.
		if pol.deadline > 0 && w.clock.Age(md.Timestamp)+delay > pol.deadline {
			w.deadLetter(ctx, msg, md, ReasonRetryDeadline, attempt, herr, fam, m)
			return
		}
		w.log.Debug("handler failed; retrying", zap.Uint64("seq", message.Seq), zap.Int("attempt", attempt),
			zap.Duration("delay", delay), zap.Error(herr))
		if err := msg.NakWithDelay(nak); err != nil {
			w.log.Warn("nak failed; the message will be redelivered after the ack wait", zap.Error(err))
		}
		m.outcome("retried")
	}
}

// call runs the handler, reporting progress while it runs so a long handler
// keeps its message, and turning a panic into an error.
func (w *Worker) call(ctx context.Context, msg jetstream.Msg, pol policy, m *Message) (err error) {
	var keepalive sync.WaitGroup
	defer keepalive.Wait()
	stop := make(chan struct{})
	defer close(stop)
	if pol.ackWait > 0 {
		keepalive.Go(func() {
			t := time.NewTicker(max(pol.ackWait/2, 50*time.Millisecond))
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					_ = msg.InProgress()
				}
			}
		})
	}
	defer func() {
		if v := recover(); v != nil {
			w.log.Error("handler panicked", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("handler panic: %v", v)
		}
	}()
	return w.handler.Handle(ctx, m)
}

// deadLetter copies the message with why it died into the family's
// dead-letter stream, durably, and only then terminates it in the topic
// (which counts as its ack there). A failed copy (dead letters full, bus
// unreachable) is retried in place with backoff while the message is kept
// in progress, so the reason and last error are not lost; only a worker stop
// hands it back. A copy the dead-letter stream refuses for good is handed
// back at once (see refusedDeadLetter).
func (w *Worker) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, reason string, attempts int, cause error, fam *family, m *workerMetrics) {
	seq := md.Sequence.Stream
	id := messageID(msg.Headers())
	created := fam.createdAt()
	dl := nats.NewMsg(DeadLetterSubject(w.topic, w.family, seq))
	dl.Data = msg.Data()
	// The bus's headers stay behind: they describe how the original was
	// stored (the dead-letter stream refuses an atomic batch's), except
	// its id, kept as the original id (a redriven message has it already).
	dl.Header = userHeaders(msg.Headers())
	if id != "" {
		dl.Header.Set(HeaderOriginalID, id)
	}
	dl.Header.Set(HeaderOriginalFamilyCreated, created.Format(time.RFC3339Nano))
	dl.Header.Set(HeaderDeadReason, reason)
	dl.Header.Set(HeaderDeadAttempts, strconv.Itoa(attempts))
	dl.Header.Set(HeaderDeadError, headerSafe(cause.Error()))
	dl.Header.Set(HeaderDeadAt, w.clock.Now().UTC().Format(time.RFC3339Nano)) // the bus's clock, as the message's store time
	dl.Header.Set(HeaderDeadFamily, w.family)
	dl.Header.Set(HeaderOriginalTopic, w.topic)
	dl.Header.Set(HeaderOriginalSeq, strconv.FormatUint(seq, 10))
	// The id also makes a repeated copy a duplicate within the window. The
	// seq alone is not the message's: sequences restart when the topic's
	// stream is recreated (and the family with it), so a later message at
	// the same seq must not pass for a repeat.
	dedup := fmt.Sprintf("%s.%s.%d.%d.%s", w.topic, w.family, seq, created.UnixNano(), id)
	bo := backoff{initial: 100 * time.Millisecond, max: 5 * time.Second}
	for try := 0; ; try++ {
		pctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
		_, err := w.js.PublishMsg(pctx, dl, jetstream.WithMsgID(dedup), jetstream.WithExpectStream(DeadLetterStream(w.topic, w.family)))
		cancel()
		if err == nil {
			break
		}
		if refused(err) {
			w.refusedDeadLetter(msg, md, reason, err, fam, m)
			return
		}
		if try == 0 {
			w.log.Error("dead-lettering failed; retrying while holding the message", zap.Uint64("seq", seq), zap.Error(err))
			m.outcome("dead_letter_failed")
		}
		_ = msg.InProgress()
		if !sleep(ctx.Done(), bo.wait(try)) {
			_ = msg.Nak()
			m.outcome("handed_back")
			return
		}
	}
	if err := msg.TermWithReason(reason); err != nil {
		w.log.Warn("term after dead-lettering failed; the redelivery will only be terminated", zap.Error(err))
	}
	w.log.Warn("message dead-lettered", zap.Uint64("seq", seq), zap.String("reason", reason),
		zap.Int("attempts", attempts), zap.Error(cause))
	m.outcome("dead_lettered")
}

// refusedDeadLetter hands back a message whose dead letter the dead-letter
// stream refused for good (too large for it, or a header it does not
// allow): retried in place, it would hold one of the family's credits
// forever, and `credit` of them stop the family. The message stays in its
// topic, never terminated without its dead letter, and comes back after a
// bounded wait; an operator fixes the dead-letter stream meanwhile.
func (w *Worker) refusedDeadLetter(msg jetstream.Msg, md *jetstream.MsgMetadata, reason string, err error, fam *family, m *workerMetrics) {
	wait := fam.policy.refusedWait()
	nak, _ := fam.policy.nakDelay(int(md.NumDelivered), wait)
	w.log.Error("the dead-letter stream refused the message; it stays in the topic and is tried again later",
		zap.Uint64("seq", md.Sequence.Stream), zap.String("dead_letter_stream", DeadLetterStream(w.topic, w.family)),
		zap.String("reason", reason), zap.Duration("retry_in", wait), zap.Error(err))
	if err := msg.NakWithDelay(nak); err != nil {
		w.log.Warn("nak failed; the message will be redelivered after the ack wait", zap.Error(err))
	}
	m.outcome("dead_letter_refused")
}

// refused reports whether err is the bus refusing a publish for good: an
// API error other than 503 (no quorum, stream full: retry) or 408 (timed
// out). Timeouts and missing responders are no API errors.
func refused(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.Code != http.StatusServiceUnavailable && apiErr.Code != http.StatusRequestTimeout
}

// userHeaders is a copy of h without the bus's own headers (Nats-*). They
// say how the message was stored (Nats-Msg-Id, which Message.ID and the
// original id carry; an atomic batch's Nats-Batch-*; Nats-Expected-*), not
// what it is, and copied onto another message they would be taken as
// instructions for that message.
func userHeaders(h nats.Header) nats.Header {
	out := make(nats.Header, len(h))
	for k, v := range h {
		if len(k) < len(busHeaderPrefix) || !strings.EqualFold(k[:len(busHeaderPrefix)], busHeaderPrefix) {
			out[k] = slices.Clone(v)
		}
	}
	return out
}

// headerSafe makes s fit a NATS header value: no CR/LF or other controls,
// at most maxErrorHeader bytes.
func headerSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxErrorHeader {
		s = strings.ToValidUTF8(s[:maxErrorHeader], "")
	}
	return s
}

// messageID is the idempotency key the message was published with; a
// redriven message carries it in HeaderOriginalID (its deduplication id
// is the redrive's).
func messageID(h nats.Header) string {
	if id := h.Get(HeaderOriginalID); id != "" {
		return KeyOf(id)
	}
	return KeyOf(h.Get(HeaderMsgID))
}
