// Package broker is Sluice's service node: an embedded nats-server with
// JetStream on a file store (fsync before every ack), provisioning the
// declared topics and families and exporting their state as metrics.
package broker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/topology"
)

// ErrNotReady means the server or JetStream did not become ready in time.
var ErrNotReady = errors.New("broker not ready")

// A route that stops answering pings is closed after routePingInterval
// times routeMaxPingsOut (6-9 s; nats-server's default is up to 30 s
// apart, two missed): a route that carries bytes one way only (a stream
// leader that still sends but no longer hears) is then cut cleanly and the
// others elect a leader, instead of the stream staying leaderless (the
// followers keep hearing the leader, so they never vote) until the
// server's own ping finds it, about 30 s later.
const (
	routePingInterval = 3 * time.Second
	routeMaxPingsOut  = 2
)

// ErrStoreFailed means the server stopped JetStream after its store failed
// (disk full, a write or fsync error): the broker stores nothing until it
// is restarted on a healthy disk, so Run stops it and returns this.
var ErrStoreFailed = errors.New("broker store failed")

// Broker is a running broker node. It is ready when New returns.
type Broker struct {
	cfg Config
	log *zap.Logger
	// nodeLog is the logger New was given: the alarm manager and the ops
	// listener log through it, as a node's own.
	nodeLog *zap.Logger
	// gatherer is what the ops listener's /metrics serves: the registry
	// New was given.
	gatherer prometheus.Gatherer
	// alarms holds the broker's alarms; nil with cfg.SharedAlarms.
	alarms *alarm.Manager
	srv    *server.Server
	nc     *nats.Conn // in-process connection for provisioning and metrics
	js     jetstream.JetStream
	// self signs in-process connections when clients must authenticate
	// (nil otherwise): a user nkey made at start, allowed in-process only.
	self nkeys.KeyPair

	stopOnce sync.Once
	leaving  atomic.Bool           // LameDuck or Shutdown began
	storeErr atomic.Bool           // the server reported a store write that failed
	fatal    atomic.Pointer[error] // the server's first fatal error

	// topo is what the provisioning passes found (readiness, the
	// family_missing alarm); stopKeeping ends the periodic check, keeping
	// waits for it.
	topo        topoState
	stopKeeping context.CancelFunc
	keeping     sync.WaitGroup
}

// fatalErr is the server's first fatal error, nil if none.
func (b *Broker) fatalErr() error {
	if e := b.fatal.Load(); e != nil {
		return fmt.Errorf("%w: nats-server: %w", ErrNotReady, *e)
	}
	return nil
}

// New starts an embedded nats-server with JetStream under cfg.DataDir, waits
// until JetStream answers, provisions the topology, builds the broker's
// alarm manager (none with cfg.SharedAlarms), registers metrics and alarms
// on reg (nil: none) and starts checking the topology (see keepTopology).
// With cfg.OpsListen set, reg must also be a prometheus.Gatherer (a
// *prometheus.Registry): the ops listener's /metrics serves it. The caller
// must call Run or Shutdown.
func New(cfg Config, logger *zap.Logger, reg prometheus.Registerer) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Alarms.Validate(); err != nil {
		return nil, err
	}
	gatherer, _ := reg.(prometheus.Gatherer)
	if cfg.OpsListen != "" && gatherer == nil {
		return nil, errors.New("broker: broker.ops_listen serves /metrics from the registry New is given, which must be a prometheus.Gatherer")
	}
	log := logger.Named("broker")
	var self nkeys.KeyPair
	if cfg.Auth.Enabled() {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, fmt.Errorf("broker: in-process nkey: %w", err)
		}
		self = kp
	}
	opts, err := serverOptions(cfg, self)
	if err != nil {
		return nil, err
	}
	if err := writableDir(opts.StoreDir); err != nil {
		return nil, fmt.Errorf("broker.data_dir %s: %w", cfg.DataDir, err)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b := &Broker{cfg: cfg, log: log, nodeLog: logger, gatherer: gatherer, srv: srv, self: self}
	if !cfg.SharedAlarms {
		b.alarms = alarm.New(cfg.Name, cfg.Alarms.Hold, logger.Named("alarm"), nil)
	}
	b.guardStores(opts.StoreDir) // before the server opens the stores: see storecheck.go
	srv.SetLoggerV2(natsLogger{log: log.Named("nats").Sugar(), fatal: &b.fatal, storeErr: &b.storeErr}, log.Core().Enabled(zap.DebugLevel), false, false)
	srv.Start()
	if err := b.waitReady(); err != nil {
		b.shutdownServer()
		return nil, err
	}
	if err := b.register(reg); err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("broker metrics: %w", err)
	}
	b.keepTopology()
	log.Info("broker ready", zap.String("name", cfg.Name), zap.String("client_url", b.ClientURL()),
		zap.String("store", opts.StoreDir), zap.Bool("sync_always", opts.SyncAlways),
		zap.Bool("client_tls", opts.TLSConfig != nil), zap.Int("client_users", len(cfg.Auth.Users)),
		zap.Bool("route_tls", opts.Cluster.TLSConfig != nil), zap.Bool("route_auth", opts.Cluster.Username != ""))
	return b, nil
}

