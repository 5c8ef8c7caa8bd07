package harness

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// DeliveryOf is what a checker records of a delivery to a worker: a copy
// (the gateway's repair of a message that may have missed the family, or a
// redriven dead letter) is published on the family's redrive subject with
// Sluice-Original-Id, at a seq of its own.
func DeliveryOf(m *sluice.Message) history.Delivery {
	return history.Delivery{ID: m.ID, Seq: m.Seq, Stored: m.Published, Payload: m.Data,
		Copy: m.Header.Get(sluice.HeaderOriginalID) != ""}
}

// DeadLetterFollower records the families' dead letters in a checker as
// they arrive: each call reads every dead-letter stream on from where the
// last one stopped (a dead letter deleted meanwhile, by a redrive, stays
// recorded), from the stream's leader (see eachMessage): a lagging replica
// would answer "not found" for a dead letter the leader reported, and it
// would be passed over for good. Safe for concurrent use.
type DeadLetterFollower struct {
	js    jetstream.JetStream
	topic string
	chk   *history.Checker

	mu   sync.Mutex
	next map[string]uint64 // family -> first dead-letter seq not read yet
}

// NewDeadLetterFollower follows the dead letters of chk's families in topic.
func NewDeadLetterFollower(js jetstream.JetStream, topic string, chk *history.Checker) *DeadLetterFollower {
	return &DeadLetterFollower{js: js, topic: topic, chk: chk, next: map[string]uint64{}}
}

// Collect records the dead letters that arrived since the last call.
func (f *DeadLetterFollower) Collect(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fam := range f.chk.Families() {
		s, err := f.js.Stream(ctx, sluice.DeadLetterStream(f.topic, fam))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("dead letters of %s: %w", fam, err)
		}
		read, err := eachMessage(ctx, s, f.next[fam], func(seq uint64, h nats.Header, data []byte) error {
			_, err := recordDeadLetter(seq, h, data, fam, f.chk)
			return err
		})
		f.next[fam] = max(f.next[fam], read+1)
		if err != nil {
			return fmt.Errorf("dead letters of %s: %w", fam, err)
		}
	}
	return nil
}
