package sluice

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nuid"
	"go.uber.org/zap"
)

// Receipt is the gateway's proof that the bus stored a message durably.
type Receipt struct {
	Topic string `json:"topic"`
	Seq   uint64 `json:"seq"`
	ID    string `json:"id"`
	// Duplicate: the id was already stored within the duplicate window;
	// Seq is the original message's.
	Duplicate bool `json:"duplicate"`
}

// Producer publishes messages to gateways over HTTP. Each logical message
// gets one idempotency key, reused on every retry, so retries after an
// unknown outcome are stored once. It retries 429, 503 and network errors
// with jittered exponential backoff, honouring Retry-After, moving to the
// next gateway after a failure, within the context's deadline and a
// bounded number of attempts. When the gateway asks for a wait longer than
// the deadline leaves, it waits until a second before the deadline and
// tries once more rather than give up at once. Safe for concurrent use.
type Producer struct {
	urls        []string
	client      *http.Client
	backoff     backoff
	maxAttempts int
	deadline    time.Duration // per message, over all attempts; 0: none
	budget      *retryBudget  // nil: retries limited per message only
	log         *zap.Logger
	next        atomic.Uint32
	pace        pacer
	auth        string // Authorization header value; "" sends none
}

// NewProducer returns a producer for the gateways at urls (e.g.
// "http://127.0.0.1:8080"); it fails over between them.
func NewProducer(urls []string, opts ...ProducerOption) (*Producer, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: no gateway URL", ErrInvalidOption)
	}
	p := &Producer{
		client:      &http.Client{Timeout: 30 * time.Second},
		backoff:     backoff{initial: 100 * time.Millisecond, max: 5 * time.Second},
		maxAttempts: DefaultRetryPolicy().MaxAttempts,
		log:         zap.NewNop(),
	}
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, fmt.Errorf("%w: gateway URL %q", ErrInvalidOption, u)
		}
		p.urls = append(p.urls, strings.TrimRight(u, "/"))
	}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Publish stores data in topic and returns its receipt. On failure the error
// wraps a sentinel (ErrTopicNotFound, ErrMessageTooLarge, ErrThrottled,
// ErrUnavailable, ErrOutcomeUnknown, ...). When any attempt may have stored
// the message and none confirmed it, the error also matches
// ErrOutcomeUnknown: publish again with the same WithID to be sure.
func (p *Producer) Publish(ctx context.Context, topic string, data []byte, opts ...PublishOption) (Receipt, error) {
	o := publishOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.id == "" {
		o.id = nuid.Next()
	}
	header := http.Header{}
	header.Set(HeaderIdempotencyKey, o.id)
	if o.contentType != "" {
		header.Set("Content-Type", o.contentType)
	}
	for k, v := range o.meta {
		header.Set(HeaderMetaPrefix+k, v)
	}
	var rc Receipt
	path := "/v1/topics/" + url.PathEscape(topic) + "/messages"
	err := p.retry(ctx, func(ctx context.Context, base string) error {
		if err := p.pace.wait(ctx, topic); err != nil {
			return err
		}
		resp, err := p.do(ctx, base+path, header, data)
		if err != nil {
			return err
		}
		defer drain(resp)
		p.pace.observe(topic, resp.Header)
		if resp.StatusCode != http.StatusAccepted {
			return problemOf(resp)
		}
		if err := json.NewDecoder(resp.Body).Decode(&rc); err != nil {
			return &transportError{err: fmt.Errorf("decoding receipt: %w", err), maybeStored: true}
		}
		return nil
	})
	if err != nil {
		return Receipt{}, fmt.Errorf("sluice: publish %s id %s: %w", topic, o.id, err)
	}
	return rc, nil
}

// BatchMessage is one message of PublishBatch. Set JSON to store a JSON
// document (Content-Type application/json), or Data for any bytes.
type BatchMessage struct {
	ID   string
	JSON json.RawMessage
	Data []byte
	Meta map[string]string
}

// BatchResult is the outcome of one BatchMessage: a receipt, or Err.
type BatchResult struct {
	Receipt
	Err error
}

// BatchLine is one NDJSON line of a batch request, as the gateway reads it
// and the Producer writes it: the payload as a JSON document (Data) or as
// bytes (DataBase64), with an optional id and metadata.
type BatchLine struct {
	ID         string            `json:"id,omitempty"`
	Data       json.RawMessage   `json:"data,omitempty"`
	DataBase64 *string           `json:"data_base64,omitempty"`
	Meta       map[string]string `json:"meta,omitempty"`
}

