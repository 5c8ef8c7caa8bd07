// Package topology declares what the bus must hold: topics (streams) and,
// per topic, the worker families (durable consumers) with their limits and
// retry policies. Brokers provision it; gateways read it to know the topics.
package topology

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sluicebus/sluice/internal/bytesize"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// MaxMessageSizeLimit is the largest max_message_size a topic may declare;
// the embedded server's max_payload is raised to fit the largest topic.
const MaxMessageSizeLimit = 32 << 20

// HeaderAllowance is what a message may carry in headers on top of its
// max_message_size payload: JetStream counts headers against a stream's
// max_msg_size, so streams get this much more, and gateways bound what they
// add (metadata, content type, idempotency key) to fit in it.
const HeaderAllowance = 32 << 10

// MaxMetadataBytes bounds the user metadata of one message (names and
// values together); it fits in HeaderAllowance with room to spare.
const MaxMetadataBytes = 16 << 10

// Topic is one stream with its bounds and the families that consume it.
type Topic struct {
	Name            string            `mapstructure:"-" json:"name"`
	MaxMessages     int64             `mapstructure:"max_messages" json:"max_messages"`
	MaxBytes        bytesize.Size     `mapstructure:"max_bytes" json:"max_bytes"`
	MaxMessageSize  bytesize.Size     `mapstructure:"max_message_size" json:"max_message_size"`
	MaxAge          time.Duration     `mapstructure:"max_age" json:"max_age"`
	Replicas        int               `mapstructure:"replicas" json:"replicas"`
	DuplicateWindow time.Duration     `mapstructure:"duplicate_window" json:"duplicate_window"`
	Families        map[string]Family `mapstructure:"families" json:"families"`
}

// Family is a durable consumer group: every family gets every message of its
// topic; the workers of one family share them.
type Family struct {
	Name string `mapstructure:"-" json:"name"`
	// Credit is the family's max ack pending: how many messages its workers
	// may hold unacknowledged together before the broker stops delivering.
	Credit      int           `mapstructure:"credit" json:"credit"`
	AckWait     time.Duration `mapstructure:"ack_wait" json:"ack_wait"`
	MaxAttempts int           `mapstructure:"max_attempts" json:"max_attempts"`
	// BackoffCurve is how the wait before a retry grows: "schedule" (the
	// Backoff list, its last entry repeated), "exponential" or "linear"
	// (from BackoffInitial, capped at BackoffMax).
	BackoffCurve   string          `mapstructure:"backoff_curve" json:"backoff_curve"`
	Backoff        []time.Duration `mapstructure:"backoff" json:"backoff"`
	BackoffInitial time.Duration   `mapstructure:"backoff_initial" json:"backoff_initial"`
	BackoffMax     time.Duration   `mapstructure:"backoff_max" json:"backoff_max"`
	// BackoffJitter draws each wait uniformly from [0, wait) (full jitter).
	BackoffJitter bool `mapstructure:"backoff_jitter" json:"backoff_jitter"`
	// RetryDeadline, when set, dead-letters a message that would be retried
	// later than this after it was stored.
	RetryDeadline time.Duration `mapstructure:"retry_deadline" json:"retry_deadline"`
	// DeadLetterMaxAge bounds how long dead letters are kept.
	DeadLetterMaxAge time.Duration `mapstructure:"dead_letter_max_age" json:"dead_letter_max_age"`
}

// DefaultTopic is what a topic gets for every key it does not set.
// MaxAge is 0 (no expiry): an age limit on an interest stream deletes
// messages no family has handled yet, so it must be asked for explicitly.
func DefaultTopic() Topic {
	return Topic{
		MaxMessages:     100_000,
		MaxBytes:        1 << 30,
		MaxMessageSize:  1 << 20,
		MaxAge:          0,
		Replicas:        1,
		DuplicateWindow: 2 * time.Minute,
	}
}

// DevOrders is the topic the development setup declares (configs/dev.yaml,
// what `make run` starts): orders, with the families billing and shipping,
// every key at its default.
func DevOrders() Topic {
	orders := DefaultTopic()
	orders.Name = "orders"
	orders.Families = map[string]Family{}
	for _, name := range []string{"billing", "shipping"} {
		f := DefaultFamily()
		f.Name = name
		orders.Families[name] = f
	}
	return orders
}

// DefaultFamily is what a family gets for every key it does not set.
func DefaultFamily() Family {
	return Family{
		Credit:           64,
		AckWait:          30 * time.Second,
		MaxAttempts:      5,
		BackoffCurve:     "schedule",
		Backoff:          []time.Duration{time.Second, 5 * time.Second, 30 * time.Second},
		BackoffInitial:   time.Second,
		BackoffMax:       time.Minute,
		BackoffJitter:    false,
		RetryDeadline:    0,
		DeadLetterMaxAge: 7 * 24 * time.Hour,
	}
}

