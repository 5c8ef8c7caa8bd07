package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// familyMissingRetryAfter is the wait advertised while a family's consumer
// is missing: a broker recreates it on its next reconcile.
const familyMissingRetryAfter = 5 * time.Second

// wants is the families an entry must reach: its redrive's family, or every
// family (nil).
func (e *entry) wants() []string {
	if e.family == "" {
		return nil
	}
	return []string{e.family}
}

// familyMissing is the refusal of a message sent nowhere because families
// of its topic have no consumer.
func (c *committer) familyMissing(families []string) error {
	ra := min(c.retryAfterMax, max(c.retryAfterMin, familyMissingRetryAfter))
	return refuse("family_missing", ra, fmt.Errorf("%w: %w: topic %s: family %s has no consumer on the bus, so the topic would not keep "+
		"the message for it (a broker recreates it from the config); nothing was stored", errBusUnavailable, errFamilyMissing, c.topic, strings.Join(families, ", ")))
}

// refuseMissing answers, unsent, the entries that r cannot prove every
// family they need takes; it returns the others.
func (c *committer) refuseMissing(live []*entry, r *reading) []*entry {
	if r.err != nil {
		err := refuse("family_unknown", c.shedRetryAfter(), fmt.Errorf("%w: the consumers of topic %s could not be read (%v), so "+
			"nothing proves every family would keep the message; nothing was sent", errBusUnavailable, c.topic, r.err))
		for _, e := range live {
			e.err = err
		}
		return nil
	}
	out := live[:0:0]
	for _, e := range live {
		if miss := r.missing(e.wants(), c.interest.families); len(miss) > 0 {
			e.err = c.familyMissing(miss)
			continue
		}
		out = append(out, e)
	}
	return out
}

// clockMargin allows for the brokers' clocks on a replicated topic: a
// consumer's creation time comes from the meta leader, a message's store
// time from its stream's leader. A lone broker has one clock.
const clockMargin = time.Second

// missedFamilies lists the families of want (nil: every family) that the
// first store of duplicate e may have missed: those whose consumer in r is
// younger than the duplicate window (the first store, made within it, may
// predate the consumer) and was not there, by the clocks, when the
// original was stored, or whose original is gone from the topic (then
// nothing tells). Stateless: any gateway answers a retry the same way,
// whichever gateway answered the first store.
func (c *committer) missedFamilies(ctx context.Context, e *entry, r *reading) []string {
	want := e.wants()
	if want == nil {
		want = c.interest.families
	}
	var young []string
	for _, f := range want {
		if age, ok := r.age[f]; ok && age < c.young {
			young = append(young, f)
		}
	}
	if len(young) == 0 {
		return nil
	}
	stored, err := c.storedAt(ctx, e)
	if err != nil {
		return young // gone, or unreadable: repair rather than guess
	}
	var out []string
	for _, f := range young {
		if !r.created[f].Add(c.margin).Before(stored) {
			out = append(out, f)
		}
	}
	return out
}

