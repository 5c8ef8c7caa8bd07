package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// Refusal reasons. Handlers return errors wrapping one of these; problemFor
// is the one place that turns them into an HTTP status and problem type.
var (
	errMalformed        = errors.New("malformed request")
	errUnauthorized     = errors.New("not authenticated")
	errForbidden        = errors.New("forbidden")
	errHeaderTooLarge   = errors.New("request header fields too large")
	errRouteNotFound    = errors.New("no such route")
	errTopicNotFound    = errors.New("unknown topic")
	errFamilyNotFound   = errors.New("unknown family")
	errDeadNotFound     = errors.New("no such dead letter")
	errMethodNotAllowed = errors.New("method not allowed")
	errTooLarge         = errors.New("too large")
	errMediaType        = errors.New("unsupported media type")
	errTopicFull        = errors.New("topic full")
	errRateLimited      = errors.New("client rate limit")
	errOverloaded       = errors.New("gateway overloaded")
	errStreamBusy       = errors.New("stream busy")
	errBusUnavailable   = errors.New("bus unavailable")
	errOutcomeUnknown   = errors.New("publish outcome unknown")
)

type problemKind struct {
	status int
	ptype  string
	title  string
	// retry: the answer carries Retry-After.
	retry bool
}

var kinds = []struct {
	err  error
	kind problemKind
}{
	{errMalformed, problemKind{http.StatusBadRequest, sluice.ProblemBadRequest, "Bad request", false}},
	{errUnauthorized, problemKind{http.StatusUnauthorized, sluice.ProblemUnauthorized, "Unauthorized", false}},
	{errForbidden, problemKind{http.StatusForbidden, sluice.ProblemForbidden, "Forbidden", false}},
	{errHeaderTooLarge, problemKind{http.StatusRequestHeaderFieldsTooLarge, sluice.ProblemHeaderTooLarge, "Request header fields too large", false}},
	{errRouteNotFound, problemKind{http.StatusNotFound, sluice.ProblemNotFound, "Not found", false}},
	{errTopicNotFound, problemKind{http.StatusNotFound, sluice.ProblemTopicNotFound, "Topic not found", false}},
	{errFamilyNotFound, problemKind{http.StatusNotFound, sluice.ProblemFamilyNotFound, "Family not found", false}},
	{errDeadNotFound, problemKind{http.StatusNotFound, sluice.ProblemDeadLetterNotFound, "Dead letter not found", false}},
	{errMethodNotAllowed, problemKind{http.StatusMethodNotAllowed, sluice.ProblemMethodNotAllowed, "Method not allowed", false}},
	{errTooLarge, problemKind{http.StatusRequestEntityTooLarge, sluice.ProblemMessageTooLarge, "Content too large", false}},
	{errMediaType, problemKind{http.StatusUnsupportedMediaType, sluice.ProblemUnsupportedMediaType, "Unsupported media type", false}},
	{errTopicFull, problemKind{http.StatusTooManyRequests, sluice.ProblemTopicFull, "Topic full", true}},
	{errStreamBusy, problemKind{http.StatusTooManyRequests, sluice.ProblemTopicFull, "Topic busy", true}},
	{errRateLimited, problemKind{http.StatusTooManyRequests, sluice.ProblemRateLimited, "Rate limited", true}},
	{errOverloaded, problemKind{http.StatusServiceUnavailable, sluice.ProblemOverloaded, "Overloaded", true}},
	{errBusUnavailable, problemKind{http.StatusServiceUnavailable, sluice.ProblemBusUnavailable, "Bus unavailable", true}},
	{errOutcomeUnknown, problemKind{http.StatusServiceUnavailable, sluice.ProblemOutcomeUnknown, "Publish outcome unknown", true}},
}

var internalKind = problemKind{http.StatusInternalServerError, sluice.ProblemInternal, "Internal error", false}

// problemFor maps an error to its problem. Unrecognised errors are 500,
// which is always a gateway bug.
func problemFor(err error) (sluice.Problem, problemKind) {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return sluice.Problem{Type: k.kind.ptype, Title: k.kind.title, Status: k.kind.status, Detail: err.Error()}, k.kind
		}
	}
	return sluice.Problem{Type: internalKind.ptype, Title: internalKind.title, Status: internalKind.status,
		Detail: "the gateway failed unexpectedly; this is a bug"}, internalKind
}

// refusal is a refusal with its own Retry-After and the reason it is
// counted under in sluice_gateway_refusals_total.
type refusal struct {
	err        error
	retryAfter time.Duration
	reason     string
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(reason string, retryAfter time.Duration, err error) error {
	return &refusal{err: err, retryAfter: retryAfter, reason: reason}
}

// jsErrCodeStoreFailed is JetStream's JSStreamStoreFailedF (10077): the
// stream refused to store, e.g. "maximum messages exceeded" under DiscardNew.
const jsErrCodeStoreFailed jetstream.ErrorCode = 10077

// classifyPublish turns a JetStream publish error into a refusal reason.
// Only errors that prove nothing was stored are "unavailable"; everything
// else is an unknown outcome: the client must retry with the same key and
// the duplicate window keeps it from being stored twice. On a replicated
// topic a store failure the leader reports may come after the entry
// committed on the followers: unknown too.
func classifyPublish(err error, replicated bool) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr):
		switch {
		case apiErr.ErrorCode == jsErrCodeStoreFailed &&
			(strings.Contains(apiErr.Description, "maximum messages") || strings.Contains(apiErr.Description, "maximum bytes")):
			return fmt.Errorf("%w: the topic holds as many messages as it may (%s); retry when workers have drained it", errTopicFull, apiErr.Description)
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum,
			apiErr.ErrorCode == jsErrCodeStoreFailed && strings.Contains(apiErr.Description, "too large"):
			return fmt.Errorf("%w: %s", errTooLarge, apiErr.Description)
		case apiErr.Code == http.StatusTooManyRequests:
			// JetStream's own 429: the stream's ingest queue overflowed and
			// dropped the message.
			return fmt.Errorf("%w: the stream is taking in more than it can store (%s)", errStreamBusy, apiErr.Description)
		case apiErr.Code == http.StatusServiceUnavailable && !replicated:
			// A lone broker refused the write (storage failure): nothing
			// was stored.
			return fmt.Errorf("%w: %s", errBusUnavailable, apiErr.Description)
		default:
			return fmt.Errorf("%w: bus answered %s", errOutcomeUnknown, apiErr.Error())
		}
	case errors.Is(err, nats.ErrMaxPayload):
		// Refused by the client library before anything was sent.
		return fmt.Errorf("%w: message with headers exceeds the bus's max payload", errTooLarge)
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		// Refused by the client library unsent: not connected, and
		// nothing is buffered for a reconnect (bus.Connect).
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return fmt.Errorf("%w: %v", errBusUnavailable, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: no durable ack in time (%v); retry with the same Idempotency-Key", errOutcomeUnknown, err)
	default:
		return fmt.Errorf("%w: %v; retry with the same Idempotency-Key", errOutcomeUnknown, err)
	}
}

// classifyUnsent is classifyPublish for an error returned before anything
// was handed to the connection: whatever it was, nothing was stored.
func classifyUnsent(err error, replicated bool) error {
	c := classifyPublish(err, replicated)
	if errors.Is(c, errOutcomeUnknown) {
		return fmt.Errorf("%w: not sent: %v", errBusUnavailable, err)
	}
	return c
}
