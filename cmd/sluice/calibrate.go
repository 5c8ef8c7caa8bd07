package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/config"
	"github.com/sluicebus/sluice/internal/demo"
	"github.com/sluicebus/sluice/internal/perf"
)

func newCalibrateCmd() *cobra.Command {
	var out string
	var messages int
	c := perf.Compare{Topologies: []string{"single", "r3"}, Sizes: []int{128, 1024}, Concurrency: 256,
		BatchConcurrency: 8, Batch: 100, Duration: 3 * time.Second, Warmup: 500 * time.Millisecond, Rounds: 1, Proto: "http1"}
	cmd := &cobra.Command{
		Use:   "calibrate",
		Short: "Measure this machine for `sluice plan`: gateway and broker msg/s per core, latency, a worker handler's msg/s",
		Long: `Run the side-by-side comparison of ` + "`sluice bench compare`" + ` (fewer rounds by
default) and a worker measurement, and write the calibration ` + "`sluice plan --calibration`" + ` reads:

  gateway_per_core, gateway_batch_per_core  msg/s per gateway CPU second (cases c, d)
  broker                                    broker CPU per message over all replicas, per
                                            replica count and size (case c)
  latency                                   publish and end-to-end p99 at half the max rate (e)
  fsync_per_second                          one broker, one fsync per message (b1, single)
  worker                                    one worker running the demo handler (demo.delay,
                                            demo.failure_rate) with demo.credit, over --messages

The worker's handler is the demo's: set demo.delay to your handler's time
(or measure your own handler with pkg/sluice and put its rate under families).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := setup(cmd, config.RoleWorker, nil, false)
			if err != nil {
				return err
			}
			defer n.sync()
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "sluice-calibrate-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			c.Bin, c.Dir = bin, dir
			spec := perf.WorkerSpec{Handler: demo.Handler(n.cfg.Demo.Delay, n.cfg.Demo.FailureRate, zap.NewNop()),
				Credit: n.cfg.Demo.Credit, Messages: messages, Size: c.Sizes[0]}
			c.Worker = &spec
			w := cmd.ErrOrStderr()
			c.Logf = func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
			rows, err := c.Run(cmd.Context())
			if err != nil {
				return err
			}
			cal, err := perf.Calibration(rows, spec)
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(cal, "", "  ")
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\nwritten to %s; use it with: sluice plan --calibration %s ...\n", b, out, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&c.Topologies, "topology", c.Topologies, "topologies: single, r3 (the worker is measured on the first)")
	f.IntSliceVar(&c.Sizes, "size", c.Sizes, "payload sizes in bytes")
	f.DurationVar(&c.Duration, "duration", c.Duration, "measured time per case and round")
	f.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds (medians are kept)")
	f.IntVar(&messages, "messages", 2000, "messages the worker handles")
	f.StringVar(&out, "out", "calibration.json", "calibration file to write")
	return cmd
}