// register puts the broker's metrics and its alarm manager on reg (nil:
// nowhere), both or neither.
func (b *Broker) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	c := newCollector(b.js, b.cfg.Topics, b.log)
	if err := reg.Register(c); err != nil {
		return err
	}
	if b.alarms != nil {
		if err := reg.Register(b.alarms); err != nil {
			reg.Unregister(c)
			return err
		}
	}
	return nil
}

// writableDir makes dir if need be and checks that a file can be written
// in it, so that a bad data directory is refused naming it (nats-server's
// own error for a directory under a regular file does not).
func writableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".sluice-write-check-*")
	if err != nil {
		return err
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		return err
	}
	return os.Remove(name)
}

// tlsTimeout bounds a TLS handshake (the server's default, 2 s, is short
// for a loaded host).
const tlsTimeout = 5 * time.Second

// serverOptions are the embedded server's options; self is the in-process
// user's key pair when clients must authenticate.
func serverOptions(cfg Config, self nkeys.KeyPair) (*server.Options, error) {
	storeDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("broker.data_dir: %w", err)
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		JetStream:  true,
		StoreDir:   storeDir,
		// Reliability default, not negotiable: fsync every write before the
		// publish is acknowledged.
		SyncAlways: true,
		NoSigs:     true,
		// Room for the largest topic's dead letters: payload, headers, and
		// the dead-letter headers.
		MaxPayload: int32(topology.MaxMessageSize(cfg.Topics)+topology.HeaderAllowance) + DeadLetterHeadroom + 4<<10,
	}
	if c := cfg.Cluster; c.Enabled() {
		host, port, err := splitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("broker.cluster.listen: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port, Advertise: c.Advertise,
			Username: c.User, Password: c.Password, PingInterval: routePingInterval, MaxPingsOut: routeMaxPingsOut}
		opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
		if c.User != "" {
			// The routes this broker dials carry the credentials (the
			// server logs route URLs redacted).
			for _, u := range opts.Routes {
				u.User = url.UserPassword(c.User, c.Password)
			}
		}
		if c.TLS.Enabled() {
			tc, err := routeTLS(c.TLS)
			if err != nil {
				return nil, fmt.Errorf("broker.cluster.tls: %w", err)
			}
			opts.Cluster.TLSConfig = tc
			opts.Cluster.TLSTimeout = tlsTimeout.Seconds()
		}
	}
	if cfg.TLS.Enabled() {
		tc, err := cfg.TLS.Server()
		if err != nil {
			return nil, fmt.Errorf("broker.tls: %w", err)
		}
		opts.TLS, opts.TLSVerify, opts.TLSConfig = true, cfg.TLS.VerifyClients, tc
		opts.TLSTimeout = tlsTimeout.Seconds()
	}
	if cfg.Auth.Enabled() {
		pub, err := self.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("broker: in-process nkey: %w", err)
		}
		accounts, byUser, err := busAccounts(cfg.Auth)
		if err != nil {
			return nil, err
		}
		opts.Accounts = accounts
		opts.Nkeys = nkeyUsers(cfg.Auth, cfg.Topics, pub, byUser)
	}
	if cfg.LameDuck > 0 {
		// Clients are told at once (they move on their own, see
		// internal/bus); the stragglers are closed after half the time.
		opts.LameDuckDuration = cfg.LameDuck
		opts.LameDuckGracePeriod = cfg.LameDuck / 2
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("broker.listen: %w", err)
		}
		opts.Host, opts.Port = host, port
	}
	return opts, nil
}

