package sluice

import (
	"fmt"
	"regexp"
	"strconv"
)

// Names of the JetStream objects behind topics and families. They are part of
// the public contract: brokers provision them, gateways publish to them and
// workers consume from them, so every node derives them from these functions.

// MaxNameLen is the longest topic or family name.
const MaxNameLen = 64

// nameRE is the grammar for topic and family names: lowercase letters and
// digits in runs joined by single '-' or '_'. It keeps names safe inside NATS
// subjects and stream names (no '.', '*', '>', whitespace or control
// characters) and makes the "__" separator in dead-letter stream names
// unambiguous.
var nameRE = regexp.MustCompile(`^[a-z0-9]+([_-][a-z0-9]+)*$`)

// ValidateName reports whether s is a valid topic or family name.
func ValidateName(s string) error {
	if len(s) == 0 || len(s) > MaxNameLen {
		return fmt.Errorf("name %q: length must be 1..%d", s, MaxNameLen)
	}
	if !nameRE.MatchString(s) {
		return fmt.Errorf("name %q: only lowercase letters, digits and single '-' or '_' between them are allowed", s)
	}
	return nil
}

// StreamName is the JetStream stream that stores a topic.
func StreamName(topic string) string { return "SLUICE_" + topic }

// Subject is the NATS subject a topic's messages are published on.
func Subject(topic string) string { return "sluice.topic." + topic }

// RedriveSubjects is the subject filter, in a topic's stream, of the
// messages redriven from the families' dead letters.
func RedriveSubjects(topic string) string { return "sluice.redrive." + topic + ".*" }

// RedriveSubject is where a family's dead letters are redriven: in the
// topic's stream, consumed by that family only.
func RedriveSubject(topic, family string) string { return "sluice.redrive." + topic + "." + family }

// DeadLetterStream is the stream holding a family's dead letters.
func DeadLetterStream(topic, family string) string { return "SLUICE_DLQ_" + topic + "__" + family }

// DeadLetterSubjects is the subject filter of a family's dead-letter stream.
func DeadLetterSubjects(topic, family string) string {
	return "sluice.dlq." + topic + "." + family + ".>"
}

// DeadLetterSubject is the subject of the dead letter of the message at seq
// in topic: one subject per message, so whether a message has already been
// dead-lettered is one direct read.
func DeadLetterSubject(topic, family string, seq uint64) string {
	return "sluice.dlq." + topic + "." + family + "." + strconv.FormatUint(seq, 10)
}

// Header names Sluice sets on messages.
const (
	// HeaderMetaPrefix prefixes user metadata headers, over HTTP and on the bus.
	HeaderMetaPrefix = "Sluice-Meta-"
	// HeaderIdempotencyKey is the HTTP header carrying a message's idempotency key.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderContentType is kept from the HTTP request on the stored message.
	HeaderContentType = "Content-Type"
	// HeaderMsgID is JetStream's deduplication header; it carries the
	// deduplication id (DedupID, TenantDedupID; KeyOf gives the key back).
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderTenant is the tenant a gateway with API keys stamps on every
	// message it stores (none in open mode). Only gateways set it: a
	// client's header of that name never reaches the bus (only
	// Sluice-Meta-* headers do). It stays on the message's dead letter,
	// and the gateway's dead-letter API shows and acts on a tenant's own
	// dead letters only; a message without it is an operator's.
	HeaderTenant = "Sluice-Tenant"
	// HeaderLameDuck on a gateway's response: the gateway is stopping; the
	// Producer sends its next requests to another gateway.
	HeaderLameDuck = "Sluice-Lame-Duck"

	// Headers added when a message moves to a dead-letter stream. The
	// original headers are kept except the bus's own (Nats-*, which
	// describe how it was stored: an atomic batch, expectations): its
	// Nats-Msg-Id moves to HeaderOriginalID (the dead-letter stream
	// deduplicates on its own id).
	HeaderDeadReason    = "Sluice-Dead-Reason"
	HeaderDeadAttempts  = "Sluice-Dead-Attempts"
	HeaderDeadError     = "Sluice-Dead-Error"
	HeaderDeadAt        = "Sluice-Dead-At"
	HeaderDeadFamily    = "Sluice-Dead-Family"
	HeaderOriginalTopic = "Sluice-Original-Topic"
	HeaderOriginalSeq   = "Sluice-Original-Seq"
	HeaderOriginalID    = "Sluice-Original-Id"
	// HeaderOriginalFamilyCreated is when the family's consumer that
	// delivered the message was created (RFC 3339, UTC). Sequences restart
	// when a topic's stream is deleted and provisioned again, and its
	// families are created again with it: with HeaderOriginalSeq and
	// HeaderOriginalID it tells the message that died from a later one
	// at the same sequence.
	HeaderOriginalFamilyCreated = "Sluice-Original-Family-Created"
)

// Consumer metadata keys under which brokers publish a family's retry policy,
// so that workers read it from the bus instead of from a config of their own.
const (
	MetadataTopic       = "sluice.topic"
	MetadataFamily      = "sluice.family"
	MetadataMaxAttempts = "sluice.max_attempts"
	MetadataBackoff     = "sluice.backoff"
	// MetadataAckWait is the family's declared ack wait.
	MetadataAckWait = "sluice.ack_wait"
	// MetadataBackoffCurve and the keys after it complete the retry policy.
	MetadataBackoffCurve   = "sluice.backoff_curve"
	MetadataBackoffInitial = "sluice.backoff_initial"
	MetadataBackoffMax     = "sluice.backoff_max"
	MetadataBackoffJitter  = "sluice.backoff_jitter"
	MetadataRetryDeadline  = "sluice.retry_deadline"
)
