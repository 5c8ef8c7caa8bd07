// Package checker checks a queue's history in the spirit of Jepsen's queue
// checker: writers record what each publish answered (ok, definite failure,
// unknown), readers record every delivery (family, id, stream sequence), and
// the report counts what was lost, unexpected, recovered, stored twice and
// delivered twice.
package checker

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Outcome is what a publish's caller learned.
type Outcome int

const (
	// OK: acknowledged (202); the message must be delivered to every family.
	OK Outcome = iota
	// Definite: refused before anything was stored (4xx, 429, bus unavailable).
	Definite
	// Unknown: maybe stored (503 outcome unknown, timeout, lost connection).
	Unknown
)

// Checker records a history. Safe for concurrent use.
type Checker struct {
	families []string
	start    time.Time

	mu         sync.Mutex
	attempts   map[string]Outcome
	oks        []time.Duration                      // when each ok answer came, from start
	deliveries map[string]map[string]map[uint64]int // family -> id -> seq -> count
}

// New checks deliveries to families; times are measured from now.
func New(families ...string) *Checker {
	c := &Checker{families: families, start: time.Now(), attempts: map[string]Outcome{},
		deliveries: map[string]map[string]map[uint64]int{}}
	for _, f := range families {
		c.deliveries[f] = map[string]map[uint64]int{}
	}
	return c
}

// Attempted records the final outcome of publishing id (after any retries).
func (c *Checker) Attempted(id string, o Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attempts[id] = o
	if o == OK {
		c.oks = append(c.oks, time.Since(c.start))
	}
}

// Delivered records one delivery of id, stored at seq, to family.
func (c *Checker) Delivered(family, id string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byID := c.deliveries[family]
	if byID == nil {
		byID = map[string]map[uint64]int{}
		c.deliveries[family] = byID
	}
	if byID[id] == nil {
		byID[id] = map[uint64]int{}
	}
	byID[id][seq]++
}

// Report is the checker's verdict.
type Report struct {
	Acked    int `json:"acked"`
	Definite int `json:"definite_failures"`
	Unknown  int `json:"unknown"`
	// Lost: acked and not delivered to some family (counted per family).
	Lost int `json:"lost"`
	// Unexpected: delivered but never attempted, or attempted and definitely failed.
	Unexpected int `json:"unexpected"`
	// Recovered: unknown outcome, delivered after all.
	Recovered int `json:"recovered"`
	// StoredTwice: ids delivered from more than one stream sequence.
	StoredTwice int `json:"stored_twice"`
	// Duplicates: extra deliveries of the same stored message to a family.
	Duplicates int `json:"delivery_duplicates"`
	// LongestGap: the longest time between two acknowledged publishes.
	LongestGap time.Duration `json:"longest_gap_without_ack"`
}

// Missing is how many acked or recovered messages some family has not yet
// received: 0 means the readers have caught up.
func (c *Checker) Missing() int {
	n, _ := c.missing(0)
	return n
}

// MissingSample lists up to n ids per family that were acked and not yet
// delivered there, for diagnostics.
func (c *Checker) MissingSample(n int) map[string][]string {
	_, sample := c.missing(n)
	return sample
}

// missing counts the deliveries still missing, listing up to n ids per family.
func (c *Checker) missing(n int) (int, map[string][]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	count, sample := 0, map[string][]string{}
	for id, o := range c.attempts {
		if o != OK {
			continue
		}
		for _, f := range c.families {
			if len(c.deliveries[f][id]) != 0 {
				continue
			}
			count++
			if len(sample[f]) < n {
				sample[f] = append(sample[f], id)
			}
		}
	}
	return count, sample
}

// Report checks the history recorded so far.
func (c *Checker) Report() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	var r Report
	for id, o := range c.attempts {
		switch o {
		case OK:
			r.Acked++
			for _, f := range c.families {
				if len(c.deliveries[f][id]) == 0 {
					r.Lost++
				}
			}
		case Definite:
			r.Definite++
		case Unknown:
			r.Unknown++
			for _, f := range c.families {
				if len(c.deliveries[f][id]) > 0 {
					r.Recovered++
					break
				}
			}
		}
	}
	seqs := map[string]map[uint64]bool{}
	for _, byID := range c.deliveries {
		for id, bySeq := range byID {
			if o, ok := c.attempts[id]; !ok || o == Definite {
				r.Unexpected++
			}
			if seqs[id] == nil {
				seqs[id] = map[uint64]bool{}
			}
			for seq, n := range bySeq {
				seqs[id][seq] = true
				r.Duplicates += n - 1
			}
		}
	}
	for _, s := range seqs {
		if len(s) > 1 {
			r.StoredTwice++
		}
	}
	oks := slices.Clone(c.oks)
	slices.Sort(oks)
	for i := 1; i < len(oks); i++ {
		r.LongestGap = max(r.LongestGap, oks[i]-oks[i-1])
	}
	return r
}

// Row renders r as a markdown table row under Header.
func (r Report) Row(scenario string) string {
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %.1f s |", scenario, r.Acked, r.Lost, r.Unexpected,
		r.Unknown, r.Recovered, r.StoredTwice, r.Duplicates, r.Definite, r.LongestGap.Seconds())
}

// Header is the markdown table header for Row.
var Header = strings.Join([]string{
	"| scenario | acked | lost | unexpected | unknown | recovered | stored twice | delivery duplicates | definite failures | longest gap without ack |",
	"|---|---|---|---|---|---|---|---|---|---|",
}, "\n")
