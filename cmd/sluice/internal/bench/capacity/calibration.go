package capacity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
)

// Calibration is what the blueprint's arithmetic is made of: figures
// measured on one machine (`make bench`, or `sluice bench calibrate`).
type Calibration struct {
	// Source says where and when the figures were measured.
	Source string `json:"source"`
	// GatewayPerCore is single-message ingest (one request per message),
	// msg/s per gateway core; GatewayBatchPerCore the same with NDJSON
	// batches. Neither depends on the size in this model.
	GatewayPerCore      float64 `json:"gateway_per_core"`
	GatewayBatchPerCore float64 `json:"gateway_batch_per_core"`
	// Broker is broker CPU per message summed over all replicas, measured
	// per replica count and size; the plan fits a + b·size per replica
	// count and interpolates between replica counts.
	Broker []BrokerPoint `json:"broker"`
	// Latency is the measured publish (ingest to 202) and end-to-end p99
	// per replica count, at half the maximum rate.
	Latency []LatencyPoint `json:"latency"`
	// FsyncPerSecond is one broker's rate with one fsync per message (R1):
	// the disk's limit without group commit.
	FsyncPerSecond float64 `json:"fsync_per_second"`
	// Worker is the default worker: its rate (msg/s of one worker) and its
	// credit; its handler time is credit/rate (Little's law at full credit).
	Worker Worker `json:"worker"`
	// Families gives the rate (msg/s of one worker) of named families.
	Families map[string]float64 `json:"families,omitempty"`
}

// BrokerPoint is one broker CPU measurement.
type BrokerPoint struct {
	Replicas  int     `json:"replicas"`
	SizeBytes int64   `json:"size_bytes"`
	CPUMillis float64 `json:"cpu_ms"` // per message, all replicas together
}

// LatencyPoint is one latency measurement.
type LatencyPoint struct {
	Replicas          int     `json:"replicas"`
	PublishP99Millis  float64 `json:"publish_p99_ms"`
	EndToEndP99Millis float64 `json:"end_to_end_p99_ms,omitempty"`
}

// Worker is a worker's measured rate and the credit it ran with.
type Worker struct {
	Rate   float64 `json:"rate"`
	Credit int     `json:"credit"`
}

// Default is the calibration measured with `make bench` on 2026-11-22 on this
// project's 2-core machine, nats-server 2.15.2:
//
//   - gateway single-message ingest 18,000 msg/s per core (gateway CPU
//     0.055 s per 1,000 messages); NDJSON batch ingest 60,000 msg/s per core;
//   - broker CPU per message over all replicas: R1 0.045 ms (22,000 msg/s per
//     core; taken as measured at 128 B), R3 0.066 ms at 128 B and 0.097 ms at
//     1 KiB (~15,000 and ~10,300 msg/s per core);
//   - durable publish p99 (ingest to 202) at half the maximum rate: R1 and R3
//     ~30 ms; end-to-end p99 R3 ~70 ms;
//   - one demo worker (handler 10 ms, credit 16): 1,600 msg/s;
//   - one fsync per message: ~5,000 msg/s per broker (R1); group commit
//     stores many messages per fsync, so the disk is not the limit.
func Default() Calibration {
	return Calibration{
		Source:              "make bench 2026-11-22, 2 cores, nats-server 2.15.2",
		GatewayPerCore:      18_000,
		GatewayBatchPerCore: 60_000,
		Broker: []BrokerPoint{
			{Replicas: 1, SizeBytes: 128, CPUMillis: 0.045},
			{Replicas: 3, SizeBytes: 128, CPUMillis: 0.066},
			{Replicas: 3, SizeBytes: 1024, CPUMillis: 0.097},
		},
		Latency: []LatencyPoint{
			{Replicas: 1, PublishP99Millis: 30},
			{Replicas: 3, PublishP99Millis: 30, EndToEndP99Millis: 70},
		},
		FsyncPerSecond: 5_000,
		Worker:         Worker{Rate: 1_600, Credit: 16},
	}
}

