package sluice

import "testing"

func TestKeyOf(t *testing.T) {
	digest := "mIs9xtq6tAe7hGPraNTRCQ"
	for _, tc := range []struct{ id, key string }{
		{DedupID("order-1", digest), "order-1"},
		{DedupID("a:b/c~d", digest), "a:b/c~d"},
		{"order-1", "order-1"},                             // stored before digests
		{"a.b", "a.b"},                                     // published by other means
		{"redrive.billing.7.123", "redrive.billing.7.123"}, // not a digest
		{"x." + digest + "x", "x." + digest + "x"},
		{"", ""},
	} {
		if got := KeyOf(tc.id); got != tc.key {
			t.Errorf("KeyOf(%q) = %q, want %q", tc.id, got, tc.key)
		}
	}
}
