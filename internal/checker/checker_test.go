package checker

import "testing"

func TestReport(t *testing.T) {
	c := New("a", "b")
	c.Attempted("ok-1", OK)        // delivered to both
	c.Attempted("ok-2", OK)        // lost in b
	c.Attempted("unk-1", Unknown)  // recovered
	c.Attempted("unk-2", Unknown)  // never stored
	c.Attempted("def-1", Definite) // yet delivered: unexpected
	c.Delivered("a", "ok-1", 1)
	c.Delivered("b", "ok-1", 1)
	c.Delivered("b", "ok-1", 1) // redelivered: a duplicate
	c.Delivered("a", "ok-2", 2)
	c.Delivered("a", "unk-1", 3)
	c.Delivered("b", "unk-1", 4) // the same id stored at two sequences
	c.Delivered("a", "def-1", 5)
	c.Delivered("a", "ghost", 6) // never attempted
	r := c.Report()
	want := Report{Acked: 2, Definite: 1, Unknown: 2, Lost: 1, Unexpected: 2, Recovered: 1, StoredTwice: 1, Duplicates: 1}
	r.LongestGap = 0
	if r != want {
		t.Fatalf("report\n got %+v\nwant %+v", r, want)
	}
	if c.Missing() != 1 {
		t.Fatalf("missing = %d, want 1 (ok-2 in b)", c.Missing())
	}
}