// storedAt is when the original of duplicate e was stored, read from the
// stream's leader (a replica's direct get may lag).
func (c *committer) storedAt(ctx context.Context, e *entry) (time.Time, error) {
	req, _ := json.Marshal(struct {
		Seq uint64 `json:"seq"`
	}{e.seq})
	resp, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+c.stream, req)
	if err != nil {
		return time.Time{}, err
	}
	var got struct {
		Message *struct {
			Header []byte    `json:"hdrs"`
			Time   time.Time `json:"time"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &got); err != nil {
		return time.Time{}, err
	}
	switch {
	case got.Error != nil:
		return time.Time{}, got.Error
	case got.Message == nil:
		return time.Time{}, errors.New("no message in the answer")
	case !bytes.Contains(got.Message.Header, []byte(e.id)):
		return time.Time{}, fmt.Errorf("seq %d holds another message", e.seq)
	}
	return got.Message.Time, nil
}

// settle proves that every family an acked entry needs took part in its
// store, repairs what may have missed one, and answers every entry.
// before is the reading the commit was sent under (nil: nothing was sent).
func (c *committer) settle(batch []*entry, before *reading) {
	defer func() {
		for _, e := range batch {
			c.record(e.dup, e.err)
			e.done.Done()
		}
	}()
	var stored []*entry
	deadline := time.Now()
	for _, e := range batch {
		if e.err == nil && e.seq > 0 {
			stored = append(stored, e)
			if e.deadline.After(deadline) {
				deadline = e.deadline
			}
		}
	}
	if len(stored) == 0 || before == nil {
		return
	}
	// A reading started after the acks; given a moment past the deadline
	// rather than turning stored messages into unknown outcomes.
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(c.publishTimeout))
	defer cancel()
	after := c.interest.fresh(ctx)
	if after.err != nil {
		c.unknown(stored, fmt.Sprintf("the consumers of topic %s could not be read after the store (%v)", c.topic, after.err))
		return
	}
	repairs := map[*entry][]string{}
	for _, e := range stored {
		need := changed(before, after, e.wants(), c.interest.families)
		if e.dup {
			// Its first store was not proven by this commit.
			for _, f := range c.missedFamilies(ctx, e, after) {
				if !slices.Contains(need, f) {
					need = append(need, f)
				}
			}
		}
		if len(need) == 0 {
			continue
		}
		if miss := after.missing(need, nil); len(miss) > 0 {
			c.unknown([]*entry{e}, fmt.Sprintf("family %s of topic %s had no consumer while the message was stored", strings.Join(miss, ", "), c.topic))
			continue
		}
		repairs[e] = need
	}
	if len(repairs) > 0 {
		c.repairAll(ctx, repairs, after)
	}
}

// repairAll sends a copy of each entry to the families it may have
// missed, on their redrive subjects (only that family takes it), and
// proves those consumers took part.
func (c *committer) repairAll(ctx context.Context, repairs map[*entry][]string, after *reading) {
	for e, fams := range repairs {
		if err := c.repair(ctx, e, fams); err != nil {
			delete(repairs, e)
			c.unknown([]*entry{e}, fmt.Sprintf("repairing it for family %s: %v", strings.Join(fams, ", "), err))
		}
	}
	if len(repairs) == 0 {
		return
	}
	again := c.interest.fresh(ctx)
	for e, fams := range repairs {
		if again.err != nil {
			c.unknown([]*entry{e}, fmt.Sprintf("the consumers could not be read after its repair (%v)", again.err))
			continue
		}
		if ch := changed(after, again, fams, nil); len(ch) > 0 {
			c.unknown([]*entry{e}, fmt.Sprintf("family %s's consumer changed again during its repair", strings.Join(ch, ", ")))
		}
	}
}

// repair publishes e again for each of families, on its redrive subject,
// with an id of its own per family (a repeated repair is a duplicate).
func (c *committer) repair(ctx context.Context, e *entry, families []string) error {
	orig := e.msg.Header.Get(sluice.HeaderOriginalID)
	if orig == "" {
		orig = e.id
	}
	for _, f := range families {
		m := nats.NewMsg(sluice.RedriveSubject(c.topic, f))
		m.Data = e.msg.Data
		for k, v := range e.msg.Header {
			if k == sluice.HeaderContentType || k == sluice.HeaderTenant || strings.HasPrefix(k, sluice.HeaderMetaPrefix) {
				m.Header[k] = v
			}
		}
		m.Header.Set(sluice.HeaderOriginalID, orig)
		if _, err := c.js.PublishMsg(ctx, m, jetstream.WithMsgID("repair."+f+"."+e.id), jetstream.WithExpectStream(c.stream)); err != nil {
			return err
		}
		c.log.Warn("message may have missed a family whose consumer was replaced; a copy was sent to that family",
			zap.String("topic", c.topic), zap.String("family", f), zap.Uint64("seq", e.seq), zap.String("id", e.id))
	}
	return nil
}

// unknown turns stored entries into unknown outcomes: stored, but not
// provably for every family; the client's retry with the same key is a
// duplicate that the gateway repairs.
func (c *committer) unknown(es []*entry, why string) {
	for _, e := range es {
		e.err = fmt.Errorf("%w: stored as seq %d, but %s; retry with the same Idempotency-Key", errOutcomeUnknown, e.seq, why)
	}
	c.log.Warn("publish outcome unknown", zap.String("topic", c.topic), zap.Int("messages", len(es)), zap.String("why", why))
}

// familiesStatus is "ok" when the last reading found every family's
// consumer, else what is missing, for /readyz.
func (c *committer) familiesStatus() string {
	r := c.interest.peek()
	switch {
	case r == nil:
		return "ok" // not read yet: the first publish or alarm evaluation reads them
	case r.err != nil:
		return "families not readable: " + r.err.Error()
	}
	if miss := r.missing(nil, c.interest.families); len(miss) > 0 {
		return "family " + strings.Join(miss, ", ") + " has no consumer on the bus: messages are refused until a broker recreates it"
	}
	return "ok"
}
