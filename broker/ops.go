package broker

import (
	"context"
	"net/http"

	"github.com/sluicebus/sluice/internal/opshttp"
)

// serveOps serves the ops listener on cfg.OpsListen until ctx is done:
// /healthz, /readyz, /metrics (the registry New was given), /v1/alarms
// (the broker's alarms; not with cfg.SharedAlarms) and /v1/status.
func (b *Broker) serveOps(ctx context.Context) error {
	routes := []opshttp.Route{{Pattern: "/v1/status",
		Handler: opshttp.JSON(func(r *http.Request) any { return b.Status(r.Context(), b.alarms) })}}
	if b.alarms != nil {
		routes = append(routes, opshttp.Route{Pattern: "/v1/alarms",
			Handler: opshttp.JSON(func(*http.Request) any { return b.alarms.View() })})
	}
	return opshttp.Run(ctx, b.cfg.OpsListen, b.Ready, b.gatherer, b.nodeLog, routes...)
}
