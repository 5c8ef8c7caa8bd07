package gateway

import (
	"net/http"
	"time"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/topology"
)

// healthz: the process is alive and serving.
func (g *Gateway) healthz(w http.ResponseWriter, _ *http.Request, _ tenant.Caller) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz: connected to the bus and every declared topic read there
// recently (by the admission loop, which reads them anyway: a probe costs
// no bus request).
func (g *Gateway) readyz(w http.ResponseWriter, _ *http.Request, _ tenant.Caller) error {
	checks := map[string]string{"bus": "ok", "auth": "keys"}
	if g.keys.Open() {
		checks["auth"] = "OPEN: development mode, no API key is checked; anyone who reaches this gateway may publish, read and redrive"
	}
	ready := true
	if g.stopping.Load() {
		checks["gateway"] = "stopping"
		ready = false
	}
	if !g.nc.IsConnected() {
		checks["bus"] = "not connected: " + g.nc.Status().String()
		ready = false
	}
	now := time.Now()
	for _, name := range topology.Names(g.cfg.Topics) {
		st := g.adm.readStatus(name, now)
		if st == "ok" {
			st = g.commits[name].familiesStatus()
		}
		checks["topic "+name] = st
		ready = ready && st == "ok"
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": ready, "checks": checks})
	return nil
}
