package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// pending is a validated line on its way to the bus.
type pending struct {
	line int
	// key is the item's idempotency key (entry.id adds its digest).
	key string
	entry
	// settle is the admission credit it holds (none: not admitted).
	settle settlement
}

// publishBatch handles POST /v1/topics/{topic}/messages:batch. The whole body
// is read and every line validated before anything is published, so a
// request-level refusal never follows a partial acceptance. Each line then
// succeeds or fails alone; the answer has one result per non-blank line.
func (g *Gateway) publishBatch(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	t, err := g.topic(r)
	if err != nil {
		return err
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/x-ndjson" && mt != "application/jsonl") {
		return fmt.Errorf("%w: a batch must be application/x-ndjson (one JSON object per line), got %q", errMediaType, r.Header.Get("Content-Type"))
	}
	if err := checkEncoding(r); err != nil {
		return err
	}
	if none, wait := g.adm.exhausted(t.Name); none {
		// Refuse before reading the body: no line could be admitted.
		g.adm.setHeaders(w.Header(), t.Name)
		return refuse("admission", wait, fmt.Errorf("%w: no admission credit left for topic %s at this gateway", errTopicFull, t.Name))
	}
	reserve := r.ContentLength
	if reserve < 0 || reserve > int64(g.cfg.MaxBatchBytes) {
		reserve = int64(g.cfg.MaxBatchBytes)
	}
	if !g.limits.reserveBody(reserve) {
		return refuse("body_bytes", g.adm.shedRetryAfter(),
			fmt.Errorf("%w: %v of request bodies held at this gateway", errOverloaded, g.cfg.MaxBodyBytesInFlight))
	}
	defer g.limits.releaseBody(reserve)
	body, err := readBody(w, r, int64(g.cfg.MaxBatchBytes))
	if err != nil {
		return err
	}
	items, err := g.parseBatch(body, t)
	if err != nil {
		return err
	}
	scope(items, tenantName(c))
	g.admitAll(r, w, t.Name, items, c)
	g.publishAll(r.Context(), t.Name, items)

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, it := range items {
		var res any
		if it.err != nil {
			id := g.countRefusal(t.Name, it.err)
			p, _ := problemFor(it.err)
			p.ID, p.Line, p.Alarm = it.key, it.line, id
			res = p
		} else {
			res = Receipt{Line: it.line, Topic: t.Name, Seq: it.seq, ID: it.key, Duplicate: it.dup}
		}
		if err := enc.Encode(res); err != nil {
			return nil // the client went away; nothing more to tell it
		}
	}
	return nil
}

// parseBatch splits body into lines and validates each; blank lines are
// skipped. A bad line gets its own error; too many lines refuse the batch.
func (g *Gateway) parseBatch(body []byte, t topology.Topic) ([]*pending, error) {
	var items []*pending
	lineNo := 0
	for len(body) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(items) == g.cfg.MaxBatchLines {
			return nil, fmt.Errorf("%w: a batch holds at most %d messages", errTooLarge, g.cfg.MaxBatchLines)
		}
		it := &pending{line: lineNo}
		switch {
		case len(line) > int(g.cfg.MaxLineBytes):
			it.err = fmt.Errorf("%w: line of %d bytes exceeds max_line_bytes (%v)", errTooLarge, len(line), g.cfg.MaxLineBytes)
		case !utf8.Valid(line):
			// encoding/json would store U+FFFD in place of the bad bytes:
			// refuse rather than change the message.
			it.err = fmt.Errorf("%w: the line is not valid UTF-8 (JSON must be; send bytes as data_base64)", errMalformed)
		case jsonDepth(line) > g.cfg.MaxJSONDepth:
			it.err = fmt.Errorf("%w: JSON nested deeper than %d levels", errMalformed, g.cfg.MaxJSONDepth)
		default:
			it.key, it.msg, it.err = parseItem(line, t)
			if it.err == nil {
				it.id = sluice.DedupID(it.key, digest(it.msg))
			}
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: the batch is empty", errMalformed)
	}
	return items, nil
}

// scope stamps each valid item with tenant and scopes its deduplication id
// to it (sluice.TenantDedupID); open mode ("") keeps parseBatch's.
func scope(items []*pending, tenant string) {
	if tenant == "" {
		return
	}
	for _, it := range items {
		if it.err == nil {
			stamp(it.msg, tenant)
			it.id = sluice.TenantDedupID(tenant, it.key, strings.TrimPrefix(it.id, it.key+"."))
		}
	}
}

