package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/pkg/sluice"
	"github.com/sluicebus/sluice/pkg/sluice/busclock"
)

// errFamilyMissing: a declared family has no consumer on the bus, so the
// topic's stream would ack a message and keep it from that family (or, with
// no consumer at all, store nothing).
var errFamilyMissing = errors.New("family missing on the bus")

// interest guards a topic's publishes against missing families. A topic is
// an interest-retention stream: JetStream acks a message that no consumer's
// filter matches with a normal PubAck and stores nothing, and a message
// stored while one family's consumer is missing never reaches that family.
//
// So a commit is sent only when the last reading saw every family it needs
// (before), and its answers count as stored only when a reading started
// after its acks sees the same consumers, by creation time (after): a
// consumer that exists with the same creation time at both readings
// existed, with its filter, the whole time the stream stored the message.
// A consumer deleted and created again has a new creation time.
//
// Readings are shared like commits: every commit waiting for a reading
// takes the next one, so the cost is one round of consumer lookups per
// round, not per message.
type interest struct {
	nc       *nats.Conn
	topic    string
	stream   string
	families []string
	timeout  time.Duration
	// clock learns the bus's time from each consumer info answer.
	clock *busclock.Clock
	// changed is told, before anyone sees the reading, of the families
	// whose consumer appeared or was replaced since the reading before.
	changed func(families []string)

	// seen is each family's consumer creation time at the last reading
	// that found out (zero: none), for changed.
	seen map[string]time.Time

	mu      sync.Mutex
	last    *reading
	waiters []chan *reading // for the next round to start
	running bool
	stopped bool
	wg      sync.WaitGroup // the reading rounds
}

// maxReading bounds one reading of the consumers. A consumer whose leader
// is gone does not answer until it has a new one: failing fast refuses
// unsent (or, after a store, answers unknown) instead of holding commits
// for a whole publish timeout on top of the stream's own election.
const maxReading = 2 * time.Second

// reading is one round of consumer lookups.
type reading struct {
	// created holds each family's consumer creation time, its filters
	// checked; a family without a usable consumer is absent.
	created map[string]time.Time
	// age is how old each consumer was when read, by its server's clock.
	age map[string]time.Duration
	// err: the bus did not answer for some family (no proof either way).
	err error
}

func newInterest(nc *nats.Conn, topic string, families []string, timeout time.Duration, clock *busclock.Clock) *interest {
	return &interest{nc: nc, topic: topic, stream: sluice.StreamName(topic), families: families, timeout: timeout, clock: clock}
}

// missing lists the families, of want (nil: every family), without a
// consumer in r.
func (r *reading) missing(want []string, all []string) []string {
	if want == nil {
		want = all
	}
	var out []string
	for _, f := range want {
		if _, ok := r.created[f]; !ok {
			out = append(out, f)
		}
	}
	return out
}

// changed lists the families of want (nil: every family) whose consumer is
// not the same in before and after.
func changed(before, after *reading, want, all []string) []string {
	if want == nil {
		want = all
	}
	var out []string
	for _, f := range want {
		b, ok1 := before.created[f]
		a, ok2 := after.created[f]
		if !ok1 || !ok2 || !a.Equal(b) {
			out = append(out, f)
		}
	}
	return out
}

// latest is the last reading, or a fresh one if there is none yet.
func (in *interest) latest(ctx context.Context) *reading {
	in.mu.Lock()
	r := in.last
	in.mu.Unlock()
	if r != nil {
		return r
	}
	return in.fresh(ctx)
}

// peek is the last reading, nil before the first.
func (in *interest) peek() *reading {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.last
}

