package sluice

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestRefusedOnlyForGood(t *testing.T) {
	api := func(code, errCode int) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{Code: code, ErrorCode: jetstream.ErrorCode(errCode)})
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{api(400, 10174), true},  // atomic publish disabled
		{api(400, 10054), true},  // message too large
		{api(500, 10047), true},  // insufficient storage: not a 503
		{api(503, 10077), false}, // stream full
		{api(503, 10008), false}, // no quorum
		{api(408, 0), false},
		{jetstream.ErrNoStreamResponse, false},
		{errors.New("context deadline exceeded"), false},
		{nats.ErrTimeout, false},
	} {
		if got := refused(tc.err); got != tc.want {
			t.Errorf("refused(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestUserHeadersDropTheBusHeaders(t *testing.T) {
	h := nats.Header{}
	for _, k := range []string{"Nats-Msg-Id", "Nats-Batch-Id", "Nats-Batch-Sequence", "Nats-Batch-Commit",
		"Nats-Expected-Stream", "NATS-TTL", "Content-Type", "Sluice-Meta-Customer", "Sluice-Original-Id", "X-Own"} {
		h[k] = []string{"v"}
	}
	got := userHeaders(h)
	if len(got) != 4 || got.Get("Content-Type") != "v" || got.Get("Sluice-Meta-Customer") != "v" ||
		got.Get("Sluice-Original-Id") != "v" || got.Get("X-Own") != "v" {
		t.Fatalf("userHeaders = %v", got)
	}
	got["X-Own"][0] = "changed"
	if h.Get("X-Own") != "v" {
		t.Fatal("userHeaders shares its values with the original")
	}
}

func TestRefusedWaitIsBounded(t *testing.T) {
	for _, tc := range []struct {
		p    policy
		want time.Duration
	}{
		{policy{curve: "schedule", backoff: []time.Duration{time.Second, 10 * time.Second, 2 * time.Second}}, 10 * time.Second},
		{policy{curve: "schedule", backoff: []time.Duration{20 * time.Millisecond}}, minRefusedWait},
		{policy{curve: "schedule"}, minRefusedWait},
		{policy{curve: "exponential", initial: time.Second, max: time.Hour}, maxRefusedWait},
		{policy{curve: "linear", initial: time.Second, max: 20 * time.Second}, 20 * time.Second},
	} {
		if got := tc.p.refusedWait(); got != tc.want {
			t.Errorf("%+v: refusedWait = %v, want %v", tc.p, got, tc.want)
		}
	}
}