// FamilyNames returns the family names in sorted order.
func (t Topic) FamilyNames() []string {
	names := make([]string, 0, len(t.Families))
	for n := range t.Families {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// KeyError is a validation error for one configuration key.
type KeyError struct {
	Key string // dotted path, e.g. topics.orders.families.billing.credit
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

// Validate checks a topic and its families; errors name the offending key
// under prefix (e.g. "topics.orders").
func (t Topic) Validate(prefix string) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: prefix + "." + key, Msg: fmt.Sprintf(format, args...)})
	}
	if err := sluice.ValidateName(t.Name); err != nil {
		errs = append(errs, &KeyError{Key: prefix, Msg: err.Error()})
	}
	if t.MaxMessages < 1 {
		bad("max_messages", "must be at least 1, got %d", t.MaxMessages)
	}
	if t.MaxMessageSize < 1 || t.MaxMessageSize > MaxMessageSizeLimit {
		bad("max_message_size", "must be between 1 byte and %v, got %v", bytesize.Size(MaxMessageSizeLimit), t.MaxMessageSize)
	}
	if t.MaxBytes < t.MaxMessageSize {
		bad("max_bytes", "must be at least max_message_size (%v), got %v", t.MaxMessageSize, t.MaxBytes)
	}
	if t.MaxAge < 0 {
		bad("max_age", "must not be negative (0 means no age limit)")
	}
	if t.Replicas < 1 || t.Replicas > 5 {
		bad("replicas", "must be 1..5, got %d", t.Replicas)
	}
	if t.DuplicateWindow < 100*time.Millisecond {
		bad("duplicate_window", "must be at least 100ms, got %v", t.DuplicateWindow)
	} else if t.MaxAge > 0 && t.DuplicateWindow > t.MaxAge {
		bad("duplicate_window", "must not exceed max_age (%v)", t.MaxAge)
	}
	if len(t.Families) == 0 {
		bad("families", "a topic needs at least one family: with interest retention, messages nobody consumes are not kept")
	}
	for _, name := range t.FamilyNames() {
		f := t.Families[name]
		if err := f.Validate(prefix + ".families." + name); err != nil {
			errs = append(errs, err)
		}
		// The dead-letter stream deduplicates over the topic's window, which
		// JetStream allows only within its max age.
		if f.DeadLetterMaxAge > 0 && f.DeadLetterMaxAge < t.DuplicateWindow {
			bad("families."+name+".dead_letter_max_age", "must be 0 or at least the topic's duplicate_window (%v), got %v", t.DuplicateWindow, f.DeadLetterMaxAge)
		}
	}
	return errors.Join(errs...)
}

// Validate checks a family; errors name the offending key under prefix.
func (f Family) Validate(prefix string) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: prefix + "." + key, Msg: fmt.Sprintf(format, args...)})
	}
	if err := sluice.ValidateName(f.Name); err != nil {
		errs = append(errs, &KeyError{Key: prefix, Msg: err.Error()})
	}
	if f.Credit < 1 || f.Credit > 1_000_000 {
		bad("credit", "must be 1..1000000, got %d", f.Credit)
	}
	if f.AckWait < 100*time.Millisecond {
		bad("ack_wait", "must be at least 100ms, got %v", f.AckWait)
	}
	if f.MaxAttempts < 1 {
		bad("max_attempts", "must be at least 1, got %d", f.MaxAttempts)
	}
	switch f.BackoffCurve {
	case "schedule", "exponential", "linear":
	default:
		bad("backoff_curve", "must be schedule, exponential or linear, got %q", f.BackoffCurve)
	}
	if f.BackoffInitial <= 0 || f.BackoffMax < f.BackoffInitial {
		bad("backoff_initial", "must be positive and at most backoff_max (%v), got %v", f.BackoffMax, f.BackoffInitial)
	}
	if f.RetryDeadline < 0 {
		bad("retry_deadline", "must not be negative (0 means none)")
	}
	for i, d := range f.Backoff {
		if d <= 0 {
			bad(fmt.Sprintf("backoff[%d]", i), "must be positive, got %v", d)
		}
	}
	if f.DeadLetterMaxAge < 0 {
		bad("dead_letter_max_age", "must not be negative (0 means kept until purged)")
	}
	return errors.Join(errs...)
}

// MaxMessageSize returns the largest max_message_size over topics.
func MaxMessageSize(topics map[string]Topic) bytesize.Size {
	var m bytesize.Size
	for _, t := range topics {
		m = max(m, t.MaxMessageSize)
	}
	return m
}

// Names returns topic names in sorted order.
func Names(topics map[string]Topic) []string {
	names := make([]string, 0, len(topics))
	for n := range topics {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