// jsonDepth is the deepest nesting of objects and arrays in b, counted
// outside strings, without decoding; malformed JSON is left to the decoder.
func jsonDepth(b []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

func parseItem(line []byte, t topology.Topic) (string, *nats.Msg, error) {
	var it sluice.BatchLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&it); err != nil {
		return "", nil, fmt.Errorf("%w: line is not a batch item {\"id\",\"data\"|\"data_base64\",\"meta\"}: %v", errMalformed, err)
	}
	// Only white space may follow the item. (dec.More() is false before a
	// stray ']' or '}', which let `{"data":1}]` through: found by fuzzing.)
	if rest := line[dec.InputOffset():]; len(bytes.TrimSpace(rest)) > 0 {
		return it.ID, nil, fmt.Errorf("%w: more than one JSON value on the line (trailing %q)", errMalformed, clip(string(rest)))
	}
	id := it.ID
	if id == "" {
		id = newID()
	} else if err := validateID(id); err != nil {
		return id, nil, err
	}
	msg := nats.NewMsg(sluice.Subject(t.Name))
	switch {
	case it.Data != nil && it.DataBase64 != nil:
		return id, nil, fmt.Errorf("%w: give either data or data_base64, not both", errMalformed)
	case it.DataBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*it.DataBase64)
		if err != nil {
			return id, nil, fmt.Errorf("%w: data_base64: %v", errMalformed, err)
		}
		msg.Data = b
		msg.Header.Set(sluice.HeaderContentType, "application/octet-stream")
	case it.Data != nil:
		msg.Data = []byte(it.Data)
		msg.Header.Set(sluice.HeaderContentType, "application/json")
	default:
		return id, nil, fmt.Errorf("%w: the item has neither data nor data_base64", errMalformed)
	}
	if int64(len(msg.Data)) > int64(t.MaxMessageSize) {
		return id, nil, fmt.Errorf("%w: payload of %d bytes exceeds the topic's limit of %d bytes", errTooLarge, len(msg.Data), t.MaxMessageSize)
	}
	for name, v := range it.Meta {
		if err := setMeta(msg.Header, name, v); err != nil {
			return id, nil, err
		}
	}
	if it.ID == "" {
		// An item whose metadata is a CloudEvent's attributes (ce-id,
		// ce-source, ce-specversion) is keyed by the event's identity.
		if key := cloudEventKey(msg.Header); key != "" {
			id = key
		}
	}
	return id, msg, nil
}

// admitAll passes each valid item through the admission door; a refused
// item gets its own 429.
func (g *Gateway) admitAll(r *http.Request, w http.ResponseWriter, topic string, items []*pending, c tenant.Caller) {
	for _, it := range items {
		if it.err != nil {
			continue
		}
		it.settle, it.err = g.admit(entrance{caller: c, topic: topic, size: int64(len(it.msg.Data)), req: r})
	}
	g.adm.setHeaders(w.Header(), topic) // once, with what is left after the batch
}

// publishAll hands every valid item to the topic's group commit and waits
// for every answer (each within the publish timeout).
func (g *Gateway) publishAll(ctx context.Context, topic string, items []*pending) {
	defer func() {
		for _, it := range items {
			if it.settle.held() {
				it.settle.settle(it.err)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout)
	defer cancel()
	var done sync.WaitGroup
	held := 0 // publish window slots
	defer func() {
		for range held {
			g.limits.releasePublish()
		}
	}()
	// Items go to the group commit together while window slots are free;
	// before waiting for a slot, what has its slots is submitted, so a
	// request never sits on slots while it waits for more.
	var ready []*entry
	submit := func() {
		done.Add(len(ready))
		g.commits[topic].submit(ready...)
		ready = ready[:0]
	}
	for _, it := range items {
		if it.err == nil && !g.limits.tryAcquirePublish() {
			submit()
			if !g.limits.acquirePublish(ctx) {
				it.err = refuse("publish_window", g.adm.shedRetryAfter(),
					fmt.Errorf("%w: %d publishes awaiting the bus's ack at this gateway", errOverloaded, g.cfg.PublishWindow))
			}
		}
		if it.err != nil {
			g.commits[topic].record(false, it.err) // never sent
			continue
		}
		held++
		it.deadline, it.done = time.Now().Add(g.cfg.PublishTimeout), &done
		ready = append(ready, &it.entry)
	}
	submit()
	done.Wait()
}
