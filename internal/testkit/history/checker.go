// Package history checks a queue's history in the spirit of Jepsen's queue
// checker: writers record what each publish answered (ok with its receipt,
// definite failure, unknown) and the payload they sent, readers record every
// delivery and dead letter with the payload they got, unknown outcomes are
// settled by publishing again under the same idempotency key, and the report
// counts what was lost (in all families or in some), stored twice, delivered
// though never stored, corrupted, recovered and delivered twice. A final
// state read from the bus (messages left, consumers' pending counts, dead
// letters) is checked against the history.
//
// A copy of a message on a family's redrive subject (the gateway's repair,
// a redriven dead letter) reaches that family at a seq of its own without
// counting as the message stored twice; what an operator's deletion of a
// family's consumer or of the topic's stream destroyed is counted apart
// from what was lost (see deletions.go).
package history

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Outcome is what a publish's caller learned.
type Outcome int

const (
	// OK: acknowledged (202); the message must reach every family.
	OK Outcome = iota
	// Definite: refused before anything was stored (4xx, 429, bus unavailable).
	Definite
	// Unknown: maybe stored (503 outcome unknown, timeout, lost connection).
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Definite:
		return "definite"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Answer is what a publish's caller learned: its outcome and, when OK, the
// gateway's receipt.
type Answer struct {
	Outcome Outcome
	// Seq is the receipt's stream sequence (OK only; 0: no receipt kept).
	Seq uint64
	// Duplicate: the receipt says the id was already stored and Seq is the
	// original's.
	Duplicate bool
	// Sent is when the request that got this answer was sent (zero: not
	// known). It tells the answers to requests sent after an operator
	// deleted a family's consumer or the topic's stream from those sent
	// before (ConsumerDeleted, StreamDeleted).
	Sent time.Time
}

// Ack is an OK answer with its receipt.
func Ack(seq uint64, duplicate bool) Answer {
	return Answer{Outcome: OK, Seq: seq, Duplicate: duplicate}
}

// Failed is a Definite or Unknown answer.
func Failed(o Outcome) Answer { return Answer{Outcome: o} }

// Republish publishes payload again under id (the same idempotency key) and
// says what came of it. The checker does no I/O itself: scenarios pass one to
// Settle.
type Republish func(ctx context.Context, id string, payload []byte) Answer

type digest = [sha256.Size]byte

// attempt is everything known of one id's publishing.
type attempt struct {
	digest   digest
	outcome  Outcome         // the writer's final answer
	payload  []byte          // kept for unknown outcomes only, to settle them
	settled  *Outcome        // what settling answered (Unknown: settled by its deliveries, SettleSeen); nil: not settled
	receipts map[uint64]bool // receipt seqs of OK answers, the writer's and settling's
	dupAcks  int             // OK answers whose receipt said duplicate
	// spans holds, per receipt seq, when the request was sent and when its
	// answer was recorded: the store happened in between (see epochs).
	spans map[uint64]span
	// okSent is when the earliest request answered OK was sent (zero:
	// none, or not known).
	okSent time.Time
}

// ok: the writer or settling got a 202 for id.
func (a *attempt) ok() bool {
	return a.outcome == OK || (a.settled != nil && *a.settled == OK)
}

// copies is what one family got of one stored message (id, seq).
type copies struct {
	count   int      // deliveries, or dead-letter copies
	digests []digest // distinct payload digests seen (not of DeliveredUnseen)
	// stored is when the bus stored the message (a dead letter: when the
	// family's consumer that delivered it was created); zero: not known.
	// It places seq in an incarnation of the topic's stream (epochs).
	stored time.Time
}

func (cp *copies) add(d *digest) {
	cp.count++
	if d != nil && !slices.Contains(cp.digests, *d) {
		cp.digests = append(cp.digests, *d)
	}
}

// Checker records a history. Safe for concurrent use.
type Checker struct {
	families []string
	start    time.Time

	mu         sync.Mutex
	attempts   map[string]*attempt
	oks        []time.Duration                          // when each writer's ok came, from start
	deliveries map[string]map[string]map[uint64]*copies // family -> id -> seq -> copies
	dead       map[string]map[string]map[uint64]*copies // family -> id -> original seq -> dead-letter copies
	// copied holds deliveries of copies sent on a family's redrive
	// subject (Deliver with Copy): family -> id -> the copy's seq -> copies.
	copied map[string]map[string]map[uint64]*copies
	// handled: family -> ids its handler finished (Handled).
	handled   map[string]map[string]bool
	deletions []deletion // operators' deletions, in the order recorded
	events    int        // deliveries and dead letters recorded, for Quiesce
	final     *FinalState
	phases    []time.Duration // Phases: load start, fault begin, fault end, load end (from start)
}

// New checks deliveries to families; times are measured from now.
func New(families ...string) *Checker {
	c := &Checker{families: families, start: time.Now(), attempts: map[string]*attempt{},
		deliveries: map[string]map[string]map[uint64]*copies{}, dead: map[string]map[string]map[uint64]*copies{},
		copied: map[string]map[string]map[uint64]*copies{}, handled: map[string]map[string]bool{}}
	for _, f := range families {
		c.deliveries[f] = map[string]map[uint64]*copies{}
		c.dead[f] = map[string]map[uint64]*copies{}
		c.copied[f] = map[string]map[uint64]*copies{}
	}
	return c
}

// Phases records when the load started, the fault began and ended, and the
// load stopped, for the report's ack rates before, during and after the
// fault.
func (c *Checker) Phases(loadStart, faultBegin, faultEnd, loadEnd time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.phases = nil
	for _, t := range []time.Time{loadStart, faultBegin, faultEnd, loadEnd} {
		c.phases = append(c.phases, t.Sub(c.start))
	}
}

// rates is the writers' acks per second between consecutive phases: before,
// during and after the fault. c.mu is held; oks is sorted.
func (c *Checker) rates(oks []time.Duration) (r [3]float64, ok bool) {
	if len(c.phases) != 4 {
		return r, false
	}
	for i := range r {
		from, to := c.phases[i], c.phases[i+1]
		if to <= from {
			continue
		}
		lo, _ := slices.BinarySearch(oks, from)
		hi, _ := slices.BinarySearch(oks, to)
		r[i] = float64(hi-lo) / (to - from).Seconds()
	}
	return r, true
}

// Families is the families every stored message must reach.
func (c *Checker) Families() []string { return slices.Clone(c.families) }

// Attempted records the final answer to publishing payload under id (after
// any retries). Called again for the same id (a later publish under the
// same key), it adds the receipt and replaces the outcome, except that an
// id once acked stays acked.
func (c *Checker) Attempted(id string, payload []byte, a Answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.attempts[id]
	if at == nil {
		at = &attempt{digest: sha256.Sum256(payload), outcome: a.Outcome, receipts: map[uint64]bool{}, spans: map[uint64]span{}}
		c.attempts[id] = at
	}
	if at.outcome != OK {
		at.outcome = a.Outcome
	}
	at.payload = nil
	if at.outcome == Unknown {
		at.payload = slices.Clone(payload)
	}
	c.receipt(at, a)
	c.answeredAt(at, a, time.Now())
	if a.Outcome == OK {
		c.oks = append(c.oks, time.Since(c.start))
	}
}

// receipt keeps an OK answer's receipt.
func (c *Checker) receipt(at *attempt, a Answer) {
	if a.Outcome != OK {
		return
	}
	if a.Seq != 0 {
		at.receipts[a.Seq] = true
	}
	if a.Duplicate {
		at.dupAcks++
	}
}

// Delivered records one delivery to family of id, stored at seq, with the
// payload the reader got.
func (c *Checker) Delivered(family, id string, seq uint64, payload []byte) {
	d := sha256.Sum256(payload)
	c.record(c.deliveries, family, id, seq, &d, time.Time{}, false)
}

// DeliveredUnseen records a delivery whose payload the reader does not see
// (a worker's log line): only its id and seq are checked.
func (c *Checker) DeliveredUnseen(family, id string, seq uint64) {
	c.record(c.deliveries, family, id, seq, nil, time.Time{}, false)
}

// DeadLettered records that id, stored at seq, is in family's dead letters
// with payload: the message reached the family. Recording the same dead
// letter again (reading the dead letters twice) counts it once.
func (c *Checker) DeadLettered(family, id string, seq uint64, payload []byte) {
	d := sha256.Sum256(payload)
	c.record(c.dead, family, id, seq, &d, time.Time{}, true)
}

// record adds a copy of (id, seq) for family to in, stored at stored (zero:
// not known); once: only if there is none yet.
func (c *Checker) record(in map[string]map[string]map[uint64]*copies, family, id string, seq uint64, d *digest, stored time.Time, once bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byID := in[family]
	if byID == nil {
		byID = map[string]map[uint64]*copies{}
		in[family] = byID
	}
	if byID[id] == nil {
		byID[id] = map[uint64]*copies{}
	}
	cp := byID[id][seq]
	if cp != nil && once {
		return
	}
	if cp == nil {
		cp = &copies{}
		byID[id][seq] = cp
	}
	cp.add(d)
	if cp.stored.IsZero() {
		cp.stored = stored
	}
	c.events++
}

// Settle publishes every unknown outcome not yet settled again with the same
// id and payload through republish, and keeps the answer: OK (a duplicate
// with the original's receipt, or newly stored) or Definite settles it, an
// unknown answer leaves it unknown (Settle may be called again), and so does
// ctx ending. It returns how many are still unsettled.
func (c *Checker) Settle(ctx context.Context, republish Republish) (unsettled int) {
	c.mu.Lock()
	var ids []string
	for id, at := range c.attempts {
		if at.outcome == Unknown && at.settled == nil {
			ids = append(ids, id)
		}
	}
	c.mu.Unlock()
	slices.Sort(ids)
	for i, id := range ids {
		if ctx.Err() != nil {
			return unsettled + len(ids) - i
		}
		c.mu.Lock()
		payload := c.attempts[id].payload
		c.mu.Unlock()
		sent := time.Now()
		a := republish(ctx, id, payload)
		if a.Outcome == Unknown {
			unsettled++
			continue
		}
		if a.Sent.IsZero() {
			a.Sent = sent // no later than the request that got the answer
		}
		c.mu.Lock()
		at := c.attempts[id]
		at.settled = &a.Outcome
		c.receipt(at, a)
		c.answeredAt(at, a, time.Now())
		c.mu.Unlock()
	}
	return unsettled
}

// Missing is how many (id, family) pairs are still missing: the id was
// stored (acked, settled ok, or delivered anywhere) and has neither been
// delivered to the family nor reached its dead letters. 0 means the readers
// have caught up.
func (c *Checker) Missing() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, _ := c.missing(0)
	return n
}

