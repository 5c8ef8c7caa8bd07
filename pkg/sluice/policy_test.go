package sluice

import (
	"testing"
	"time"
)

func TestPolicyDelay(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name string
		p    policy
		want []time.Duration // for attempts 1, 2, 3, 4, 5
	}{
		{"schedule repeats its last entry", policy{curve: "schedule", backoff: []time.Duration{s, 5 * s}}, []time.Duration{s, 5 * s, 5 * s, 5 * s, 5 * s}},
		{"empty schedule retries at once", policy{curve: "schedule"}, []time.Duration{0, 0, 0, 0, 0}},
		{"exponential up to the max", policy{curve: "exponential", initial: s, max: 5 * s}, []time.Duration{s, 2 * s, 4 * s, 5 * s, 5 * s}},
		{"linear up to the max", policy{curve: "linear", initial: 2 * s, max: 7 * s}, []time.Duration{2 * s, 4 * s, 6 * s, 7 * s, 7 * s}},
	} {
		for i, want := range tc.want {
			if got := tc.p.delay(i + 1); got != want {
				t.Errorf("%s: attempt %d: %v, want %v", tc.name, i+1, got, want)
			}
		}
	}
	// Full jitter: every draw in [0, delay), and not all the same.
	p := policy{curve: "exponential", initial: s, max: 8 * s, jitter: true}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := p.delay(4) // 8 s before jitter
		if d < 0 || d >= 8*s {
			t.Fatalf("jittered delay %v outside [0, 8s)", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct jittered delays in 200", len(seen))
	}
}
