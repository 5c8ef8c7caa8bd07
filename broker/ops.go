package broker

import (
	"context"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluicebus/sluice/internal/opshttp"
	"github.com/sluicebus/sluice/internal/status"
)

// serveOps serves the ops listener on cfg.OpsListen until ctx is done:
// /healthz, /readyz, /metrics (the registry New was given), and, to the
// host's own callers or with the ops token (opsAllowed), /v1/alarms (the
// broker's alarms; not with cfg.SharedAlarms) and /v1/status.
func (b *Broker) serveOps(ctx context.Context) error {
	views := &statusView{fresh: statusFresh, read: func(ctx context.Context) status.Status { return b.Status(ctx, b.alarms) }}
	routes := []opshttp.Route{{Pattern: "/v1/status",
		Handler: b.opsGuard(opshttp.JSON(func(r *http.Request) any { return views.get(r.Context()) }))}}
	if b.alarms != nil {
		routes = append(routes, opshttp.Route{Pattern: "/v1/alarms",
			Handler: b.opsGuard(opshttp.JSON(func(*http.Request) any { return b.alarms.View() }))})
	}
	return opshttp.Run(ctx, b.cfg.OpsListen, b.Ready, b.gatherer, b.nodeLog, routes...)
}

// opsGuard serves next to callers opsAllowed admits; others get 403.
func (b *Broker) opsGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !opsAllowed(r, b.cfg.OpsToken) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"type":"urn:sluice:problem:forbidden","title":"Forbidden","status":403,` +
				`"detail":"the broker's status and alarms are served to the host itself, or with broker.ops_token as a bearer token"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// opsAllowed: the caller is on the broker's own host (loopback), or
// presents the ops token.
func opsAllowed(r *http.Request, token string) bool {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return true
		}
	}
	if token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// statusFresh is how long a status reading is served again: a reading asks
// the bus about every topic and family, and any number of callers share
// one a second.
const statusFresh = time.Second

// statusView reads the broker's status for one caller at a time and gives
// a reading to every caller within statusFresh of it: the bus is read at
// most once per statusFresh, whatever the number of callers.
type statusView struct {
	fresh time.Duration
	read  func(context.Context) status.Status
	mu    sync.Mutex // held while reading
	last  status.Status
	at    time.Time
}

func (v *statusView) get(ctx context.Context) status.Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.at.IsZero() && time.Since(v.at) < v.fresh {
		return v.last
	}
	v.last, v.at = v.read(ctx), time.Now()
	return v.last
}
