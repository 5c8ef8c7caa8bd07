package admit

import (
	"testing"
	"time"
)

func TestShareAddsUpToFree(t *testing.T) {
	for _, free := range []int64{0, 1, 2, 7, 100, 101} {
		for n := 1; n <= 4; n++ {
			var sum int64
			for rank := range n {
				s := Share(free, n, rank)
				if s < free/int64(n) || s > free/int64(n)+1 {
					t.Fatalf("Share(%d, %d, %d) = %d: unfair", free, n, rank, s)
				}
				sum += s
			}
			if sum != free {
				t.Fatalf("shares of %d among %d add up to %d", free, n, sum)
			}
		}
	}
	if Share(-5, 2, 0) > 0 {
		t.Fatal("an over-full topic gives no credit")
	}
}

func TestShare(t *testing.T) {
	for _, tc := range []struct {
		name    string
		free    int64
		n, rank int
		want    int64
	}{
		{"alone", 7, 1, 0, 7},
		{"even split", 6, 3, 2, 2},
		{"the first by rank get the remainder", 7, 3, 0, 3},
		{"the remainder runs out", 7, 3, 1, 2},
		{"the last gets none of it", 7, 3, 2, 2},
		{"less than one each", 1, 3, 1, 0},
		{"empty", 0, 2, 0, 0},
		{"over-full", -6, 3, 0, -2},
	} {
		if got := Share(tc.free, tc.n, tc.rank); got != tc.want {
			t.Errorf("%s: Share(%d, %d, %d) = %d, want %d", tc.name, tc.free, tc.n, tc.rank, got, tc.want)
		}
	}
}

func TestDeficit(t *testing.T) {
	for _, tc := range []struct {
		name          string
		free, maxMsgs int64
		gateways      int
		want          int64
	}{
		{"room for 1% of the topic", 10, 1000, 1, 0},
		{"short of 1% of the topic", 4, 1000, 1, 6},
		{"one message per gateway on a small topic", 2, 100, 3, 1},
		{"full", 0, 1000, 2, 10},
		{"over-full", -5, 1000, 2, 15},
		{"more room than needed", 500, 1000, 3, 0},
	} {
		if got := Deficit(tc.free, tc.maxMsgs, tc.gateways); got != tc.want {
			t.Errorf("%s: Deficit(%d, %d, %d) = %d, want %d", tc.name, tc.free, tc.maxMsgs, tc.gateways, got, tc.want)
		}
	}
}

func TestWait(t *testing.T) {
	lo, hi := time.Second, time.Minute
	for _, tc := range []struct {
		name    string
		deficit int64
		rate    float64
		stalled time.Duration
		jitter  float64
		want    time.Duration
	}{
		{"room now: the minimum", 0, 0, 0, 0, lo},
		{"room now: the minimum whatever the rate", 0, 0.001, 0, 0, lo},
		{"room now: the minimum whatever the stall", 0, 0, time.Hour, 0, lo},
		{"room now, jittered", 0, 0, 0, 0.5, 1500 * time.Millisecond},
		{"drains in 10s", 100, 10, 0, 0, 10 * time.Second},
		{"drains in 10s, jittered to at most twice", 100, 10, 0, 0.99, 19900 * time.Millisecond},
		{"no drain known, stalled long: the maximum", 100, 0, 10 * time.Minute, 0, hi},
		{"no drain known, just filled: the minimum", 100, 0, 0, 0, lo},
		{"slow drain: clamped to the maximum", 100, 0.1, 0, 0.5, hi},
		{"fast drain: clamped to the minimum", 1, 1000, 0, 0, lo},
	} {
		if got := Wait(tc.deficit, tc.rate, tc.stalled, tc.jitter, lo, hi); got != tc.want {
			t.Errorf("%s: Wait(%d, %v, %v) = %v, want %v", tc.name, tc.deficit, tc.rate, tc.jitter, got, tc.want)
		}
	}
}

func TestTenantShare(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fraction float64
		share    int64
		want     int64
	}{
		{"a quarter", 0.25, 100, 25},
		{"rounded down", 0.25, 10, 2},
		{"at least one", 0.1, 5, 1},
		{"at least one of nothing", 0.5, 0, 1},
		{"all of it", 1, 40, 40},
	} {
		if got := TenantShare(tc.fraction, tc.share); got != tc.want {
			t.Errorf("%s: TenantShare(%v, %d) = %d, want %d", tc.name, tc.fraction, tc.share, got, tc.want)
		}
	}
}
