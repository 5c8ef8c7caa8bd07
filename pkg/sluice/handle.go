package sluice

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

const (
	// deadLetterTimeout bounds the durable write of one dead letter.
	deadLetterTimeout = 10 * time.Second
	// maxErrorHeader bounds the last-error text kept on a dead letter.
	maxErrorHeader = 1024
)

// Dead-letter reasons (the Sluice-Dead-Reason header).
const (
	ReasonPermanent        = "permanent"
	ReasonMaxAttempts      = "max_attempts"
	ReasonAckWaitExhausted = "ack_wait_exhausted"
)

// handle runs the handler on one delivery and settles it: ack, nak with the
// family's backoff, or dead-letter.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg, pol policy, m *workerMetrics) {
	md, err := msg.Metadata()
	if err != nil {
		w.log.Error("delivery without metadata; leaving it to redelivery", zap.Error(err))
		return
	}
	attempt := int(md.NumDelivered)
	if attempt > 1 {
		m.redeliveries.Inc()
	}
	if attempt > pol.maxAttempts {
		// The previous attempt was the last and it neither acked nor failed
		// (the worker died or ran past the ack wait).
		w.deadLetter(msg, md, ReasonAckWaitExhausted, attempt-1,
			fmt.Errorf("attempt %d of %d was not acknowledged within the ack wait", attempt-1, pol.maxAttempts), pol, m)
		return
	}
	message := &Message{
		Topic: w.topic, Family: w.family, ID: msg.Headers().Get(HeaderMsgID),
		Seq: md.Sequence.Stream, Attempt: attempt, Published: md.Timestamp,
		Data: msg.Data(), Header: msg.Headers(),
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
		w.deadLetter(msg, md, ReasonPermanent, attempt, herr, pol, m)
	case attempt >= pol.maxAttempts:
		w.deadLetter(msg, md, ReasonMaxAttempts, attempt, herr, pol, m)
	default:
		delay := pol.delay(attempt)
		w.log.Debug("handler failed; retrying", zap.Uint64("seq", message.Seq), zap.Int("attempt", attempt),
			zap.Duration("delay", delay), zap.Error(herr))
		if err := msg.NakWithDelay(delay); err != nil {
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
// (which counts as its ack there). If the copy fails the message is naked
// and comes back, to be dead-lettered on its next delivery.
func (w *Worker) deadLetter(msg jetstream.Msg, md *jetstream.MsgMetadata, reason string, attempts int, cause error, pol policy, m *workerMetrics) {
	dl := nats.NewMsg(DeadLetterSubject(w.topic, w.family))
	dl.Data = msg.Data()
	for k, v := range msg.Headers() {
		if k == HeaderMsgID {
			dl.Header[HeaderOriginalID] = v
			continue
		}
		dl.Header[k] = v
	}
	dl.Header.Set(HeaderDeadReason, reason)
	dl.Header.Set(HeaderDeadAttempts, strconv.Itoa(attempts))
	dl.Header.Set(HeaderDeadError, headerSafe(cause.Error()))
	dl.Header.Set(HeaderDeadAt, time.Now().UTC().Format(time.RFC3339Nano))
	dl.Header.Set(HeaderDeadFamily, w.family)
	dl.Header.Set(HeaderOriginalTopic, w.topic)
	dl.Header.Set(HeaderOriginalSeq, strconv.FormatUint(md.Sequence.Stream, 10))

	ctx, cancel := context.WithTimeout(context.Background(), deadLetterTimeout)
	defer cancel()
	// The id makes a repeated copy (after a crash between copy and term) a duplicate.
	id := fmt.Sprintf("%s.%s.%d", w.topic, w.family, md.Sequence.Stream)
	if _, err := w.js.PublishMsg(ctx, dl, jetstream.WithMsgID(id), jetstream.WithExpectStream(DeadLetterStream(w.topic, w.family))); err != nil {
		w.log.Error("dead-lettering failed; the message stays in the topic and comes back",
			zap.Uint64("seq", md.Sequence.Stream), zap.Error(err))
		_ = msg.NakWithDelay(pol.delay(attempts))
		m.outcome("dead_letter_failed")
		return
	}
	if err := msg.TermWithReason(reason); err != nil {
		w.log.Warn("term after dead-lettering failed; a redelivery will be deduplicated in the dead letters", zap.Error(err))
	}
	w.log.Warn("message dead-lettered", zap.Uint64("seq", md.Sequence.Stream), zap.String("reason", reason),
		zap.Int("attempts", attempts), zap.Error(cause))
	m.outcome("dead_lettered")
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
