package broker_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/devcerts"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/tlsconf"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

func devCerts(t *testing.T) devcerts.Files {
	t.Helper()
	f, err := devcerts.Generate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// startBroker starts one broker on a random port with cfg changed by mutate.
func startBroker(t *testing.T, topics map[string]topology.Topic, mutate func(*broker.Config)) *broker.Broker {
	t.Helper()
	cfg := harness.BrokerConfig(t.TempDir(), topics)
	mutate(&cfg)
	b, err := broker.New(cfg, harness.Logger(t), nil)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(b.Shutdown)
	return b
}

// TestClientTLS: a broker with broker.tls serves TLS 1.2+ to clients that
// trust its CA; plain, untrusting and TLS 1.1 clients are refused; with
// verify_clients a client needs a certificate. The broker's in-process
// connection (provisioning) works all the same.
func TestClientTLS(t *testing.T) {
	certs := devCerts(t)
	other := devCerts(t)
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := startBroker(t, topics, func(c *broker.Config) {
		c.TLS = tlsconf.Config{CertFile: certs.Cert, KeyFile: certs.Key}
	})
	url := b.ClientURL()
	log := harness.Logger(t)

	nc, err := bus.Connect([]string{url}, 5*time.Second, "tls-client", log, bus.WithTLS(tlsconf.Config{CAFile: certs.CA}))
	if err != nil {
		t.Fatalf("client trusting the dev CA: %v", err)
	}
	defer nc.Close()
	if st, err := nc.TLSConnectionState(); err != nil || st.Version < tls.VersionTLS12 {
		t.Fatalf("connection TLS state %x, %v", st.Version, err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(context.Background(), sluice.Subject("orders"), []byte("x")); err != nil {
		t.Fatalf("publish over TLS: %v", err)
	}

	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(certs.CA)
	pool.AppendCertsFromPEM(pem)
	for name, opt := range map[string]nats.Option{
		"plain (system roots)": nats.Name("plain"),
		"another CA":           nats.RootCAs(other.CA),
		"TLS 1.1 at most": nats.Secure(&tls.Config{RootCAs: pool,
			MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}),
	} {
		nc, err := nats.Connect(url, opt, nats.Timeout(5*time.Second))
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
			continue
		}
		t.Logf("%s: refused: %v", name, err)
	}

	// verify_clients: a certificate signed by the CA is required.
	mb := startBroker(t, topics, func(c *broker.Config) {
		c.TLS = tlsconf.Config{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, VerifyClients: true}
	})
	if nc, err := bus.Connect([]string{mb.ClientURL()}, 5*time.Second, "no-cert", log, bus.WithTLS(tlsconf.Config{CAFile: certs.CA})); err == nil {
		nc.Close()
		t.Error("client without a certificate connected to a broker with verify_clients")
	}
	if nc, err := bus.Connect([]string{mb.ClientURL()}, 5*time.Second, "foreign-cert", log,
		bus.WithTLS(tlsconf.Config{CAFile: certs.CA, CertFile: other.Cert, KeyFile: other.Key})); err == nil {
		nc.Close()
		t.Error("client with a certificate of another CA connected")
	}
	mnc, err := bus.Connect([]string{mb.ClientURL()}, 5*time.Second, "mutual", log,
		bus.WithTLS(tlsconf.Config{CAFile: certs.CA, CertFile: certs.Cert, KeyFile: certs.Key}))
	if err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	mnc.Close()
}

// trio is three brokers clustered directly (no proxies) on fixed ports.
type trio struct {
	cfgs []broker.Config
	log  *zap.Logger
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// newTrio makes the configurations of a three-broker cluster; mutate changes
// broker i's.
func newTrio(t *testing.T, topics map[string]topology.Topic, log *zap.Logger, mutate func(i int, c *broker.Config)) *trio {
	t.Helper()
	base := t.TempDir()
	ports := make([]int, 3)
	for i := range ports {
		ports[i] = freePort(t)
	}
	tr := &trio{log: log}
	for i := range 3 {
		cfg := harness.BrokerConfig(filepath.Join(base, fmt.Sprintf("b%d", i+1)), topics)
		cfg.Name = fmt.Sprintf("b%d", i+1)
		cfg.ReadyTimeout = 20 * time.Second
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		cfg.Cluster = broker.Cluster{Name: "sec", Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes}
		if mutate != nil {
			mutate(i, &cfg)
		}
		tr.cfgs = append(tr.cfgs, cfg)
	}
	return tr
}

// start starts the brokers in idx together (a cluster needs a quorum to be
// ready) and returns them with their errors; those started are shut down
// at cleanup.
func (tr *trio) start(t *testing.T, idx ...int) ([]*broker.Broker, []error) {
	t.Helper()
	bs := make([]*broker.Broker, len(idx))
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for k, i := range idx {
		wg.Go(func() {
			bs[k], errs[k] = broker.New(tr.cfgs[i], tr.log.Named(tr.cfgs[i].Name), nil)
		})
	}
	wg.Wait()
	for _, b := range bs {
		if b != nil {
			t.Cleanup(b.Shutdown)
		}
	}
	return bs, errs
}

func mustStart(t *testing.T, tr *trio, idx ...int) []*broker.Broker {
	t.Helper()
	bs, errs := tr.start(t, idx...)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start: %v", err)
	}
	return bs
}

// TestRouteTLSCluster: three brokers whose routes use mutual TLS form a
// cluster, and an R3 topic accepts a publish; a broker whose certificate
// another CA signed does not join.
func TestRouteTLSCluster(t *testing.T) {
	certs := devCerts(t)
	topics := r3("orders", "billing")
	routeTLS := tlsconf.Config{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
	tr := newTrio(t, topics, harness.Logger(t), func(_ int, c *broker.Config) {
		c.Cluster.TLS = routeTLS
		c.Cluster.User, c.Cluster.Password = "route", "route-pass-7d2e"
	})
	bs := mustStart(t, tr, 0, 1, 2)
	for i, b := range bs {
		if got := b.Peers(); len(got) != 2 {
			t.Errorf("b%d peers %v, want the two others", i+1, got)
		}
	}
	nc := harness.Connect(t, bs[0])
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, sluice.Subject("orders"), []byte("over TLS routes"))
	if err != nil {
		t.Fatalf("R3 publish: %v", err)
	}
	s, _ := js.Stream(ctx, sluice.StreamName("orders"))
	if ack.Sequence != 1 || s.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("ack %+v, replicas %d", ack, s.CachedInfo().Config.Replicas)
	}
}

// TestRouteTLSRefusesForeignCA: a broker with a certificate of another CA
// never gets a route to brokers that verify against theirs.
func TestRouteTLSRefusesForeignCA(t *testing.T) {
	certs := devCerts(t)
	foreign := devCerts(t)
	topics := harness.Topics(harness.Topic("orders", "billing")) // R1: two brokers make a quorum
	tr := newTrio(t, topics, harness.Logger(t), func(i int, c *broker.Config) {
		c.Cluster.TLS = tlsconf.Config{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
		c.Cluster.User, c.Cluster.Password = "route", "route-pass-7d2e"
		if i == 2 {
			// Trusts the right CA, but shows a certificate it did not sign.
			c.Cluster.TLS = tlsconf.Config{CertFile: foreign.Cert, KeyFile: foreign.Key, CAFile: certs.CA}
			c.ReadyTimeout = 2 * time.Second
		}
	})
	bs, errs := tr.start(t, 0, 1, 2)
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("the two good brokers: %v", errors.Join(errs[0], errs[1]))
	}
	if !errors.Is(errs[2], broker.ErrNotReady) {
		t.Fatalf("broker with a foreign certificate: %v, want not ready", errs[2])
	}
	for i, b := range bs[:2] {
		if slices.Contains(b.Peers(), "b3") {
			t.Errorf("b%d has a route to the foreign broker", i+1)
		}
	}
}

// observed is a test logger that also keeps every entry, debug included.
func observed(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return zap.New(zapcore.NewTee(harness.Logger(t).Core(), core)), logs
}

// TestRouteAuth: a broker with the wrong route password never gets a route
// (the others refuse it, and it is refused by them), and is not ready; with
// the right one it joins. The password appears in no log line.
func TestRouteAuth(t *testing.T) {
	const right, wrong = "right-pass-4f1c", "wrong-pass-9a7e"
	log, logs := observed(t)
	// R1: two brokers make the meta quorum.
	tr := newTrio(t, harness.Topics(harness.Topic("orders", "billing")), log, func(i int, c *broker.Config) {
		c.Cluster.User, c.Cluster.Password = "route", right
		if i == 2 {
			c.Cluster.Password = wrong
			c.ReadyTimeout = 2 * time.Second
		}
	})
	bs, errs := tr.start(t, 0, 1, 2)
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("the two brokers with the right password: %v", errors.Join(errs[0], errs[1]))
	}
	// The third spent its ready timeout trying its routes.
	if !errors.Is(errs[2], broker.ErrNotReady) {
		t.Fatalf("broker with the wrong password: %v, want not ready", errs[2])
	}
	for i, b := range bs[:2] {
		if got := b.Peers(); !slices.Equal(got, []string{fmt.Sprintf("b%d", 2-i)}) {
			t.Errorf("b%d peers %v, want only the other good broker", i+1, got)
		}
	}
	if !strings.Contains(allLogs(logs), "Authorization Violation") {
		t.Error("no authorization violation logged for the refused route")
	}

	tr.cfgs[2].Cluster.Password = right
	tr.cfgs[2].ReadyTimeout = 20 * time.Second
	b3 := mustStart(t, tr, 2)[0]
	harness.Eventually(t, 10*time.Second, func() bool {
		return len(b3.Peers()) == 2 && slices.Contains(bs[0].Peers(), "b3") && slices.Contains(bs[1].Peers(), "b3")
	}, "b3 with the right password should have routes to both others")

	all := allLogs(logs)
	for _, pw := range []string{right, wrong} {
		if strings.Contains(all, pw) {
			t.Errorf("a log line shows the route password %q", pw)
		}
	}
}

