package gateway

import (
	"errors"
	"net/http"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// classify is classifyPublish for the committer's topic, with the topic's
// computed Retry-After on a full topic (the stream's own bound, reached
// despite admission).
func (c *committer) classify(err error) error {
	return c.withRetryAfter(classifyPublish(err, c.replicas > 1))
}

// classifyUnsent is classify for an error before anything was sent.
func (c *committer) classifyUnsent(err error) error {
	return c.withRetryAfter(classifyUnsent(err, c.replicas > 1))
}

// withRetryAfter makes a full or busy topic a refusal with the topic's
// computed Retry-After.
func (c *committer) withRetryAfter(err error) error {
	switch {
	case errors.Is(err, errTopicFull):
		return refuse("topic_full", c.retryAfter(), err)
	case errors.Is(err, errStreamBusy):
		return refuse("stream_busy", c.retryAfter(), err)
	}
	return err
}

// record counts one message's outcome at the committer's topic: answered
// by a commit, or refused on its way there.
func (c *committer) record(dup bool, err error) {
	c.metrics.messages.WithLabelValues(c.topic, outcomeOf(dup, err)).Inc()
}

// outcomeOf is the outcome label of a message's answer.
func outcomeOf(dup bool, err error) string {
	if err == nil {
		if dup {
			return "duplicate"
		}
		return "accepted"
	}
	p, _ := problemFor(err)
	switch p.Status {
	case http.StatusTooManyRequests:
		return "refused_full"
	case http.StatusServiceUnavailable:
		if p.Type == sluice.ProblemOutcomeUnknown {
			return "unknown"
		}
		return "unavailable"
	default:
		return "rejected"
	}
}
