package gateway

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestClassifyPublish covers the bus errors that a test cannot provoke
// reliably (JetStream's own 429, a stream refusing for lack of quorum).
func TestClassifyPublish(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		ptype  string
	}{
		{&jetstream.APIError{Code: 429, ErrorCode: 10167, Description: "too many requests"}, http.StatusTooManyRequests, sluice.ProblemTopicFull},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, http.StatusTooManyRequests, sluice.ProblemTopicFull},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}, http.StatusTooManyRequests, sluice.ProblemTopicFull},
		{&jetstream.APIError{Code: 400, ErrorCode: 10054, Description: "message size exceeds maximum allowed"}, http.StatusRequestEntityTooLarge, sluice.ProblemMessageTooLarge},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, http.StatusServiceUnavailable, sluice.ProblemBusUnavailable},
		{fmt.Errorf("wrapped: %w", nats.ErrNoResponders), http.StatusServiceUnavailable, sluice.ProblemBusUnavailable},
		{nats.ErrMaxPayload, http.StatusRequestEntityTooLarge, sluice.ProblemMessageTooLarge},
		{context.DeadlineExceeded, http.StatusServiceUnavailable, sluice.ProblemOutcomeUnknown},
		{nats.ErrConnectionClosed, http.StatusServiceUnavailable, sluice.ProblemOutcomeUnknown},
	} {
		p, _ := problemFor(classifyPublish(tc.err))
		if p.Status != tc.status || p.Type != tc.ptype {
			t.Errorf("%v: got %d %s, want %d %s", tc.err, p.Status, p.Type, tc.status, tc.ptype)
		}
	}
}
