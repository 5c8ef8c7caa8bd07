package sluice

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DeadLetter is one message in a family's dead letters, as the gateway's
// dead-letter API shows it.
type DeadLetter struct {
	// Seq is its sequence in the dead-letter stream (what peek, redrive
	// and purge of one message take).
	Seq uint64 `json:"seq"`
	// ID is the message's idempotency key; OriginalSeq its sequence in
	// the topic when it died.
	ID          string    `json:"id"`
	OriginalSeq uint64    `json:"original_seq"`
	Reason      string    `json:"reason"`
	Attempts    int       `json:"attempts"`
	Error       string    `json:"error"`
	DeadAt      time.Time `json:"dead_at"`
	Size        int       `json:"size"`
	// Peek only: the payload (Data when it is valid UTF-8, else
	// DataBase64), its content type and metadata. Meta's names are as the
	// message stored them: HTTP's canonical case (Customer, Order-Id), as
	// a worker's Message.Header has them after Sluice-Meta-; MetaValue
	// looks one up whatever its case.
	ContentType string            `json:"content_type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Data        *string           `json:"data,omitempty"`
	DataBase64  []byte            `json:"data_base64,omitempty"`
}

// MetaValue is the dead letter's metadata value under name, whatever the
// case of name (metadata names are HTTP field names: case-insensitive).
func (d DeadLetter) MetaValue(name string) string {
	if v, ok := d.Meta[canonicalName(name)]; ok {
		return v
	}
	for k, v := range d.Meta {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// DeadLetterPage is a page of a family's dead letters, oldest first.
type DeadLetterPage struct {
	Topic  string `json:"topic"`
	Family string `json:"family"`
	// Total and Bytes are for all the family's dead letters.
	Total       uint64       `json:"total"`
	Bytes       uint64       `json:"bytes"`
	DeadLetters []DeadLetter `json:"dead_letters"`
	// Next is the After of the following page; 0 when this one is the last.
	Next uint64 `json:"next"`
}

// RedriveResult is what a redrive did: each redriven dead letter is back in
// its topic for its family only (with its original id) and removed from the
// dead letters. A redrive stops early when admission refuses (Stopped names
// why; RetryAfter says when to go on) or its time is up.
type RedriveResult struct {
	Redriven  int    `json:"redriven"`
	Remaining uint64 `json:"remaining"`
	// Seqs are the dead letters redriven, each with its new topic sequence.
	Seqs []RedrivenSeq `json:"seqs"`
	// Stopped is "" when the redrive did what it was asked (or ran out
	// of dead letters), else why it stopped: "time", or the problem type
	// that refused it (e.g. "rate-limited"); RetryAfter is then when to
	// go on, in seconds (0 when there is nothing to wait for). Both are
	// always in the answer.
	Stopped    string `json:"stopped"`
	RetryAfter int    `json:"retry_after_seconds"`
}

// RedrivenSeq maps a dead letter to the topic sequence it was redriven to.
type RedrivenSeq struct {
	DeadLetter uint64 `json:"dead_letter"`
	TopicSeq   uint64 `json:"topic_seq"`
}

// PurgeResult is how many dead letters a purge removed.
type PurgeResult struct {
	Purged uint64 `json:"purged"`
}

// Admin calls a gateway's operations API (dead letters). Unlike the
// Producer it does not retry: operators see every refusal.
type Admin struct {
	base   string
	client *http.Client
	auth   string
}

// SetAPIKey sends key as "Authorization: Bearer <key>" with every call.
func (a *Admin) SetAPIKey(key string) {
	a.auth = ""
	if key != "" {
		a.auth = "Bearer " + key
	}
}

// NewAdmin returns an Admin for the gateway at base (e.g. "http://127.0.0.1:8080").
func NewAdmin(base string, client *http.Client) (*Admin, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: gateway URL %q", ErrInvalidOption, base)
	}
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Minute}
	}
	return &Admin{base: strings.TrimRight(base, "/"), client: client}, nil
}

// DeadLetterPath is the gateway's route for a family's dead letters.
func DeadLetterPath(topic, family string) string {
	return "/v1/topics/" + url.PathEscape(topic) + "/families/" + url.PathEscape(family) + "/dead-letters"
}

// ListDeadLetters returns up to limit dead letters after the sequence after.
func (a *Admin) ListDeadLetters(ctx context.Context, topic, family string, after uint64, limit int) (DeadLetterPage, error) {
	var page DeadLetterPage
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(limit)}}
	err := a.call(ctx, http.MethodGet, DeadLetterPath(topic, family)+"?"+q.Encode(), &page)
	return page, err
}

// PeekDeadLetter returns one dead letter with its payload and metadata.
func (a *Admin) PeekDeadLetter(ctx context.Context, topic, family string, seq uint64) (DeadLetter, error) {
	var dl DeadLetter
	err := a.call(ctx, http.MethodGet, DeadLetterPath(topic, family)+"/"+strconv.FormatUint(seq, 10), &dl)
	return dl, err
}

// Redrive sends up to limit of the family's dead letters (oldest first)
// back to the family through the gateway's admission, at the gateway's
// redrive rate; seq > 0 redrives that one only.
func (a *Admin) Redrive(ctx context.Context, topic, family string, seq uint64, limit int) (RedriveResult, error) {
	var res RedriveResult
	path := DeadLetterPath(topic, family) + "/redrive?limit=" + strconv.Itoa(limit)
	if seq > 0 {
		path = DeadLetterPath(topic, family) + "/" + strconv.FormatUint(seq, 10) + "/redrive"
	}
	err := a.call(ctx, http.MethodPost, path, &res)
	return res, err
}

// Purge removes the family's dead letters (seq > 0: that one only).
func (a *Admin) Purge(ctx context.Context, topic, family string, seq uint64) (PurgeResult, error) {
	var res PurgeResult
	path := DeadLetterPath(topic, family)
	if seq > 0 {
		path += "/" + strconv.FormatUint(seq, 10)
	}
	err := a.call(ctx, http.MethodDelete, path, &res)
	return res, err
}

func (a *Admin) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, http.NoBody)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if a.auth != "" {
		req.Header.Set("Authorization", a.auth)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer drain(resp)
	if resp.StatusCode >= 300 {
		return problemOf(resp)
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return fmt.Errorf("%w: reading answer: %w", ErrUnavailable, err)
	}
	if err := json.Unmarshal(body.Bytes(), out); err != nil {
		return fmt.Errorf("%w: bad answer from %s: %w", ErrInternal, a.base, err)
	}
	return nil
}
