package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// CloudEvents (https://cloudevents.io) over the publish route, in the
// HTTP binding's two modes:
//
//   - binary: the attributes are ce-<name> headers (ce-specversion marks
//     the request as an event), datacontenttype is Content-Type and the
//     body is the data;
//   - structured: Content-Type application/cloudevents+json, the body is
//     the event's JSON envelope.
//
// Either way the message stores the data as its payload, datacontenttype as
// its Content-Type and every other attribute as the metadata Ce-<Name>
// (the header Sluice-Meta-Ce-<Name> on the bus). Attribute names are
// lower-case letters and digits only (CloudEvents 1.0), so the lower-cased
// metadata name gives the attribute back: a worker reads them with
// sluice.Message.CloudEvent, and the event round-trips.
//
// Without an Idempotency-Key, the event's identity is its key: source and
// id (cloudEventKey); and a stored event's digest is its identity, not its
// bytes (digest), since the CloudEvents SDKs stamp a new time on each send
// of an event that has none, and an event is the same event by source and
// id alone.

const (
	// ceHeaderPrefix is the binary mode's attribute header prefix, as Go
	// canonicalises it.
	ceHeaderPrefix = "Ce-"
	// ceMetaPrefix is where the attributes are stored: metadata Ce-<Name>.
	ceMetaPrefix = sluice.HeaderMetaPrefix + ceHeaderPrefix
	// ceStructured and ceBatch are the JSON format's media types.
	ceStructured = "application/cloudevents+json"
	ceBatch      = "application/cloudevents-batch+json"
)

// cloudEventMode tells how a publish request carries a CloudEvent: "" (it
// does not), "binary" or "structured". A batch of events is refused.
func cloudEventMode(r *http.Request) (string, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err == nil && mt == ceStructured {
			return "structured", nil
		}
		if err == nil && mt == ceBatch {
			return "", fmt.Errorf("%w: %s is not supported: send each event on its own (binary or structured mode)", errMediaType, ceBatch)
		}
	}
	if r.Header.Get(ceHeaderPrefix+"Specversion") != "" {
		return "binary", nil
	}
	return "", nil
}

// binaryEvent stores a binary-mode event's ce-* headers as metadata; the
// body and Content-Type are taken as for any message.
func binaryEvent(r *http.Request, h nats.Header) error {
	for name, values := range r.Header {
		if attr, ok := strings.CutPrefix(name, ceHeaderPrefix); ok {
			if !validAttribute(strings.ToLower(attr)) {
				return fmt.Errorf("%w: CloudEvent attribute header %q: a name must be 1..%d letters or digits", errMalformed, clip(name), maxMetaNameLen-len(ceHeaderPrefix))
			}
			if err := setMeta(h, ceHeaderPrefix+attr, values...); err != nil {
				return err
			}
		}
	}
	return checkEvent(h)
}

