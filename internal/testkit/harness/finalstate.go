package harness

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// ReadFinalState reads, through js, what topic's stream still holds, each of
// chk's families' consumer (pending, ack pending) and dead letters, and
// records every dead letter in chk (a dead letter reached its family).
func ReadFinalState(ctx context.Context, js jetstream.JetStream, topic string, chk *history.Checker) (history.FinalState, error) {
	s, err := js.Stream(ctx, sluice.StreamName(topic))
	if err != nil {
		return history.FinalState{}, fmt.Errorf("stream %s: %w", topic, err)
	}
	st := history.FinalState{Messages: s.CachedInfo().State.Msgs, Families: map[string]history.FamilyState{}}
	for _, fam := range chk.Families() {
		c, err := s.Consumer(ctx, fam)
		if err != nil {
			return history.FinalState{}, fmt.Errorf("consumer %s: %w", fam, err)
		}
		ci := c.CachedInfo()
		dead, ids, err := readDeadLetters(ctx, js, topic, fam, chk)
		if err != nil {
			return history.FinalState{}, err
		}
		st.Families[fam] = history.FamilyState{Pending: ci.NumPending, AckPending: ci.NumAckPending, DeadLetters: dead, DeadLetterIDs: ids}
	}
	return st, nil
}

// readDeadLetters records each of family's dead letters in chk and returns
// how many the dead-letter stream holds, with their ids.
func readDeadLetters(ctx context.Context, js jetstream.JetStream, topic, family string, chk *history.Checker) (uint64, []string, error) {
	s, err := js.Stream(ctx, sluice.DeadLetterStream(topic, family))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, []string{}, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("dead letters of %s: %w", family, err)
	}
	ids := []string{}
	_, err = eachMessage(ctx, s, 1, func(seq uint64, h nats.Header, data []byte) error {
		id, err := recordDeadLetter(seq, h, data, family, chk)
		ids = append(ids, id)
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("dead letters of %s: %w", family, err)
	}
	return s.CachedInfo().State.Msgs, ids, nil
}

// eachMessage calls fn with every message s holds from seq from on, in
// order, read through an ordered consumer in no-wait pulls of up to 1000:
// from the stream's leader, which the stream's info came from (a direct
// get, which the SDK uses for streams with allow_direct, may be answered
// by a replica that lags), and fast for thousands of messages. It returns
// the last seq read (from-1 if none).
func eachMessage(ctx context.Context, s jetstream.Stream, from uint64, fn func(seq uint64, h nats.Header, data []byte) error) (uint64, error) {
	from = max(from, 1)
	read := from - 1
	if st := s.CachedInfo().State; st.Msgs == 0 || from > st.LastSeq {
		return read, nil
	}
	cfg := jetstream.OrderedConsumerConfig{InactiveThreshold: 5 * time.Second}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	c, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return read, err
	}
	for {
		batch, err := c.FetchNoWait(1000)
		if err != nil {
			return read, err
		}
		got, last := 0, false
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return read, err
			}
			if err := fn(md.Sequence.Stream, m.Headers(), m.Data()); err != nil {
				return read, err
			}
			read, last = md.Sequence.Stream, md.NumPending == 0
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return read, err
		}
		if last || got == 0 {
			return read, nil
		}
		if ctx.Err() != nil {
			return read, ctx.Err()
		}
	}
}

// recordDeadLetter records family's dead letter at seq (its headers h and
// payload) in chk and returns its id.
func recordDeadLetter(seq uint64, h nats.Header, data []byte, family string, chk *history.Checker) (string, error) {
	orig, err := strconv.ParseUint(h.Get(sluice.HeaderOriginalSeq), 10, 64)
	if err != nil {
		return "", fmt.Errorf("dead letter %d of %s: %s: %w", seq, family, sluice.HeaderOriginalSeq, err)
	}
	// The original id is the idempotency key (older dead letters hold
	// the whole deduplication id).
	id := sluice.KeyOf(h.Get(sluice.HeaderOriginalID))
	// When the family's consumer was created places orig in an
	// incarnation of the topic's stream (older dead letters do not say).
	created, err := time.Parse(time.RFC3339Nano, h.Get(sluice.HeaderOriginalFamilyCreated))
	if err != nil {
		created = time.Time{}
	}
	chk.DeadLetteredBy(family, id, orig, created, data)
	return id, nil
}

// CheckFinalState reads topic's final state (ReadFinalState) until chk
// finds nothing wrong with it or timeout passes (acks and the removal of
// acked messages trail the last delivery), and records the last state read
// in chk: its report then lists what is wrong. It returns that state.
func CheckFinalState(t testing.TB, js jetstream.JetStream, topic string, chk *history.Checker, timeout time.Duration) history.FinalState {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last history.FinalState
	var lastErr error
	read := false
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := ReadFinalState(ctx, js, topic, chk)
		cancel()
		if err == nil {
			last, read = st, true
			if len(chk.StateProblems(st)) == 0 {
				break
			}
		}
		lastErr = err
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !read {
		t.Fatalf("reading the final state of %s: %v", topic, lastErr)
	}
	chk.Final(last)
	return last
}
