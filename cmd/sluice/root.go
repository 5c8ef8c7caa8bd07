package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/cmd/sluice/internal/debugpprof"
	"github.com/sluicebus/sluice/cmd/sluice/internal/logging"
)

const configHelp = `
Configuration: a YAML file (--config; without one, the built-in defaults, which
equal configs/dev.yaml), then SLUICE_* environment variables (SLUICE_GATEWAY_LISTEN
sets gateway.listen, SLUICE_TOPICS_ORDERS_MAX_MESSAGES topics.orders.max_messages,
with or without a file), then flags. Unknown keys, SLUICE_* variables that name
no key, and bad values stop the start with an error naming the key, the
variable and the file. See README.md, "Configuration".`

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Sluice: a service-bus message broker with back-pressure from workers to HTTP clients",
		Long: `Sluice accepts messages over HTTP (202 only once they are durably stored),
keeps them in replicated JetStream streams, and hands them to families of
workers that pull with credits.` + configHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "configuration file (YAML)")
	root.PersistentFlags().String("log-level", "", "log level: debug, info, warn, error (key log.level)")
	root.PersistentFlags().String("log-format", "", "log format: auto, console, json (key log.format)")
	root.PersistentFlags().String("pprof-listen", "", "serve Go profiles (/debug/pprof) on this address, for profiling under load")
	_ = root.PersistentFlags().MarkHidden("pprof-listen")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if addr, _ := cmd.Flags().GetString("pprof-listen"); addr != "" {
			// Lives as long as the command: it ends with the command's context.
			if _, err := debugpprof.Start(cmd.Context(), addr); err != nil {
				return err
			}
		}
		return nil
	}
	root.AddCommand(newDevCmd(), newBrokerCmd(), newGatewayCmd(), newWorkerCmd(), newBenchCmd(), newProduceCmd(), newDLQCmd(), newHealthCmd(), newPlanCmd(), newStatusCmd(), newCertsCmd(), newNkeyCmd(), newKeysCmd(), newVersionCmd())
	return root
}

// commonFlags binds the root's flags to their config keys.
var commonFlags = map[string]string{"log-level": "log.level", "log-format": "log.format"}

// load reads the configuration for cmd, with its own flag bindings,
// validated for the roles the command runs.
func load(cmd *cobra.Command, roles config.Role, flagKeys map[string]string) (config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	keys := map[string]string{}
	for k, v := range commonFlags {
		keys[k] = v
	}
	for k, v := range flagKeys {
		keys[k] = v
	}
	return config.LoadFor(roles, path, cmd.Flags(), keys)
}

// node is what every subcommand starts from: its configuration, a logger
// (call sync before returning) and a registry with Go and process metrics.
type node struct {
	cfg config.Config
	log *zap.Logger
	reg *prometheus.Registry
}

func (n node) sync() { _ = n.log.Sync() }

// setup loads cmd's configuration (with its own flag bindings) and builds
// the logger (console when dev and log.format is auto) and the registry.
func setup(cmd *cobra.Command, roles config.Role, flagKeys map[string]string, dev bool) (node, error) {
	cfg, err := load(cmd, roles, flagKeys)
	if err != nil {
		return node{}, err
	}
	return newNode(cfg, dev)
}

func newNode(cfg config.Config, dev bool) (node, error) {
	log, err := logging.New(cfg.Log.Level, cfg.Log.Format, cfg.Log.Sampling, dev)
	if err != nil {
		return node{}, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return node{cfg: cfg, log: log, reg: reg}, nil
}
