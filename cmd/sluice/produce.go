package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// produceReport is what `sluice produce` prints when it ends.
type produceReport struct {
	Topic      string  `json:"topic"`
	Sent       int     `json:"sent"`
	Acked      int     `json:"acked"`
	Duplicates int     `json:"duplicates"`
	Unknown    int     `json:"unknown"`
	Failed     int     `json:"failed"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"per_second"`
}

func newProduceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "produce --topic T",
		Short: "Publish messages through the gateways with the SDK producer (the demo's load generator)",
		Long: `Publish --count messages (or for --duration) of --size bytes to a topic
through the gateways in producer.gateways, at most --rate per second from
--concurrency publishers, with the SDK producer and the retry strategy of
producer.retry (attempts, backoff, deadline, budget): 429 and 503 are retried
with the same idempotency key, honouring Retry-After. Prints one JSON report
at the end: sent, acked, duplicates, unknown (the outcome of a message that
may be stored), failed; exits 1 when any message failed or is unknown.

Config keys used: log.*, producer.* (gateways, retry.*, api_key: better from
$SLUICE_PRODUCER_API_KEY than in a file).` + configHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := setup(cmd, config.RoleProducer, map[string]string{"gateway": "producer.gateways"}, false)
			if err != nil {
				return err
			}
			defer n.sync()
			f := cmd.Flags()
			topic, _ := f.GetString("topic")
			count, _ := f.GetInt("count")
			duration, _ := f.GetDuration("duration")
			perSec, _ := f.GetFloat64("rate")
			size, _ := f.GetInt("size")
			conc, _ := f.GetInt("concurrency")
			prefix, _ := f.GetString("id-prefix")
			if count < 0 || duration < 0 || perSec < 0 || size < 1 || conc < 1 {
				return errors.New("--count, --duration and --rate must not be negative; --size and --concurrency at least 1")
			}
			if count == 0 && duration == 0 {
				return errors.New("give --count or --duration (or both)")
			}
			if prefix == "" {
				prefix = fmt.Sprintf("produce-%d-", time.Now().UnixNano())
			}
			opts := []sluice.ProducerOption{sluice.WithRetryPolicy(n.cfg.Producer.Retry), sluice.WithProducerLogger(n.log.Named("producer"))}
			if tc := n.cfg.Producer.TLS; tc.Enabled() {
				hc, err := tlsHTTPClient(tc, 30*time.Second, conc)
				if err != nil {
					return fmt.Errorf("producer.tls: %w", err)
				}
				opts = append(opts, sluice.WithHTTPClient(hc))
			}
			if n.cfg.Producer.APIKey != "" {
				opts = append(opts, sluice.WithAPIKey(n.cfg.Producer.APIKey))
			}
			p, err := sluice.NewProducer(n.cfg.Producer.Gateways, opts...)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			rep := produce(ctx, p, topic, prefix, count, size, conc, perSec, n.log)
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetEscapeHTML(false) // errors quote <key> as is
			_ = enc.Encode(rep)
			if rep.Failed > 0 || rep.Unknown > 0 {
				return fmt.Errorf("of %d messages, %d failed and %d have an unknown outcome (may be stored; publish again with the same --id-prefix)",
					rep.Sent, rep.Failed, rep.Unknown)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("topic", "", "topic to publish to (required)")
	f.StringSlice("gateway", nil, "gateway URLs (key producer.gateways)")
	f.Int("count", 0, "messages to publish (0: until --duration ends)")
	f.Duration("duration", 0, "stop after this long (0: after --count)")
	f.Float64("rate", 100, "messages per second at most, all publishers together (0: unpaced)")
	f.Int("size", 128, "payload bytes")
	f.Int("concurrency", 4, "publishers at once")
	f.String("id-prefix", "", "idempotency keys are this prefix and a number (default: unique per run)")
	_ = cmd.MarkFlagRequired("topic")
	return cmd
}

// produce runs conc publishers until count messages are sent or ctx ends.
// A message is counted once, by its final outcome.
func produce(ctx context.Context, p *sluice.Producer, topic, prefix string, count, size, conc int, perSec float64, log *zap.Logger) produceReport {
	lim := rate.NewLimiter(rate.Inf, 1)
	if perSec > 0 {
		lim = rate.NewLimiter(rate.Limit(perSec), 1)
	}
	payload := []byte(strings.Repeat("x", size))
	var mu sync.Mutex
	rep := produceReport{Topic: topic}
	next := 0
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				if lim.Wait(ctx) != nil {
					return
				}
				mu.Lock()
				if count > 0 && next >= count {
					mu.Unlock()
					return
				}
				id := fmt.Sprintf("%s%d", prefix, next)
				next++
				rep.Sent++
				mu.Unlock()
				// A message started is finished even when the run's time is
				// up: its outcome is reported, not abandoned.
				rc, err := p.Publish(context.WithoutCancel(ctx), topic, payload, sluice.WithID(id))
				mu.Lock()
				switch {
				case err == nil && rc.Duplicate:
					rep.Acked++
					rep.Duplicates++
				case err == nil:
					rep.Acked++
				case errors.Is(err, sluice.ErrOutcomeUnknown):
					rep.Unknown++
					log.Warn("outcome unknown", zap.String("id", id), zap.Error(err))
				default:
					rep.Failed++
					log.Warn("publish failed", zap.String("id", id), zap.Error(err))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	if rep.Seconds > 0 {
		rep.PerSecond = float64(rep.Acked) / rep.Seconds
	}
	return rep
}
