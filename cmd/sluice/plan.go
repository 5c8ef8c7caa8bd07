package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicebus/sluice/cmd/sluice/internal/bench/capacity"
	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/internal/bytesize"
)

func newPlanCmd() *cobra.Command {
	var (
		sizeText, calibration, output string
		rate                          float64
		p99                           time.Duration
		replicas, cores               int
		batch                         bool
		families                      []string
	)
	cmd := &cobra.Command{
		Use:   "plan --rate N",
		Short: "Capacity blueprint: gateways, brokers and workers per family for a planned rate, with N-1 headroom",
		Long: `Plan a cluster for --rate messages/s of --size bytes (split evenly over the
configuration's topics) with a publish p99 (ingest to 202) of --p99: how many
gateways, brokers and workers of each family to run so that the rate is still
carried with any one node of a kind lost, the utilization the p99 allows, the
memory and disk the configured bounds imply, and the alarms.planned_rate to set.

The figures come from a calibration (--calibration, JSON; without one, the
built-in figures measured with make bench on a 2-core machine); --family
name=rate gives one worker's msg/s for a family (repeatable). Nothing is
contacted: this is arithmetic. See README.md, "Capacity plan".

Config keys used: topics.* (max_messages, max_bytes, replicas, families.*.credit),
gateway.max_in_flight, max_body_bytes_in_flight, publish_window, commit_batch_max.` + configHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, got %q", output)
			}
			size, err := bytesize.Parse(sizeText)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			perFamily, err := parseFamilyRates(families)
			if err != nil {
				return err
			}
			cal := capacity.Default()
			if calibration != "" {
				if cal, err = capacity.LoadCalibration(calibration); err != nil {
					return err
				}
			}
			cfg, err := load(cmd, config.RoleGateway, nil)
			if err != nil {
				return err
			}
			in := planInput(cfg)
			in.Rate, in.Size, in.P99, in.Replicas, in.Cores, in.Batch, in.Families =
				rate, int64(size), p99, replicas, cores, batch, perFamily
			bp, err := capacity.Build(in, cal)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(bp)
			}
			return bp.WriteText(out)
		},
	}
	f := cmd.Flags()
	f.Float64Var(&rate, "rate", 0, "planned ingest, messages/s over all topics (required)")
	f.StringVar(&sizeText, "size", "1KiB", "message payload size (e.g. 128B, 1KiB)")
	f.DurationVar(&p99, "p99", 50*time.Millisecond, "publish latency target, ingest to 202")
	f.IntVar(&replicas, "replicas", 0, "replicas of every topic (0: each topic's own)")
	f.IntVar(&cores, "cores", 2, "cores per node")
	f.BoolVar(&batch, "batch", false, "clients publish NDJSON batches (the gateway's batch rate)")
	f.StringVar(&calibration, "calibration", "", "calibration file (JSON, from sluice bench calibrate); default: built-in figures")
	f.StringArrayVar(&families, "family", nil, "one worker's msg/s for a family: name=rate (repeatable)")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	_ = cmd.MarkFlagRequired("rate")
	return cmd
}

// planInput takes the topology and the gateway bounds from cfg.
func planInput(cfg config.Config) capacity.Input {
	in := capacity.Input{Gateway: capacity.GatewayBounds{
		MaxInFlight:          cfg.Gateway.MaxInFlight,
		MaxBodyBytesInFlight: int64(cfg.Gateway.MaxBodyBytesInFlight),
		PublishWindow:        cfg.Gateway.PublishWindow,
		CommitBatchMax:       cfg.Gateway.CommitBatchMax,
	}}
	for name, t := range cfg.Topics {
		pt := capacity.Topic{Name: name, MaxMessages: t.MaxMessages, MaxBytes: int64(t.MaxBytes), Replicas: t.Replicas}
		for fname, fam := range t.Families {
			pt.Families = append(pt.Families, capacity.Family{Name: fname, Credit: fam.Credit})
		}
		in.Topics = append(in.Topics, pt)
	}
	return in
}

// parseFamilyRates reads --family name=rate values.
func parseFamilyRates(vals []string) (map[string]float64, error) {
	m := map[string]float64{}
	for _, v := range vals {
		name, rate, ok := strings.Cut(v, "=")
		r, err := strconv.ParseFloat(rate, 64)
		if !ok || name == "" || err != nil || r <= 0 {
			return nil, fmt.Errorf("--family %q: want name=rate with a positive rate (msg/s of one worker)", v)
		}
		m[name] = r
	}
	return m, nil
}
