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
		stalled time.Duration
		jitter  float64
		want    time.Duration
	}{
		{1000, 100, 0, 0, 10 * time.Second},
		{1000, 100, 0, 0.5, 15 * time.Second}, // jitter stretches
		{10, 1000, 0, 0, time.Second},         // clamped up
		{10, 1000, 0, 0.5, 1500 * time.Millisecond},
		{1e6, 1, 0, 0.5, time.Minute},                // clamped down, jitter cannot pass hi
		{1000, 100, time.Hour, 0, 10 * time.Second},  // a known rate wins over the stall
		{10, 0, 0, 0, time.Second},                   // no rate known, just filled: the minimum
		{10, 0, 0, 0.5, 1500 * time.Millisecond},     // ... jittered
		{10, 0, 3 * time.Second, 0, 3 * time.Second}, // stalled 3s: 3s more
		{10, 0, 3 * time.Second, 0.5, 4500 * time.Millisecond},
		{10, 0, time.Hour, 0, time.Minute},             // stalled for long: the maximum
		{1000, 1e-12, 5 * time.Minute, 0, time.Minute}, // a drain decayed almost to nothing by a stall
		{1000, 1e-7, 5 * time.Minute, 0.5, time.Minute},
	} {
		if got := RetryAfter(tc.deficit, tc.rate, tc.stalled, tc.jitter, lo, hi); got != tc.want {
			t.Errorf("RetryAfter(%d, %v, %v, %v) = %v, want %v", tc.deficit, tc.rate, tc.stalled, tc.jitter, got, tc.want)
		}
	}
}

// TestDrainAfterIdle is README's scenario on the estimator: families that
// drained 5 messages in 2 s, then a long idle spell, then a full topic
// again. The estimate is still what the families did when they last
// worked, so the refusal's Retry-After is the seconds the topic needs,
// not the clamp.
func TestDrainAfterIdle(t *testing.T) {
	lo, hi := time.Second, time.Minute
	d := NewDrain(2 * time.Second)
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	d.Observe(at(0), 0, 0)
	// 5 stored at once, handled for 2 s, all acked together; every 250 ms a reading.
	d.Observe(at(250), 5, 5)
	for ms := 500; ms <= 2000; ms += 250 {
		d.Observe(at(ms), 5, 5)
	}
	d.Observe(at(2250), 5, 0)
	worked := d.Rate()
	if worked <= 0 {
		t.Fatalf("drain after a busy spell = %v, want > 0", worked)
	}
	// A minute idle, read every 250 ms.
	ms := 2250
	for ; ms <= 62250; ms += 250 {
		d.Observe(at(ms), 5, 0)
	}
	if d.Rate() != worked {
		t.Fatalf("drain after an idle minute = %v, want the %v the families last worked at", d.Rate(), worked)
	}
	// Full again: 5 stored within one reading.
	d.Observe(at(ms), 10, 5)
	now := at(ms + 100)
	if s := d.Stalled(now); s > 500*time.Millisecond {
		t.Fatalf("stalled %v just after filling, want at most a reading or two", s)
	}
	ra := RetryAfter(Deficit(0, 5, 1), d.Rate(), d.Stalled(now), 0.99, lo, hi)
	if ra > 4*time.Second {
		t.Fatalf("Retry-After after an idle minute = %v, want the seconds a topic draining at %.2f/s needs", ra, worked)
	}
}

// TestDrainUnknown: a topic whose families never drained anything while
// the gateway watched has no rate; its Retry-After grows with the stall,
// from the minimum up to the maximum.
func TestDrainUnknown(t *testing.T) {
	lo, hi := time.Second, time.Minute
	d := NewDrain(2 * time.Second)
	t0 := time.Unix(1000, 0)
	d.Observe(t0, 0, 0)
	for i := 1; i <= 20; i++ { // idle 5 s: nothing to measure
		d.Observe(t0.Add(time.Duration(i)*250*time.Millisecond), 0, 0)
	}
	filled := t0.Add(5250 * time.Millisecond)
	d.Observe(filled, 5, 5)
	if d.Rate() != 0 {
		t.Fatalf("rate with nothing ever drained = %v, want 0", d.Rate())
	}
	var last time.Duration
	read := filled // the last reading
	for _, after := range []time.Duration{0, 2 * time.Second, 10 * time.Second, 40 * time.Second, 5 * time.Minute} {
		now := filled.Add(after)
		for ; read.Add(250 * time.Millisecond).Before(now.Add(time.Nanosecond)); read = read.Add(250 * time.Millisecond) {
			d.Observe(read.Add(250*time.Millisecond), 5, 5) // nothing leaves
		}
		ra := RetryAfter(Deficit(0, 5, 1), d.Rate(), d.Stalled(now), 0, lo, hi)
		// Stalled since the last reading that found the topic empty, a
		// reading before it filled.
		if want0, want1 := min(hi, max(lo, after)), min(hi, max(lo, after+250*time.Millisecond)); ra < want0 || ra > want1 {
			t.Errorf("stalled %v: Retry-After %v, want %v..%v", after, ra, want0, want1)
		}
		if ra < last {
			t.Errorf("stalled %v: Retry-After %v shrank from %v", after, ra, last)
		}
		last = ra
	}
}
