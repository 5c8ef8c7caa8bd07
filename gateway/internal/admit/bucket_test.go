package admit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBucket(10, 5, t0) // 10/s, burst 5
	for i := range 5 {
		if !b.Take(t0, 1) {
			t.Fatalf("take %d of the burst refused", i)
		}
	}
	if b.Take(t0, 1) {
		t.Fatal("took beyond the burst")
	}
	if w := b.Wait(t0, 1); w != 100*time.Millisecond {
		t.Fatalf("wait = %v, want 100ms", w)
	}
	if !b.Take(t0.Add(100*time.Millisecond), 1) || b.Take(t0.Add(100*time.Millisecond), 1) {
		t.Fatal("one token per 100ms")
	}
	if b.Tokens(t0.Add(time.Hour)) != 5 || !b.Full(t0.Add(time.Hour)) {
		t.Fatal("refill must stop at the burst")
	}
	if b.Wait(t0.Add(time.Hour), 6) != time.Duration(1<<63-1) {
		t.Fatal("more than the burst never comes")
	}
	// Time going backwards changes nothing.
	if b.Tokens(t0) != 5 {
		t.Fatal("clock went backwards and tokens changed")
	}
}

func TestAdmission(t *testing.T) {
	var a Admission
	if !a.Take(1 << 30) {
		t.Fatal("before the first refill the stream's own bound decides")
	}
	a.Refill(3, 100, 1, 10) // share 3 msgs / 100 B, 1 msg of 10 B taken since the reading
	if a.Remaining() != 2 || a.Share() != 3 {
		t.Fatalf("remaining %d share %d", a.Remaining(), a.Share())
	}
	if !a.Take(50) || a.Take(50) { // 40 B left after the first
		t.Fatal("byte credit not enforced")
	}
	if !a.Take(10) || a.Take(1) {
		t.Fatal("message credit not enforced")
	}
	a.Return(10)
	if a.Remaining() != 1 || !a.Take(10) {
		t.Fatal("returned credit not usable")
	}
	// Taken before a refill that counted them as held, then given back:
	// credit comes back, never above the share.
	a.Refill(10, 1000, 0, 0)
	for range 10 {
		a.Take(1)
	}
	a.Refill(10, 1000, 10, 10) // nothing stored yet: all ten still held
	for range 10 {
		a.Return(1)
	}
	a.Return(1)
	if a.Remaining() != 10 {
		t.Fatalf("remaining %d after giving back, want the share 10", a.Remaining())
	}
	// The stream said full: nothing until the next refill, even given back.
	a.Exhaust()
	a.Return(1)
	if a.Take(1) {
		t.Fatal("took credit after Exhaust and a Return")
	}
	a.Refill(3, 100, 0, 0)
	if !a.Take(1) {
		t.Fatal("a refill must end the exhaustion")
	}
	a.Refill(-5, -5, 0, 0) // over-full topic: nothing
	if a.Take(0) || a.Remaining() != 0 {
		t.Fatal("negative share must admit nothing")
	}
}

func TestDrain(t *testing.T) {
	d := NewDrain(time.Second)
	t0 := time.Unix(1000, 0)
	d.Observe(t0, 100, 50)
	// 10 s at a steady state: 100 in and 100 out per second (backlog flat).
	seq, msgs := uint64(100), uint64(50)
	for i := 1; i <= 10; i++ {
		seq += 100
		d.Observe(t0.Add(time.Duration(i)*time.Second), seq, msgs)
	}
	if r := d.Rate(); r < 99 || r > 101 {
		t.Fatalf("steady drain = %v, want ~100", r)
	}
	// Backlog growing by everything published: nothing drains.
	for i := 11; i <= 30; i++ {
		seq += 100
		msgs += 100
		d.Observe(t0.Add(time.Duration(i)*time.Second), seq, msgs)
	}
	if r := d.Rate(); r > 1 {
		t.Fatalf("stalled drain = %v, want ~0", r)
	}
}

func TestRetryAfter(t *testing.T) {
	lo, hi := time.Second, time.Minute
	for _, tc := range []struct {
		deficit int64
		rate    float64
		jitter  float64
		want    time.Duration
	}{
		{1000, 100, 0, 10 * time.Second},
		{1000, 100, 0.5, 15 * time.Second}, // jitter stretches
		{10, 1000, 0, time.Second},         // clamped up
		{10, 1000, 0.5, 1500 * time.Millisecond},
		{1e6, 1, 0.5, time.Minute},    // clamped down, jitter cannot pass hi
		{10, 0, 0, time.Minute},       // nothing drains
		{1000, 1e-12, 0, time.Minute}, // a drain decayed almost to nothing
		{1000, 1e-7, 0.5, time.Minute},
	} {
		if got := RetryAfter(tc.deficit, tc.rate, tc.jitter, lo, hi); got != tc.want {
			t.Errorf("RetryAfter(%d, %v, %v) = %v, want %v", tc.deficit, tc.rate, tc.jitter, got, tc.want)
		}
	}
}
