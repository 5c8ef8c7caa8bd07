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

// TestClassifyReplicatedStoreFailure: on a replicated topic a store
// failure reported by the leader may come after the entry committed on the
// followers, so it is never "nothing stored"; a lone broker's is. Unsent
// errors are "nothing stored" whatever they are.
func TestClassifyReplicatedStoreFailure(t *testing.T) {
	storeFailed := &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "store failed: i/o error"}
	for _, tc := range []struct {
		name  string
		got   error
		ptype string
	}{
		{"R1 store failure", classifyPublish(storeFailed, false), sluice.ProblemBusUnavailable},
		{"R3 store failure", classifyPublish(storeFailed, true), sluice.ProblemOutcomeUnknown},
		{"R3 no quorum", classifyPublish(&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true), sluice.ProblemOutcomeUnknown},
		{"unsent closed connection", classifyUnsent(nats.ErrConnectionClosed, true), sluice.ProblemBusUnavailable},
		{"unsent stalled", classifyUnsent(jetstream.ErrTooManyStalledMsgs, true), sluice.ProblemBusUnavailable},
	} {
		if p, _ := problemFor(tc.got); p.Type != tc.ptype || p.Status != http.StatusServiceUnavailable {
			t.Errorf("%s: got %d %s, want 503 %s", tc.name, p.Status, p.Type, tc.ptype)
		}
	}
}

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
		{nats.ErrReconnectBufExceeded, http.StatusServiceUnavailable, sluice.ProblemBusUnavailable},
	} {
		p, _ := problemFor(classifyPublish(tc.err, false))
		if p.Status != tc.status || p.Type != tc.ptype {
			t.Errorf("%v: got %d %s, want %d %s", tc.err, p.Status, p.Type, tc.status, tc.ptype)
		}
	}
}
