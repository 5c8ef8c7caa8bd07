package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/tenant"
)

// handlerFunc is a handler that returns its refusal instead of writing it;
// c is the authenticated caller (no tenant when auth is open).
type handlerFunc func(w http.ResponseWriter, r *http.Request, c tenant.Caller) error

// op is a route's handler for one method and what the caller must be
// granted to call it.
type op struct {
	h   handlerFunc
	act tenant.Action
}

// route dispatches on the request method and answers 405 with a problem
// and an Allow header otherwise (ServeMux's own 405 is plain text).
type route struct {
	g       *Gateway
	m       map[string]op
	bounded bool // counts against max_in_flight
}

func (g *Gateway) methods(m map[string]op) http.Handler { return route{g: g, m: m} }

// bounded is methods for routes that count against max_in_flight.
func (g *Gateway) bounded(m map[string]op) http.Handler {
	return route{g: g, m: m, bounded: true}
}

func (rt route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := rt.m
	o, ok := m[r.Method]
	if !ok {
		allow := make([]string, 0, len(m))
		for k := range m {
			allow = append(allow, k)
		}
		slices.Sort(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, fmt.Errorf("%w: %s %s (allowed: %s)", errMethodNotAllowed, r.Method, r.URL.Path, strings.Join(allow, ", ")), 0)
		return
	}
	g := rt.g
	// Who, and may they: before any bound is taken or byte of body read.
	c, err := g.authorize(w, r, o.act)
	if err != nil {
		g.refused(w, r, err)
		return
	}
	if rt.bounded {
		if !g.limits.enter() {
			err := refuse("in_flight", g.adm.shedRetryAfter(),
				fmt.Errorf("%w: %d requests in flight at this gateway", errOverloaded, g.cfg.MaxInFlight))
			g.refused(w, r, err)
			return
		}
		defer g.limits.leave()
	}
	if err := o.h(w, r, c); err != nil {
		g.refused(w, r, err)
	}
}

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

// statusWriter records the status for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument counts requests by route and status, times them, and turns a
// panic into a logged 500 problem (a 500 is always a bug).
func (g *Gateway) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				g.log.Error("handler panic", zap.Any("panic", v), zap.String("path", r.URL.Path), zap.Stack("stack"))
				if sw.status == 0 {
					writeError(sw, fmt.Errorf("panic: %v", v), 0)
				}
			}
			route := r.Pattern
			if route == "" || route == "/" {
				route = "unmatched"
			}
			g.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.status)).Inc()
			g.metrics.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
	})
}
