package gateway

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicebus/sluice/internal/tenant"
)

func (g *Gateway) routes(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/topics/{topic}/messages", g.bounded(map[string]op{http.MethodPost: {g.publish, tenant.Publish}}))
	mux.Handle("/v1/topics/{topic}/messages:batch", g.bounded(map[string]op{http.MethodPost: {g.publishBatch, tenant.Publish}}))
	mux.Handle("/v1/topics", g.bounded(map[string]op{http.MethodGet: {g.listTopics, tenant.Any}}))
	mux.Handle("/v1/topics/{topic}", g.bounded(map[string]op{http.MethodGet: {g.getTopic, tenant.Read}}))
	dead := "/v1/topics/{topic}/families/{family}/dead-letters"
	mux.Handle(dead, g.bounded(map[string]op{http.MethodGet: {g.listDeadLetters, tenant.Read}, http.MethodDelete: {g.purgeDeadLetters, tenant.Redrive}}))
	mux.Handle(dead+"/redrive", g.bounded(map[string]op{http.MethodPost: {g.redriveDeadLetters, tenant.Redrive}}))
	mux.Handle(dead+"/{seq}", g.bounded(map[string]op{http.MethodGet: {g.peekDeadLetter, tenant.Read}, http.MethodDelete: {g.deleteDeadLetter, tenant.Redrive}}))
	mux.Handle(dead+"/{seq}/redrive", g.bounded(map[string]op{http.MethodPost: {g.redriveOne, tenant.Redrive}}))
	mux.Handle("/healthz", g.methods(map[string]op{http.MethodGet: {g.healthz, tenant.Public}}))
	mux.Handle("/readyz", g.methods(map[string]op{http.MethodGet: {g.readyz, tenant.Public}}))
	mux.Handle("/v1/alarms", g.methods(map[string]op{http.MethodGet: {g.listAlarms, tenant.Ops}}))
	mux.Handle("/v1/status", g.bounded(map[string]op{http.MethodGet: {g.getStatus, tenant.Ops}}))
	if gatherer != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("%w: %s %s", errRouteNotFound, clip(r.Method), clip(r.URL.Path)), 0)
	})
	return g.instrument(g.guardHeaders(g.announceLameDuck(mux)))
}

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
		writeError(w, fmt.Errorf("%w: %s %s (allowed: %s)", errMethodNotAllowed, clip(r.Method), clip(r.URL.Path), strings.Join(allow, ", ")), 0)
		return
	}
	g := rt.g
	// Who, and may they: before any bound is taken or byte of body read.
	c, err := g.authorize(w, r, o.act)
	if err != nil {
		g.refused(w, r, err)
		return
	}
	if r.Method == http.MethodGet && o.act != tenant.Public {
		if err := g.admitRead(r, c); err != nil {
			g.refused(w, r, err)
			return
		}
	} else if _, ok := g.cfg.Topics[r.PathValue("topic")]; ok {
		// A write here (publish, redrive, purge): the topic's next view
		// here reads the bus again.
		defer g.views.changed(r.PathValue("topic"))
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

// admitRead takes one request of the caller's read rate, or refuses with
// the wait until there is one.
func (g *Gateway) admitRead(r *http.Request, c tenant.Caller) error {
	ok, wait := g.readers.take(readerKey(r, c), 1, time.Now())
	if ok {
		return nil
	}
	who := "this client"
	if c.Tenant != nil {
		who = "tenant " + c.Tenant.Name
	}
	return refuse("read_rate", g.rateWait(wait),
		fmt.Errorf("%w: %s is over the read rate of %v requests/s (burst %d)", errRateLimited, who, g.cfg.ReadRate, g.cfg.ReadBurst))
}