// MissingSample lists up to n missing ids per family, for diagnostics.
func (c *Checker) MissingSample(n int) map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, sample := c.missing(n)
	return sample
}

// missing counts the (id, family) pairs still missing, listing up to n ids
// per family. c.mu is held.
func (c *Checker) missing(n int) (int, map[string][]string) {
	count, sample := 0, map[string][]string{}
	for id, at := range c.attempts {
		if !c.stored(id, at) {
			continue
		}
		for _, f := range c.families {
			if c.reached(f, id) || c.destroyed(f, at) {
				continue
			}
			count++
			if len(sample[f]) < n {
				sample[f] = append(sample[f], id)
			}
		}
	}
	for _, ids := range sample {
		slices.Sort(ids)
	}
	return count, sample
}

// reached: id was delivered to family (the message or a copy of it) or is
// in its dead letters. c.mu is held.
func (c *Checker) reached(family, id string) bool {
	return len(c.deliveries[family][id]) > 0 || len(c.dead[family][id]) > 0 || len(c.copied[family][id]) > 0
}

// reachedAny: id reached at least one family. c.mu is held.
func (c *Checker) reachedAny(id string) bool {
	for _, in := range []map[string]map[string]map[uint64]*copies{c.deliveries, c.dead, c.copied} {
		for f := range in {
			if c.reached(f, id) {
				return true
			}
		}
	}
	return false
}

