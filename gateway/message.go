package gateway

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Receipt is the answer for a stored message: the body of a publish's 202
// and a line of a batch's answer. Line, first on the wire, is the 1-based
// line of the batch item it answers (a batch's lines count from 1), left
// out of a single publish's answer.
type Receipt struct {
	Line      int    `json:"line,omitempty"`
	Topic     string `json:"topic"`
	Seq       uint64 `json:"seq"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

// tenantName is the tenant a caller's messages are stored for: "" in open
// mode (no tenants).
func tenantName(c tenant.Caller) string {
	if c.Tenant == nil {
		return ""
	}
	return c.Tenant.Name
}

// stamp marks msg as name's (sluice.HeaderTenant), for its dead letter;
// in open mode (name "") it carries none. The gateway alone sets it: what
// a client sends becomes a header only as Sluice-Meta-*, and Set replaces
// whatever is there.
func stamp(msg *nats.Msg, name string) {
	msg.Header.Del(sluice.HeaderTenant)
	if name != "" {
		msg.Header.Set(sluice.HeaderTenant, name)
	}
}

// newID generates an idempotency key for a message that came without one.
func newID() string { return nuid.Next() }

// digest identifies what msg carries: its payload, content type and
// metadata, so that a duplicate proves it is the same message
// (sluice.DedupID). 128 bits of SHA-256, base64url.
//
// A CloudEvent's digest is its identity, source and id (eventIdentity):
// the same event sent again is the same message whatever else changed
// (an SDK stamps a new time on each send of an event that has none).
func digest(msg *nats.Msg) string {
	if sum, ok := eventIdentity(msg.Header); ok {
		return base64.RawURLEncoding.EncodeToString(sum[16:])
	}
	h := sha256.New()
	count := func(n int) {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		h.Write(b[:])
	}
	field := func(b []byte) {
		count(len(b))
		h.Write(b)
	}
	field([]byte(msg.Header.Get(sluice.HeaderContentType)))
	var meta []string
	for k := range msg.Header {
		if strings.HasPrefix(k, sluice.HeaderMetaPrefix) {
			meta = append(meta, k)
		}
	}
	slices.Sort(meta)
	count(len(meta))
	for _, k := range meta {
		field([]byte(k))
		count(len(msg.Header[k]))
		for _, v := range msg.Header[k] {
			field([]byte(v))
		}
	}
	field(msg.Data)
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(h.Sum(sum[:0])[:16])
}
