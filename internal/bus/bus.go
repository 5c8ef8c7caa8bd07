// Package bus connects gateways and workers to the brokers: every broker URL,
// endless reconnects, and logged connection changes.
package bus

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// Dead-connection detection: a ping every pingInterval, the connection
// given up after maxPingsOut unanswered.
const (
	pingInterval = 2 * time.Second
	maxPingsOut  = 3
)

// Connect dials the brokers at urls (failing over between them) as name.
func Connect(urls []string, timeout time.Duration, name string, log *zap.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(strings.Join(urls, ","),
		nats.Name(name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// A broker cut off by the network sends no RST: only unanswered
		// pings reveal it. nats.go's default (2 min, 2 pings) would leave a
		// gateway publishing into a dead connection for minutes; this
		// moves it within about 6 s.
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("disconnected from the bus", zap.Error(err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to the bus", zap.String("url", c.ConnectedUrlRedacted()))
		}),
		// A broker leaving (lame duck) says so before it closes its
		// clients: move now rather than when it cuts us off. Requests in
		// flight on the old connection fail (a gateway answers 503 outcome
		// unknown; the producer retries with the same key), as they would
		// when the broker closes it.
		nats.LameDuckModeHandler(func(c *nats.Conn) {
			log.Info("broker is leaving; moving to another", zap.String("url", c.ConnectedUrlRedacted()))
			if err := c.ForceReconnect(); err != nil {
				log.Warn("moving off a leaving broker", zap.Error(err))
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("bus error", zap.Error(err))
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connecting to the bus at %s: %w", strings.Join(urls, ","), err)
	}
	log.Info("connected to the bus", zap.String("url", nc.ConnectedUrlRedacted()))
	return nc, nil
}