// stored: id must reach every family. A definite failure delivered anyway
// is unexpected, not stored. c.mu is held.
func (c *Checker) stored(id string, at *attempt) bool {
	return at.ok() || (at.outcome == Unknown && c.reachedAny(id))
}

// Quiesce waits until nothing is missing, then goes on watching until quiet
// has passed without a new delivery or dead letter, so that late duplicates
// and redeliveries are counted. Before each look it calls collect (if not
// nil; readers outside the process), then pauses poll. It fails when ctx
// ends first, saying what is missing.
func (c *Checker) Quiesce(ctx context.Context, quiet, poll time.Duration, collect func()) error {
	lastEvents, lastChange := -1, time.Now()
	for {
		if collect != nil {
			collect()
		}
		c.mu.Lock()
		missing, sample := c.missing(5)
		events := c.events
		c.mu.Unlock()
		if events != lastEvents {
			lastEvents, lastChange = events, time.Now()
		}
		if missing == 0 && time.Since(lastChange) >= quiet {
			return nil
		}
		select {
		case <-ctx.Done():
			if missing > 0 {
				return fmt.Errorf("%d deliveries missing (%w), e.g. %v", missing, ctx.Err(), sample)
			}
			return fmt.Errorf("deliveries still arriving %v after none was missing (%w)", time.Since(lastChange).Round(time.Millisecond), ctx.Err())
		case <-time.After(poll):
		}
	}
}

