// Package devstack runs a complete single-node Sluice in one process: the
// broker, a gateway and a demo worker per family — what `sluice dev` starts.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/cmd/sluice/internal/demo"
	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// drainTimeout bounds how long workers may finish held messages on stop.
const drainTimeout = 10 * time.Second

// Stack is a started single-node Sluice.
type Stack struct {
	cfg     config.Config
	log     *zap.Logger
	broker  *broker.Broker
	gateway *gateway.Gateway
	conns   []*nats.Conn
	workers []*sluice.Worker
	addr    net.Addr
	started time.Time
}

// Start starts the broker, builds the gateway and the demo workers and
// binds the gateway's listener. Metrics go on reg, which /metrics serves.
// Call Run next. On an error nothing is left running: no listener, no
// connection, no goroutine.
func Start(cfg config.Config, log *zap.Logger, reg *prometheus.Registry) (*Stack, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Stack{cfg: cfg, log: log, started: time.Now()}
	if err := s.start(reg); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// start builds the stack in order. The gateway binds its listener last:
// nothing after it can fail, and a gateway closes its listener only when
// it has served on it.
func (s *Stack) start(reg *prometheus.Registry) error {
	var err error
	// One node, one alarm manager: the gateway's, on which Run watches the
	// broker's alarms too (two would register the same metrics on reg).
	bcfg := s.cfg.Broker
	bcfg.SharedAlarms = true
	if s.broker, err = broker.New(bcfg, s.log, reg); err != nil {
		// nats-server says which address it could not listen on, not which
		// key set it: name the key a newcomer would change.
		if l := bcfg.Listen; l != "" && !strings.HasPrefix(err.Error(), "broker.listen") && strings.Contains(err.Error(), l) {
			return fmt.Errorf("broker.listen: %w", err)
		}
		return err
	}
	gnc, err := s.connect("sluice-gateway")
	if err != nil {
		return err
	}
	if s.gateway, err = gateway.New(s.cfg.Gateway, gnc, s.log, reg, reg); err != nil {
		return err
	}
	if s.cfg.Demo.Enabled {
		if err := s.demoWorkers(reg); err != nil {
			return err
		}
	}
	s.addr, err = s.gateway.Listen()
	return err
}

// demoWorkers builds a demo worker per declared family.
func (s *Stack) demoWorkers(reg *prometheus.Registry) error {
	cfg := s.cfg
	demoLog := s.log.Named("demo").WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		// One line per message is what a newcomer wants to see, not what a
		// load test wants written: at most 10 a second per family.
		return zapcore.NewSamplerWithOptions(c, time.Second, 10, 0)
	}))
	h := demo.Handler(cfg.Demo.Delay, cfg.Demo.FailureRate, demoLog)
	for _, tname := range topology.Names(cfg.Topics) {
		t := cfg.Topics[tname]
		for _, fname := range t.FamilyNames() {
			wnc, err := s.connect("sluice-demo-" + tname + "-" + fname)
			if err != nil {
				return err
			}
			w, err := sluice.NewWorker(wnc, tname, fname, h,
				sluice.WithCredit(cfg.Demo.Credit), sluice.WithWorkerLogger(s.log.Named("worker")),
				sluice.WithRegisterer(reg))
			if err != nil {
				return err
			}
			s.workers = append(s.workers, w)
		}
	}
	return nil
}

// connect opens an in-process connection to the broker.
func (s *Stack) connect(name string) (*nats.Conn, error) {
	nc, err := s.broker.Connect(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s.conns = append(s.conns, nc)
	return nc, nil
}

// Addr is the gateway's HTTP address.
func (s *Stack) Addr() net.Addr { return s.addr }

// scheme is the gateway's: https when gateway.tls serves it.
func (s *Stack) scheme() string {
	if s.cfg.Gateway.TLS.CertFile != "" {
		return "https"
	}
	return "http"
}

// BrokerURL is where NATS clients (your own SDK workers) connect.
func (s *Stack) BrokerURL() string { return s.broker.ClientURL() }

// Run serves until ctx is done, then shuts down in order: stop intake (the
// gateway finishes in-flight requests), drain the workers, close the
// connections, stop the broker.
func (s *Stack) Run(ctx context.Context, ready func()) error {
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(s.workers)+1)
	gwCtx, stopGateway := context.WithCancel(runCtx)
	defer stopGateway()
	wg.Go(func() {
		if err := s.gateway.Run(gwCtx); err != nil {
			errc <- fmt.Errorf("gateway: %w", err)
		}
	})
	// One node, one alarm manager: the broker's alarms join the gateway's.
	wg.Go(func() { s.broker.WatchAlarms(runCtx, s.gateway.Alarms()) })
	for _, w := range s.workers {
		wg.Go(func() {
			if err := w.Run(runCtx); err != nil {
				errc <- fmt.Errorf("worker: %w", err)
			}
		})
	}
	s.log.Info("sluice dev ready",
		zap.String("gateway", s.scheme()+"://"+s.addr.String()),
		zap.String("nats", s.broker.ClientURL()),
		zap.Int("demo_workers", len(s.workers)),
		zap.Duration("startup", time.Since(s.started)))
	if ready != nil {
		ready()
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		s.log.Error("component failed; shutting down", zap.Error(runErr))
	}
	stopGateway() // 1. intake
	dctx, dcancel := context.WithTimeout(context.Background(), drainTimeout)
	var drains sync.WaitGroup
	for _, w := range s.workers { // 2. drain, all at once
		drains.Go(func() {
			if err := w.Drain(dctx); err != nil {
				s.log.Warn("worker drain cut short; unacked messages will be redelivered", zap.Error(err))
			}
		})
	}
	drains.Wait()
	dcancel()
	cancel()
	wg.Wait()
	close(errc)
	for err := range errc {
		runErr = errors.Join(runErr, err)
	}
	s.close() // 3. connections, 4. broker
	return runErr
}

func (s *Stack) close() {
	for _, nc := range s.conns {
		nc.Close()
	}
	if s.broker != nil {
		s.broker.Shutdown()
	}
}
