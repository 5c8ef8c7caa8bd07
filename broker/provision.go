package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// ErrIncompatible means the bus holds a stream or consumer whose existing
// configuration cannot be changed into the declared one without deleting it.
var ErrIncompatible = errors.New("incompatible change to an existing topic or family")

// DeadLetterHeadroom is what a dead letter may carry beyond the original
// message: the Sluice-Dead-* headers (the error text is truncated to fit).
const DeadLetterHeadroom = 16 << 10

// StreamConfig is the JetStream stream behind a topic.
func StreamConfig(t topology.Topic) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              sluice.StreamName(t.Name),
		Description:       "Sluice topic " + t.Name,
		Subjects:          []string{sluice.Subject(t.Name), sluice.RedriveSubjects(t.Name)},
		Retention:         jetstream.InterestPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardNew,
		MaxMsgs:           t.MaxMessages,
		MaxBytes:          int64(t.MaxBytes),
		MaxMsgSize:        int32(t.MaxMessageSize + topology.HeaderAllowance),
		MaxAge:            t.MaxAge,
		MaxConsumers:      -1,
		MaxMsgsPerSubject: -1,
		Replicas:          t.Replicas,
		Duplicates:        t.DuplicateWindow,
		AllowDirect:       true,
		// Gateways group-commit concurrent publishes as atomic batches:
		// one durable write (one fsync, one Raft proposal) for many.
		AllowAtomicPublish: true,
		Metadata:           map[string]string{sluice.MetadataTopic: t.Name},
	}
}

// DeadLetterStreamConfig is the stream holding one family's dead letters.
// DiscardNew: when it is full, dead-lettering fails and the message stays in
// its topic (worker naks it) rather than an older dead letter being dropped.
func DeadLetterStreamConfig(t topology.Topic, f topology.Family) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              sluice.DeadLetterStream(t.Name, f.Name),
		Description:       "Sluice dead letters of " + t.Name + "/" + f.Name,
		Subjects:          []string{sluice.DeadLetterSubjects(t.Name, f.Name)},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardNew,
		MaxMsgs:           t.MaxMessages,
		MaxBytes:          int64(t.MaxBytes),
		MaxMsgSize:        int32(t.MaxMessageSize+topology.HeaderAllowance) + DeadLetterHeadroom,
		MaxAge:            f.DeadLetterMaxAge,
		MaxConsumers:      -1,
		MaxMsgsPerSubject: -1,
		Replicas:          t.Replicas,
		Duplicates:        t.DuplicateWindow,
		AllowDirect:       true,
		Metadata: map[string]string{
			sluice.MetadataTopic:  t.Name,
			sluice.MetadataFamily: f.Name,
		},
	}
}

// ConsumerConfig is the durable pull consumer behind a family. MaxDeliver is
// unlimited on purpose: the SDK worker enforces max attempts itself (it reads
// them from the metadata) so that it can first copy the message, with its
// last error, into the dead-letter stream and only then terminate it. A
// server-side MaxDeliver would strand a message whose last attempt timed out.
func ConsumerConfig(t topology.Topic, f topology.Family) jetstream.ConsumerConfig {
	backoff := make([]string, len(f.Backoff))
	for i, d := range f.Backoff {
		backoff[i] = d.String()
	}
	expiry := AckExpiry(f)
	ackWait := f.AckWait
	if len(expiry) > 0 {
		ackWait = expiry[0] // what the server makes of it anyway
	}
	return jetstream.ConsumerConfig{
		Durable:        f.Name,
		Description:    "Sluice family " + f.Name + " of topic " + t.Name,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		BackOff:        expiry,
		MaxDeliver:     -1,
		FilterSubjects: []string{sluice.Subject(t.Name), sluice.RedriveSubject(t.Name, f.Name)},
		ReplayPolicy:   jetstream.ReplayInstantPolicy,
		MaxAckPending:  f.Credit,
		Replicas:       t.Replicas,
		Metadata: map[string]string{
			sluice.MetadataAckWait:        f.AckWait.String(),
			sluice.MetadataTopic:          t.Name,
			sluice.MetadataFamily:         f.Name,
			sluice.MetadataMaxAttempts:    strconv.Itoa(f.MaxAttempts),
			sluice.MetadataBackoff:        strings.Join(backoff, ","),
			sluice.MetadataBackoffCurve:   f.BackoffCurve,
			sluice.MetadataBackoffInitial: f.BackoffInitial.String(),
			sluice.MetadataBackoffMax:     f.BackoffMax.String(),
			sluice.MetadataBackoffJitter:  strconv.FormatBool(f.BackoffJitter),
			sluice.MetadataRetryDeadline:  f.RetryDeadline.String(),
		},
	}
}

