package history

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var (
	pa = []byte("payload a")
	pb = []byte("payload b")
)

// allOK is the final state of a topic whose families handled everything.
var allOK = FinalState{Families: map[string]FamilyState{"a": {}, "b": {}}}

// TestReportCategories builds one small history per category and checks
// the whole report, so that each category is seen to be detected and the
// others are seen not to fire.
func TestReportCategories(t *testing.T) {
	cases := []struct {
		name    string
		history func(c *Checker)
		want    Report
		missing int
	}{
		{"clean", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.Delivered("b", "m", 1, pa)
		}, Report{Acked: 1}, 0},
		{"lost: acked, reached no family", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
		}, Report{Acked: 1, Lost: 1, FamilyLost: 2}, 2},
		{"family-lost: acked, reached one family", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
		}, Report{Acked: 1, FamilyLost: 1}, 1},
		{"family-lost: unknown outcome that reached one family", func(c *Checker) {
			c.Attempted("m", pa, Failed(Unknown))
			c.Delivered("a", "m", 1, pa)
		}, Report{Unknown: 1, Recovered: 1, Unsettled: 1, FamilyLost: 1}, 1},
		{"a dead letter reaches its family", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.DeadLettered("b", "m", 1, pa)
			c.DeadLettered("b", "m", 1, pa) // read twice: one dead letter
		}, Report{Acked: 1}, 0},
		{"a dead letter in another family does not", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.DeadLettered("a", "m", 1, pa)
		}, Report{Acked: 1, FamilyLost: 1}, 1},
		{"stored twice: delivered from two seqs", func(c *Checker) {
			c.Attempted("m", pa, Failed(Unknown))
			c.Delivered("a", "m", 3, pa)
			c.Delivered("b", "m", 4, pa)
		}, Report{Unknown: 1, Recovered: 1, Unsettled: 1, StoredTwice: 1}, 0},
		{"stored twice: delivered from another seq than the receipt's", func(c *Checker) {
			c.Attempted("m", pa, Ack(7, false))
			c.Delivered("a", "m", 8, pa)
			c.Delivered("b", "m", 8, pa)
		}, Report{Acked: 1, StoredTwice: 1}, 0},
		{"stored twice: a duplicate receipt naming another seq", func(c *Checker) {
			c.Attempted("m", pa, Ack(7, false))
			c.Attempted("m", pa, Ack(9, true))
			c.Delivered("a", "m", 7, pa)
			c.Delivered("b", "m", 7, pa)
		}, Report{Acked: 1, StoredTwice: 1, DuplicateAcks: 1}, 0},
		{"an id once acked stays acked", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Attempted("m", pa, Failed(Unknown))
		}, Report{Acked: 1, Lost: 1, FamilyLost: 2}, 2},
		{"unexpected: never attempted", func(c *Checker) {
			c.Delivered("a", "ghost", 6, pa)
		}, Report{Unexpected: 1}, 0},
		{"unexpected: definitely refused, delivered", func(c *Checker) {
			c.Attempted("m", pa, Failed(Definite))
			c.Delivered("a", "m", 5, pa)
		}, Report{Definite: 1, Unexpected: 1}, 0},
		{"unexpected: a dead letter never attempted", func(c *Checker) {
			c.DeadLettered("b", "ghost", 6, pa)
		}, Report{Unexpected: 1}, 0},
		{"corrupted: delivered payload differs", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.Delivered("b", "m", 1, pb)
		}, Report{Acked: 1, Corrupted: 1}, 0},
		{"corrupted: dead-lettered payload differs", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.DeadLettered("b", "m", 1, pb)
		}, Report{Acked: 1, Corrupted: 1}, 0},
		{"unseen payloads are not compared", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.DeliveredUnseen("a", "m", 1)
			c.DeliveredUnseen("b", "m", 1)
		}, Report{Acked: 1}, 0},
		{"delivery duplicates", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.Delivered("a", "m", 1, pa)
			c.Delivered("a", "m", 1, pa)
			c.Delivered("b", "m", 1, pa)
		}, Report{Acked: 1, Duplicates: 2}, 0},
		{"unknown never stored", func(c *Checker) {
			c.Attempted("m", pa, Failed(Unknown))
		}, Report{Unknown: 1, Unsettled: 1}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := New("a", "b")
			tc.history(c)
			c.Final(allOK)
			tc.want.FinalChecked = true
			got := c.Report()
			got.LongestGap = 0
			if len(got.TwiceAt) != got.StoredTwice {
				t.Errorf("stored twice %d, named %v", got.StoredTwice, got.TwiceAt)
			}
			got.TwiceAt = nil
			got.State = nil // checked in TestFinalState
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("report\n got %+v\nwant %+v", got, tc.want)
			}
			if m := c.Missing(); m != tc.missing {
				t.Errorf("missing = %d, want %d (%v)", m, tc.missing, c.MissingSample(5))
			}
		})
	}
}