// allLogs is every observed entry with its fields, as text.
func allLogs(logs *observer.ObservedLogs) string {
	var sb strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&sb, "%s %s %v\n", e.LoggerName, e.Message, e.ContextMap())
	}
	return sb.String()
}

// TestRouteSecurityNeedsCredentials: a cluster with route TLS or client
// authentication and no route credentials is refused at start, naming the
// key: route TLS alone would take any certificate from the CA as a broker.
func TestRouteSecurityNeedsCredentials(t *testing.T) {
	certs := devCerts(t)
	for name, mutate := range map[string]func(*broker.Config){
		"route tls": func(c *broker.Config) {
			c.Cluster.TLS = tlsconf.Config{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
		},
		"client auth": func(c *broker.Config) {
			c.Auth.Users = []broker.User{{Name: "gw", Nkey: newIdentity(t).Pub, Role: broker.RoleGateway}}
		},
	} {
		cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
		cfg.Cluster = broker.Cluster{Name: "c", Listen: "127.0.0.1:-1", Routes: []string{"nats-route://127.0.0.1:1"}}
		mutate(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "broker.cluster.user") {
			t.Errorf("%s without route credentials: %v, want an error naming broker.cluster.user", name, err)
		}
		cfg.Cluster.User, cfg.Cluster.Password = "route", "route-pass-7d2e"
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s with route credentials: %v", name, err)
		}
	}
}
