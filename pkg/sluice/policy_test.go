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

func TestNakDelayOffsetsTheConsumerBackOff(t *testing.T) {
	ms := time.Millisecond
	// ack wait 30 s, schedule [1s, 5s, 30s]: BackOff = 31s, 35s, 60s. The
	// server redelivers a nak of attempt k after nak + BackOff[k-1] - 31s.
	p := policy{expiry: []time.Duration{31000 * ms, 35000 * ms, 60000 * ms}}
	for _, tc := range []struct {
		attempt        int
		wait, nak, got time.Duration
	}{
		{1, 1000 * ms, 1000 * ms, 1000 * ms},
		{2, 5000 * ms, 1000 * ms, 5000 * ms},
		{3, 30000 * ms, 1000 * ms, 30000 * ms},
		{7, 30000 * ms, 1000 * ms, 30000 * ms}, // past the list: its last entry
		{2, 2000 * ms, 1 * ms, 4001 * ms},      // a short jittered wait: rounded up to the offset
		{0, 1000 * ms, 1000 * ms, 1000 * ms},   // no attempt number: no offset
		{3, 29000 * ms, 1 * ms, 29001 * ms},    // 29 s against an offset of 29 s: rounded up
	} {
		nak, got := p.nakDelay(tc.attempt, tc.wait)
		if nak != tc.nak || got != tc.got {
			t.Errorf("attempt %d wait %v: nak %v (want %v), actual %v (want %v)", tc.attempt, tc.wait, nak, tc.nak, got, tc.got)
		}
		if offset := p.expiry[min(max(tc.attempt-1, 0), 2)] - p.expiry[0]; nak+offset != got {
			t.Errorf("attempt %d: the server would wait %v, the worker reports %v", tc.attempt, nak+offset, got)
		}
	}
	if nak, got := (policy{}).nakDelay(3, 5*time.Second); nak != 5*time.Second || got != 5*time.Second {
		t.Errorf("no BackOff: %v, %v", nak, got)
	}
}
