package sluice

import "strings"

// DedupID is the deduplication id (Nats-Msg-Id) a gateway stores a message
// under: its idempotency key and a digest of what it carries (payload,
// content type, metadata). A retry with the same key and the same message
// is then a duplicate that proves itself, with no read of the original,
// which may long be gone from its topic; the same key with another message
// is another message. Keys never hold '.', so the two parts stay apart.
func DedupID(key, digest string) string { return key + "." + digest }

// KeyOf is the idempotency key of a deduplication id: DedupID's key, or the
// id itself when it carries no digest (messages stored before digests).
func KeyOf(id string) string {
	if i := strings.LastIndexByte(id, '.'); i >= 0 {
		return id[:i]
	}
	return id
}
