package sluice

import "strings"

// DedupID is the deduplication id (Nats-Msg-Id) a gateway without tenants
// (open mode) stores a message under: its idempotency key and a digest of
// what it carries (payload, content type, metadata). A retry with the same
// key and the same message is then a duplicate that proves itself, with no
// read of the original, which may long be gone from its topic; the same key
// with another message is another message. Keys never hold '.', so the two
// parts stay apart.
func DedupID(key, digest string) string { return key + "." + digest }

// TenantDedupID is the deduplication id of a tenant's message:
// "<tenant>.<key>.<digest>", DedupID scoped to the tenant, so that one
// tenant's key never names, suppresses or discloses another's message on a
// topic they share. It cannot collide: tenant names (ValidateName: a-z, 0-9,
// '-', '_') and keys (a gateway's grammar: letters, digits and - _ : / + =
// @ ~) never hold '.', and the digest has a fixed length without one, so
// an id with a digest splits one way only: one '.' before the digest is
// an open-mode id, two are a tenant's. An empty tenant is DedupID.
func TenantDedupID(tenant, key, digest string) string {
	if tenant == "" {
		return DedupID(key, digest)
	}
	return tenant + "." + DedupID(key, digest)
}

// KeyOf is the idempotency key of a deduplication id as the client sent
// it: DedupID's or TenantDedupID's key (without the tenant), or the id
// itself when it carries no digest (messages stored before digests, or
// published on the bus by other means: such an id keeps any '.' it holds).
func KeyOf(id string) string {
	key, _ := split(id)
	return key
}

// TenantOf is the tenant a deduplication id is scoped to: TenantDedupID's
// tenant, "" for any other id.
func TenantOf(id string) string {
	_, tenant := split(id)
	return tenant
}

// split takes a gateway's deduplication id apart into key and tenant.
func split(id string) (key, tenant string) {
	i := strings.LastIndexByte(id, '.')
	if i < 0 || !isDigest(id[i+1:]) {
		return id, ""
	}
	key = id[:i]
	if t, k, ok := strings.Cut(key, "."); ok && isTenant(t) && k != "" && strings.IndexByte(k, '.') < 0 {
		return k, t
	}
	return key, ""
}

// isTenant: s is a valid tenant (topic, family) name, without a regexp:
// KeyOf runs on every delivery.
func isTenant(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0 && i < len(s)-1 && s[i-1] != '-' && s[i-1] != '_':
		default:
			return false
		}
	}
	return true
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
