// Package harness starts real Sluice nodes for tests: embedded brokers on
// random ports with temporary stores, gateways on httptest servers, and a
// polling helper with a deadline (tests never sleep for a fixed time).
package harness

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/topology"
)

// Logger is a test logger at info level (the embedded server's debug log
// drowns a failure otherwise); benchmarks get none, their output is figures.
func Logger(t testing.TB) *zap.Logger {
	if _, ok := t.(*testing.B); ok {
		return zap.NewNop()
	}
	return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
}

// Topic is a topic with test-friendly defaults: short ack wait and backoff.
func Topic(name string, families ...string) topology.Topic {
	t := topology.DefaultTopic()
	t.Name = name
	t.Families = map[string]topology.Family{}
	for _, f := range families {
		fam := topology.DefaultFamily()
		fam.Name = f
		fam.AckWait = 2 * time.Second
		fam.MaxAttempts = 3
		fam.Backoff = []time.Duration{20 * time.Millisecond, 40 * time.Millisecond}
		t.Families[f] = fam
	}
	return t
}

// Topics builds a topology map.
func Topics(ts ...topology.Topic) map[string]topology.Topic {
	m := make(map[string]topology.Topic, len(ts))
	for _, t := range ts {
		m[t.Name] = t
	}
	return m
}

// BrokerConfig is a single broker on a random port storing under dir.
func BrokerConfig(dir string, topics map[string]topology.Topic) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Name = "test-broker"
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:-1"
	cfg.ReadyTimeout = time.Minute
	cfg.Topics = topics
	return cfg
}

// StartBroker starts a broker in a fresh temporary directory; it is shut
// down when the test ends.
func StartBroker(t testing.TB, topics map[string]topology.Topic) *broker.Broker {
	t.Helper()
	return StartBrokerIn(t, t.TempDir(), topics)
}

// StartBrokerIn starts a broker storing under dir (restart a broker on the
// same store by calling it again after Shutdown).
func StartBrokerIn(t testing.TB, dir string, topics map[string]topology.Topic) *broker.Broker {
	t.Helper()
	b, err := broker.New(BrokerConfig(dir, topics), Logger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(b.Shutdown)
	return b
}

// Connect opens a network client connection to the broker, closed at cleanup.
func Connect(t testing.TB, b *broker.Broker) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(b.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// GatewayConfig is a gateway for topics listening on a random port.
func GatewayConfig(topics map[string]topology.Topic) gateway.Config {
	cfg := gateway.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Topics = topics
	return cfg
}

// StartGateway serves a gateway over nc on an httptest server, runs its
// control loops and waits until it is ready (when nc is connected).
func StartGateway(t testing.TB, cfg gateway.Config, nc *nats.Conn) (*gateway.Gateway, *httptest.Server) {
	t.Helper()
	g, srv, _ := startGateway(t, cfg, nc, nil, true)
	return g, srv
}

// StartGatewayUnready is StartGateway without the wait for readiness: for a
// gateway whose topics the bus does not hold yet.
func StartGatewayUnready(t testing.TB, cfg gateway.Config, nc *nats.Conn) (*gateway.Gateway, *httptest.Server) {
	t.Helper()
	g, srv, _ := startGateway(t, cfg, nc, nil, false)
	return g, srv
}

// StartGatewayWith is StartGateway serving the gateway's handler wrapped
// by wrap (a test counting the requests in flight, say).
func StartGatewayWith(t testing.TB, cfg gateway.Config, nc *nats.Conn, wrap func(http.Handler) http.Handler) (*gateway.Gateway, *httptest.Server) {
	t.Helper()
	g, srv, _ := startGateway(t, cfg, nc, wrap, true)
	return g, srv
}

// StartGatewayReg is StartGateway with opts, returning the URL and the
// metrics registry.
func StartGatewayReg(t testing.TB, cfg gateway.Config, nc *nats.Conn, opts ...gateway.Option) (string, *prometheus.Registry) {
	t.Helper()
	_, srv, reg := startGateway(t, cfg, nc, nil, true, opts...)
	return srv.URL, reg
}

// startGateway: wait, until the gateway is ready when nc is connected.
func startGateway(t testing.TB, cfg gateway.Config, nc *nats.Conn, wrap func(http.Handler) http.Handler, wait bool,
	opts ...gateway.Option) (*gateway.Gateway, *httptest.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	g, err := gateway.New(cfg, nc, Logger(t), reg, reg, opts...)
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	h := g.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.RunControl(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway control: %v", err)
		}
	})
	if wait && nc.IsConnected() {
		Eventually(t, 10*time.Second, func() bool { return ready(srv.URL) }, "gateway not ready")
	}
	return g, srv, reg
}

func ready(url string) bool {
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Eventually polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	if !waitFor(timeout, cond) {
		t.Fatalf("after %v: "+msg, append([]any{timeout}, args...)...)
	}
}

// waitFor polls cond every few milliseconds until it holds (true) or
// timeout passes (false).
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(wait*2, 50*time.Millisecond)
	}
	return true
}