type wireResult struct {
	Line int `json:"line"`
	Receipt
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// PublishBatch stores many messages in one request per attempt; results are
// in the order of msgs. Messages refused for a temporary reason are retried
// (with their ids) within the same budget as Publish; the others keep their
// error. The returned error is for the batch as a whole (nothing stored).
func (p *Producer) PublishBatch(ctx context.Context, topic string, msgs []BatchMessage) ([]BatchResult, error) {
	results := make([]BatchResult, len(msgs))
	todo := make([]int, 0, len(msgs))
	for i := range msgs {
		if msgs[i].ID == "" {
			msgs[i].ID = nuid.Next()
		}
		todo = append(todo, i)
	}
	header := http.Header{}
	header.Set("Content-Type", "application/x-ndjson")
	path := "/v1/topics/" + url.PathEscape(topic) + "/messages:batch"
	answered := false
	// Per message: the last failure, and whether any attempt may have stored it.
	lastErr := make([]error, len(msgs))
	doubt := make([]bool, len(msgs))
	failAll := func(idx []int, err error) error {
		for _, i := range idx {
			lastErr[i] = err
			doubt[i] = doubt[i] || maybeStored(err)
		}
		return err
	}
	err := p.retry(ctx, func(ctx context.Context, base string) error {
		var body bytes.Buffer
		enc := json.NewEncoder(&body)
		for _, i := range todo {
			m := msgs[i]
			w := BatchLine{ID: m.ID, Meta: m.Meta}
			if m.JSON != nil {
				w.Data = m.JSON
			} else {
				s := base64.StdEncoding.EncodeToString(m.Data)
				w.DataBase64 = &s
			}
			if err := enc.Encode(w); err != nil {
				return fmt.Errorf("%w: message %d: %v", ErrBadRequest, i, err)
			}
		}
		if err := p.pace.wait(ctx, topic); err != nil {
			return failAll(todo, err)
		}
		resp, err := p.do(ctx, base+path, header, body.Bytes())
		if err != nil {
			return failAll(todo, err)
		}
		defer drain(resp)
		p.pace.observe(topic, resp.Header)
		if resp.StatusCode != http.StatusOK {
			return failAll(todo, problemOf(resp))
		}
		answered = true
		var again []int
		var retryErr error
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		k := 0
		for ; k < len(todo) && sc.Scan(); k++ {
			var r wireResult
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				break // the rest counts as unanswered
			}
			i := todo[k]
			if r.Status == 0 {
				results[i], lastErr[i] = BatchResult{Receipt: r.Receipt}, nil
				continue
			}
			e := &Error{Problem: Problem{Type: r.Type, Title: r.Title, Status: r.Status, Detail: r.Detail, Line: r.Line, ID: r.ID}}
			failAll([]int{i}, e)
			if e.Temporary() {
				again = append(again, i)
				retryErr = e
			} else {
				results[i] = BatchResult{Err: e}
			}
		}
		if k < len(todo) {
			// A short or broken answer: the unanswered lines may be stored.
			again = append(again, todo[k:]...)
			retryErr = failAll(todo[k:], &transportError{
				err: fmt.Errorf("%w: batch answer ended after %d of %d results", ErrOutcomeUnknown, k, len(todo)), maybeStored: true})
		}
		todo = again
		return retryErr
	})
	if err != nil && !answered {
		return nil, fmt.Errorf("sluice: publish batch to %s: %w", topic, err)
	}
	if err != nil {
		// Some lines were answered; those still to do ran out of retries.
		for _, i := range todo {
			results[i] = BatchResult{Err: fmt.Errorf("sluice: publish %s id %s: %w", topic, msgs[i].ID, withDoubt(lastErr[i], doubt[i]))}
		}
	}
	// A line that may have been stored by an earlier attempt keeps that
	// doubt whatever a later attempt answered (e.g. 503 unknown, then 404).
	for i, r := range results {
		if r.Err != nil && doubt[i] {
			results[i].Err = withDoubt(r.Err, true)
		}
	}
	return results, nil
}

// transportError is a failure to get an answer at all.
type transportError struct {
	err         error
	maybeStored bool // the request may have reached the gateway
}

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// MaybeStored reports whether a failed request may still have stored its
// message(s): an unknown publish outcome, a server or proxy error (500, 502,
// 504, a 503 that is not Sluice's "bus unavailable"), or a request that may
// have been sent before the connection failed. Answers that prove nothing
// was stored (4xx, 429, 503 bus-unavailable, connection refused) are not.
func maybeStored(err error) bool {
	var se *Error
	var te *transportError
	switch {
	case errors.As(err, &se):
		return se.Status >= 500 && se.Type != ProblemBusUnavailable && se.Type != ProblemOverloaded
	case errors.As(err, &te):
		return te.maybeStored
	}
	return false
}

