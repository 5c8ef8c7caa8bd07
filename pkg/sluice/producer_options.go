package sluice

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ProducerOption configures a Producer.
type ProducerOption func(*Producer) error

// WithHTTPClient sets the HTTP client (default: a client with a 30 s timeout).
func WithHTTPClient(c *http.Client) ProducerOption {
	return func(p *Producer) error {
		if c == nil {
			return fmt.Errorf("%w: nil HTTP client", ErrInvalidOption)
		}
		p.client = c
		return nil
	}
}

// WithAPIKey sends key as "Authorization: Bearer <key>" with every
// request; gateways with auth.mode keys answer 401 without it.
func WithAPIKey(key string) ProducerOption {
	return func(p *Producer) error {
		if key == "" || strings.ContainsAny(key, " \t\r\n") {
			return fmt.Errorf("%w: API key must be non-empty without whitespace", ErrInvalidOption)
		}
		p.auth = "Bearer " + key
		return nil
	}
}

// WithRetry sets the attempts per message (at least 1) and the backoff's
// initial and maximum wait.
func WithRetry(maxAttempts int, initial, maxWait time.Duration) ProducerOption {
	return func(p *Producer) error {
		if maxAttempts < 1 || initial <= 0 || maxWait < initial {
			return fmt.Errorf("%w: retry needs attempts >= 1 and 0 < initial <= max", ErrInvalidOption)
		}
		p.maxAttempts, p.backoff = maxAttempts, backoff{initial: initial, max: maxWait}
		return nil
	}
}

// RetryPolicy is a producer's retry strategy, as declared in config (the
// `producer.retry` section of a Sluice config file).
type RetryPolicy struct {
	// MaxAttempts per message, the first included (at least 1).
	MaxAttempts int `mapstructure:"max_attempts"`
	// Initial and Max bound the full-jitter exponential backoff between
	// attempts; a longer Retry-After from the gateway wins.
	Initial time.Duration `mapstructure:"initial"`
	Max     time.Duration `mapstructure:"max"`
	// Deadline bounds one message over all its attempts (0: only the
	// caller's context does).
	Deadline time.Duration `mapstructure:"deadline"`
	// Budget caps retries across the producer as a fraction of first
	// attempts (0.2: at most one retry per five messages, plus a reserve
	// of 10 retries), so an outage does not multiply the load on the
	// gateways; 0 disables the budget. Past it a message fails with its
	// last error, wrapped with ErrRetryBudget. Retries after a 429 (a
	// full topic, a client over its rate) do not draw on it: the gateway
	// paces them with Retry-After and refuses them before reading the body.
	Budget float64 `mapstructure:"budget"`
}

// DefaultRetryPolicy is the producer's retry policy when none is given.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 10, Initial: 100 * time.Millisecond, Max: 5 * time.Second}
}

// Validate reports what is wrong with the policy.
func (r RetryPolicy) Validate() error {
	switch {
	case r.MaxAttempts < 1:
		return fmt.Errorf("%w: retry max_attempts must be at least 1, got %d", ErrInvalidOption, r.MaxAttempts)
	case r.Initial <= 0 || r.Max < r.Initial:
		return fmt.Errorf("%w: retry needs 0 < initial <= max, got %v and %v", ErrInvalidOption, r.Initial, r.Max)
	case r.Deadline < 0:
		return fmt.Errorf("%w: retry deadline must not be negative, got %v", ErrInvalidOption, r.Deadline)
	case r.Budget < 0 || r.Budget > 10:
		return fmt.Errorf("%w: retry budget must be 0..10 retries per message, got %v", ErrInvalidOption, r.Budget)
	}
	return nil
}

// WithRetryPolicy sets the whole retry policy.
func WithRetryPolicy(r RetryPolicy) ProducerOption {
	return func(p *Producer) error {
		if err := r.Validate(); err != nil {
			return err
		}
		p.maxAttempts, p.backoff, p.deadline = r.MaxAttempts, backoff{initial: r.Initial, max: r.Max}, r.Deadline
		p.budget = nil
		if r.Budget > 0 {
			p.budget = newRetryBudget(r.Budget)
		}
		return nil
	}
}

// WithProducerLogger sets the logger (default: none).
func WithProducerLogger(l *zap.Logger) ProducerOption {
	return func(p *Producer) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		p.log = l
		return nil
	}
}

// PublishOption sets a property of one published message.
type PublishOption func(*publishOptions)

type publishOptions struct {
	id          string
	contentType string
	meta        map[string]string
}

// WithID sets the idempotency key (default: a generated one). Use a key
// derived from your data (an order id) to deduplicate across processes.
func WithID(id string) PublishOption { return func(o *publishOptions) { o.id = id } }

// WithContentType sets the stored Content-Type.
func WithContentType(ct string) PublishOption { return func(o *publishOptions) { o.contentType = ct } }

// WithMeta adds a metadata entry (delivered as Message.Meta(name)).
func WithMeta(name, value string) PublishOption {
	return func(o *publishOptions) {
		if o.meta == nil {
			o.meta = map[string]string{}
		}
		o.meta[name] = value
	}
}
