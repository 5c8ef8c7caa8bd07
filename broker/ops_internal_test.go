package broker

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/status"
)

// TestOpsAllowed: the status and alarms go to the host's own callers, and
// to others only with the ops token.
func TestOpsAllowed(t *testing.T) {
	const token = "0123456789abcdef-ops"
	for _, c := range []struct {
		remote, auth, token string
		want                bool
	}{
		{"127.0.0.1:5000", "", "", true},
		{"[::1]:5000", "", "", true},
		{"192.0.2.7:5000", "", "", false},
		{"192.0.2.7:5000", "Bearer " + token, "", false}, // no token configured: nothing opens it
		{"192.0.2.7:5000", "Bearer " + token, token, true},
		{"192.0.2.7:5000", "Bearer wrong-token-0000000", token, false},
		{"192.0.2.7:5000", token, token, false}, // not a bearer
	} {
		r := httptest.NewRequest("GET", "/v1/status", nil)
		r.RemoteAddr = c.remote
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		if got := opsAllowed(r, c.token); got != c.want {
			t.Errorf("%s %q (token %q): allowed %v, want %v", c.remote, c.auth, c.token, got, c.want)
		}
	}
}

// TestStatusViewReadsOnceForManyCallers: 64 callers at once cause one
// reading of the bus.
func TestStatusViewReadsOnceForManyCallers(t *testing.T) {
	var reads atomic.Int32
	release := make(chan struct{})
	v := &statusView{fresh: time.Hour, read: func(context.Context) status.Status {
		reads.Add(1)
		<-release
		return status.Status{Node: "b1"}
	}}
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st := v.get(context.Background()); st.Node != "b1" {
				t.Errorf("got %+v", st)
			}
		}()
	}
	close(release)
	wg.Wait()
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d readings for 64 callers", n)
	}
}
