package busclock

import (
	"testing"
	"time"
)

// TestBusClock: the bus's time is the server's, advanced by the monotonic
// clock: the wall clock's skew and jumps after a reading change nothing
// but the offset; a store time ahead of the estimate is no age; a server
// without a time leaves the wall clock standing in.
func TestBusClock(t *testing.T) {
	wall := time.Hour // the host's wall clock is this far ahead of the bus's
	c := New(func() time.Time { return time.Now().Round(0).Add(wall) })
	if d := c.Now().Sub(time.Now()); d < 59*time.Minute {
		t.Fatalf("before any answer: %v off the bus, want the wall clock's hour", d)
	}
	sent := time.Now()
	ts := time.Now().Round(0)
	recv := time.Now()
	offset, ok := c.Observe(ts, sent, recv)
	if !ok || (offset-time.Hour).Abs() > time.Second {
		t.Fatalf("offset %v %v, want an hour", offset, ok)
	}
	wall = -3 * time.Hour // a jump
	if d := c.Now().Sub(time.Now()).Abs(); d > time.Second {
		t.Errorf("after a wall clock jump the bus's time is %v off", d)
	}
	if age := c.Age(time.Now().Add(time.Minute)); age != 0 {
		t.Errorf("a store time a minute ahead: age %v, want 0", age)
	}
	if age := c.Age(time.Now().Add(-time.Minute)); (age - time.Minute).Abs() > time.Second {
		t.Errorf("a store time a minute ago: age %v", age)
	}
	if c.Stale(time.Minute) {
		t.Error("stale right after a reading")
	}
	if _, ok := c.Observe(time.Time{}, sent, recv); ok {
		t.Error("an answer without a time gave an offset")
	}
}

// TestOffset: the wall clock's offset from the bus's follows the wall
// clock after a reading; 0 before any.
func TestOffset(t *testing.T) {
	wall := -time.Hour
	c := New(func() time.Time { return time.Now().Round(0).Add(wall) })
	if o := c.Offset(); o != 0 {
		t.Fatalf("offset %v before any answer, want 0", o)
	}
	c.Observe(time.Now().Round(0), time.Now(), time.Now())
	if o := c.Offset(); (o + time.Hour).Abs() > time.Second {
		t.Errorf("offset %v, want an hour behind", o)
	}
	wall = 2 * time.Hour
	if o := c.Offset(); (o - 2*time.Hour).Abs() > time.Second {
		t.Errorf("offset %v after a jump, want two hours ahead", o)
	}
}
