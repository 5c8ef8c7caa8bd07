package gateway

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// refused writes err as a problem, with the refusal's own Retry-After or
// the shed default, and counts 429s and 503s by reason.
func (g *Gateway) refused(w http.ResponseWriter, r *http.Request, err error) {
	retryAfter := g.adm.shedRetryAfter()
	var rf *refusal
	if errors.As(err, &rf) {
		retryAfter = rf.retryAfter
	}
	topic := r.PathValue("topic")
	if _, ok := g.cfg.Topics[topic]; ok && !errors.Is(err, errUnauthorized) && !errors.Is(err, errForbidden) {
		if w.Header().Get("RateLimit") == "" {
			g.adm.setHeaders(w.Header(), topic) // every answer about a topic advertises its credit
		}
	} else {
		topic = ""
	}
	id := g.countRefusal(topic, err)
	if id != "" {
		w.Header().Set(HeaderAlarm, id)
	}
	writeProblem(w, err, retryAfter, id)
}

// countRefusal counts a 429 or 503 under its reason and raises the alarm
// it belongs to, returning the alarm's id ("" if none).
func (g *Gateway) countRefusal(topic string, err error) string {
	p, kind := problemFor(err)
	if !kind.retry {
		return ""
	}
	reason := strings.TrimPrefix(p.Type, "urn:sluice:problem:")
	var rf *refusal
	if errors.As(err, &rf) {
		reason = rf.reason
	}
	g.metrics.refusals.WithLabelValues(topic, reason).Inc()
	return g.alarmFor(topic, err)
}

// writeError answers with the error's problem (RFC 9457).
func writeError(w http.ResponseWriter, err error, retryAfter time.Duration) {
	writeProblem(w, err, retryAfter, "")
}

// writeProblem is writeError naming the alarm the refusal belongs to.
func writeProblem(w http.ResponseWriter, err error, retryAfter time.Duration, alarmID string) {
	p, kind := problemFor(err)
	p.Alarm = alarmID
	if kind.retry && retryAfter > 0 {
		// Whole seconds, rounded so a jittered 1-2 s spreads over 1 and 2.
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Round(retryAfter.Seconds())))))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