// retry runs attempt against gateways in turn until it succeeds, fails for
// good, runs out of attempts or ctx ends. If any failed attempt may have
// stored the message, the error matches ErrOutcomeUnknown, whatever came after.
func (p *Producer) retry(ctx context.Context, attempt func(ctx context.Context, base string) error) error {
	if p.deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.deadline)
		defer cancel()
	}
	if p.budget != nil {
		p.budget.deposit()
	}
	var last error
	doubt := false
	for n := 0; n < p.maxAttempts; n++ {
		turn := p.next.Load()
		err := attempt(ctx, p.urls[int(turn%uint32(len(p.urls)))])
		if err == nil {
			return nil
		}
		// After a failure move on to the next gateway, unless a concurrent
		// publish already did.
		failover := func() { p.next.CompareAndSwap(turn, turn+1) }
		last = err
		doubt = doubt || maybeStored(err)
		var wait time.Duration
		var se *Error
		var te *transportError
		paced := false // a 429: the gateway pacing its admission
		switch {
		case errors.As(err, &se) && se.Temporary():
			wait = max(se.RetryAfter, p.backoff.wait(n))
			paced = se.Status == http.StatusTooManyRequests
			if se.Status != http.StatusTooManyRequests { // a full topic is full at every gateway
				failover()
			}
		case errors.As(err, &te):
			wait = p.backoff.wait(n)
			failover()
		default:
			return withDoubt(err, doubt)
		}
		if n == p.maxAttempts-1 || ctx.Err() != nil {
			break
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			// Retry-After is the gateway's estimate, not a promise: rather
			// than fail now, try once more just before the deadline.
			if wait = time.Until(dl) - lastTry; wait <= 0 {
				break // no time left for an attempt to be answered
			}
		}
		// A 429 is the gateway pacing its own admission (with Retry-After),
		// answered before the body is read: not the load an outage
		// multiplies, so its retry does not draw on the budget.
		if p.budget != nil && !paced && !p.budget.withdraw() {
			return withDoubt(fmt.Errorf("%w: %w", last, ErrRetryBudget), doubt)
		}
		p.log.Debug("retrying", zap.Int("attempt", n+1), zap.Duration("wait", wait), zap.Error(err))
		if !sleep(ctx.Done(), wait) {
			break
		}
	}
	if ctx.Err() != nil {
		last = fmt.Errorf("%w (last: %w)", ctx.Err(), last)
	}
	return withDoubt(last, doubt)
}

// lastTry is what a producer keeps of its deadline for a last attempt to
// be answered, when the gateway asks it to wait past the deadline.
const lastTry = time.Second

// withDoubt makes err match ErrOutcomeUnknown when doubt is set.
func withDoubt(err error, doubt bool) error {
	if doubt && !errors.Is(err, ErrOutcomeUnknown) {
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return err
}

// do sends one request; a failure to get a response is a transportError,
// ErrUnavailable when the request cannot have been sent, ErrOutcomeUnknown
// when it may have been.
func (p *Producer) do(ctx context.Context, u string, header http.Header, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if p.auth != "" {
		req.Header.Set("Authorization", p.auth)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		if sentMaybe(err) {
			return nil, &transportError{err: fmt.Errorf("%w: %w", ErrOutcomeUnknown, err), maybeStored: true}
		}
		return nil, &transportError{err: fmt.Errorf("%w: %w", ErrUnavailable, err)}
	}
	if resp.Header.Get(HeaderLameDuck) != "" {
		p.leave(u)
	}
	return resp, nil
}

// leave moves the next requests off the stopping gateway whose request URL
// is u, unless a concurrent request already did.
func (p *Producer) leave(u string) {
	turn := p.next.Load()
	if strings.HasPrefix(u, p.urls[int(turn%uint32(len(p.urls)))]+"/") {
		if p.next.CompareAndSwap(turn, turn+1) {
			p.log.Debug("gateway is stopping; moving to the next", zap.String("url", u))
		}
	}
}

// sentMaybe: unless the connection was refused or the name did not
// resolve, the request may have reached the gateway.
func sentMaybe(err error) bool {
	var dnsErr *net.DNSError
	return !errors.Is(err, syscall.ECONNREFUSED) && !errors.As(err, &dnsErr)
}

// problemOf reads an error answer into an *Error.
func problemOf(resp *http.Response) error {
	e := &Error{Problem: Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" {
		var p Problem
		if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&p); err == nil {
			e.Problem = p
			e.Status = resp.StatusCode
		}
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(ra); err == nil && secs >= 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			e.RetryAfter = max(0, time.Until(t))
		}
	}
	return e
}

// drain reads what is left of a body so the connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
