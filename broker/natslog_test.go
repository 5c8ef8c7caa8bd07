package broker

import "testing"

// TestStoreFailure: nats-server's reports of a store that can no longer
// write (v2.15.2's formats, as logged through the adapter) are told from
// other errors.
func TestStoreFailure(t *testing.T) {
	for _, tc := range []struct {
		format string
		want   bool
	}{
		{"Filestore [%s] Critical write error: %v", true},
		{"RAFT [%s - %s] Critical write error: %v", true},
		{"JetStream stream '%s > %s' critical write error: %v", true},
		{"JetStream consumer '%s > %s > %s' critical write error: %v", true},
		{"JetStream cluster meta group critical write error: %v", true},
		{"JetStream out of %s resources, will be DISABLED", true},
		{"JetStream out of space, will be DISABLED", true},
		{"JetStream failed to store a msg on stream '%s > %s': %v", false},
		{"Error trying to connect to route (attempt %v): %v", false},
	} {
		if got := storeFailure(tc.format); got != tc.want {
			t.Errorf("storeFailure(%q) = %v, want %v", tc.format, got, tc.want)
		}
	}
}
