package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/cmd/sluice/internal/bench/perf"
	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/cmd/sluice/internal/demo"
)

func newCalibrateCmd() *cobra.Command {
	var out string
	var messages int
	c := defaultCompare(1)
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
			cleanup, err := prepareCompare(cmd, &c)
			if err != nil {
				return err
			}
			defer cleanup()
			spec := perf.WorkerSpec{Handler: demo.Handler(n.cfg.Demo.Delay, n.cfg.Demo.FailureRate, zap.NewNop()),
				Credit: n.cfg.Demo.Credit, Messages: messages, Size: c.Sizes[0]}
			c.Worker = &spec
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
	compareFlags(f, &c)
	f.IntVar(&messages, "messages", 2000, "messages the worker handles")
	f.StringVar(&out, "out", "calibration.json", "calibration file to write")
	return cmd
}
