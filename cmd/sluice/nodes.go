package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/cmd/sluice/internal/demo"
	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

func newBrokerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "broker",
		Short: "Run a broker node: embedded nats-server with JetStream, provisioning the declared topics",
		Long: `Run a broker node: an embedded nats-server with JetStream on a file store
(fsync before every ack). On start it creates or updates the declared topics
(streams), their families (durable consumers) and dead-letter streams; it never
deletes what the config no longer declares. Every broker.reconcile_interval,
and at once when one is deleted, it recreates a declared stream or family
that is missing. On SIGTERM it leaves gracefully
when broker.lame_duck is set: its leaderships move to the other brokers and its
clients are told to move before it exits.

Config keys used: log.*, broker.* (name, data_dir, listen, tls.*, auth.users,
ready_timeout, reconcile_interval, ops_listen for /healthz /readyz /metrics, cluster.* including
cluster.tls.*, cluster.user and cluster.password, lame_duck), topics.*.` + configHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := setup(cmd, config.RoleBroker, nil, false)
			if err != nil {
				return err
			}
			defer n.sync()
			b, err := broker.New(n.cfg.Broker, n.log, n.reg)
			if err != nil {
				return err
			}
			return b.Run(cmd.Context())
		},
	}
}

func newGatewayCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a gateway node: the HTTP ingest API, publishing to the brokers",
		Long: `Run a gateway node: the stateless HTTP ingest API. It connects to every
broker in bus.urls and answers 202 only once the bus has stored a message.

Config keys used: log.*, bus.* (urls, connect_timeout, tls.*, nkey_seed_file),
gateway.* (all), topics.*.` + configHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := setup(cmd, config.RoleGateway, map[string]string{"listen": "gateway.listen"}, false)
			if err != nil {
				return err
			}
			defer n.sync()
			cfg, log, reg := n.cfg, n.log, n.reg
			nc, err := bus.Connect(cfg.Bus.URLs, cfg.Bus.ConnectTimeout, "sluice-gateway", log, busSecurity(cfg)...)
			if err != nil {
				return err
			}
			defer nc.Close()
			g, err := gateway.New(cfg.Gateway, nc, log, reg, reg)
			if err != nil {
				return err
			}
			return g.Run(cmd.Context())
		},
	}
	cmd.Flags().String("listen", "", "HTTP address (key gateway.listen)")
	return cmd
}

func newWorkerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker --topic T --family F",
		Short: "Run the demo worker for one family (your own workers use the Go SDK, pkg/sluice)",
		Long: `Run the built-in demo worker for one family, connected to the brokers in
bus.urls. It spends demo.delay per message and fails demo.failure_rate of the
attempts, so retries and dead letters can be watched. Start several to see
workers of a family share the work. On SIGTERM it drains: stops pulling and
finishes the messages it holds.

Config keys used: log.*, bus.* (urls, connect_timeout, tls.*, nkey_seed_file),
demo.* (delay, failure_rate, credit).` + configHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := setup(cmd, config.RoleWorker, map[string]string{
				"demo-delay": "demo.delay", "demo-failure-rate": "demo.failure_rate", "credit": "demo.credit",
			}, false)
			if err != nil {
				return err
			}
			defer n.sync()
			cfg, log, reg := n.cfg, n.log, n.reg
			topic, _ := cmd.Flags().GetString("topic")
			family, _ := cmd.Flags().GetString("family")
			if err := declared(cfg, topic, family); err != nil {
				return err
			}
			nc, err := bus.Connect(cfg.Bus.URLs, cfg.Bus.ConnectTimeout, "sluice-worker-"+topic+"-"+family, log, busSecurity(cfg)...)
			if err != nil {
				return err
			}
			defer nc.Close()
			w, err := sluice.NewWorker(nc, topic, family, demo.Handler(cfg.Demo.Delay, cfg.Demo.FailureRate, log.Named("demo")),
				sluice.WithCredit(cfg.Demo.Credit), sluice.WithWorkerLogger(log.Named("worker")), sluice.WithRegisterer(reg))
			if err != nil {
				return err
			}
			return runDraining(cmd.Context(), w, log)
		},
	}
	f := cmd.Flags()
	f.String("topic", "", "topic to consume (required)")
	f.String("family", "", "family to join (required)")
	f.Duration("demo-delay", 0, "time per message (key demo.delay)")
	f.Float64("demo-failure-rate", 0, "share of attempts to fail, 0..1 (key demo.failure_rate)")
	f.Int("credit", 0, "messages held at once (key demo.credit)")
	_ = cmd.MarkFlagRequired("topic")
	_ = cmd.MarkFlagRequired("family")
	return cmd
}

// busSecurity is how gateways and workers prove themselves to the brokers
// and check them: bus.tls and bus.nkey_seed_file.
func busSecurity(cfg config.Config) []bus.Option {
	return []bus.Option{bus.WithTLS(cfg.Bus.TLS), bus.WithNkeySeedFile(cfg.Bus.NkeySeedFile)}
}

// declared refuses a worker for a topic or family the configuration does
// not declare.
func declared(cfg config.Config, topic, family string) error {
	t, ok := cfg.Topics[topic]
	if !ok {
		return fmt.Errorf("--topic %q: not a topic declared under topics (declared: %v)", topic, topology.Names(cfg.Topics))
	}
	if _, ok := t.Families[family]; !ok {
		return fmt.Errorf("--family %q: not a family of topic %s (declared: %v)", family, topic, t.FamilyNames())
	}
	return nil
}

// runDraining runs w until ctx ends, then drains it (bounded) before returning.
func runDraining(ctx context.Context, w *sluice.Worker, log *zap.Logger) error {
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(runCtx) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	if err := w.Drain(dctx); err != nil {
		log.Warn("drain cut short; unacked messages will be redelivered", zap.Error(err))
		cancel()
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}