// TestSettle settles unknown outcomes by publishing again: a duplicate
// answer with the delivered seq, a duplicate answer with another seq, a new
// store that is then missing, a definite refusal and an unknown that stays.
func TestSettle(t *testing.T) {
	c := New("a", "b")
	for _, id := range []string{"dup", "dup-other-seq", "new", "refused", "still-unknown"} {
		c.Attempted(id, []byte(id), Failed(Unknown))
	}
	c.Attempted("acked", pa, Ack(1, false)) // not republished
	for _, f := range []string{"a", "b"} {
		c.Delivered(f, "acked", 1, pa)
		c.Delivered(f, "dup", 2, []byte("dup"))
		c.Delivered(f, "dup-other-seq", 3, []byte("dup-other-seq"))
	}
	var asked []string
	republish := func(_ context.Context, id string, payload []byte) Answer {
		asked = append(asked, id)
		if string(payload) != id {
			t.Errorf("republish %s with payload %q, want the one first published", id, payload)
		}
		switch id {
		case "dup":
			return Ack(2, true)
		case "dup-other-seq":
			return Ack(9, true)
		case "new":
			return Ack(10, false)
		case "refused":
			return Failed(Definite)
		}
		return Failed(Unknown)
	}
	if n := c.Settle(context.Background(), republish); n != 1 {
		t.Errorf("unsettled = %d, want 1", n)
	}
	if want := []string{"dup", "dup-other-seq", "new", "refused", "still-unknown"}; !slices.Equal(asked, want) {
		t.Errorf("republished %v, want %v", asked, want)
	}
	r := c.Report()
	want := Report{Acked: 1, Unknown: 5, Recovered: 2, Settled: 4, Unsettled: 1, DuplicateAcks: 2,
		StoredTwice: 1, Lost: 1, FamilyLost: 2}
	r.LongestGap = 0
	if len(r.TwiceAt) != 1 || !strings.HasPrefix(r.TwiceAt[0], "dup-other-seq at ") {
		t.Errorf("stored twice at %v, want dup-other-seq", r.TwiceAt)
	}
	r.TwiceAt = nil
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("report\n got %+v\nwant %+v", r, want)
	}
	if s := c.MissingSample(5); !slices.Equal(s["a"], []string{"new"}) || !slices.Equal(s["b"], []string{"new"}) {
		t.Errorf("missing %v, want new in both families", s)
	}
	// Settling again asks only for what is still unknown.
	asked = nil
	c.Settle(context.Background(), republish)
	if !slices.Equal(asked, []string{"still-unknown"}) {
		t.Errorf("second settle republished %v", asked)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n := c.Settle(ctx, republish); n != 1 {
		t.Errorf("settle after ctx ended: unsettled = %d, want 1", n)
	}
}