// structuredEvent turns a structured-mode body (one JSON envelope) into
// msg: its data as the payload, datacontenttype as Content-Type, every
// other attribute as metadata.
func structuredEvent(body []byte, msg *nats.Msg) error {
	var env map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		return fmt.Errorf("%w: CloudEvent envelope: %v", errMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: CloudEvent envelope: more than one JSON value", errMalformed)
	}
	msg.Header.Del(sluice.HeaderContentType) // the envelope's media type is not the data's
	data, hasData := env["data"]
	data64, hasData64 := env["data_base64"]
	if isNull(data) {
		hasData = false
	}
	if isNull(data64) {
		hasData64 = false
	}
	var ctype string
	for name, raw := range env {
		if name == "data" || name == "data_base64" || isNull(raw) {
			continue
		}
		v, err := attributeValue(name, raw)
		if err != nil {
			return err
		}
		if name == "datacontenttype" {
			ctype = v
			continue
		}
		if err := setMeta(msg.Header, ceHeaderPrefix+name, v); err != nil {
			return err
		}
	}
	switch {
	case hasData && hasData64:
		return fmt.Errorf("%w: CloudEvent has both data and data_base64", errMalformed)
	case hasData64:
		var s string
		if err := json.Unmarshal(data64, &s); err != nil {
			return fmt.Errorf("%w: CloudEvent data_base64 is not a string", errMalformed)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("%w: CloudEvent data_base64: %v", errMalformed, err)
		}
		msg.Data = b
	case hasData && ctype != "" && !isJSONType(ctype) && data[0] == '"':
		// Data of a non-JSON type travels as a JSON string.
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("%w: CloudEvent data: %v", errMalformed, err)
		}
		msg.Data = []byte(s)
	case hasData:
		msg.Data = []byte(data)
		if ctype == "" {
			ctype = "application/json" // the JSON format's data is JSON unless it says otherwise
		}
	default:
		msg.Data = []byte{}
	}
	if ctype != "" {
		if len(ctype) > maxContentTypeLen {
			return fmt.Errorf("%w: datacontenttype longer than %d bytes", errMalformed, maxContentTypeLen)
		}
		if _, _, err := mime.ParseMediaType(ctype); err != nil {
			return fmt.Errorf("%w: datacontenttype %q: %v", errMalformed, ctype, err)
		}
		msg.Header.Set(sluice.HeaderContentType, ctype)
	}
	return checkEvent(msg.Header)
}

// attributeValue is a structured event's attribute as its header form:
// strings as they are, numbers and booleans as their JSON text (as the
// SDKs write them in binary mode).
func attributeValue(name string, raw json.RawMessage) (string, error) {
	if !validAttribute(name) {
		return "", fmt.Errorf("%w: CloudEvent attribute name %q must be 1..%d lower-case letters or digits", errMalformed, clip(name), maxMetaNameLen-len(ceHeaderPrefix))
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%w: CloudEvent attribute %s: %v", errMalformed, name, err)
		}
		return s, nil
	case '{', '[':
		return "", fmt.Errorf("%w: CloudEvent attribute %s must be a string, number or boolean", errMalformed, name)
	}
	return string(raw), nil
}

// validAttribute: a CloudEvents attribute name, lower-case letters and
// digits, short enough to be a metadata name.
func validAttribute(name string) bool {
	if name == "" || len(name) > maxMetaNameLen-len(ceHeaderPrefix) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// isJSONType: a media type whose data the JSON format carries as JSON.
func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// checkEvent refuses an event without its required attributes.
func checkEvent(h nats.Header) error {
	for _, attr := range []string{"Specversion", "Id", "Source", "Type"} {
		if h.Get(ceMetaPrefix+attr) == "" {
			return fmt.Errorf("%w: CloudEvent without %s (required: specversion, id, source, type)", errMalformed, strings.ToLower(attr))
		}
	}
	if v := h.Get(ceMetaPrefix + "Specversion"); v != "1.0" && v != "0.3" {
		return fmt.Errorf("%w: CloudEvent specversion %q is not supported (1.0, 0.3)", errMalformed, clip(v))
	}
	return nil
}

// cloudEventKey is the idempotency key of an event that came without one:
// "ce:" and 128 bits of SHA-256 of its source and id (base64url), within
// the key grammar whatever the two hold; "" for a message that is not an
// event.
func cloudEventKey(h nats.Header) string {
	sum, ok := eventIdentity(h)
	if !ok {
		return ""
	}
	return "ce:" + base64.RawURLEncoding.EncodeToString(sum[:16])
}

// eventIdentity is the SHA-256 of an event's source and id, length-prefixed
// so that no two pairs hash alike; ok is false when h holds no event.
func eventIdentity(h nats.Header) (sum [sha256.Size]byte, ok bool) {
	source, id := h.Get(ceMetaPrefix+"Source"), h.Get(ceMetaPrefix+"Id")
	if source == "" || id == "" || h.Get(ceMetaPrefix+"Specversion") == "" {
		return sum, false
	}
	hash := sha256.New()
	for _, s := range []string{"cloudevent", source, id} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		hash.Write(n[:])
		hash.Write([]byte(s))
	}
	hash.Sum(sum[:0])
	return sum, true
}
