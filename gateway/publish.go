package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// publish handles POST /v1/topics/{topic}/messages: the body is the payload.
func (g *Gateway) publish(w http.ResponseWriter, r *http.Request, c tenant.Caller) (err error) {
	t, err := g.topic(r)
	if err != nil {
		return err
	}
	if err := checkEncoding(r); err != nil {
		return err
	}
	id := r.Header.Get(sluice.HeaderIdempotencyKey)
	if id != "" {
		if err := validateID(id); err != nil {
			return err
		}
	}
	event, err := cloudEventMode(r)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(sluice.Subject(t.Name))
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if len(ct) > maxContentTypeLen {
			return fmt.Errorf("%w: Content-Type longer than %d bytes", errMalformed, maxContentTypeLen)
		}
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			return fmt.Errorf("%w: Content-Type %q: %v", errMalformed, ct, err)
		}
		msg.Header.Set(sluice.HeaderContentType, ct)
	}
	for name, values := range r.Header {
		if meta, ok := strings.CutPrefix(name, sluice.HeaderMetaPrefix); ok {
			if err := setMeta(msg.Header, meta, values...); err != nil {
				return err
			}
		}
	}
	if event == "binary" {
		if err := binaryEvent(r, msg.Header); err != nil {
			return err
		}
	}
	// Admission, before a byte of the body is read: a refusal is cheap. A
	// body of unknown length (chunked) is charged the most it may be, and
	// its real size once read (chargeBody).
	size := r.ContentLength
	if size < 0 || size > int64(t.MaxMessageSize) {
		size = int64(t.MaxMessageSize)
	}
	credit, err := g.admit(entrance{caller: c, topic: t.Name, size: size, req: r, header: w.Header()})
	if err != nil {
		return err
	}
	defer func() { credit.settle(err) }() // settles the credit from how the request ends
	reserve := r.ContentLength
	if reserve < 0 || reserve > int64(t.MaxMessageSize) {
		reserve = int64(t.MaxMessageSize) // chunked: the most it may be
	}
	if !g.limits.reserveBody(reserve) {
		return refuse("body_bytes", g.adm.shedRetryAfter(),
			fmt.Errorf("%w: %v of request bodies held at this gateway", errOverloaded, g.cfg.MaxBodyBytesInFlight))
	}
	defer g.limits.releaseBody(reserve)
	body, err := readBody(w, r, int64(t.MaxMessageSize))
	if err != nil {
		return err
	}
	msg.Data = body
	credit = credit.chargeBody(int64(len(body)))
	if event == "structured" {
		if err := structuredEvent(body, msg); err != nil {
			return err
		}
	}
	if id == "" {
		// An event's key is its identity; any other message's is new.
		if id = cloudEventKey(msg.Header); id == "" {
			id = newID()
		}
	}
	stamp(msg, tenantName(c))
	receipt, err := g.store(r.Context(), t.Name, "", tenantName(c), id, msg)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, receipt)
	return nil
}

// topic resolves the {topic} path value to a declared topic.
func (g *Gateway) topic(r *http.Request) (topology.Topic, error) {
	name := r.PathValue("topic")
	t, ok := g.cfg.Topics[name]
	if !ok {
		return topology.Topic{}, fmt.Errorf("%w: %q", errTopicNotFound, clip(name))
	}
	return t, nil
}

// clip shortens a name from a request path, or other request bytes, for an
// error message.
func clip(name string) string {
	if len(name) > sluice.MaxNameLen {
		return name[:sluice.MaxNameLen] + "..."
	}
	return name
}

// checkEncoding refuses compressed bodies: the payload is stored as sent and
// the size limit applies to what is stored.
func checkEncoding(r *http.Request) error {
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("%w: Content-Encoding %q is not supported; send the payload uncompressed", errMediaType, ce)
	}
	return nil
}

// readBody reads at most limit bytes; a larger body is refused as soon as its
// declared length or its bytes read pass the limit, never buffered whole.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d bytes", errTooLarge, r.ContentLength, limit)
	}
	if r.ContentLength >= 0 {
		// Declared length: one allocation of exactly that size (the
		// server never reads past the declared length).
		body := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, fmt.Errorf("%w: reading body: %v", errMalformed, err)
		}
		return body, nil
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, fmt.Errorf("%w: body exceeds the limit of %d bytes", errTooLarge, limit)
	case err != nil && !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: reading body: %v", errMalformed, err)
	}
	return buf.Bytes(), nil
}

// store passes msg through the publish window to topic's group commit
// (committer.store), for family only when set (a redrive), deduplicated
// among tenant's messages (sluice.TenantDedupID). The window wait is
// bounded by publish_window_wait; the entry's deadline bounds the rest.
func (g *Gateway) store(ctx context.Context, topic, family, tenant, key string, msg *nats.Msg) (Receipt, error) {
	if !g.limits.acquirePublish(ctx) {
		return Receipt{}, refuse("publish_window", g.adm.shedRetryAfter(),
			fmt.Errorf("%w: %d publishes awaiting the bus's ack at this gateway", errOverloaded, g.cfg.PublishWindow))
	}
	defer g.limits.releasePublish()
	return g.commits[topic].store(family, tenant, key, msg)
}
