// Package gateway is Sluice's stateless HTTP ingest node: it validates a
// request, publishes it to the topic's stream and answers 202 only once the
// bus has stored it durably. It never imports the broker: it talks to the bus.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice/busclock"
)

// Gateway is an HTTP ingest node.
type Gateway struct {
	cfg     Config
	log     *zap.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	metrics *metrics
	handler http.Handler
	limits  *limits
	clients *clients // nil: no per-client limit
	readers *clients // the read rate, per tenant (per address when auth is open)
	views   *topicViews
	keys    *tenant.Keys
	tenants *tenantLimits
	adm     *admission
	// commits holds each topic's group commit.
	commits map[string]*committer
	// redriveRate paces dead-letter redrives at this gateway.
	redriveRate *rate.Limiter
	// node names this gateway in alarms; alarms holds them.
	node   string
	alarms *alarm.Manager
	// clock is the bus's clock: API keys expire and alarms and the status
	// are stamped in it (see package busclock).
	clock *busclock.Clock

	mu       sync.Mutex
	ln       net.Listener
	stopping atomic.Bool // lame duck: /readyz says no, requests are still served
}

// Option adjusts a gateway beyond its Config: what a test needs and a
// configuration file has no business with.
type Option func(*Gateway)

// WithClock sets the gateway's wall clock (default time.Now). The gateway
// judges API key expiry and stamps alarms and /v1/status in the bus's
// clock, read from the brokers' answers and advanced by the monotonic
// clock, so this clock only gives sluice_gateway_clock_offset_seconds and
// stands in for the bus's until a broker has told its time. For tests of a
// skewed or jumping clock. A nil clock keeps time.Now.
func WithClock(now func() time.Time) Option {
	return func(g *Gateway) {
		if now != nil {
			g.clock.SetWall(now)
		}
	}
}

// New builds a gateway publishing over nc. Metrics are registered on reg
// (nil: none); /metrics serves gatherer (nil: no /metrics endpoint).
func New(cfg Config, nc *nats.Conn, logger *zap.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, opts ...Option) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Alarms.Validate(); err != nil {
		return nil, err
	}
	// A batch ack that never comes must not hold its slot in the async
	// publish window forever.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("gateway metrics: %w", err)
	}
	g := &Gateway{cfg: cfg, log: logger.Named("gateway"), nc: nc, js: js, metrics: m,
		limits: newLimits(cfg), clients: newClients(cfg), readers: newReaders(cfg),
		views: newTopicViews(topology.Names(cfg.Topics), viewMaxAge(cfg.Alarms.Interval)), redriveRate: rate.NewLimiter(rate.Limit(cfg.RedriveRate), 1),
		clock: busclock.New(nil)}
	for _, o := range opts {
		o(g)
	}
	if g.keys, err = tenant.NewKeys(cfg.Auth); err != nil {
		return nil, err
	}
	g.tenants = newTenantLimits(g.keys, time.Now())
	m.initialise(cfg, slices.Sorted(maps.Keys(g.keys.Tenants())))
	if g.keys.Open() {
		g.log.Warn("AUTHENTICATION IS OFF (auth.mode: open): anyone who reaches this gateway may publish to, read and redrive every topic; " +
			"for development only, set auth.mode: keys with tenants in production")
	}
	g.node = nodeName(cfg)
	g.alarms = alarm.NewStamped(g.node, cfg.Alarms.Hold, g.log.Named("alarm"), nil, g.clock.Now)
	if reg != nil {
		if err := reg.Register(g.alarms); err != nil {
			return nil, fmt.Errorf("gateway metrics: %w", err)
		}
	}
	g.adm = newAdmission(cfg, nc, js, g.log, func(reason string) { m.heartbeatsIgnored.WithLabelValues(reason).Inc() })
	g.commits = make(map[string]*committer, len(cfg.Topics))
	for name, t := range cfg.Topics {
		g.commits[name] = g.committer(name, t.Replicas)
	}
	if err := m.registerState(reg, g); err != nil {
		return nil, fmt.Errorf("gateway metrics: %w", err)
	}
	g.handler = g.routes(gatherer)
	return g, nil
}

// Handler is the gateway's HTTP API, for tests and for embedding.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Listen binds cfg.Listen; Run calls it if it was not called before.
func (g *Gateway) Listen() (net.Addr, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln == nil {
		ln, err := net.Listen("tcp", g.cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("gateway.listen: %w", err)
		}
		g.ln = ln
	}
	return g.ln.Addr(), nil
}

