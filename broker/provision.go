package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
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
// Its DeliverPolicy is All; a family created on a topic that holds messages
// starts New instead (see deliverPolicy).
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
// family, idempotently: each topic's stream first, then for each of its
// families the dead-letter stream and the consumer. Changed limits are
// updated; a change JetStream cannot apply in place (storage, retention,
// ack policy, ...) is an ErrIncompatible naming the topic and family.
// A failure does not stop the pass: the other topics and families are
// still provisioned, and every failure is returned, joined. Streams and
// consumers that the config no longer declares are left in place and
// logged, never deleted.
//
// A family created on a topic that already holds messages starts with the
// messages published after its creation (see deliverPolicy).
func Provision(ctx context.Context, js jetstream.JetStream, topics map[string]topology.Topic, log *zap.Logger) error {
	_, err := provisioner{js: js, log: log}.run(ctx, topics)
	return err
}

// outcome is what a provisioning pass found of one declared stream or
// consumer.
type outcome int

const (
	unanswered outcome = iota // the bus did not answer: no verdict
	present                   // it exists as declared (updated in place if need be)
	created                   // it was missing; this pass created it
	missing                   // it is missing or unusable, and this pass could not fix it
)

// finding is one stream's or family's outcome, with why it was missing.
type finding struct {
	outcome outcome
	cause   string
}

// findings is what one pass found: streams by name, families by
// topic/family (their alarm subject); settling: something missing waits
// for deletionSettle before it is recreated.
type findings struct {
	streams  map[string]finding
	families map[string]finding
	settling bool
}

// deletionSettle is how long a repair pass lets a stream or consumer stay
// missing before it recreates it. JetStream announces a deletion, and
// stops answering for the deleted one, before it has removed its files;
// one created under the same name meanwhile would take over the old one's
// state and then lose its directory to that removal.
const deletionSettle = time.Second

// provisioner runs provisioning passes.
type provisioner struct {
	js  jetstream.JetStream
	log *zap.Logger
	// repair marks a periodic check: it creates what is missing and
	// changes nothing that exists (brokers of a cluster in the middle of a
	// rolling config change would otherwise undo each other's updates
	// every few seconds), and a creation is logged as the repair it is.
	repair bool
	// absent is, for repair passes, when each stream or consumer (by
	// name, stream/consumer) was first found missing (see deletionSettle).
	// Only the loop that runs the passes uses it.
	absent map[string]time.Time
}

// mayCreate reports whether the pass may create key, found missing now: a
// repair pass only once it has stayed missing for deletionSettle.
func (p provisioner) mayCreate(key string, f *findings) bool {
	if !p.repair {
		return true
	}
	first, ok := p.absent[key]
	if !ok {
		p.absent[key] = time.Now()
	}
	if !ok || time.Since(first) < deletionSettle {
		f.settling = true
		return false
	}
	return true
}

// found forgets that key was missing.
func (p provisioner) found(key string) {
	delete(p.absent, key)
}

