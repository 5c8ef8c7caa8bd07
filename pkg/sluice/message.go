package sluice

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Message is one delivery of a stored message to a worker.
type Message struct {
	Topic  string
	Family string
	// ID is the message's idempotency key; stable across redeliveries, so a
	// handler can use it to make its own effects idempotent. A message
	// published on the bus without one (by an admin identity, not through a
	// gateway) has "seq-" and its Seq.
	ID string
	// Seq is the message's sequence in its topic.
	Seq uint64
	// Attempt is 1 on the first delivery to this family, 2 on the first retry, ...
	Attempt int
	// Published is when the bus stored the message.
	Published time.Time
	Data      []byte
	// Header holds the message's headers: Content-Type, Sluice-Meta-*, and
	// any other the producer set. The bus's own (Nats-*) are left out; ID
	// has the idempotency key.
	Header nats.Header
}

// ContentType is the Content-Type the producer sent, if any.
func (m *Message) ContentType() string { return m.Header.Get(HeaderContentType) }

// Meta returns the metadata value the producer set under name
// (the Sluice-Meta-<Name> header).
func (m *Message) Meta(name string) string {
	return m.Header.Get(HeaderMetaPrefix + canonicalName(name))
}

// canonicalName capitalises like HTTP header canonicalisation, which the
// gateway applies to metadata names.
func canonicalName(s string) string {
	b := []byte(s)
	upper := true
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
		upper = c == '-'
	}
	return string(b)
}
