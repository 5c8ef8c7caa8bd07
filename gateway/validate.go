package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

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
