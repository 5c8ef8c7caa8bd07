// Package admit is the gateway's admission arithmetic: each gateway's share
// of a topic's free capacity, the drain rate that computes Retry-After, and
// the token buckets of tenant and client rates. Plain values with no
// goroutines, locks or clocks of their own (callers pass now); the gateway's
// admission loop drives them.
package admit

import (
	"math"
	"time"
)

// Admission is one gateway's credit for one topic: how many more messages
// (and bytes) it may accept before the next refill. Refill sets it to the
// gateway's share of the topic's free capacity, measured on the bus, so N
// gateways together never admit more than the topic can hold.
type Admission struct {
	msgs, bytes           int64 // credit left
	shareMsgs, shareBytes int64 // credit at the last refill
	refilled              bool
	exhausted             bool // until the next refill
}

// Refill replaces the credit with this gateway's share of the free capacity
// minus what it holds: messages it admitted whose storage the measurement
// may not show (still being published when the measurement began, or
// admitted while it was taken). Counting one of them twice only refuses a
// little early; missing one would over-admit.
func (a *Admission) Refill(shareMsgs, shareBytes, heldMsgs, heldBytes int64) {
	a.shareMsgs, a.shareBytes = max(0, shareMsgs), max(0, shareBytes)
	a.msgs, a.bytes = a.shareMsgs-heldMsgs, a.shareBytes-heldBytes
	a.refilled, a.exhausted = true, false
}

// Take admits one message of size bytes if there is credit for it. Before
// the first refill everything is admitted: the stream's own bound still holds.
func (a *Admission) Take(size int64) bool {
	if !a.refilled {
		return true
	}
	if a.msgs < 1 || a.bytes < size {
		return false
	}
	a.msgs--
	a.bytes -= size
	return true
}

// Return gives back the credit of a message taken but certainly not
// stored. A refill since the take counted it as held, so giving it back is
// right either way; credit never exceeds the share.
func (a *Admission) Return(size int64) {
	if a.refilled && !a.exhausted {
		a.msgs = min(a.shareMsgs, a.msgs+1)
		a.bytes = min(a.shareBytes, a.bytes+size)
	}
}

// Exhaust drops the credit to nothing until the next refill: the bus has
// shown the measurement it came from to be stale (the stream refused a
// message as full).
func (a *Admission) Exhaust() {
	if a.refilled {
		a.msgs, a.exhausted = 0, true
	}
}

// Remaining is the message credit left (0 when exhausted).
func (a *Admission) Remaining() int64 { return max(0, a.msgs) }

// Share is the message credit of the last refill.
func (a *Admission) Share() int64 { return a.shareMsgs }

// Refilled reports whether the credit was ever measured.
func (a *Admission) Refilled() bool { return a.refilled }

// Drain estimates how fast a topic's families empty it: messages leaving it
// (acked by every family, or dead-lettered) per second, from successive
// readings of the stream's last sequence and message count. Only readings
// that find messages waiting count: an idle topic drains nothing because
// nothing is there, which says nothing of how fast its families work, so
// after an idle spell the rate is still the one they last worked at. A
// backlog that does not move decays it.
type Drain struct {
	halfLife time.Duration
	rate     float64
	lastSeq  uint64
	msgs     uint64
	at       time.Time
	observed bool
	// moved is the last reading at which the topic was empty or had
	// drained since the one before: nothing has waited on the families
	// for longer than since then.
	moved time.Time
}

// NewDrain returns an estimator whose average halves its memory every halfLife.
func NewDrain(halfLife time.Duration) *Drain { return &Drain{halfLife: halfLife} }

// Observe records a reading: the stream's last sequence and message count at now.
func (d *Drain) Observe(now time.Time, lastSeq, msgs uint64) {
	if d.observed && now.After(d.at) && lastSeq >= d.lastSeq {
		// In = new sequences; out = in minus the growth of the backlog.
		in := float64(lastSeq - d.lastSeq)
		out := max(0, in-(float64(msgs)-float64(d.msgs)))
		// Only an interval that began with messages waiting measures the
		// families; one that began empty measures the producers.
		if d.msgs > 0 {
			dt := now.Sub(d.at).Seconds()
			alpha := 1 - math.Exp2(-dt/d.halfLife.Seconds())
			d.rate += alpha * (out/dt - d.rate)
		}
		if out > 0 {
			d.moved = now
		}
	}
	if msgs == 0 || !d.observed {
		d.moved = now
	}
	d.lastSeq, d.msgs, d.at, d.observed = lastSeq, msgs, now, true
}

// Rate is the estimated drain in messages per second while messages wait.
func (d *Drain) Rate() float64 { return d.rate }

// Stalled is how long before now messages have been waiting on the topic
// without any leaving it: 0 when it drained or was empty at the last reading.
func (d *Drain) Stalled(now time.Time) time.Duration {
	if !d.observed {
		return 0
	}
	return max(0, now.Sub(d.moved))
}

// RetryAfter is how long a refused client should wait: the time for the
// topic to drain deficit messages at rate, clamped to [lo, hi], then
// stretched by jitter (a draw in [0, 1): up to twice as long, still at most
// hi) so refused clients do not come back together. With no drain rate
// known (never measured, or decayed to nothing by a backlog that does not
// move) it is as long again as the topic has been stalled: refused clients
// probe at growing intervals (lo, then about twice each time) instead of
// being sent away for hi at the first refusal.
func RetryAfter(deficit int64, rate float64, stalled time.Duration, jitter float64, lo, hi time.Duration) time.Duration {
	// In float seconds: a rate decaying towards zero would overflow a Duration.
	secs := min(hi.Seconds(), stalled.Seconds())
	if rate > minRate {
		secs = min(hi.Seconds(), float64(max(1, deficit))/rate)
	}
	secs = max(lo.Seconds(), secs)
	return time.Duration(min(hi.Seconds(), secs*(1+jitter)) * float64(time.Second))
}

// minRate is the drain, in messages per second, below which the rate is
// taken as unknown: at it, one message would take more than a day.
const minRate = 1e-5

// Share splits free among n gateways so the shares add up to free: the
// first free%n by rank get one more. Over-full (free < 0), each share is
// the negative split, so no gateway gets credit.
func Share(free int64, n, rank int) int64 {
	if free <= 0 {
		return free / int64(n)
	}
	s := free / int64(n)
	if int64(rank) < free%int64(n) {
		s++
	}
	return s
}

// Deficit is how many messages a topic with free room of maxMsgs must
// drain before each of gateways has credit again: at least 1% of the
// topic and one message per gateway, less what is free now. 0: room now.
func Deficit(free, maxMsgs int64, gateways int) int64 {
	want := max(int64(gateways), maxMsgs/100)
	return max(0, want-free)
}

// Wait is the Retry-After of a topic deficit messages short of room,
// draining at rate, stalled for stalled: RetryAfter, or with room now
// (deficit 0) the minimum, jittered, whatever the rate.
func Wait(deficit int64, rate float64, stalled time.Duration, jitter float64, lo, hi time.Duration) time.Duration {
	if deficit <= 0 {
		return RetryAfter(0, math.Inf(1), 0, jitter, lo, hi)
	}
	return RetryAfter(deficit, rate, stalled, jitter, lo, hi)
}

// TenantShare is how many messages of a refill of share messages a tenant
// with an admission share of fraction may take: at least one, so a small
// share of a small credit never locks the tenant out.
func TenantShare(fraction float64, share int64) int64 {
	return max(1, int64(fraction*float64(share)))
}
