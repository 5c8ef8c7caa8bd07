package gateway

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

const (
	// maxIDLen bounds idempotency keys.
	maxIDLen = 200
	// maxMetaHeaders bounds user metadata entries per message.
	maxMetaHeaders = 64
	// maxMetaValueLen bounds one metadata value.
	maxMetaValueLen = 4 << 10
	// maxMetaNameLen bounds one metadata name (after the prefix).
	maxMetaNameLen = 128
	// maxContentTypeLen bounds the stored Content-Type.
	maxContentTypeLen = 256
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

// validateID checks an idempotency key against its grammar: 1..200 of
// letters, digits and - _ : / + = @ ~ (enough for UUIDs, ULIDs, base64 and
// path-like business keys; no '.', whitespace, control characters, quotes
// or the NATS wildcards * and >, so a key is safe even in a subject token).
func validateID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%w: idempotency key must be 1..%d characters", errMalformed, maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !idChar[c] {
			return fmt.Errorf("%w: idempotency key may hold only letters, digits and - _ : / + = @ ~ (byte %d is 0x%02x)", errMalformed, i, c)
		}
	}
	return nil
}

// idChar is the idempotency key alphabet.
var idChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_:/+=@~", byte(c)) >= 0
	}
	return t
}()

// newID generates an idempotency key for a message that came without one.
func newID() string { return nuid.Next() }

// validMetaName: an HTTP token made of letters, digits and '-'.
func validMetaName(name string) bool {
	if name == "" || len(name) > maxMetaNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// setMeta validates one metadata entry and adds it to h as Sluice-Meta-<Name>.
func setMeta(h nats.Header, name string, values ...string) error {
	if !validMetaName(name) {
		return fmt.Errorf("%w: metadata name %q must be 1..%d letters, digits or '-'", errMalformed, name, maxMetaNameLen)
	}
	key := sluice.HeaderMetaPrefix + http.CanonicalHeaderKey(name)
	for _, v := range values {
		if len(v) > maxMetaValueLen {
			return fmt.Errorf("%w: metadata %s is longer than %d bytes", errMalformed, name, maxMetaValueLen)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("%w: metadata %s is not valid UTF-8", errMalformed, name)
		}
		// C0, DEL and C1 (e.g. U+0085, a line break to some readers); tab is fine.
		if strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }) {
			return fmt.Errorf("%w: metadata %s holds control characters", errMalformed, name)
		}
		h.Add(key, v)
	}
	n, size := 0, 0
	for k, vs := range h {
		if strings.HasPrefix(k, sluice.HeaderMetaPrefix) {
			n++
			for _, v := range vs {
				size += len(k) + len(v)
			}
		}
	}
	if n > maxMetaHeaders {
		return fmt.Errorf("%w: more than %d metadata entries", errMalformed, maxMetaHeaders)
	}
	if size > topology.MaxMetadataBytes {
		return fmt.Errorf("%w: metadata of %d bytes exceeds %d bytes", errMalformed, size, topology.MaxMetadataBytes)
	}
	return nil
}

// digest identifies what msg carries: its payload, content type and
// metadata, so that a duplicate proves it is the same message
// (sluice.DedupID). 128 bits of SHA-256, base64url.
func digest(msg *nats.Msg) string {
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