// LoadCalibration reads a calibration file (JSON). Every figure must be in
// the file: a partial one is refused rather than mixed with another
// machine's defaults.
func LoadCalibration(path string) (Calibration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Calibration{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Calibration
	if err := dec.Decode(&c); err != nil {
		return Calibration{}, fmt.Errorf("calibration %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Calibration{}, fmt.Errorf("calibration %s: %w", path, err)
	}
	return c, nil
}

// Validate checks that every figure the plan uses is there and positive.
func (c Calibration) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.GatewayPerCore <= 0 {
		bad("gateway_per_core must be positive")
	}
	if c.GatewayBatchPerCore <= 0 {
		bad("gateway_batch_per_core must be positive")
	}
	if len(c.Broker) == 0 {
		bad("broker needs at least one point")
	}
	for i, p := range c.Broker {
		if p.Replicas < 1 || p.SizeBytes < 1 || p.CPUMillis <= 0 {
			bad("broker[%d]: replicas and size_bytes must be at least 1, cpu_ms positive", i)
		}
	}
	if len(c.Latency) == 0 {
		bad("latency needs at least one point")
	}
	for i, p := range c.Latency {
		if p.Replicas < 1 || p.PublishP99Millis <= 0 || p.EndToEndP99Millis < 0 {
			bad("latency[%d]: replicas must be at least 1, publish_p99_ms positive", i)
		}
	}
	if c.FsyncPerSecond <= 0 {
		bad("fsync_per_second must be positive")
	}
	if c.Worker.Rate <= 0 || c.Worker.Credit < 1 {
		bad("worker: rate must be positive and credit at least 1")
	}
	for name, r := range c.Families {
		if r <= 0 {
			bad("families.%s must be positive", name)
		}
	}
	return errors.Join(errs...)
}

// BrokerCPU is the broker CPU one message of size bytes costs, summed over
// its replicas, in seconds. Per replica count it is a line a + b·size fitted
// to the points (least squares); a replica count measured at one size only
// takes its slope from the nearest fitted count, scaled by the replica ratio
// (every replica stores the bytes). Between measured replica counts it is
// interpolated, beyond them extrapolated.
func (c Calibration) BrokerCPU(replicas int, size int64) (float64, error) {
	type line struct {
		r         int
		a, b      float64
		x0, y0    float64
		haveSlope bool
		xs, ys    []float64
	}
	var lines []*line
	byR := map[int]*line{}
	for _, p := range c.Broker {
		l := byR[p.Replicas]
		if l == nil {
			l = &line{r: p.Replicas}
			byR[p.Replicas] = l
			lines = append(lines, l)
		}
		l.xs = append(l.xs, float64(p.SizeBytes))
		l.ys = append(l.ys, p.CPUMillis)
	}
	if len(lines) == 0 {
		return 0, errors.New("calibration has no broker figures")
	}
	slices.SortFunc(lines, func(x, y *line) int { return x.r - y.r })
	for _, l := range lines {
		l.x0, l.y0 = mean(l.xs), mean(l.ys)
		var sxy, sxx float64
		for i := range l.xs {
			sxy += (l.xs[i] - l.x0) * (l.ys[i] - l.y0)
			sxx += (l.xs[i] - l.x0) * (l.xs[i] - l.x0)
		}
		if sxx > 0 {
			l.b, l.haveSlope = sxy/sxx, true
		}
	}
	for _, l := range lines {
		if l.haveSlope {
			continue
		}
		var near *line
		for _, m := range lines {
			if m.haveSlope && (near == nil || abs(m.r-l.r) < abs(near.r-l.r)) {
				near = m
			}
		}
		if near != nil {
			l.b = near.b * float64(l.r) / float64(near.r)
		}
	}
	at := func(l *line) float64 { return l.y0 + l.b*(float64(size)-l.x0) }
	var ms float64
	i, found := slices.BinarySearchFunc(lines, replicas, func(l *line, r int) int { return l.r - r })
	switch {
	case found:
		ms = at(lines[i])
	case len(lines) == 1:
		ms = at(lines[0]) * float64(replicas) / float64(lines[0].r)
	default:
		// Interpolate between lines[i-1] and lines[i], or extrapolate from
		// the two nearest on the one side there is.
		lo, hi := i-1, i
		if lo < 0 {
			lo, hi = 0, 1
		} else if hi >= len(lines) {
			lo, hi = len(lines)-2, len(lines)-1
		}
		y1, y2 := at(lines[lo]), at(lines[hi])
		ms = y1 + (y2-y1)*float64(replicas-lines[lo].r)/float64(lines[hi].r-lines[lo].r)
	}
	if ms <= 0 {
		return 0, fmt.Errorf("calibration gives no positive broker cost for R%d at %d B", replicas, size)
	}
	return ms / 1000, nil
}

// latency is the measured point for replicas: the same count, else the
// nearest higher one (more replicas wait for more acks: a lower count's p99
// would promise too little), else the highest.
func (c Calibration) latency(replicas int) LatencyPoint {
	pts := slices.Clone(c.Latency)
	slices.SortFunc(pts, func(x, y LatencyPoint) int { return x.Replicas - y.Replicas })
	for _, p := range pts {
		if p.Replicas >= replicas {
			return p
		}
	}
	return pts[len(pts)-1]
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
