package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluicebus/sluice/cmd/sluice/internal/bench/overload"
	"github.com/sluicebus/sluice/cmd/sluice/internal/bench/perf"
)

func newBenchCmd() *cobra.Command {
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks and load tools",
	}
	bench.AddCommand(newOverloadCmd(), newCompareCmd(), newCalibrateCmd(), newLoadCmd(), newFloorCmd())
	return bench
}

func newCompareCmd() *cobra.Command {
	var out string
	c := defaultCompare(3)
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "Side by side: HTTP floor, raw JetStream, Sluice single and batch ingest, end to end (make bench)",
		Long: `Start the nodes of each topology as processes of this binary (single: one
broker with an R1 topic; r3: three brokers with an R3 topic; one gateway and a
bare net/http "floor" server either way), then run, on the same stream, one
after the other, in --rounds rounds:

  a  the HTTP floor: a handler that reads the body and answers 202
  b1 raw JetStream: one durable publish per message, --concurrency in flight
  b2 raw JetStream: atomic batches of --batch messages, --batch-concurrency in flight
  c  Sluice: one message per HTTP request, --concurrency clients
  d  Sluice: NDJSON batches of --batch messages, --batch-concurrency clients
  e  end to end at half of c's rate, open loop: ingest to an SDK worker's handler

for each --size. It reports msg/s, MB/s, latency percentiles, CPU seconds per
1,000 messages of every process (loadgen is this one), and issue 6's targets as
medians of per-round ratios; the tables and JSON go under --out. Every message
is fsynced before its ack (the brokers' default); the stream is purged between
runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cleanup, err := prepareCompare(cmd, &c)
			if err != nil {
				return err
			}
			defer cleanup()
			if c.Profile != "" {
				if err := os.MkdirAll(c.Profile, 0o755); err != nil {
					return err
				}
			}
			start := time.Now()
			rows, err := c.Run(cmd.Context())
			if len(rows) == 0 {
				return err
			}
			md := perf.Markdown(c, rows) + fmt.Sprintf("\nTotal run: %s.\n", time.Since(start).Round(time.Second))
			fmt.Fprint(cmd.OutOrStdout(), md)
			if werr := writeReport(out, "compare", md, map[string]any{"config": c, "rows": rows, "targets": perf.Targets(rows)}); werr != nil {
				return errors.Join(err, werr)
			}
			return err
		},
	}
	f := cmd.Flags()
	compareFlags(f, &c)
	f.StringVar(&out, "out", "bench-results", "directory for the markdown and JSON reports")
	f.StringVar(&c.Profile, "profile", "", "directory for the gateway's CPU and allocation profiles (first round of c and d)")
	return cmd
}

// defaultCompare is the side-by-side run of `bench compare` and `bench
// calibrate`, with rounds rounds.
func defaultCompare(rounds int) perf.Compare {
	return perf.Compare{Topologies: []string{"single", "r3"}, Sizes: []int{128, 1024}, Concurrency: 256,
		BatchConcurrency: 8, Batch: 100, Duration: 3 * time.Second, Warmup: 500 * time.Millisecond, Rounds: rounds, Proto: "http1"}
}

// compareFlags binds the run's shape to flags.
func compareFlags(f *pflag.FlagSet, c *perf.Compare) {
	f.StringSliceVar(&c.Topologies, "topology", c.Topologies, "topologies: single, r3 (a calibration's worker runs on the first)")
	f.IntSliceVar(&c.Sizes, "size", c.Sizes, "payload sizes in bytes")
	f.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "single-message HTTP clients and raw per-message publishers")
	f.IntVar(&c.BatchConcurrency, "batch-concurrency", c.BatchConcurrency, "NDJSON clients and raw atomic-batch publishers")
	f.IntVar(&c.Batch, "batch", c.Batch, "messages per NDJSON request and per raw atomic batch")
	f.DurationVar(&c.Duration, "duration", c.Duration, "measured time per case and round")
	f.DurationVar(&c.Warmup, "warmup", c.Warmup, "unmeasured load before each case")
	f.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds (ratios are taken within a round, then their median)")
	f.StringVar(&c.Proto, "proto", c.Proto, "http1 (keep-alive) or h2c")
}