func (b *Broker) waitReady() error {
	deadline := time.Now().Add(b.cfg.ReadyTimeout)
	// In short steps: a listener that failed to bind is a fatal error in
	// the log, and the server would never become ready.
	for !b.srv.ReadyForConnections(100 * time.Millisecond) {
		if err := b.fatalErr(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: server did not accept connections within %v", ErrNotReady, b.cfg.ReadyTimeout)
		}
	}
	if err := b.fatalErr(); err != nil {
		return err
	}
	if !b.srv.JetStreamEnabled() {
		return fmt.Errorf("%w: JetStream is not enabled", ErrNotReady)
	}
	nc, err := b.Connect("sluice-broker-internal")
	if err != nil {
		return fmt.Errorf("%w: internal connection: %w", ErrNotReady, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	b.nc, b.js = nc, js
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(provisionTimeout))
	defer cancel()
	for {
		// Each try bounded: in a cluster, a request sent before a meta
		// leader is elected is never answered.
		actx, acancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		acancel()
		if err == nil {
			break
		}
		if ferr := b.fatalErr(); ferr != nil {
			return ferr
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%w: JetStream did not answer: %w", ErrNotReady, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Provisioning is idempotent: retry it whole, each try bounded, until
	// the deadline (a request lost during an election is never answered).
	for {
		pctx, pcancel := context.WithTimeout(ctx, passTimeout(len(b.cfg.Topics)))
		found, err := provisioner{js: js, log: b.log}.run(pctx, b.cfg.Topics)
		pcancel()
		if err == nil {
			b.topo.record(found, false)
			return nil
		}
		if ferr := b.fatalErr(); ferr != nil {
			return ferr
		}
		if errors.Is(err, ErrIncompatible) || ctx.Err() != nil {
			return fmt.Errorf("broker: provisioning topology: %w", err)
		}
		b.log.Warn("provisioning failed; retrying", zap.Error(err))
		time.Sleep(250 * time.Millisecond)
	}
}

// ClusterAddr is the host:port routes reach this broker at ("" when not clustered).
func (b *Broker) ClusterAddr() string {
	if !b.cfg.Cluster.Enabled() {
		return ""
	}
	if a := b.srv.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// ClientURL is where NATS clients connect, empty when the broker listens for
// in-process clients only.
func (b *Broker) ClientURL() string {
	if b.cfg.Listen == "" {
		return ""
	}
	return b.srv.ClientURL()
}

// Connect opens an in-process client connection (no network hop), for nodes
// that share the broker's process in `sluice dev`. It may do anything: when
// clients must authenticate, it signs in as the broker's own in-process
// user.
func (b *Broker) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	// Nothing buffered for a reconnect, as in bus.Connect.
	own := []nats.Option{nats.InProcessServer(b.srv), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1)}
	if b.self != nil {
		pub, err := b.self.PublicKey()
		if err != nil {
			return nil, err
		}
		own = append(own, nats.Nkey(pub, b.self.Sign))
	}
	return nats.Connect("", append(own, opts...)...)
}

// Peers are the names of the brokers this one has a route to, sorted.
func (b *Broker) Peers() []string {
	rz, err := b.srv.Routez(nil)
	if err != nil {
		return nil
	}
	var names []string
	for _, r := range rz.Routes {
		if r.RemoteName != "" && !slices.Contains(names, r.RemoteName) {
			names = append(names, r.RemoteName)
		}
	}
	slices.Sort(names)
	return names
}

// Ready reports whether the server runs with JetStream enabled, no store
// write has failed (storeFailed), and every
// declared stream and family exists: New returns only once provisioning
// succeeded, and a later check that finds one missing or unusable, and
// cannot recreate it, makes the broker unready until one finds it again.
func (b *Broker) Ready() bool {
	return b.srv.Running() && b.srv.JetStreamEnabled() && !b.storeErr.Load() && b.nc.IsConnected() && b.topo.complete()
}

// JetStream advisories of deletions: ...STREAM.DELETED.<stream> and
// ...CONSUMER.DELETED.<stream>.<consumer>.
const (
	advisoryStreamDeleted   = "$JS.EVENT.ADVISORY.STREAM.DELETED.>"
	advisoryConsumerDeleted = "$JS.EVENT.ADVISORY.CONSUMER.DELETED.>"
	advisoryStreamToken     = 5 // index of the stream's name in their subjects
)

// keepTopology starts the periodic check of the topology: every
// cfg.ReconcileInterval, and at once when JetStream announces that a
// Sluice stream or consumer was deleted, a repair pass recreates what is
// missing (a family that is missing stores nothing: an interest stream
// acks a message no consumer takes and drops it). Each broker of a
// cluster checks; creating is idempotent, so whichever comes first
// repairs. The loop ends in Shutdown and LameDuck, which wait for it.
func (b *Broker) keepTopology() {
	ctx, cancel := context.WithCancel(context.Background())
	b.stopKeeping = cancel
	nudge := make(chan struct{}, 1)
	poke := func(m *nats.Msg) {
		if tokens := strings.Split(m.Subject, "."); len(tokens) > advisoryStreamToken && strings.HasPrefix(tokens[advisoryStreamToken], "SLUICE_") {
			select {
			case nudge <- struct{}{}:
			default: // a check is due already
			}
		}
	}
	var subs []*nats.Subscription
	for _, subj := range []string{advisoryStreamDeleted, advisoryConsumerDeleted} {
		sub, err := b.nc.Subscribe(subj, poke)
		if err != nil {
			b.log.Warn("no deletion advisories; checking the topology every interval only", zap.String("subject", subj), zap.Error(err))
			continue
		}
		subs = append(subs, sub)
	}
	// The subscriptions are in place on the server before New returns: a
	// deletion right after start must not go unannounced until the
	// interval (a subscription is sent asynchronously; seen on a loaded
	// machine).
	if err := b.nc.FlushTimeout(5 * time.Second); err != nil {
		b.log.Warn("deletion advisories may be missed until the bus answers", zap.Error(err))
	}
	p := provisioner{js: b.js, log: b.log, repair: true, absent: map[string]time.Time{}}
	b.keeping.Go(func() {
		defer func() {
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
		}()
		t := time.NewTicker(b.cfg.ReconcileInterval)
		defer t.Stop()
		var last error
		var again <-chan time.Time // something missing is due for recreation
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-nudge:
			case <-again:
			}
			var settling bool
			settling, last = b.checkTopology(ctx, p, last)
			again = nil
			if settling {
				again = time.After(deletionSettle)
			}
		}
	})
}

