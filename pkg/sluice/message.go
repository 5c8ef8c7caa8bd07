package sluice

import (
	"strings"
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

// CloudEventMetaPrefix is the metadata prefix under which a gateway
// stores a CloudEvent's attributes: attribute id is the metadata Ce-Id,
// the header Sluice-Meta-Ce-Id.
const CloudEventMetaPrefix = "Ce-"

// CloudEvent returns the CloudEvents attributes of a message that a
// gateway took as a CloudEvent (binary or structured mode), by attribute
// name: specversion, id, source, type, any other it had (subject, time,
// dataschema, extensions) and datacontenttype (the Content-Type) if set.
// Data is the event's data. It is nil for a message that is not an event.
// Attribute names are lower-case letters and digits, so the names given
// back are the event's own: ce-<name> headers rebuild the binary mode.
func (m *Message) CloudEvent() map[string]string {
	prefix := HeaderMetaPrefix + CloudEventMetaPrefix
	var attrs map[string]string
	for k, v := range m.Header {
		name, ok := strings.CutPrefix(k, prefix)
		if !ok || len(v) == 0 || name == "" {
			continue
		}
		if attrs == nil {
			attrs = map[string]string{}
		}
		attrs[strings.ToLower(name)] = v[0]
	}
	if attrs["specversion"] == "" {
		return nil
	}
	if ct := m.ContentType(); ct != "" {
		attrs["datacontenttype"] = ct
	}
	return attrs
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