// RunControl runs the gateway's control loops until ctx ends: heartbeats
// to the other gateways, the refill of admission credit from the topics'
// free capacity, and the alarm watcher; it returns once all have ended.
// Run calls it; call it yourself when serving Handler()
// elsewhere. Until the first refill, only the topics' own bounds hold.
func (g *Gateway) RunControl(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	w := newWatcher(g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx)
	}()
	err := g.adm.run(ctx)
	cancel() // the watcher ends with ctx
	<-done
	return err
}

// Run serves HTTP and runs the control loops until ctx is done, then stops
// taking connections and lets in-flight requests finish within
// cfg.ShutdownTimeout.
func (g *Gateway) Run(ctx context.Context) error {
	addr, err := g.Listen()
	if err != nil {
		return err
	}
	// Control runs until the server is down, lame duck included.
	ctlCtx, stopControl := context.WithCancel(context.Background())
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- g.RunControl(ctlCtx) }()
	defer func() {
		stopControl()
		<-ctlDone
	}()
	srv := &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		ReadTimeout:       g.cfg.ReadTimeout,
		WriteTimeout:      g.cfg.WriteTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		// Twice the limit: guardHeaders answers up to there with a problem.
		MaxHeaderBytes: 2 * int(g.cfg.MaxHeaderBytes),
		ErrorLog: serverLog(g.log.Named("http"), func(kind string) {
			g.metrics.protocolErrors.WithLabelValues(kind).Inc()
		}),
		Protocols: new(http.Protocols),
	}
	// Keep-alive HTTP/1.1, and HTTP/2: over TLS when the gateway has a
	// certificate, else over cleartext (h2c) for clients that multiplex
	// (TLS is then a load balancer's job). Cleartext HTTP/2 is by prior
	// knowledge (RFC 9113 section 3.3) only: RFC 9113 deprecates the
	// Upgrade: h2c mechanism, and a request that asks for it is answered
	// over HTTP/1.1 as any other (the server may ignore an Upgrade).
	srv.Protocols.SetHTTP1(true)
	scheme := "http"
	if g.cfg.TLS.Enabled() {
		tc, err := g.cfg.TLS.Server()
		if err != nil {
			return fmt.Errorf("gateway.tls: %w", err)
		}
		srv.TLSConfig = tc
		srv.Protocols.SetHTTP2(true)
		scheme = "https"
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	g.log.Info("gateway listening", zap.String("addr", addr.String()), zap.String("scheme", scheme))
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(g.ln, "", "")
			return
		}
		errc <- srv.Serve(g.ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: %w", err)
	case <-ctx.Done():
	}
	if g.cfg.LameDuck > 0 {
		g.stopping.Store(true)
		srv.SetKeepAlivesEnabled(false)
		g.log.Info("gateway lame duck: readyz says 503, still serving", zap.Duration("for", g.cfg.LameDuck))
		time.Sleep(g.cfg.LameDuck)
	}
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	for _, c := range g.commits {
		c.close() // commits still answering requests that outlived the shutdown timeout; later ones are refused unsent
	}
	g.log.Info("gateway stopped")
	return err
}

// committer wires topic's group commit to g: the one place a committer
// sees the gateway.
func (g *Gateway) committer(topic string, replicas int) *committer {
	t := g.cfg.Topics[topic]
	return newCommitter(commitSettings{topic: topic, replicas: replicas,
		commitsInFlight: g.cfg.CommitsInFlight, batchMax: g.cfg.CommitBatchMax, batchBytes: int(g.cfg.CommitBatchBytes),
		atomicReplicated: g.cfg.CommitAtomicReplicated, publishTimeout: g.cfg.PublishTimeout, duplicateWindow: t.DuplicateWindow,
		retryAfterMin: g.cfg.RetryAfterMin, retryAfterMax: g.cfg.RetryAfterMax,
	}, commitDeps{nc: g.nc, js: g.js, log: g.log, metrics: g.metrics.commit(),
		retryAfter:     func() time.Duration { return g.adm.retryAfter(topic) },
		shedRetryAfter: g.adm.shedRetryAfter,
		interest:       newInterest(g.nc, topic, t.FamilyNames(), maxReading, g.clock),
	})
}