// checkTopology runs one repair pass and records what it found; last is
// the previous pass's error, so that a lasting problem is logged once.
// settling: something missing is to be recreated after deletionSettle.
func (b *Broker) checkTopology(ctx context.Context, p provisioner, last error) (settling bool, err error) {
	pctx, cancel := context.WithTimeout(ctx, passTimeout(len(b.cfg.Topics)))
	defer cancel()
	found, err := p.run(pctx, b.cfg.Topics)
	if ctx.Err() != nil {
		return false, last // stopping: what it found says nothing
	}
	b.topo.record(found, true)
	switch {
	case err != nil && (last == nil || err.Error() != last.Error()):
		b.log.Warn("topology check: declared streams or families are missing or did not answer", zap.Error(err))
	case err == nil && last != nil:
		b.log.Info("topology check: every declared stream and family is in place")
	}
	return found.settling, err
}

// stopTopology ends the periodic check and waits for it. Idempotent.
func (b *Broker) stopTopology() {
	if b.stopKeeping != nil {
		b.stopKeeping()
	}
	b.keeping.Wait()
}

// Run runs the broker until ctx is done, then leaves (LameDuck) and shuts
// down. Meanwhile it watches the broker's alarms and, with cfg.OpsListen
// set, serves the ops listener (see serveOps); both stop when ctx is done
// or the server stops on its own, and Run returns once they have, with
// their error joined to its own.
func (b *Broker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if b.alarms != nil {
		wg.Go(func() { b.WatchAlarms(ctx, b.alarms) })
	}
	var opsErr error
	if b.cfg.OpsListen != "" {
		wg.Go(func() { opsErr = b.serveOps(ctx) })
	}
	// Ends when the server is down, which it is when serve returns.
	down := make(chan struct{})
	wg.Go(func() {
		b.srv.WaitForShutdown()
		close(down)
	})
	err := b.serve(ctx, down)
	cancel()
	wg.Wait()
	return errors.Join(err, opsErr)
}

