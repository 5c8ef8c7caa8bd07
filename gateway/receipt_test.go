package gateway

import (
	"encoding/json"
	"testing"
)

// TestReceiptWireFormat pins what clients decode (pkg/sluice): a publish's
// receipt has no line; a batch line's receipt starts with it.
func TestReceiptWireFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Receipt
		want string
	}{
		{"publish", Receipt{Topic: "orders", Seq: 7, ID: "k"}, `{"topic":"orders","seq":7,"id":"k","duplicate":false}`},
		{"batch line", Receipt{Line: 3, Topic: "orders", Seq: 7, ID: "k", Duplicate: true}, `{"line":3,"topic":"orders","seq":7,"id":"k","duplicate":true}`},
	} {
		b, err := json.Marshal(tc.r)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, b, tc.want)
		}
	}
}