func (p provisioner) run(ctx context.Context, topics map[string]topology.Topic) (findings, error) {
	f := findings{streams: map[string]finding{}, families: map[string]finding{}}
	var errs []error
	declared := map[string]bool{}
	for _, name := range topology.Names(topics) {
		t := topics[name]
		stream := sluice.StreamName(name)
		declared[stream] = true
		s, got, err := p.ensureStream(ctx, StreamConfig(t), &f)
		f.streams[stream] = finding{got, errText(err)}
		if err != nil {
			errs = append(errs, fmt.Errorf("topic %s: %w", name, err))
		}
		for _, fname := range t.FamilyNames() {
			fam := t.Families[fname]
			subject := name + "/" + fname
			dlq := sluice.DeadLetterStream(name, fname)
			declared[dlq] = true
			if s == nil {
				// No usable stream, no consumer: the families share its
				// verdict (missing, or not answered).
				f.families[subject] = finding{got, "topic stream " + stream + ": " + errText(err)}
				continue
			}
			_, dgot, derr := p.ensureStream(ctx, DeadLetterStreamConfig(t, fam), &f)
			f.streams[dlq] = finding{dgot, errText(derr)}
			if derr != nil {
				errs = append(errs, fmt.Errorf("topic %s family %s dead letters: %w", name, fname, derr))
			}
			// The consumer even without its dead-letter stream: a worker
			// that cannot dead-letter keeps the message; a topic without
			// the family's consumer stores nothing for it.
			cgot, cerr := p.ensureConsumer(ctx, s, t.Name, ConsumerConfig(t, fam), got == created, &f)
			cause := errText(cerr)
			if cgot == created && p.repair {
				cause = "its consumer was missing at a check and was recreated; messages published meanwhile were not stored for it"
			}
			f.families[subject] = finding{cgot, cause}
			if cerr != nil {
				errs = append(errs, fmt.Errorf("topic %s family %s: %w", name, fname, cerr))
			}
		}
		if s != nil && !p.repair {
			reportUndeclaredConsumers(ctx, s, t, p.log)
		}
	}
	if !p.repair {
		names := p.js.StreamNames(ctx)
		for n := range names.Name() {
			if strings.HasPrefix(n, "SLUICE_") && !declared[n] {
				p.log.Warn("stream on the bus is not declared in the config; left in place", zap.String("stream", n))
			}
		}
		if err := names.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	return f, errors.Join(errs...)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ensureStream returns the stream when it exists or was created, also when
// updating it failed (it still serves its families).
func (p provisioner) ensureStream(ctx context.Context, want jetstream.StreamConfig, f *findings) (jetstream.Stream, outcome, error) {
	s, err := p.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if !p.mayCreate(want.Name, f) {
			return nil, missing, fmt.Errorf("stream %s is missing; recreating it once its deletion has settled", want.Name)
		}
		s, err = p.js.CreateStream(ctx, want)
		if err == nil {
			if p.repair {
				p.log.Warn("stream was missing; recreated", zap.String("stream", want.Name))
			} else {
				p.log.Info("stream created", zap.String("stream", want.Name))
			}
			p.found(want.Name)
			return s, created, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, missing, fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		// Another broker of the cluster created it meanwhile: reconcile with it.
		s, err = p.js.Stream(ctx, want.Name)
	}
	if err != nil {
		return nil, unanswered, err
	}
	p.found(want.Name)
	have := s.CachedInfo().Config
	if err := compatibleStream(have, want); err != nil {
		return nil, missing, err
	}
	if !p.repair && streamDiffers(have, want) {
		if _, err := p.js.UpdateStream(ctx, want); err != nil {
			return s, present, fmt.Errorf("%w: update stream %s: %w", ErrIncompatible, want.Name, err)
		}
		p.log.Info("stream updated", zap.String("stream", want.Name))
	}
	return s, present, nil
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

// deliverPolicy is where a family's consumer created now starts.
//
// On an empty stream (a new topic, or one whose messages every family has
// acked) it starts at the first message stored: there is no backlog to
// inherit, and a message stored between this check and the creation is
// not missed. On a stream that holds messages it starts with the messages
// published after its creation: an interest stream holds only what other
// families have not acked yet, an arbitrary leftover for a family that did
// not exist when it was published. A family recreated after its consumer
// was deleted follows the same rule; so does one added to a running topic.
// Consumers that exist keep their policy, All or New alike.
func deliverPolicy(ctx context.Context, s jetstream.Stream) (jetstream.DeliverPolicy, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs == 0 {
		return jetstream.DeliverAllPolicy, nil
	}
	return jetstream.DeliverNewPolicy, nil
}

// ensureConsumer: freshStream, s was created by this pass (its consumers
// went with the old one: nothing to let settle).
func (p provisioner) ensureConsumer(ctx context.Context, s jetstream.Stream, topic string, want jetstream.ConsumerConfig, freshStream bool, f *findings) (outcome, error) {
	key := s.CachedInfo().Config.Name + "/" + want.Durable
	c, err := s.Consumer(ctx, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if !freshStream && !p.mayCreate(key, f) {
			return missing, fmt.Errorf("consumer %s is missing; recreating it once its deletion has settled", want.Durable)
		}
		if want.DeliverPolicy, err = deliverPolicy(ctx, s); err != nil {
			return missing, fmt.Errorf("create consumer %s: %w", want.Durable, err)
		}
		_, err = s.CreateConsumer(ctx, want)
		if err == nil {
			fields := []zap.Field{zap.String("topic", topic), zap.String("family", want.Durable), zap.Stringer("deliver", want.DeliverPolicy)}
			if p.repair {
				p.log.Warn("family's consumer was missing; recreated (messages published to the topic meanwhile were not stored for it)", fields...)
			} else {
				p.log.Info("family created", fields...)
			}
			p.found(key)
			return created, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return missing, fmt.Errorf("create consumer %s: %w", want.Durable, err)
		}
		// Created by another broker with another config: reconcile with it.
		c, err = s.Consumer(ctx, want.Durable)
	}
	if err != nil {
		return unanswered, err
	}
	p.found(key)
	have := c.CachedInfo().Config
	switch {
	case have.AckPolicy != want.AckPolicy:
		return missing, fmt.Errorf("%w: consumer %s has ack policy %v, declared %v", ErrIncompatible, want.Durable, have.AckPolicy, want.AckPolicy)
	case have.DeliverPolicy != jetstream.DeliverAllPolicy && have.DeliverPolicy != jetstream.DeliverNewPolicy:
		return missing, fmt.Errorf("%w: consumer %s has deliver policy %v, declared %v or %v", ErrIncompatible, want.Durable, have.DeliverPolicy,
			jetstream.DeliverAllPolicy, jetstream.DeliverNewPolicy)
	}
	if p.repair {
		// Nothing is updated here; a consumer that does not take the
		// topic's messages and its own redrives is as good as missing.
		// (No filter at all takes every subject of the stream.)
		filters := have.FilterSubjects
		if have.FilterSubject != "" {
			filters = append(slices.Clone(filters), have.FilterSubject)
		}
		for _, subj := range want.FilterSubjects {
			if len(filters) > 0 && !slices.Contains(filters, subj) {
				return missing, fmt.Errorf("%w: consumer %s filters %v, not %s", ErrIncompatible, want.Durable, filters, subj)
			}
		}
		return present, nil
	}
	// Filters and BackOff are updated in place (a family provisioned before
	// redrive filtered on the topic's subject only).
	if have.AckWait != want.AckWait || have.MaxAckPending != want.MaxAckPending ||
		have.FilterSubject != want.FilterSubject || !slices.Equal(have.FilterSubjects, want.FilterSubjects) ||
		!slices.Equal(have.BackOff, want.BackOff) ||
		have.MaxDeliver != want.MaxDeliver || have.Description != want.Description ||
		!sameMetadata(have.Metadata, want.Metadata) || (want.Replicas != 0 && have.Replicas != want.Replicas) {
		want.DeliverPolicy = have.DeliverPolicy // cannot change in place; either is fine
		if _, err := s.UpdateConsumer(ctx, want); err != nil {
			return present, fmt.Errorf("%w: update consumer %s: %w", ErrIncompatible, want.Durable, err)
		}
		p.log.Info("family updated", zap.String("topic", topic), zap.String("family", want.Durable))
	}
	return present, nil
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

// passTimeout bounds one provisioning pass over n topics: a request lost
// during an election is never answered.
func passTimeout(n int) time.Duration {
	return 3*time.Second + time.Duration(n)*500*time.Millisecond
}

// topoState is what the provisioning passes found, for readiness and the
// family_missing alarm. Safe for concurrent use.
type topoState struct {
	mu sync.Mutex
	// streamGaps and familyGaps: declared streams (by name) and families
	// (by topic/family) known missing or unusable, with the cause. A pass
	// that got no answer about one leaves its entry as it was.
	streamGaps, familyGaps map[string]string
	// lapses: families a check found missing since the alarms last
	// looked, recreated or not.
	lapses map[string]string
}

// record takes in a pass's findings; check: it was a periodic check (at
// start, creating a family is provisioning, not a repair).
func (ts *topoState) record(f findings, check bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.streamGaps == nil {
		ts.streamGaps, ts.familyGaps, ts.lapses = map[string]string{}, map[string]string{}, map[string]string{}
	}
	note := func(gaps map[string]string, key string, fd finding) {
		switch fd.outcome {
		case present, created:
			delete(gaps, key)
		case missing:
			gaps[key] = fd.cause
		}
	}
	for name, fd := range f.streams {
		note(ts.streamGaps, name, fd)
	}
	for subject, fd := range f.families {
		note(ts.familyGaps, subject, fd)
		if check && (fd.outcome == created || fd.outcome == missing) {
			ts.lapses[subject] = fd.cause
		}
	}
}

// complete: no declared stream or family is known missing.
func (ts *topoState) complete() bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.streamGaps) == 0 && len(ts.familyGaps) == 0
}

// missingFamilies are the families missing now or found missing by a
// check since the last call, with their causes.
func (ts *topoState) missingFamilies() map[string]string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := maps.Clone(ts.lapses)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, ts.familyGaps)
	clear(ts.lapses)
	return out
}