// maxExpirySteps bounds a consumer's BackOff list; past it the last entry
// repeats.
const maxExpirySteps = 32

// AckExpiry is when the server redelivers a message whose ack wait ran out
// (a worker died or hung holding it): the ack wait plus the family's retry
// delay for that attempt (without jitter, which the server does not do),
// so a crash is retried on the same curve as a handler error. Nil when the
// family has no delays.
func AckExpiry(f topology.Family) []time.Duration {
	steps := min(f.MaxAttempts, maxExpirySteps)
	var out []time.Duration
	delayed := false
	for attempt := 1; attempt <= steps; attempt++ {
		d := sluice.RetryDelay(f.BackoffCurve, f.Backoff, f.BackoffInitial, f.BackoffMax, attempt)
		delayed = delayed || d > 0
		out = append(out, f.AckWait+d)
	}
	if !delayed {
		return nil
	}
	return out
}

// Provision creates or updates every declared topic, dead-letter stream and
// family, idempotently. Changed limits are updated; a change JetStream cannot
// apply in place (storage, retention, ...) is an ErrIncompatible naming the
// topic; streams and consumers that the config no longer declares are left in
// place and logged, never deleted.
func Provision(ctx context.Context, js jetstream.JetStream, topics map[string]topology.Topic, log *zap.Logger) error {
	declared := map[string]bool{}
	for _, name := range topology.Names(topics) {
		t := topics[name]
		declared[sluice.StreamName(name)] = true
		if err := ensureStream(ctx, js, StreamConfig(t), log); err != nil {
			return fmt.Errorf("topic %s: %w", name, err)
		}
		s, err := js.Stream(ctx, sluice.StreamName(name))
		if err != nil {
			return fmt.Errorf("topic %s: %w", name, err)
		}
		for _, fname := range t.FamilyNames() {
			f := t.Families[fname]
			declared[sluice.DeadLetterStream(name, fname)] = true
			if err := ensureStream(ctx, js, DeadLetterStreamConfig(t, f), log); err != nil {
				return fmt.Errorf("topic %s family %s dead letters: %w", name, fname, err)
			}
			if err := ensureConsumer(ctx, s, ConsumerConfig(t, f), log); err != nil {
				return fmt.Errorf("topic %s family %s: %w", name, fname, err)
			}
		}
		reportUndeclaredConsumers(ctx, s, t, log)
	}
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		if strings.HasPrefix(n, "SLUICE_") && !declared[n] {
			log.Warn("stream on the bus is not declared in the config; left in place", zap.String("stream", n))
		}
	}
	return names.Err()
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, log *zap.Logger) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, want)
		if err == nil {
			log.Info("stream created", zap.String("stream", want.Name))
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		// Another broker of the cluster created it meanwhile: reconcile with it.
		s, err = js.Stream(ctx, want.Name)
	}
	if err != nil {
		return err
	}
	have := s.CachedInfo().Config
	if err := compatibleStream(have, want); err != nil {
		return err
	}
	if streamDiffers(have, want) {
		if _, err := js.UpdateStream(ctx, want); err != nil {
			return fmt.Errorf("%w: update stream %s: %w", ErrIncompatible, want.Name, err)
		}
		log.Info("stream updated", zap.String("stream", want.Name))
	}
	return nil
}

