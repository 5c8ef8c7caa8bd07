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
	if i := strings.LastIndexByte(id, '.'); i >= 0 && isDigest(id[i+1:]) {
		return id[:i]
	}
	return id
}

// digestLen is the length of a gateway's digest: 16 bytes in unpadded
// base64url.
const digestLen = 22

// isDigest: s has the shape of a gateway's digest. An id published to the
// bus by other means keeps a '.' it holds.
func isDigest(s string) bool {
	if len(s) != digestLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
