package perf

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/cmd/sluice/internal/bench/capacity"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// CaseWorker is the worker measurement of a calibration.
const CaseWorker = "w worker handler"

// WorkerSpec is the handler `sluice bench calibrate` measures: one SDK
// worker with Credit messages at once, over Messages stored messages.
type WorkerSpec struct {
	Handler  sluice.Handler
	Credit   int
	Messages int
	Size     int
}

// measureWorker stores spec.Messages messages on the bench topic, then
// times one worker of the bench family handling all of them.
func measureWorker(ctx context.Context, s *stack, spec WorkerSpec) (Row, error) {
	if err := purge(ctx, s.js); err != nil {
		return Row{}, err
	}
	payload := make([]byte, spec.Size)
	var futs []jetstream.PubAckFuture
	for i := range spec.Messages {
		f, err := s.js.PublishAsync(sluice.Subject(Topic), payload, jetstream.WithMsgID(fmt.Sprintf("calibrate-%d-%d", time.Now().UnixNano(), i)))
		if err != nil {
			return Row{}, err
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return Row{}, err
		case <-ctx.Done():
			return Row{}, ctx.Err()
		}
	}
	var n atomic.Int64
	h := sluice.HandlerFunc(func(ctx context.Context, m *sluice.Message) error {
		err := spec.Handler.Handle(ctx, m)
		n.Add(1)
		return err
	})
	w, err := sluice.NewWorker(s.nc, Topic, Family, h, sluice.WithCredit(spec.Credit))
	if err != nil {
		return Row{}, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	before := SelfCPU()
	start := time.Now()
	go func() { done <- w.Run(wctx) }()
	deadline := start.Add(2 * time.Minute)
	for n.Load() < int64(spec.Messages) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	el := time.Since(start)
	cpu := SelfCPU() - before
	cancel()
	<-done
	handled := n.Load()
	if handled < int64(spec.Messages) {
		return Row{}, fmt.Errorf("worker handled %d of %d messages in %v", handled, spec.Messages, el)
	}
	row := Row{Topology: s.topology, Size: spec.Size, Case: CaseWorker, Round: 1, Concurrency: spec.Credit,
		Msgs: handled, Seconds: el.Seconds(), MsgsPerSec: float64(handled) / el.Seconds(),
		CPUPer1k: map[string]float64{"loadgen": cpu.Seconds() / float64(handled) * 1000}}
	return row, nil
}

// Calibration derives the plan's calibration from a comparison's rows:
// gateway msg/s per core (c and d), broker CPU per message per replica
// count and size (c), the publish and end-to-end p99 (e), one broker's
// fsync-bound rate (b1, single node) and the worker's rate.
func Calibration(rows []Row, spec WorkerSpec) (capacity.Calibration, error) {
	host, _ := os.Hostname()
	cal := capacity.Calibration{
		Source: fmt.Sprintf("sluice bench calibrate on %s, %d cores, %s", host, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02")),
	}
	perCore := func(cs string) float64 {
		var v []float64
		for _, r := range rows {
			if r.Case == cs && r.CPUPer1k["gateway"] > 0 {
				v = append(v, 1000/r.CPUPer1k["gateway"])
			}
		}
		return median(v)
	}
	cal.GatewayPerCore, cal.GatewayBatchPerCore = perCore(CaseSingle), perCore(CaseBatch)
	type key struct{ replicas, size int }
	brokerCPU := map[key][]float64{}
	lat := map[int][2][]float64{}
	for _, r := range rows {
		replicas := 1
		if r.Topology == "r3" {
			replicas = 3
		}
		switch r.Case {
		case CaseSingle:
			sum := 0.0
			for name, v := range r.CPUPer1k {
				if strings.HasPrefix(name, "broker") {
					sum += v // seconds per 1,000 messages = ms per message
				}
			}
			k := key{replicas, r.Size}
			brokerCPU[k] = append(brokerCPU[k], sum)
		case CaseE2E:
			l := lat[replicas]
			l[0], l[1] = append(l[0], r.P99ms), append(l[1], r.E2EP99ms)
			lat[replicas] = l
		case CaseRaw:
			if replicas == 1 {
				cal.FsyncPerSecond = max(cal.FsyncPerSecond, r.MsgsPerSec)
			}
		case CaseWorker:
			cal.Worker = capacity.Worker{Rate: r.MsgsPerSec, Credit: spec.Credit}
		}
	}
	for k, v := range brokerCPU {
		cal.Broker = append(cal.Broker, capacity.BrokerPoint{Replicas: k.replicas, SizeBytes: int64(k.size), CPUMillis: median(v)})
	}
	for replicas, l := range lat {
		cal.Latency = append(cal.Latency, capacity.LatencyPoint{Replicas: replicas, PublishP99Millis: median(l[0]), EndToEndP99Millis: median(l[1])})
	}
	if cal.FsyncPerSecond == 0 {
		// Measured on a single broker only (b1): keep the built-in figure.
		cal.FsyncPerSecond = capacity.Default().FsyncPerSecond
		cal.Source += "; fsync_per_second built in (no single-node run)"
	}
	sortCalibration(&cal)
	if err := cal.Validate(); err != nil {
		return cal, fmt.Errorf("calibration incomplete: %w", err)
	}
	return cal, nil
}

// sortCalibration orders the points (maps iterate at random) so the file
// is stable.
func sortCalibration(c *capacity.Calibration) {
	slices.SortFunc(c.Broker, func(a, b capacity.BrokerPoint) int {
		if a.Replicas != b.Replicas {
			return a.Replicas - b.Replicas
		}
		return int(a.SizeBytes - b.SizeBytes)
	})
	slices.SortFunc(c.Latency, func(a, b capacity.LatencyPoint) int { return a.Replicas - b.Replicas })
}