// fresh is a reading that started after fresh was called.
func (in *interest) fresh(ctx context.Context) *reading {
	ch := make(chan *reading, 1)
	in.mu.Lock()
	if in.stopped {
		in.mu.Unlock()
		return &reading{err: errors.New("the gateway is stopping")}
	}
	in.waiters = append(in.waiters, ch)
	if !in.running {
		in.running = true
		in.wg.Go(in.rounds)
	}
	in.mu.Unlock()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		return &reading{err: fmt.Errorf("waiting for a reading of the families: %w", ctx.Err())}
	}
}

// rounds reads while anyone waits; whoever asked before a round starts
// gets that round's reading.
func (in *interest) rounds() {
	for {
		in.mu.Lock()
		ws := in.waiters
		in.waiters = nil
		if len(ws) == 0 {
			in.running = false
			in.mu.Unlock()
			return
		}
		in.mu.Unlock()
		r := in.read()
		in.mu.Lock()
		in.last = r
		in.mu.Unlock()
		for _, ch := range ws {
			ch <- r
		}
	}
}

// read looks up every family's consumer, concurrently.
func (in *interest) read() *reading {
	ctx, cancel := context.WithTimeout(context.Background(), in.timeout)
	defer cancel()
	r := &reading{created: make(map[string]time.Time, len(in.families)), age: make(map[string]time.Duration, len(in.families))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, f := range in.families {
		wg.Go(func() {
			created, age, err := in.lookup(ctx, f)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				r.created[f], r.age[f] = created, age
			case errors.Is(err, errFamilyMissing):
				// missing: left out of created
			default:
				r.err = errors.Join(r.err, fmt.Errorf("family %s: %w", f, err))
			}
		})
	}
	wg.Wait()
	return r
}

// consumerInfo is the part of JetStream's consumer info a reading needs
// (decoding only this keeps a reading cheap: it runs once per commit).
type consumerInfo struct {
	Created time.Time `json:"created"`
	// TimeStamp is the server's time of the answer.
	TimeStamp time.Time `json:"ts"`
	Config    struct {
		FilterSubject  string   `json:"filter_subject"`
		FilterSubjects []string `json:"filter_subjects"`
	} `json:"config"`
	Error *jetstream.APIError `json:"error"`
}

// JetStream's answers for a consumer or stream that does not exist.
const (
	jsErrConsumerNotFound jetstream.ErrorCode = 10014
	jsErrStreamNotFound   jetstream.ErrorCode = 10059
)

// lookup is family f's consumer creation time and age, if its filters take
// the topic's messages and its own redrives.
func (in *interest) lookup(ctx context.Context, f string) (time.Time, time.Duration, error) {
	sent := time.Now()
	resp, err := in.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.INFO."+in.stream+"."+f, nil)
	recv := time.Now()
	if err != nil {
		return time.Time{}, 0, err
	}
	var info consumerInfo
	if err := json.Unmarshal(resp.Data, &info); err != nil {
		return time.Time{}, 0, fmt.Errorf("consumer info of %s: %w", f, err)
	}
	if info.Error != nil {
		if info.Error.ErrorCode == jsErrConsumerNotFound || info.Error.ErrorCode == jsErrStreamNotFound {
			return time.Time{}, 0, fmt.Errorf("%w: %v", errFamilyMissing, info.Error)
		}
		return time.Time{}, 0, info.Error
	}
	in.clock.Observe(info.TimeStamp, sent, recv)
	now := info.TimeStamp
	if now.IsZero() {
		now = in.clock.Now() // a server without "ts"
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	for _, want := range []string{sluice.Subject(in.topic), sluice.RedriveSubject(in.topic, f)} {
		if len(filters) > 0 && !slices.Contains(filters, want) {
			return time.Time{}, 0, fmt.Errorf("%w: consumer %s does not take %s", errFamilyMissing, f, want)
		}
	}
	return info.Created, now.Sub(info.Created), nil
}

// stop refuses readings from now on and waits until no round runs (on
// shutdown).
func (in *interest) stop() {
	in.mu.Lock()
	in.stopped = true
	in.mu.Unlock()
	in.wg.Wait()
}