// FinalState is what the bus holds for the topic once the readers are done.
type FinalState struct {
	// Messages left in the topic's stream. Topics keep a message until
	// every family has acked (or dead-lettered) it.
	Messages uint64
	// Families by name; every family of the checker should be there.
	Families map[string]FamilyState
}

// FamilyState is one family's consumer and dead letters.
type FamilyState struct {
	// Pending: stored and not yet delivered (the consumer's num_pending).
	Pending uint64
	// AckPending: delivered and neither acked nor terminated (num_ack_pending).
	AckPending int
	// DeadLetters: messages in the family's dead-letter stream.
	DeadLetters uint64
	// DeadLetterIDs: the ids of the dead letters in it, one per dead
	// letter (nil: not read). When read, every id ever recorded as
	// dead-lettered must be among them or handled by the family (a
	// redrive deletes a dead letter: its copy must then be handled).
	DeadLetterIDs []string
}

// StateProblems lists what in s does not match the history recorded so far
// for a topic whose readers are done: messages left in the topic, pending or
// unacked deliveries, dead letters the readers did not record.
func (c *Checker) StateProblems(s FinalState) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stateProblems(s)
}

func (c *Checker) stateProblems(s FinalState) []string {
	var problems []string
	handled := true
	for _, f := range c.families {
		fs, ok := s.Families[f]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: no consumer state", f))
			handled = false
			continue
		}
		if fs.Pending != 0 {
			problems = append(problems, fmt.Sprintf("%s: %d pending (stored, never delivered)", f, fs.Pending))
			handled = false
		}
		if fs.AckPending != 0 {
			problems = append(problems, fmt.Sprintf("%s: %d delivered and never acked", f, fs.AckPending))
			handled = false
		}
		if fs.DeadLetterIDs != nil {
			problems = append(problems, c.vanished(f, fs.DeadLetterIDs)...)
			continue
		}
		recorded := 0
		for _, bySeq := range c.dead[f] {
			recorded += len(bySeq)
		}
		if fs.DeadLetters != uint64(recorded) {
			problems = append(problems, fmt.Sprintf("%s: %d dead letters on the bus, %d recorded", f, fs.DeadLetters, recorded))
		}
	}
	if s.Messages != 0 {
		if handled {
			problems = append(problems, fmt.Sprintf("%d messages left in the topic though every family handled everything", s.Messages))
		} else {
			problems = append(problems, fmt.Sprintf("%d messages left in the topic", s.Messages))
		}
	}
	return problems
}

// Final records the bus's final state; the report then lists its problems.
func (c *Checker) Final(s FinalState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.final = &s
}

