package history

import (
	"math"
	"time"
)

// An operator who deletes a family's consumer, or the topic's stream,
// destroys messages: a topic is an interest-retention stream, which drops at
// once what a family whose consumer goes away had not yet acked (and all of
// it with the stream). Sluice cannot deliver those; what it must still
// deliver is everything it acked in answer to a request sent after the
// deletion. The checker counts the first as Destroyed, apart from
// FamilyLost and Lost.
//
// Deleting the stream also restarts its sequences and takes its duplicate
// window with it: the same seq names another message in the recreated
// stream, and a message stored before the deletion whose retry is stored
// after it is stored again. Seqs are compared within one incarnation of the
// stream (an epoch), placed by when the message was stored.

// span is when a request was sent and when its answer was recorded.
type span struct{ sent, answered time.Time }

// deletion is one operator's deletion.
type deletion struct {
	family string // "" with stream
	stream bool   // the topic's stream, with every family
	at     time.Time
	upTo   uint64 // the topic's last seq once deleted
}

// ConsumerDeleted records that an operator deleted family's consumer: the
// deletion had returned at at, and the topic's last sequence read after it
// was upTo. A message the family never got is counted Destroyed, not
// FamilyLost, when it was acked in answer to a request sent before at (the
// answer's Sent) and its receipt's seq is at most upTo: it was stored and
// acked before or during the deletion, which dropped it. A message acked in
// answer to a request sent later (a settled unknown outcome too) must reach
// the family, as the original or as a copy.
func (c *Checker) ConsumerDeleted(family string, at time.Time, upTo uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deletions = append(c.deletions, deletion{family: family, at: at, upTo: upTo})
}

// StreamDeleted records that an operator deleted the topic's stream (and
// with it every family's consumer); the deletion had returned at at. A
// message some family never got is counted Destroyed when it was acked in
// answer to a request sent before at. Seqs stored after at belong to the
// recreated stream (see Deliver's Stored and DeadLetteredBy).
func (c *Checker) StreamDeleted(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deletions = append(c.deletions, deletion{stream: true, at: at, upTo: math.MaxUint64})
}

// answeredAt notes an answer recorded at answered. c.mu is held.
func (c *Checker) answeredAt(at *attempt, a Answer, answered time.Time) {
	if a.Outcome != OK {
		return
	}
	if !a.Sent.IsZero() && (at.okSent.IsZero() || a.Sent.Before(at.okSent)) {
		at.okSent = a.Sent
	}
	if a.Seq != 0 {
		if _, ok := at.spans[a.Seq]; !ok {
			at.spans[a.Seq] = span{sent: a.Sent, answered: answered}
		}
	}
}

// destroyed: an operator's deletion may have dropped at's message before
// family got it. c.mu is held.
func (c *Checker) destroyed(family string, at *attempt) bool {
	if at.okSent.IsZero() {
		return false // no ack known to come before a deletion
	}
	for _, d := range c.deletions {
		if (d.stream || d.family == family) && at.okSent.Before(d.at) && minSeq(at.receipts) <= d.upTo {
			return true
		}
	}
	return false
}

// minSeq is the smallest receipt seq (MaxUint64: none).
func minSeq(receipts map[uint64]bool) uint64 {
	lowest := uint64(math.MaxUint64)
	for seq := range receipts {
		lowest = min(lowest, seq)
	}
	return lowest
}

// epochAt is the incarnation of the stream a message stored at t belongs
// to: how many stream deletions came before t; -1 when t is not known and
// the stream was deleted. c.mu is held.
func (c *Checker) epochAt(t time.Time) int {
	n := 0
	for _, d := range c.deletions {
		if !d.stream {
			continue
		}
		if t.IsZero() {
			return -1
		}
		if t.After(d.at) {
			n++
		}
	}
	return n
}

// receiptEpoch is the incarnation a receipt's seq belongs to: the one its
// request was sent and answered in, -1 if a deletion came in between (it
// may be either's). c.mu is held.
func (c *Checker) receiptEpoch(at *attempt, seq uint64) int {
	sp := at.spans[seq]
	sent, answered := c.epochAt(sp.sent), c.epochAt(sp.answered)
	if sent != answered {
		return -1
	}
	return sent
}
