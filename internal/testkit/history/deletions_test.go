package history

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOperatorsDeletionsAndCopies: what an operator's deletion destroys is
// counted apart from what Sluice lost, a copy on a family's redrive subject
// reaches the family without counting as the message stored twice, and
// seqs are compared within one incarnation of the stream.
func TestOperatorsDeletionsAndCopies(t *testing.T) {
	t0 := time.Now()
	before, deleted, after := t0.Add(time.Second), t0.Add(2*time.Second), t0.Add(3*time.Second)
	ack := func(seq uint64, sent time.Time) Answer { a := Ack(seq, false); a.Sent = sent; return a }
	cases := []struct {
		name    string
		history func(c *Checker)
		want    Report
		missing int
	}{
		{"a copy reaches its family at a seq of its own", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, true))
			c.Delivered("a", "m", 1, pa)
			c.Deliver("b", Delivery{ID: "m", Seq: 7, Payload: pa, Copy: true})
		}, Report{Acked: 1, DuplicateAcks: 1, Copies: 1}, 0},
		{"a copy's dead letter is at the copy's seq", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.Deliver("b", Delivery{ID: "m", Seq: 7, Payload: pa, Copy: true})
			c.DeadLettered("b", "m", 7, pa)
		}, Report{Acked: 1, Copies: 1}, 0},
		{"a copy delivered twice is a delivery duplicate", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.Deliver("b", Delivery{ID: "m", Seq: 7, Payload: pa, Copy: true})
			c.Deliver("b", Delivery{ID: "m", Seq: 7, Payload: pa, Copy: true})
		}, Report{Acked: 1, Copies: 2, Duplicates: 1}, 0},
		{"a corrupted copy", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.Deliver("b", Delivery{ID: "m", Seq: 7, Payload: pb, Copy: true})
		}, Report{Acked: 1, Copies: 1, Corrupted: 1}, 0},
		{"a delivery at another seq that is no copy is stored twice", func(c *Checker) {
			c.Attempted("m", pa, Ack(1, false))
			c.Delivered("a", "m", 1, pa)
			c.Deliver("b", Delivery{ID: "m", Seq: 7, Payload: pa})
		}, Report{Acked: 1, StoredTwice: 1}, 0},
		{"acked before the consumer's deletion: destroyed", func(c *Checker) {
			c.Attempted("m", pa, ack(3, before))
			c.Delivered("a", "m", 3, pa)
			c.ConsumerDeleted("b", deleted, 5)
		}, Report{Acked: 1, Destroyed: 1}, 0},
		{"acked before the deletion, not in the family's dead letters: destroyed, not lost", func(c *Checker) {
			c.Attempted("m", pa, ack(3, before))
			c.ConsumerDeleted("a", deleted, 5)
			c.ConsumerDeleted("b", deleted, 5)
		}, Report{Acked: 1, Destroyed: 2}, 0},
		{"acked after the deletion: family-lost", func(c *Checker) {
			c.Attempted("m", pa, ack(3, after))
			c.Delivered("a", "m", 3, pa)
			c.ConsumerDeleted("b", deleted, 5)
		}, Report{Acked: 1, FamilyLost: 1}, 1},
		{"sent before the deletion, stored after it: family-lost", func(c *Checker) {
			c.Attempted("m", pa, ack(6, before))
			c.Delivered("a", "m", 6, pa)
			c.ConsumerDeleted("b", deleted, 5)
		}, Report{Acked: 1, FamilyLost: 1}, 1},
		{"when the ack was sent is not known: family-lost", func(c *Checker) {
			c.Attempted("m", pa, Ack(3, false))
			c.Delivered("a", "m", 3, pa)
			c.ConsumerDeleted("b", deleted, 5)
		}, Report{Acked: 1, FamilyLost: 1}, 1},
		{"another family's deletion destroys nothing here", func(c *Checker) {
			c.Attempted("m", pa, ack(3, before))
			c.Delivered("a", "m", 3, pa)
			c.ConsumerDeleted("a", deleted, 5)
		}, Report{Acked: 1, FamilyLost: 1}, 1},
		{"stream deleted: acked before, destroyed in every family", func(c *Checker) {
			c.Attempted("m", pa, ack(900, before))
			c.StreamDeleted(deleted)
		}, Report{Acked: 1, Destroyed: 2}, 0},
		{"stream deleted: seqs restart", func(c *Checker) {
			c.Attempted("old", pa, ack(3, before))
			c.Deliver("a", Delivery{ID: "old", Seq: 3, Stored: before, Payload: pa})
			c.DeadLetteredBy("b", "old", 3, t0, pa)
			c.StreamDeleted(deleted)
			c.Attempted("new", pb, ack(3, after))
			c.Deliver("a", Delivery{ID: "new", Seq: 3, Stored: after, Payload: pb})
			c.Deliver("b", Delivery{ID: "new", Seq: 3, Stored: after, Payload: pb})
		}, Report{Acked: 2}, 0},
		{"stream deleted: stored in both incarnations is stored again, not twice", func(c *Checker) {
			c.Attempted("m", pa, Failed(Unknown))
			c.Deliver("a", Delivery{ID: "m", Seq: 3, Stored: before, Payload: pa})
			c.StreamDeleted(deleted)
			c.Attempted("m", pa, ack(1, after))
			c.Deliver("a", Delivery{ID: "m", Seq: 1, Stored: after, Payload: pa})
			c.Deliver("b", Delivery{ID: "m", Seq: 1, Stored: after, Payload: pa})
		}, Report{Acked: 1, StoredAgain: 1}, 0},
		{"stream deleted: two seqs in one incarnation are stored twice", func(c *Checker) {
			c.StreamDeleted(deleted)
			c.Attempted("m", pa, ack(1, after))
			c.Deliver("a", Delivery{ID: "m", Seq: 1, Stored: after, Payload: pa})
			c.Deliver("b", Delivery{ID: "m", Seq: 2, Stored: after, Payload: pa})
		}, Report{Acked: 1, StoredTwice: 1}, 0},
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
			got.State = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("report\n got %+v\nwant %+v", got, tc.want)
			}
			if m := c.Missing(); m != tc.missing {
				t.Errorf("missing = %d, want %d (%v)", m, tc.missing, c.MissingSample(5))
			}
		})
	}
}

