package testharness

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/checker"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// ReadFinalState reads, through js, what topic's stream still holds, each of
// chk's families' consumer (pending, ack pending) and dead letters, and
// records every dead letter in chk (a dead letter reached its family).
func ReadFinalState(ctx context.Context, js jetstream.JetStream, topic string, chk *checker.Checker) (checker.FinalState, error) {
	s, err := js.Stream(ctx, sluice.StreamName(topic))
	if err != nil {
		return checker.FinalState{}, fmt.Errorf("stream %s: %w", topic, err)
	}
	st := checker.FinalState{Messages: s.CachedInfo().State.Msgs, Families: map[string]checker.FamilyState{}}
	for _, fam := range chk.Families() {
		c, err := s.Consumer(ctx, fam)
		if err != nil {
			return checker.FinalState{}, fmt.Errorf("consumer %s: %w", fam, err)
		}
		ci := c.CachedInfo()
		dead, err := readDeadLetters(ctx, js, topic, fam, chk)
		if err != nil {
			return checker.FinalState{}, err
		}
		st.Families[fam] = checker.FamilyState{Pending: ci.NumPending, AckPending: ci.NumAckPending, DeadLetters: dead}
	}
	return st, nil
}

// readDeadLetters records each of family's dead letters in chk and returns
// how many the dead-letter stream holds.
func readDeadLetters(ctx context.Context, js jetstream.JetStream, topic, family string, chk *checker.Checker) (uint64, error) {
	s, err := js.Stream(ctx, sluice.DeadLetterStream(topic, family))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dead letters of %s: %w", family, err)
	}
	state := s.CachedInfo().State
	if state.Msgs == 0 {
		return 0, nil
	}
	for seq := state.FirstSeq; seq <= state.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // purged or redriven
		}
		if err != nil {
			return 0, fmt.Errorf("dead letter %d of %s: %w", seq, family, err)
		}
		orig, err := strconv.ParseUint(m.Header.Get(sluice.HeaderOriginalSeq), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("dead letter %d of %s: %s: %w", seq, family, sluice.HeaderOriginalSeq, err)
		}
		// The original id is the idempotency key (older dead letters hold
		// the whole deduplication id).
		chk.DeadLettered(family, sluice.KeyOf(m.Header.Get(sluice.HeaderOriginalID)), orig, m.Data)
	}
	return state.Msgs, nil
}

// CheckFinalState reads topic's final state (ReadFinalState) until chk
// finds nothing wrong with it or timeout passes (acks and the removal of
// acked messages trail the last delivery), and records the last state read
// in chk: its report then lists what is wrong. It returns that state.
func CheckFinalState(t testing.TB, js jetstream.JetStream, topic string, chk *checker.Checker, timeout time.Duration) checker.FinalState {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last checker.FinalState
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
