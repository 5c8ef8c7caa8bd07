package history

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"time"
)

// Delivery is one delivery to a family as its reader saw it.
type Delivery struct {
	ID string
	// Seq is the delivered message's sequence in the topic: a copy's own.
	Seq uint64
	// Stored is when the bus stored it (sluice.Message.Published); zero:
	// not known. After StreamDeleted it tells which incarnation of the
	// stream Seq belongs to.
	Stored  time.Time
	Payload []byte
	// Copy: a copy of the message published on the family's redrive
	// subject, which only that family takes (the gateway's repair of a
	// message that may have missed the family, or a redrive of its dead
	// letter; such copies carry Sluice-Original-Id). It is stored at a seq
	// of its own: that is not the message stored twice.
	Copy bool
}

// Deliver records one delivery to family: a message, as Delivered does, or
// a copy of one (d.Copy). A copy reaches the family like the message, its
// payload is checked the same way, and its seq is the copy's: not counted
// as the message stored twice, and a dead letter of it (recorded at the
// copy's seq) neither.
func (c *Checker) Deliver(family string, d Delivery) {
	dg := sha256.Sum256(d.Payload)
	in := c.deliveries
	if d.Copy {
		c.mu.Lock()
		if c.copied[family] == nil {
			c.copied[family] = map[string]map[uint64]*copies{}
		}
		c.mu.Unlock()
		in = c.copied
	}
	c.record(in, family, d.ID, d.Seq, &dg, d.Stored, false)
}

// DeliveredUnseenCopy is Deliver of a copy whose payload the reader did
// not see (a worker's log line).
func (c *Checker) DeliveredUnseenCopy(family, id string, seq uint64) {
	c.mu.Lock()
	if c.copied[family] == nil {
		c.copied[family] = map[string]map[uint64]*copies{}
	}
	c.mu.Unlock()
	c.record(c.copied, family, id, seq, nil, time.Time{}, false)
}

// DeadLetteredBy is DeadLettered for a dead letter that says when the
// family's consumer that delivered it was created
// (Sluice-Original-Family-Created): after StreamDeleted it tells which
// incarnation of the stream seq belongs to.
func (c *Checker) DeadLetteredBy(family, id string, seq uint64, familyCreated time.Time, payload []byte) {
	d := sha256.Sum256(payload)
	c.record(c.dead, family, id, seq, &d, familyCreated, true)
}

// Handled records that family's handler finished id (it returned nil; the
// ack may still be lost and the message delivered again). A dead letter
// that is gone from the bus at the final state must have been handled:
// see FamilyState.DeadLetterIDs.
func (c *Checker) Handled(family, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handled[family] == nil {
		c.handled[family] = map[string]bool{}
	}
	c.handled[family][id] = true
}

// vanished lists the ids recorded in family's dead letters that are
// neither among present (the dead letters on the bus now) nor handled by
// the family: a dead letter deleted (redriven) whose message the family
// never handled. c.mu is held.
func (c *Checker) vanished(family string, present []string) []string {
	here := make(map[string]bool, len(present))
	for _, id := range present {
		here[id] = true
	}
	var gone []string
	for id := range c.dead[family] {
		if !here[id] && !c.handled[family][id] {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	slices.Sort(gone)
	return []string{fmt.Sprintf("%s: %d dead letters gone from the bus though the family never handled their message, e.g. %v",
		family, len(gone), gone[:min(5, len(gone))])}
}

// SettleSeen settles, without publishing, every unknown outcome not yet
// settled whose message reached a family: it was stored. Call it once the
// readers have caught up, before Settle, when the topic's duplicate window
// may have passed since the first publish: publishing such a message again
// would store it a second time. Such a message was stored without a 202:
// it must still reach every family (it is not Acked). It returns how many
// it settled.
func (c *Checker) SettleSeen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for id, at := range c.attempts {
		if at.outcome == Unknown && at.settled == nil && c.reachedAny(id) {
			seen := Unknown // settled by its deliveries, with no answer of its own
			at.settled = &seen
			n++
		}
	}
	return n
}

// Notes is what r counts besides Row: deliveries of copies, pairs
// destroyed by an operator's deletion, ids stored again after the stream
// was recreated.
func (r Report) Notes() string {
	return fmt.Sprintf("copies delivered %d, destroyed by deletion %d, stored again after the stream's recreation %d, duplicate acks %d, settled %d, unsettled %d",
		r.Copies, r.Destroyed, r.StoredAgain, r.DuplicateAcks, r.Settled, r.Unsettled)
}

// Receipts lists the seqs id's 202s named, for diagnostics.
func (c *Checker) Receipts(id string) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	if at := c.attempts[id]; at != nil {
		for seq := range at.receipts {
			out = append(out, seq)
		}
	}
	slices.Sort(out)
	return out
}
