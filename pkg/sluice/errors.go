package sluice

import (
	"errors"
	"fmt"
	"time"
)

// Problem types the gateway answers with (RFC 9457 "type" members). Each maps
// to one sentinel error below, so callers test with errors.Is.
const (
	ProblemBadRequest           = "urn:sluice:problem:bad-request"
	ProblemNotFound             = "urn:sluice:problem:not-found"
	ProblemTopicNotFound        = "urn:sluice:problem:topic-not-found"
	ProblemFamilyNotFound       = "urn:sluice:problem:family-not-found"
	ProblemDeadLetterNotFound   = "urn:sluice:problem:dead-letter-not-found"
	ProblemMethodNotAllowed     = "urn:sluice:problem:method-not-allowed"
	ProblemMessageTooLarge      = "urn:sluice:problem:message-too-large"
	ProblemUnsupportedMediaType = "urn:sluice:problem:unsupported-media-type"
	ProblemTopicFull            = "urn:sluice:problem:topic-full"
	ProblemRateLimited          = "urn:sluice:problem:rate-limited"
	ProblemIdempotencyConflict  = "urn:sluice:problem:idempotency-conflict"
	ProblemOverloaded           = "urn:sluice:problem:overloaded"
	ProblemBusUnavailable       = "urn:sluice:problem:bus-unavailable"
	ProblemOutcomeUnknown       = "urn:sluice:problem:publish-outcome-unknown"
	ProblemInternal             = "urn:sluice:problem:internal"
	// ProblemUnauthorized (401): no API key, or one that is unknown or expired.
	ProblemUnauthorized = "urn:sluice:problem:unauthorized"
	// ProblemForbidden (403): the key's tenant is not granted the topic.
	ProblemForbidden = "urn:sluice:problem:forbidden"
	// ProblemHeaderTooLarge (431): too many header fields or bytes.
	ProblemHeaderTooLarge = "urn:sluice:problem:header-too-large"
)

// Sentinel errors. Errors returned by the Producer wrap one of them.
var (
	ErrBadRequest           = errors.New("sluice: bad request")
	ErrNotFound             = errors.New("sluice: not found")
	ErrTopicNotFound        = errors.New("sluice: topic not found")
	ErrMethodNotAllowed     = errors.New("sluice: method not allowed")
	ErrMessageTooLarge      = errors.New("sluice: message too large")
	ErrUnsupportedMediaType = errors.New("sluice: unsupported media type")
	// ErrUnauthorized: the gateway wants a valid API key (WithAPIKey).
	ErrUnauthorized = errors.New("sluice: unauthorized")
	// ErrForbidden: the API key's tenant may not use that topic.
	ErrForbidden = errors.New("sluice: forbidden")
	// ErrThrottled: the topic or gateway refused for now (429); retry later.
	ErrThrottled = errors.New("sluice: throttled")
	// ErrUnavailable: the bus could not be reached or the gateway shed the
	// request (503); nothing was stored.
	ErrUnavailable = errors.New("sluice: unavailable")
	// ErrOutcomeUnknown: the publish may or may not have been stored; retry
	// with the same idempotency key and the duplicate window sorts it out.
	ErrOutcomeUnknown = errors.New("sluice: publish outcome unknown")
	// ErrConflict: the idempotency key was already used, within the duplicate
	// window, for a message with another payload (409). Gateways no longer
	// answer it: a key names one message (payload, content type and
	// metadata), and another message under it is stored as another message.
	ErrConflict = errors.New("sluice: idempotency key reused for another message")
	// ErrRetryBudget: the producer's retry budget (RetryPolicy.Budget) was
	// spent, so a message that could have been retried was not; the error
	// also wraps the last attempt's.
	ErrRetryBudget = errors.New("sluice: retry budget exhausted")
	// ErrInternal: the gateway answered 500, which is always a gateway bug.
	ErrInternal = errors.New("sluice: internal gateway error")
	// ErrPermanent marks a handler error that must not be retried; see Permanent.
	ErrPermanent = errors.New("sluice: permanent failure")
	// ErrInvalidOption is returned by constructors given a bad option.
	ErrInvalidOption = errors.New("sluice: invalid option")
)

var problemSentinels = map[string]error{
	ProblemBadRequest:           ErrBadRequest,
	ProblemNotFound:             ErrNotFound,
	ProblemTopicNotFound:        ErrTopicNotFound,
	ProblemMethodNotAllowed:     ErrMethodNotAllowed,
	ProblemMessageTooLarge:      ErrMessageTooLarge,
	ProblemUnsupportedMediaType: ErrUnsupportedMediaType,
	ProblemTopicFull:            ErrThrottled,
	ProblemRateLimited:          ErrThrottled,
	ProblemIdempotencyConflict:  ErrConflict,
	ProblemOverloaded:           ErrUnavailable,
	ProblemBusUnavailable:       ErrUnavailable,
	ProblemOutcomeUnknown:       ErrOutcomeUnknown,
	ProblemInternal:             ErrInternal,
	ProblemUnauthorized:         ErrUnauthorized,
	ProblemForbidden:            ErrForbidden,
	ProblemHeaderTooLarge:       ErrBadRequest,
}

// Problem is an RFC 9457 problem detail as the gateway sends it
// (media type application/problem+json). In batch results it also carries the
// line number and the item's id.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Line is the 1-based NDJSON line a batch problem belongs to.
	Line int `json:"line,omitempty"`
	// ID is the idempotency key of the batch item, when it had one.
	ID string `json:"id,omitempty"`
	// Alarm is the id of the alarm a 429 or 503 raised or belongs to
	// (also in the Sluice-Alarm header), e.g. "topic_throttled:orders".
	Alarm string `json:"alarm,omitempty"`
}

// Error is a refusal from the gateway. It matches the sentinel of its problem
// type (errors.Is(err, ErrTopicNotFound)), or of its status when the type is
// not one of Sluice's.
type Error struct {
	Problem
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("sluice: %d %s: %s", e.Status, e.Title, e.Detail)
	}
	return fmt.Sprintf("sluice: %d %s", e.Status, e.Title)
}

// Unwrap returns the sentinel error for the problem type.
func (e *Error) Unwrap() error {
	if s, ok := problemSentinels[e.Type]; ok {
		return s
	}
	switch {
	case e.Status == 429:
		return ErrThrottled
	case e.Status == 503:
		return ErrUnavailable
	case e.Status == 404:
		return ErrNotFound
	case e.Status >= 500:
		return ErrInternal
	default:
		return ErrBadRequest
	}
}

// Temporary reports whether retrying the same request can succeed.
func (e *Error) Temporary() bool {
	return e.Status == 429 || e.Status == 503 || e.Status == 502 || e.Status == 504
}

type permanentError struct{ err error }

func (p *permanentError) Error() string { return "permanent: " + p.err.Error() }
func (p *permanentError) Unwrap() []error {
	return []error{ErrPermanent, p.err}
}

// Permanent marks a handler error as permanent: the message goes to the
// family's dead letters at once instead of being retried.
func Permanent(err error) error {
	if err == nil {
		err = errors.New("permanent failure")
	}
	return &permanentError{err: err}
}
