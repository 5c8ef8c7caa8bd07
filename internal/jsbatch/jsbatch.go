// Package jsbatch publishes JetStream atomic batches (nats-server 2.12+,
// ADR-50), which nats.go has no API for: every message of a batch is stored,
// contiguously, or none is. The stream needs allow_atomic.
package jsbatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Headers of an atomic batch.
const (
	HeaderID     = "Nats-Batch-Id"
	HeaderSeq    = "Nats-Batch-Sequence"
	HeaderCommit = "Nats-Batch-Commit"
)

// MaxMessages is nats-server's default bound on one atomic batch.
const MaxMessages = 1000

// ErrNotSent wraps a failure before the commit was sent: the server drops
// a batch without its commit, so nothing of it was stored.
var ErrNotSent = errors.New("atomic batch not committed")

// ack is the answer to a commit: the PubAck of the last message, with how
// many messages were stored.
type ack struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Count  int                 `json:"count"`
	Error  *jetstream.APIError `json:"error,omitempty"`
}

// Publish stores msgs in stream as one atomic batch and returns the stream
// sequence of the first; the others follow it one by one. The batch
// headers are removed from msgs again before it returns.
//
// Errors: a *jetstream.APIError when the server refused the batch as a
// whole (nothing was stored; e.g. 10201 when a Nats-Msg-Id is already
// stored, 10077 when the stream is full); ErrNotSent when the commit was
// never sent; otherwise, e.g. a timeout, the outcome is unknown.
func Publish(ctx context.Context, nc *nats.Conn, stream string, msgs []*nats.Msg) (first uint64, err error) {
	if len(msgs) == 0 {
		return 0, fmt.Errorf("%w: empty batch", ErrNotSent)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	id := nuid.Next()
	last := len(msgs) - 1
	defer func() {
		for _, m := range msgs {
			m.Header.Del(HeaderID)
			m.Header.Del(HeaderSeq)
			m.Header.Del(HeaderCommit)
		}
	}()
	var reply *nats.Msg
	for i, m := range msgs {
		if m.Header == nil {
			m.Header = nats.Header{}
		}
		m.Header.Set(HeaderID, id)
		m.Header.Set(HeaderSeq, strconv.Itoa(i+1))
		if i < last {
			// Staged without an answer: a message refused on arrival
			// leaves a gap, and the server refuses the commit.
			if err := nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("%w: staging: %w", ErrNotSent, err)
			}
			continue
		}
		m.Header.Set(HeaderCommit, "1")
		if reply, err = nc.RequestMsgWithContext(ctx, m); err != nil {
			if errors.Is(err, nats.ErrNoResponders) {
				return 0, fmt.Errorf("%w: %w", ErrNotSent, err)
			}
			return 0, err
		}
	}
	var a ack
	if err := json.Unmarshal(reply.Data, &a); err != nil {
		return 0, fmt.Errorf("atomic batch commit answer %q: %w", reply.Data, err)
	}
	if a.Error != nil {
		return 0, a.Error
	}
	if a.Count != len(msgs) || a.Seq < uint64(len(msgs)) || a.Stream != stream {
		return 0, fmt.Errorf("atomic batch commit answer %q for %d messages to %s", reply.Data, len(msgs), stream)
	}
	return a.Seq - uint64(len(msgs)) + 1, nil
}