// Report is the checker's verdict.
type Report struct {
	// Acked: the writer got a 202.
	Acked int `json:"acked"`
	// Lost: acked (by the writer or on settling) and reached no family.
	Lost int `json:"lost"`
	// FamilyLost: (id, family) pairs where the id was stored (acked,
	// settled ok, or delivered somewhere) and reached neither the family
	// nor its dead letters.
	FamilyLost int `json:"family_lost"`
	// StoredTwice: ids seen at more than one stream sequence, in receipts,
	// deliveries and dead letters together (a delivery from another seq
	// than the receipt's is one).
	StoredTwice int `json:"stored_twice"`
	// TwiceAt names the first ids stored twice with their seqs by
	// incarnation of the stream, to look them up.
	TwiceAt []string `json:"stored_twice_at,omitempty"`
	// Unexpected: ids delivered or dead-lettered but never attempted, or
	// attempted and definitely refused.
	Unexpected int `json:"unexpected"`
	// Corrupted: ids delivered or dead-lettered with a payload other than
	// the one published under the id.
	Corrupted int `json:"corrupted"`
	// Unknown: the writer's outcome was unknown.
	Unknown int `json:"unknown"`
	// Recovered: unknown outcomes that reached a family after all.
	Recovered int `json:"recovered"`
	// Settled: unknown outcomes settled by publishing again (ok or definite);
	// Unsettled: unknown outcomes still unknown.
	Settled   int `json:"settled"`
	Unsettled int `json:"unsettled"`
	// DuplicateAcks: ok answers whose receipt said duplicate.
	DuplicateAcks int `json:"duplicate_acks"`
	// Duplicates: extra deliveries of the same stored message to a family.
	Duplicates int `json:"delivery_duplicates"`
	// Definite: the writer's publish was refused.
	Definite int `json:"definite_failures"`
	// LongestGap: the longest time between two of the writers' acks.
	LongestGap time.Duration `json:"longest_gap_without_ack"`
	// Rates: the writers' acks per second before, during and after the
	// fault, when the phases were recorded (RatesMeasured).
	Rates         [3]float64 `json:"acks_per_second_before_during_after"`
	RatesMeasured bool       `json:"-"`
	// FinalChecked: a final state was recorded; State lists its problems.
	FinalChecked bool     `json:"final_checked"`
	State        []string `json:"state_problems,omitempty"`
	// Destroyed: (id, family) pairs that never reached the family
	// because an operator deleted its consumer or the topic's stream
	// (ConsumerDeleted, StreamDeleted): not counted as FamilyLost or Lost.
	Destroyed int `json:"destroyed_by_deletion"`
	// Copies: deliveries of copies on a family's redrive subject (the
	// gateway's repairs, redriven dead letters).
	Copies int `json:"copies_delivered"`
	// StoredAgain: ids stored in more than one incarnation of the topic's
	// stream (its deletion took the duplicate window with it, so a retry
	// after it is stored anew); not counted as StoredTwice.
	StoredAgain int `json:"stored_again_after_recreation"`
}

// Report checks the history recorded so far.
func (c *Checker) Report() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	var r Report
	ids := map[string]bool{}
	for id := range c.attempts {
		ids[id] = true
	}
	for _, in := range []map[string]map[string]map[uint64]*copies{c.deliveries, c.dead} {
		for _, byID := range in {
			for id := range byID {
				ids[id] = true
			}
		}
	}
	for id := range ids {
		c.check(id, &r)
	}
	oks := slices.Clone(c.oks)
	slices.Sort(oks)
	for i := 1; i < len(oks); i++ {
		r.LongestGap = max(r.LongestGap, oks[i]-oks[i-1])
	}
	r.Rates, r.RatesMeasured = c.rates(oks)
	if c.final != nil {
		r.FinalChecked = true
		r.State = c.stateProblems(*c.final)
	}
	return r
}