// serve waits until ctx is done, then leaves (LameDuck), until the server
// is down on its own, or until its store failed (ErrStoreFailed), then
// stops it. The server is down when it returns.
func (b *Broker) serve(ctx context.Context, down <-chan struct{}) error {
	check := time.NewTicker(storeCheckInterval)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			b.LameDuck()
			return nil
		case <-down:
			b.Shutdown() // the topology check and the in-process connection
			return errors.New("broker: server stopped")
		case <-check.C:
			if b.storeFailed() {
				// nats-server does not start JetStream again by itself; a
				// restart on a healthy disk does (the process's supervisor).
				b.log.Error("the server stopped JetStream after a store error; stopping the broker for a restart on a healthy disk",
					zap.String("store", b.cfg.DataDir))
				if b.alarms != nil { // raised before the watcher's next round ends with Run
					b.alarms.Raise(alarm.StoreFailed, b.cfg.Name, "JetStream stopped after a store error; the broker stopped for a restart")
				}
				b.Shutdown()
				return fmt.Errorf("%w: JetStream stopped after a store error under %s (disk full, a write or fsync error; see the log): restart the broker once its disk is healthy",
					ErrStoreFailed, b.cfg.DataDir)
			}
		}
	}
}

// storeCheckInterval is how often Run looks for a store that failed.
const storeCheckInterval = time.Second

// LameDuck leaves the cluster gracefully, then shuts down: it transfers the
// Raft leaderships this broker holds (meta, streams, consumers) to the
// others, stops JetStream here, stops accepting clients, tells connected
// clients to move and closes the rest spread over cfg.LameDuck. Without a
// lame-duck time or a client listener it is Shutdown. It returns when the
// server is down.
func (b *Broker) LameDuck() {
	if b.cfg.LameDuck <= 0 || b.cfg.Listen == "" {
		b.Shutdown()
		return
	}
	b.leaving.Store(true)
	b.stopOnce.Do(func() {
		b.log.Info("broker lame duck: handing off leadership and moving clients", zap.Duration("for", b.cfg.LameDuck))
		b.stopTopology()
		if b.nc != nil {
			b.nc.Close()
		}
		done := make(chan struct{})
		go func() {
			b.srv.LameDuckShutdown()
			close(done)
		}()
		// The server bounds its own lame duck; this bounds a server that
		// would not finish it (a leadership transfer takes about 1 s).
		select {
		case <-done:
		case <-time.After(b.cfg.LameDuck + 10*time.Second):
			b.log.Warn("lame duck did not finish; stopping now")
		}
		b.shutdownServer()
		// A lame duck cut short gives up once the server is down: wait
		// for it, so that nothing of it outlives LameDuck.
		<-done
	})
}

// Shutdown stops the server after flushing JetStream to disk. Idempotent.
func (b *Broker) Shutdown() {
	b.leaving.Store(true)
	b.stopOnce.Do(b.shutdownServer)
}

func (b *Broker) shutdownServer() {
	b.stopTopology()
	if b.nc != nil {
		b.nc.Close()
	}
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
	b.log.Info("broker stopped")
}
