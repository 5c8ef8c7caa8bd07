package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sluicebus/sluice/internal/overload"
)

func newBenchCmd() *cobra.Command {
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks and load tools",
	}
	bench.AddCommand(newOverloadCmd())
	return bench
}

func newOverloadCmd() *cobra.Command {
	def := overload.DefaultConfig()
	var out string
	cmd := &cobra.Command{
		Use:   "overload",
		Short: "Offer a multiple of the families' capacity, then drain; report what was accepted, refused and lost",
		Long: `Start a single-node Sluice in this process (or load --gateway), with worker
families capped at --capacity messages per second each. Producers offer
--factor times that for --duration, open loop, each message once, then stop;
the run drains and checks that every accepted message reached every family.

It prints a markdown table and writes it, with the JSON report, under --out:
offered, accepted, refused by status, accepted-but-not-delivered (must be 0),
duplicates, goodput against capacity, Retry-After coverage, time to admission
after the overload, latency of accepted requests, and memory every second
(in-process runs measure the whole process: gateway, broker, workers and the
load generator together).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := def
			f := cmd.Flags()
			cfg.Capacity, _ = f.GetFloat64("capacity")
			cfg.Factor, _ = f.GetFloat64("factor")
			cfg.Duration, _ = f.GetDuration("duration")
			cfg.Concurrency, _ = f.GetInt("concurrency")
			cfg.MessageSize, _ = f.GetInt("size")
			cfg.TopicMaxMessages, _ = f.GetInt64("topic-max-messages")
			cfg.Gateway, _ = f.GetString("gateway")
			cfg.DuplicateWindow, _ = f.GetDuration("duplicate-window")
			n, err := setup(cmd, 0, nil, false) // the bench builds its own nodes
			if err != nil {
				return err
			}
			defer n.sync()
			dir, err := os.MkdirTemp("", "sluice-overload-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			cfg.DataDir = dir
			rep, err := overload.Run(cmd.Context(), cfg, n.log)
			if err != nil {
				return err
			}
			md := rep.Markdown()
			fmt.Fprint(cmd.OutOrStdout(), md)
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			base := filepath.Join(out, fmt.Sprintf("overload-%gx", cfg.Factor))
			js, _ := json.MarshalIndent(rep, "", "  ")
			if err := os.WriteFile(base+".json", js, 0o644); err != nil {
				return err
			}
			if err := os.WriteFile(base+".md", []byte(md), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nwritten: %s.json, %s.md\n", base, base)
			lost := int64(0)
			for _, v := range rep.NotDelivered {
				lost += v
			}
			if lost > 0 || len(rep.OtherStatus) > 0 {
				return fmt.Errorf("overload: %d accepted messages not delivered, other answers %v", lost, rep.OtherStatus)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Float64("capacity", def.Capacity, "messages per second each family handles")
	f.Float64("factor", def.Factor, "offered load as a multiple of the capacity")
	f.Duration("duration", def.Duration, "how long load is offered")
	f.Int("concurrency", def.Concurrency, "load generator requests in flight at most")
	f.Int("size", def.MessageSize, "message size in bytes")
	f.Int64("topic-max-messages", def.TopicMaxMessages, "the topic's message bound")
	f.Duration("duplicate-window", def.DuplicateWindow, "the topic's duplicate window (accepted keys are remembered this long)")
	f.String("gateway", "", "load this gateway (http://host:port) instead of an in-process stack")
	f.StringVar(&out, "out", "bench-results", "directory for the JSON and markdown reports")
	return cmd
}