// TestFinalState flags each unexpected final state.
func TestFinalState(t *testing.T) {
	c := New("a", "b")
	c.Attempted("m", pa, Ack(1, false))
	c.Delivered("a", "m", 1, pa)
	c.DeadLettered("b", "m", 1, pa)
	cases := []struct {
		name  string
		state FinalState
		want  []string
	}{
		{"clean", FinalState{Families: map[string]FamilyState{"a": {}, "b": {DeadLetters: 1}}}, nil},
		{"messages left though handled", FinalState{Messages: 2, Families: map[string]FamilyState{"a": {}, "b": {DeadLetters: 1}}},
			[]string{"2 messages left in the topic though every family handled everything"}},
		{"pending and unacked", FinalState{Messages: 3, Families: map[string]FamilyState{"a": {Pending: 2}, "b": {AckPending: 1, DeadLetters: 1}}},
			[]string{"a: 2 pending (stored, never delivered)", "b: 1 delivered and never acked", "3 messages left in the topic"}},
		{"dead letters not recorded", FinalState{Families: map[string]FamilyState{"a": {DeadLetters: 1}, "b": {DeadLetters: 1}}},
			[]string{"a: 1 dead letters on the bus, 0 recorded"}},
		{"a family without state", FinalState{Families: map[string]FamilyState{"b": {DeadLetters: 1}}},
			[]string{"a: no consumer state"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.StateProblems(tc.state); !slices.Equal(got, tc.want) {
				t.Errorf("problems\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	if p := c.Report().Problems(); !slices.Equal(p, []string{"final state not checked"}) {
		t.Errorf("problems before Final: %q", p)
	}
	c.Final(cases[1].state)
	r := c.Report()
	if !r.FinalChecked || !slices.Equal(r.Problems(), cases[1].want) {
		t.Errorf("report after Final: %+v, problems %q", r, r.Problems())
	}
	if row := r.Row("x"); !strings.Contains(row, "2 messages left") {
		t.Errorf("row does not show the final state: %s", row)
	}
}

// TestQuiesce: Quiesce returns only after nothing is missing and quiet has
// passed without deliveries, so a late duplicate within it is counted; it
// fails when the context ends while something is missing.
func TestQuiesce(t *testing.T) {
	c := New("a", "b")
	c.Attempted("m", pa, Ack(1, false))
	c.Delivered("a", "m", 1, pa)
	var step atomic.Int32
	collect := func() { // a reader outside the process, polled
		c.DeadLettered("b", "m", 1, pa) // dead letters read again each time are no news
		switch step.Add(1) {
		case 3:
			c.Delivered("b", "m", 1, pa) // nothing missing from here on
		case 6:
			c.Delivered("b", "m", 1, pa) // a late duplicate
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Quiesce(ctx, 50*time.Millisecond, 10*time.Millisecond, collect); err != nil {
		t.Fatal(err)
	}
	if r := c.Report(); r.Duplicates != 1 {
		t.Errorf("the late duplicate was not waited for: %+v (collected %d times)", r, step.Load())
	}

	c.Attempted("never", pb, Ack(2, false))
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	err := c.Quiesce(short, 10*time.Millisecond, 5*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "2 deliveries missing") || !strings.Contains(err.Error(), "never") {
		t.Errorf("quiesce with never delivered: %v", err)
	}
}

// TestRowMatchesHeader: one cell per column.
func TestRowMatchesHeader(t *testing.T) {
	head := strings.Split(Header, "\n")
	row := Report{FinalChecked: true}.Row("s")
	if got, want := strings.Count(row, "|"), strings.Count(head[0], "|"); got != want || strings.Count(head[1], "|") != want {
		t.Errorf("row has %d bars, header %d:\n%s\n%s", got, want, Header, row)
	}
}

// TestLongestGap measures the longest time between two acks.
func TestLongestGap(t *testing.T) {
	c := New("a")
	c.Attempted("1", pa, Ack(1, false))
	time.Sleep(30 * time.Millisecond)
	c.Attempted("2", pa, Ack(2, false))
	if g := c.Report().LongestGap; g < 30*time.Millisecond {
		t.Errorf("longest gap %v, want >= 30ms", g)
	}
}

// TestRates counts the acks between the phases: two before the fault, none
// during it, one after.
func TestRates(t *testing.T) {
	c := New("a")
	if c.Report().RatesMeasured {
		t.Error("rates measured without phases")
	}
	loadStart := c.start.Add(-time.Second)
	c.Attempted("1", pa, Ack(1, false))
	c.Attempted("2", pa, Ack(2, false))
	faultBegin := time.Now()
	faultEnd := faultBegin.Add(time.Second) // the next ack comes after it
	c.Attempted("3", pa, Ack(3, false))
	c.Attempted("4", pa, Answer{Outcome: Unknown})
	loadEnd := faultEnd.Add(time.Second)
	c.Phases(loadStart, faultBegin, faultEnd, loadEnd)
	r := c.Report()
	c.mu.Lock()
	defer c.mu.Unlock()
	oks := c.oks
	after := 0
	if oks[2] >= faultEnd.Sub(c.start) {
		after = 1 // "3" came after the fault's end only on a very slow machine
	}
	want := [3]float64{2 / faultBegin.Sub(loadStart).Seconds(), float64(1-after) / time.Second.Seconds(), float64(after) / time.Second.Seconds()}
	if !r.RatesMeasured || r.Rates != want {
		t.Errorf("rates %v (measured %v), want %v", r.Rates, r.RatesMeasured, want)
	}
}
