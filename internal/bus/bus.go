// Package bus connects gateways and workers to the brokers: every broker URL,
// endless reconnects, logged connection changes, and optionally TLS and an
// nkey identity.
package bus

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/tlsconf"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Dead-connection detection: a ping every pingInterval, the connection
// given up after maxPingsOut unanswered.
const (
	pingInterval = 2 * time.Second
	maxPingsOut  = 3
)

// Option secures a connection: see WithTLS and WithNkeySeedFile.
type Option func(*[]nats.Option) error

// WithTLS connects over TLS when c names any file: the brokers verified
// against c.CAFile (empty: the system's roots), c's certificate presented
// when it has one (brokers with verify_clients need it). TLS 1.2 or later.
func WithTLS(c tlsconf.Config) Option {
	return func(opts *[]nats.Option) error {
		if !c.Enabled() {
			return nil
		}
		tc, err := c.Client()
		if err != nil {
			return err
		}
		*opts = append(*opts, nats.Secure(tc))
		return nil
	}
}

// WithNkeySeedFile signs in with the user nkey whose seed is in file (from
// `sluice nkey`), using that identity's own inbox prefix
// (sluice.InboxPrefix: brokers let an identity subscribe to its own
// inboxes only); empty: no identity.
func WithNkeySeedFile(file string) Option {
	return func(opts *[]nats.Option) error {
		if file == "" {
			return nil
		}
		id, err := sluice.Identity(file)
		if err != nil {
			return err
		}
		*opts = append(*opts, id...)
		return nil
	}
}

// CheckSeedFile reports whether file holds a user nkey seed, without
// showing the seed in its error.
func CheckSeedFile(file string) error {
	_, err := sluice.Identity(file)
	return err
}

// Connect dials the brokers at urls (failing over between them) as name,
// secured by opts.
func Connect(urls []string, timeout time.Duration, name string, log *zap.Logger, opts ...Option) (*nats.Conn, error) {
	var sec []nats.Option
	for _, o := range opts {
		if err := o(&sec); err != nil {
			return nil, fmt.Errorf("connecting to the bus: %w", err)
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), append([]nats.Option{
		nats.Name(name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// Nothing is kept for a reconnect: nats.go would replay whatever
		// was published while reconnecting, however late, and a publish
		// replayed past the topic's duplicate window is stored twice. A
		// publish while disconnected fails at once (ErrReconnectBufExceeded),
		// unsent, and its caller answers "nothing stored".
		nats.ReconnectBufSize(-1),
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
			// Permission violations land here: the broker refused a
			// subject to this identity (broker.auth.users).
			log.Warn("bus error", zap.Error(err))
		}),
	}, sec...)...)
	if errors.Is(err, nats.ErrAuthorization) {
		return nil, fmt.Errorf("connecting to the bus at %s: %w (is this client's nkey in the brokers' broker.auth.users?)", strings.Join(urls, ","), err)
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to the bus at %s: %w", strings.Join(urls, ","), err)
	}
	log.Info("connected to the bus", zap.String("url", nc.ConnectedUrlRedacted()))
	return nc, nil
}