// TestSettledAfterTheDeletion: an unknown outcome settled by a retry sent
// after the consumer's deletion must reach the family.
func TestSettledAfterTheDeletion(t *testing.T) {
	c := New("a", "b")
	c.Attempted("m", pa, Failed(Unknown))
	c.Delivered("a", "m", 3, pa)
	c.ConsumerDeleted("b", time.Now(), 5)
	c.Settle(context.Background(), func(context.Context, string, []byte) Answer { return Ack(3, true) })
	if r := c.Report(); r.FamilyLost != 1 || r.Destroyed != 0 || r.Settled != 1 {
		t.Errorf("report %+v: want the settled message family-lost in b", r)
	}
	c.Deliver("b", Delivery{ID: "m", Seq: 11, Payload: pa, Copy: true}) // the gateway's repair
	if r := c.Report(); r.FamilyLost != 0 || r.StoredTwice != 0 || r.Copies != 1 {
		t.Errorf("report %+v after the repair copy", r)
	}
}

// TestVanishedDeadLetters: a dead letter gone from the bus (redriven) must
// have been handled by its family.
func TestVanishedDeadLetters(t *testing.T) {
	c := New("a", "b")
	for _, id := range []string{"kept", "redriven-handled", "redriven-lost"} {
		c.Attempted(id, pa, Ack(1, false))
		c.Delivered("a", id, 1, pa)
		c.DeadLettered("b", id, 1, pa)
	}
	c.Handled("b", "redriven-handled")
	st := FinalState{Families: map[string]FamilyState{"a": {DeadLetterIDs: []string{}}, "b": {DeadLetters: 1, DeadLetterIDs: []string{"kept"}}}}
	got := c.StateProblems(st)
	if len(got) != 1 || !strings.Contains(got[0], "b: 1 dead letters gone") || !strings.Contains(got[0], "redriven-lost") {
		t.Errorf("problems %q", got)
	}
	c.Handled("b", "redriven-lost")
	if got := c.StateProblems(st); got != nil {
		t.Errorf("problems %q once handled", got)
	}
}

// TestSettleSeen: an unknown outcome that reached a family is settled
// without publishing again, and must still reach every family.
func TestSettleSeen(t *testing.T) {
	c := New("a", "b")
	c.Attempted("seen", pa, Failed(Unknown))
	c.Attempted("unseen", pb, Failed(Unknown))
	c.Delivered("a", "seen", 1, pa)
	if n := c.SettleSeen(); n != 1 {
		t.Fatalf("settled %d, want 1", n)
	}
	var asked []string
	c.Settle(context.Background(), func(_ context.Context, id string, _ []byte) Answer {
		asked = append(asked, id)
		return Failed(Definite)
	})
	if !slices.Equal(asked, []string{"unseen"}) {
		t.Errorf("republished %v, want only unseen", asked)
	}
	r := c.Report()
	if r.Settled != 2 || r.Unsettled != 0 || r.Recovered != 1 || r.FamilyLost != 1 || r.Acked != 0 {
		t.Errorf("report %+v: want both settled, seen recovered and missing in b", r)
	}
}
