// Package busstats reads the live state of topics and families from
// JetStream: depth, pending, in flight, redelivered, dead letters. Brokers
// export it as metrics at scrape time; gateways serve it at /v1/topics.
package busstats

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Topic is one topic's limits and live state.
type Topic struct {
	Name   string `json:"name"`
	Limits Limits `json:"limits"`
	Depth  Depth  `json:"depth"`
	// LastSeq is the last message's sequence: every message ever stored.
	LastSeq uint64 `json:"last_seq"`
	// Cluster is the stream's Raft group; nil for a lone broker.
	Cluster  *Cluster `json:"cluster,omitempty"`
	Families []Family `json:"families"`
}

// Cluster is where a replicated topic lives: its leader and its replicas.
type Cluster struct {
	// Leader is the broker leading the topic's stream; empty: no quorum.
	Leader   string    `json:"leader"`
	Replicas []Replica `json:"replicas"`
}

// Replica is one follower of a topic's stream.
type Replica struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
	// Lag is how many operations it is behind the leader.
	Lag uint64 `json:"lag"`
	// Active is how long ago the leader last heard from it.
	Active    string        `json:"active"`
	ActiveFor time.Duration `json:"-"`
}

// StaleAfter: a replica not current and not heard from for this long is
// behind for real; the leader reports every follower with any operation
// outstanding as not current.
const StaleAfter = 5 * time.Second

// Lagging reports whether r is offline, stale, or more than maxLag
// operations behind.
func (r Replica) Lagging(maxLag uint64) bool {
	return r.Offline || r.Lag > maxLag || (!r.Current && r.ActiveFor > StaleAfter)
}

// Limits are the topic's bounds as stored on the bus.
type Limits struct {
	MaxMessages     int64  `json:"max_messages"`
	MaxBytes        int64  `json:"max_bytes"`
	MaxMessageSize  int32  `json:"max_message_size"`
	MaxAge          string `json:"max_age"`
	Replicas        int    `json:"replicas"`
	DuplicateWindow string `json:"duplicate_window"`
}

// Depth is what the topic stream holds now: messages not yet acked by every family.
type Depth struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
}

// Family is one consumer group's state.
type Family struct {
	Name string `json:"name"`
	// Credit is the family's max ack pending.
	Credit int `json:"credit"`
	// Pending: stored, not yet delivered to this family.
	Pending uint64 `json:"pending"`
	// InFlight: delivered, not yet acked.
	InFlight int `json:"in_flight"`
	// Redelivered: in flight and delivered more than once.
	Redelivered int `json:"redelivered"`
	// DeadLetters: messages in the family's dead-letter stream.
	DeadLetters uint64 `json:"dead_letters"`
	// Waiting: pull requests from the family's workers waiting for messages.
	Waiting int `json:"waiting"`
	// Deliveries counts every delivery, redeliveries included; Delivered is
	// the last topic sequence delivered for the first time.
	Deliveries uint64 `json:"deliveries"`
	Delivered  uint64 `json:"delivered_seq"`
}

// ErrTopicMissing means the topic's stream does not exist on the bus.
var ErrTopicMissing = errors.New("topic stream missing on the bus")

// Read returns the live state of one declared topic.
func Read(ctx context.Context, js jetstream.JetStream, t topology.Topic) (Topic, error) {
	s, err := js.Stream(ctx, sluice.StreamName(t.Name))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return Topic{}, fmt.Errorf("topic %s: %w", t.Name, ErrTopicMissing)
	}
	if err != nil {
		return Topic{}, fmt.Errorf("topic %s: %w", t.Name, err)
	}
	si := s.CachedInfo() // js.Stream has just fetched it
	out := Topic{
		Name: t.Name,
		Limits: Limits{
			MaxMessages: si.Config.MaxMsgs,
			MaxBytes:    si.Config.MaxBytes,
			// The stream allows headers on top of the payload limit.
			MaxMessageSize:  si.Config.MaxMsgSize - topology.HeaderAllowance,
			MaxAge:          si.Config.MaxAge.String(),
			Replicas:        si.Config.Replicas,
			DuplicateWindow: si.Config.Duplicates.String(),
		},
		Depth:   Depth{Messages: si.State.Msgs, Bytes: si.State.Bytes},
		LastSeq: si.State.LastSeq,
	}
	if c := si.Cluster; c != nil && (c.Leader != "" || len(c.Replicas) > 0 || si.Config.Replicas > 1) {
		out.Cluster = &Cluster{Leader: c.Leader, Replicas: []Replica{}}
		for _, r := range c.Replicas {
			out.Cluster.Replicas = append(out.Cluster.Replicas, Replica{Name: r.Name, Current: r.Current, Offline: r.Offline,
				Lag: r.Lag, Active: r.Active.Round(time.Millisecond).String(), ActiveFor: r.Active})
		}
	}
	for _, name := range t.FamilyNames() {
		f := Family{Name: name}
		ci, err := s.Consumer(ctx, name)
		if err != nil {
			return Topic{}, fmt.Errorf("topic %s family %s: %w", t.Name, name, err)
		}
		info := ci.CachedInfo()
		f.Credit = info.Config.MaxAckPending
		f.Pending = info.NumPending
		f.InFlight = info.NumAckPending
		f.Redelivered = info.NumRedelivered
		f.Waiting = info.NumWaiting
		f.Deliveries, f.Delivered = info.Delivered.Consumer, info.Delivered.Stream
		dlq, err := js.Stream(ctx, sluice.DeadLetterStream(t.Name, name))
		if err != nil {
			return Topic{}, fmt.Errorf("topic %s family %s dead letters: %w", t.Name, name, err)
		}
		f.DeadLetters = dlq.CachedInfo().State.Msgs
		out.Families = append(out.Families, f)
	}
	return out, nil
}
