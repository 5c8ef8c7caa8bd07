package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/cmd/sluice/internal/devstack"
)

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a complete single-node Sluice: broker, gateway and demo workers in one process",
		Long: `Run a complete single-node Sluice in one process: an embedded broker
(JetStream file store under broker.data_dir, fsync before every ack), the HTTP
gateway on gateway.listen, and one demo worker per declared family.

Post a message:
  curl -i -X POST localhost:8080/v1/topics/orders/messages -d '{"id":42}'

Your own SDK worker can join through broker.listen (nats://127.0.0.1:4222).

Config keys used: log.*, broker.* (name, data_dir, listen, ready_timeout),
gateway.* (all), demo.* (enabled, delay, failure_rate, credit), topics.*.` + configHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd, config.RoleAll, map[string]string{
				"demo-delay":        "demo.delay",
				"demo-failure-rate": "demo.failure_rate",
				"listen":            "gateway.listen",
				"nats-listen":       "broker.listen",
				"data-dir":          "broker.data_dir",
			})
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("topic-max-messages") {
				n, _ := cmd.Flags().GetInt64("topic-max-messages")
				for name, t := range cfg.Topics {
					t.MaxMessages = n
					cfg.Topics[name] = t
				}
				if err := cfg.Validate(); err != nil {
					return fmt.Errorf("--topic-max-messages: %w", err)
				}
			}
			n, err := newNode(cfg, true)
			if err != nil {
				return err
			}
			defer n.sync()
			stack, err := devstack.Start(cfg, n.log, n.reg)
			if err != nil {
				return err
			}
			return stack.Run(cmd.Context(), func() {
				fmt.Fprint(os.Stderr, readyHint(cfg, stack.Addr()))
			})
		},
	}
	f := cmd.Flags()
	f.Duration("demo-delay", 0, "time the demo worker spends per message, e.g. 200ms (key demo.delay)")
	f.Float64("demo-failure-rate", 0, "share of attempts the demo worker fails, 0..1: shows retries and dead letters (key demo.failure_rate)")
	f.Int64("topic-max-messages", 0, "max messages of every topic: a small value shows a full topic answering 429 (key topics.<name>.max_messages)")
	f.String("listen", "", "gateway HTTP address (key gateway.listen)")
	f.String("nats-listen", "", `broker address for NATS clients, "" for in-process only (key broker.listen)`)
	f.String("data-dir", "", "broker store directory (key broker.data_dir)")
	return cmd
}
