package sluice

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestDeadLetterIsCopyOf(t *testing.T) {
	created := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	before, after := created.Add(-time.Hour), created.Add(time.Minute)
	f := &family{}
	f.created.Store(created.UnixNano())
	hdr := func(kv ...string) nats.Header {
		h := nats.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	at := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	for _, tc := range []struct {
		name string
		dl   nats.Header
		id   string
		want bool
	}{
		{"same id and family", hdr(HeaderOriginalID, "o-1", HeaderOriginalFamilyCreated, at(created)), "o-1", true},
		{"same family, no ids", hdr(HeaderOriginalFamilyCreated, at(created)), "", true},
		{"another id", hdr(HeaderOriginalID, "o-0", HeaderOriginalFamilyCreated, at(created)), "o-1", false},
		{"an earlier family", hdr(HeaderOriginalID, "o-1", HeaderOriginalFamilyCreated, at(before)), "o-1", false},
		{"unreadable family", hdr(HeaderOriginalID, "o-1", HeaderOriginalFamilyCreated, "yesterday"), "o-1", false},
		// Written before Sluice-Original-Family-Created existed.
		{"old, same id", hdr(HeaderOriginalID, "o-1", HeaderDeadAt, at(after)), "o-1", true},
		{"old, same id, no time", hdr(HeaderOriginalID, "o-1"), "o-1", true},
		{"old, same id, died before the family", hdr(HeaderOriginalID, "o-1", HeaderDeadAt, at(before)), "o-1", false},
		{"old, another id", hdr(HeaderOriginalID, "o-0", HeaderDeadAt, at(after)), "o-1", false},
		{"old, the message has no id", hdr(HeaderOriginalID, "o-0"), "", false},
		{"old, no ids", hdr(HeaderDeadAt, at(after)), "", false},
		{"old, bare", nats.Header{}, "o-1", false},
	} {
		if got := f.isCopy(tc.dl, tc.id); got != tc.want {
			t.Errorf("%s: isCopy = %v, want %v", tc.name, got, tc.want)
		}
	}
}

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