// check adds id's history to r. c.mu is held.
func (c *Checker) check(id string, r *Report) {
	at := c.attempts[id]
	// The seqs id was seen at, by incarnation of the stream (epochs); a
	// copy's own seq is not the message's.
	seqs := map[int]map[uint64]bool{}
	see := func(epoch int, seq uint64) {
		if epoch < 0 {
			return // not placed in an incarnation: says nothing
		}
		if seqs[epoch] == nil {
			seqs[epoch] = map[uint64]bool{}
		}
		seqs[epoch][seq] = true
	}
	corrupted := false
	for _, in := range []map[string]map[string]map[uint64]*copies{c.deliveries, c.dead, c.copied} {
		for f, byID := range in {
			for seq, cp := range byID[id] {
				for _, d := range cp.digests {
					corrupted = corrupted || (at != nil && d != at.digest)
				}
				if isCopy := c.copied[f][id][seq] != nil; !isCopy {
					see(c.epochAt(cp.stored), seq)
				}
			}
		}
	}
	for _, in := range []map[string]map[string]map[uint64]*copies{c.deliveries, c.copied} {
		for _, byID := range in {
			for _, cp := range byID[id] {
				r.Duplicates += cp.count - 1
			}
		}
	}
	for _, byID := range c.copied {
		for _, cp := range byID[id] {
			r.Copies += cp.count
		}
	}
	reachedAny := c.reachedAny(id)
	if at != nil {
		for seq := range at.receipts {
			see(c.receiptEpoch(at, seq), seq)
		}
	}
	twice := false
	for _, s := range seqs {
		twice = twice || len(s) > 1
	}
	if twice {
		r.StoredTwice++
		if len(r.TwiceAt) < 10 {
			r.TwiceAt = append(r.TwiceAt, fmt.Sprintf("%s at %v", id, seqs))
		}
	}
	if len(seqs) > 1 {
		r.StoredAgain++
	}
	if at == nil {
		r.Unexpected++
		return
	}
	if corrupted {
		r.Corrupted++
	}
	r.DuplicateAcks += at.dupAcks
	switch at.outcome {
	case OK:
		r.Acked++
	case Definite:
		r.Definite++
		if reachedAny {
			r.Unexpected++
		}
	case Unknown:
		r.Unknown++
		if reachedAny {
			r.Recovered++
		}
		if at.settled != nil {
			r.Settled++
		} else {
			r.Unsettled++
		}
	}
	if !c.stored(id, at) {
		return
	}
	lost, destroyed := 0, 0
	for _, f := range c.families {
		switch {
		case c.reached(f, id):
		case c.destroyed(f, at):
			destroyed++
		default:
			lost++
		}
	}
	r.FamilyLost += lost
	r.Destroyed += destroyed
	if !reachedAny && lost > 0 {
		r.Lost++
	}
}

// Problems lists what r shows wrong: anything lost, stored twice,
// unexpected, corrupted or unsettled, and the final state's problems (or
// that none was checked). Unknown outcomes, delivery duplicates, definite
// failures, copies and what an operator's deletion destroyed are allowed.
func (r Report) Problems() []string {
	var p []string
	for _, n := range []struct {
		name string
		n    int
	}{{"lost", r.Lost}, {"family-lost", r.FamilyLost}, {"stored twice", r.StoredTwice},
		{"unexpected", r.Unexpected}, {"corrupted", r.Corrupted}, {"unsettled", r.Unsettled}} {
		if n.n != 0 {
			p = append(p, fmt.Sprintf("%s %d", n.name, n.n))
		}
	}
	if !r.FinalChecked {
		p = append(p, "final state not checked")
	}
	return append(p, r.State...)
}

// Row renders r as a markdown table row under Header.
func (r Report) Row(scenario string) string {
	final := "not checked"
	if r.FinalChecked {
		final = "ok"
		if len(r.State) > 0 {
			final = strings.Join(r.State, "; ")
		}
	}
	rates := "not measured"
	if r.RatesMeasured {
		rates = fmt.Sprintf("%.0f / %.0f / %.0f", r.Rates[0], r.Rates[1], r.Rates[2])
	}
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %.1f s | %s | %s |", scenario,
		r.Acked, r.Lost, r.FamilyLost, r.StoredTwice, r.Unexpected, r.Corrupted, r.Unknown, r.Recovered,
		r.Settled, r.Duplicates, r.Definite, r.LongestGap.Seconds(), rates, final)
}

// Header is the markdown table header for Row.
var Header = strings.Join([]string{
	"| scenario | acked | lost | family-lost | stored twice | unexpected | corrupted | unknown | recovered | settled | delivery duplicates | definite failures | longest gap without ack | acks/s before / during / after | final state |",
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
}, "\n")