func compatibleStream(have, want jetstream.StreamConfig) error {
	switch {
	case have.Retention != want.Retention:
		return fmt.Errorf("%w: stream %s has retention %v, declared %v (retention cannot change in place)", ErrIncompatible, want.Name, have.Retention, want.Retention)
	case have.Storage != want.Storage:
		return fmt.Errorf("%w: stream %s has storage %v, declared %v (storage cannot change in place)", ErrIncompatible, want.Name, have.Storage, want.Storage)
	}
	// Subjects may be added in place (the redrive subjects came later);
	// one that would go away holds messages somebody published.
	for _, subj := range have.Subjects {
		if !slices.Contains(want.Subjects, subj) {
			return fmt.Errorf("%w: stream %s has subjects %v, declared %v", ErrIncompatible, want.Name, have.Subjects, want.Subjects)
		}
	}
	return nil
}

func streamDiffers(have, want jetstream.StreamConfig) bool {
	return have.MaxMsgs != want.MaxMsgs || have.MaxBytes != want.MaxBytes ||
		have.MaxMsgSize != want.MaxMsgSize || have.MaxAge != want.MaxAge ||
		have.Replicas != want.Replicas || have.Duplicates != want.Duplicates ||
		have.Discard != want.Discard || have.Description != want.Description ||
		have.AllowDirect != want.AllowDirect || have.AllowAtomicPublish != want.AllowAtomicPublish || !sameMetadata(have.Metadata, want.Metadata) ||
		!slices.Equal(have.Subjects, want.Subjects)
}

func ensureConsumer(ctx context.Context, s jetstream.Stream, want jetstream.ConsumerConfig, log *zap.Logger) error {
	c, err := s.Consumer(ctx, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		_, err = s.CreateConsumer(ctx, want)
		if err == nil {
			log.Info("family created", zap.String("family", want.Durable), zap.String("stream", s.CachedInfo().Config.Name))
			return nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return fmt.Errorf("create consumer %s: %w", want.Durable, err)
		}
		// Created by another broker with another config: reconcile with it.
		c, err = s.Consumer(ctx, want.Durable)
	}
	if err != nil {
		return err
	}
	have := c.CachedInfo().Config
	switch {
	case have.AckPolicy != want.AckPolicy, have.DeliverPolicy != want.DeliverPolicy:
		return fmt.Errorf("%w: consumer %s has ack policy %v / deliver policy %v, declared %v / %v", ErrIncompatible, want.Durable, have.AckPolicy, have.DeliverPolicy, want.AckPolicy, want.DeliverPolicy)
	}
	// Filters and BackOff are updated in place (a family provisioned before
	// redrive filtered on the topic's subject only).
	if have.AckWait != want.AckWait || have.MaxAckPending != want.MaxAckPending ||
		have.FilterSubject != want.FilterSubject || !slices.Equal(have.FilterSubjects, want.FilterSubjects) ||
		!slices.Equal(have.BackOff, want.BackOff) ||
		have.MaxDeliver != want.MaxDeliver || have.Description != want.Description ||
		!sameMetadata(have.Metadata, want.Metadata) || (want.Replicas != 0 && have.Replicas != want.Replicas) {
		if _, err := s.UpdateConsumer(ctx, want); err != nil {
			return fmt.Errorf("%w: update consumer %s: %w", ErrIncompatible, want.Durable, err)
		}
		log.Info("family updated", zap.String("family", want.Durable))
	}
	return nil
}

// sameMetadata compares the keys Sluice sets; the server adds its own
// (e.g. _nats.req.level), which are ignored.
func sameMetadata(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func reportUndeclaredConsumers(ctx context.Context, s jetstream.Stream, t topology.Topic, log *zap.Logger) {
	names := s.ConsumerNames(ctx)
	for n := range names.Name() {
		if _, ok := t.Families[n]; !ok {
			log.Warn("family on the bus is not declared in the config; left in place (it still holds messages in the topic)",
				zap.String("topic", t.Name), zap.String("family", n))
		}
	}
	if err := names.Err(); err != nil {
		log.Warn("listing families", zap.String("topic", t.Name), zap.Error(err))
	}
}

// provisionTimeout bounds one reconcile pass.
const provisionTimeout = 30 * time.Second