// prepareCompare points c at this binary, a temporary directory for the
// nodes' configs, stores and logs (removed by cleanup) and cmd's stderr
// for progress.
func prepareCompare(cmd *cobra.Command, c *perf.Compare) (cleanup func(), err error) {
	if c.Bin, err = os.Executable(); err != nil {
		return nil, err
	}
	if c.Dir, err = os.MkdirTemp("", "sluice-bench-"); err != nil {
		return nil, err
	}
	w := cmd.ErrOrStderr()
	c.Logf = func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	dir := c.Dir
	return func() { os.RemoveAll(dir) }, nil
}

func newLoadCmd() *cobra.Command {
	var l perf.Load
	var topic string
	cmd := &cobra.Command{
		Use:   "load --url http://127.0.0.1:8080",
		Short: "Load a gateway: single messages or NDJSON batches, closed or open loop; prints progress and a summary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			route := "/v1/topics/" + topic + "/messages"
			if l.Batch > 0 {
				route += ":batch"
			}
			l.URL = strings.TrimRight(l.URL, "/") + route
			w := cmd.ErrOrStderr()
			l.Progress = func(el time.Duration, n int64) { fmt.Fprintf(w, "%5.1f s  %d messages\n", el.Seconds(), n) }
			cpu := perf.SelfCPU()
			res, err := perf.RunHTTP(cmd.Context(), l)
			if err != nil {
				return err
			}
			cpu = perf.SelfCPU() - cpu
			rate := float64(res.Msgs) / res.Elapsed.Seconds()
			fmt.Fprintf(cmd.OutOrStdout(), "messages %d in %.1f s: %.0f msg/s, %.1f MB/s; requests %d, failed %d, late %d, status %v\n"+
				"latency p50 %v p99 %v p99.9 %v; load generator CPU %.3f s per 1,000 messages\n",
				res.Msgs, res.Elapsed.Seconds(), rate, rate*float64(l.Size)/1e6, res.Requests, res.Failed, res.Late, res.Status,
				res.Latency.Quantile(0.5), res.Latency.Quantile(0.99), res.Latency.Quantile(0.999), cpu.Seconds()/float64(max(res.Msgs, 1))*1000)
			if res.Failed > 0 {
				return fmt.Errorf("load: %d failed", res.Failed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&l.URL, "url", "http://127.0.0.1:8080", "gateway")
	f.StringVar(&topic, "topic", "orders", "topic")
	f.StringVar(&l.Proto, "proto", "http1", "http1 (keep-alive) or h2c")
	f.IntVar(&l.Concurrency, "concurrency", 64, "clients (requests in flight at most)")
	f.DurationVar(&l.Duration, "duration", 10*time.Second, "how long")
	f.Float64Var(&l.Rate, "rate", 0, "requests per second, open loop (0: closed loop, as fast as answers come)")
	f.IntVar(&l.Size, "size", 128, "payload bytes per message")
	f.IntVar(&l.Batch, "batch", 0, "messages per NDJSON batch request (0: one message per request)")
	return cmd
}

func newFloorCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:    "floor --listen 127.0.0.1:9090",
		Short:  "Serve the HTTP floor: a bare handler that reads the body and answers 202 (for bench compare)",
		Args:   cobra.NoArgs,
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return perf.ServeFloor(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9090", "address")
	return cmd
}

// writeReport writes name.md and name.json under dir.
func writeReport(dir, name, md string, v any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(dir, name)
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return errors.Join(os.WriteFile(base+".json", js, 0o644), os.WriteFile(base+".md", []byte(md), 0o644))
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
			name := fmt.Sprintf("overload-%gx", cfg.Factor)
			if err := writeReport(out, name, md, rep); err != nil {
				return err
			}
			base := filepath.Join(out, name)
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
