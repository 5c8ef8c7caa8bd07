package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/topology"
)

// Stack is a broker and a gateway started without a testing.TB: for a
// TestMain, where runnable examples find Sluice (what `make run` starts,
// without the demo workers).
type Stack struct {
	b      *broker.Broker
	nc     *nats.Conn
	srv    *http.Server
	cancel context.CancelFunc
	done   chan error
	// GatewayURL and NATSURL are where clients connect.
	GatewayURL, NATSURL string
}

// StartStack starts a broker storing under dir and a gateway serving on a
// random loopback port, and returns once the gateway is ready. On an error
// nothing is left running.
func StartStack(dir string, topics map[string]topology.Topic) (s *Stack, err error) {
	s = &Stack{done: make(chan error, 2)}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	if s.b, err = broker.New(BrokerConfig(dir, topics), zap.NewNop(), prometheus.NewRegistry()); err != nil {
		return s, fmt.Errorf("broker: %w", err)
	}
	if s.nc, err = nats.Connect(s.b.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond)); err != nil {
		return s, fmt.Errorf("connect: %w", err)
	}
	reg := prometheus.NewRegistry()
	g, err := gateway.New(GatewayConfig(topics), s.nc, zap.NewNop(), reg, reg)
	if err != nil {
		return s, fmt.Errorf("gateway: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, fmt.Errorf("gateway listener: %w", err)
	}
	s.srv = &http.Server{Handler: g.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.GatewayURL, s.NATSURL = "http://"+ln.Addr().String(), s.b.ClientURL()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- g.RunControl(ctx) }()
	go func() {
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.done <- err
			return
		}
		s.done <- nil
	}()
	if !waitFor(time.Minute, func() bool { return ready(s.GatewayURL) }) {
		return s, errors.New("gateway not ready after 1m")
	}
	return s, nil
}

// Close stops the gateway, its connection and the broker, and reports what
// the gateway's loops returned.
func (s *Stack) Close() error {
	var err error
	if s.cancel != nil {
		_ = s.srv.Close()
		s.cancel()
		err = errors.Join(<-s.done, <-s.done)
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.b != nil {
		s.b.Shutdown()
	}
	return err
}
