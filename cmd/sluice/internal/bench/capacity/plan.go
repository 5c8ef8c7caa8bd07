// Package capacity is Sluice's capacity blueprint (`sluice plan`): from a planned
// ingest rate, a message size, a publish-latency target and the topology's
// bounds, how many gateways, brokers and workers of each family to run, each
// with one node of headroom, and the memory and disk the bounds imply. It is
// arithmetic over measured figures (a Calibration); its only I/O is reading
// a calibration file.
package capacity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicebus/sluice/internal/bytesize"
)

// RhoMax is the highest utilization a node is planned for, whatever the
// latency target: above it, queues (and p99) grow steeply with any burst.
const RhoMax = 0.8

// RhoMin is the lowest utilization target worth planning for; a p99 that
// asks for less is below what the service times allow.
const RhoMin = 0.05

// tailFactor is ln(100): in an M/M/1 queue the time in system is exponential
// with mean S/(1-rho), so its p99 is ln(100)·S/(1-rho). Keeping that under
// the target gives rho ≤ 1 − ln(100)·S/p99.
var tailFactor = math.Log(100)

// Calibration is what the blueprint's arithmetic is made of: figures
// measured on one machine (`make bench`, later `sluice bench calibrate`).
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
// nearest lower one, else the lowest.
func (c Calibration) latency(replicas int) LatencyPoint {
	pts := slices.Clone(c.Latency)
	slices.SortFunc(pts, func(x, y LatencyPoint) int { return x.Replicas - y.Replicas })
	best := pts[0]
	for _, p := range pts {
		if p.Replicas <= replicas {
			best = p
		}
	}
	return best
}

// Input is what a blueprint is planned for.
type Input struct {
	// Rate is the total ingest, msg/s, split evenly over the topics.
	Rate float64
	// Size is the planned message payload size in bytes.
	Size int64
	// P99 is the publish latency target (ingest to 202).
	P99 time.Duration
	// Replicas, when positive, is used for every topic instead of its own.
	Replicas int
	// Cores per node (gateways, brokers and workers alike).
	Cores int
	// Batch: clients publish NDJSON batches rather than one message per request.
	Batch bool
	// Families gives the rate (msg/s of one worker) of named families; it
	// wins over the calibration's.
	Families map[string]float64
	Topics   []Topic
	Gateway  GatewayBounds
}

// Topic is a topic's bounds and families, from the configuration.
type Topic struct {
	Name        string
	MaxMessages int64
	MaxBytes    int64
	Replicas    int
	Families    []Family
}

// Family is a family's name and credit (max ack pending).
type Family struct {
	Name   string
	Credit int
}

// GatewayBounds are the gateway's configured bounds.
type GatewayBounds struct {
	MaxInFlight          int
	MaxBodyBytesInFlight int64
	PublishWindow        int
	CommitBatchMax       int
}

// Blueprint is the plan: nodes of each kind, what they hold, and why.
type Blueprint struct {
	Rate        float64 `json:"rate"`
	SizeBytes   int64   `json:"size_bytes"`
	P99Millis   float64 `json:"p99_ms"`
	Cores       int     `json:"cores"`
	Batch       bool    `json:"batch"`
	Calibration string  `json:"calibration"`
	// ServiceMicros is the longest per-message service time on the publish
	// path (a gateway core, or one replica's share of the broker cost).
	ServiceMicros float64 `json:"service_time_us"`
	// Utilization is the target for gateways and brokers, from the p99;
	// WorkerUtilization the one for workers (not on the publish path).
	Utilization       float64 `json:"utilization"`
	WorkerUtilization float64 `json:"worker_utilization"`
	// PublishP99Millis and EndToEndP99Millis are the calibration's measured
	// p99s for the highest replica count planned (0: not measured).
	PublishP99Millis  float64       `json:"measured_publish_p99_ms"`
	EndToEndP99Millis float64       `json:"measured_end_to_end_p99_ms,omitempty"`
	Gateways          Nodes         `json:"gateways"`
	Brokers           Nodes         `json:"brokers"`
	Workers           []FamilyNodes `json:"workers"`
	Topics            []TopicPlan   `json:"topics"`
	// BrokerDiskTotalBytes is the disk every stream at its bound takes,
	// all replicas; BrokerDiskAvgBytes that spread evenly over the brokers.
	BrokerDiskTotalBytes int64  `json:"broker_disk_total_bytes"`
	BrokerDiskAvgBytes   int64  `json:"broker_disk_avg_bytes"`
	Ratio                string `json:"ratio"`
	// PlannedRate is the value for alarms.planned_rate.
	PlannedRate float64  `json:"planned_rate"`
	Warnings    []string `json:"warnings"`
	Notes       []string `json:"notes"`
}

// Nodes is the plan for one kind of node.
type Nodes struct {
	// Count is what to run; Needed what carries the rate at the target
	// utilization (Count − 1 ≥ Needed: any one node may be lost).
	Count  int `json:"count"`
	Needed int `json:"needed"`
	// NodeRate is the msg/s one node carries at the target utilization.
	NodeRate float64 `json:"node_rate"`
	// Utilization at the planned rate with every node up, and with one lost.
	Utilization   float64 `json:"utilization"`
	UtilizationN1 float64 `json:"utilization_n1"`
	// MemoryBytes and DiskBytes are per node, as the bounds imply.
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	DiskBytes   int64  `json:"disk_bytes,omitempty"`
	Reason      string `json:"reason"`
}

// FamilyNodes is the plan for one family's workers.
type FamilyNodes struct {
	Topic  string `json:"topic"`
	Family string `json:"family"`
	Nodes
	// WorkerRate is one worker's msg/s; Source says where it came from
	// (flag, calibration, default).
	WorkerRate    float64 `json:"worker_rate"`
	Source        string  `json:"source"`
	HandlerMillis float64 `json:"handler_ms"`
	// Credit is the family's configured credit; CreditNeeded what the
	// rate needs by Little's law (rate × handler time / utilization).
	Credit       int `json:"credit"`
	CreditNeeded int `json:"credit_needed"`
}

// TopicPlan is one topic's share of the rate and of the disk.
type TopicPlan struct {
	Name     string  `json:"name"`
	Rate     float64 `json:"rate"`
	Replicas int     `json:"replicas"`
	// BrokerCPUMillis is the broker CPU per message, all replicas.
	BrokerCPUMillis float64 `json:"broker_cpu_ms"`
	// StreamBytes is one replica of the topic stream at its bound
	// (max_bytes, or max_messages × size when smaller); the dead letters
	// of each family are bounded the same way.
	StreamBytes int64 `json:"stream_bytes"`
	DiskBytes   int64 `json:"disk_bytes"` // topic + dead letters, all replicas
	// StreamCeiling is the rate one stream can take: it lives on Replicas
	// brokers whatever the cluster's size.
	StreamCeiling float64 `json:"stream_ceiling"`
}

// Build plans in for cal.
func Build(in Input, cal Calibration) (Blueprint, error) {
	if err := in.validate(); err != nil {
		return Blueprint{}, err
	}
	if err := cal.Validate(); err != nil {
		return Blueprint{}, err
	}
	b := Blueprint{Rate: in.Rate, SizeBytes: in.Size, P99Millis: ms(in.P99), Cores: in.Cores, Batch: in.Batch,
		Calibration: cal.Source, WorkerUtilization: RhoMax, PlannedRate: in.Rate}
	cores := float64(in.Cores)
	warn := func(format string, args ...any) { b.Warnings = append(b.Warnings, fmt.Sprintf(format, args...)) }
	note := func(format string, args ...any) { b.Notes = append(b.Notes, fmt.Sprintf(format, args...)) }

	topics := slices.Clone(in.Topics)
	slices.SortFunc(topics, func(x, y Topic) int { return strings.Compare(x.Name, y.Name) })
	topicRate := in.Rate / float64(len(topics))
	gwPerCore := cal.GatewayPerCore
	if in.Batch {
		gwPerCore = cal.GatewayBatchPerCore
	}

	// Per topic: broker cost, and the utilization target from the longest
	// service time on the publish path.
	service := 1 / gwPerCore
	maxR := 0
	var brokerCPU float64 // CPU-seconds per second over all brokers
	for _, t := range topics {
		r := t.Replicas
		if in.Replicas > 0 {
			r = in.Replicas
		}
		cpu, err := cal.BrokerCPU(r, in.Size)
		if err != nil {
			return Blueprint{}, err
		}
		service = max(service, cpu/float64(r))
		maxR = max(maxR, r)
		brokerCPU += topicRate * cpu
		b.Topics = append(b.Topics, TopicPlan{Name: t.Name, Rate: topicRate, Replicas: r, BrokerCPUMillis: cpu * 1000})
	}
	b.ServiceMicros = service * 1e6
	b.Utilization = min(RhoMax, 1-tailFactor*service/in.P99.Seconds())
	if b.Utilization < RhoMin {
		return Blueprint{}, fmt.Errorf("--p99 %v is too tight: a %.0f µs service time allows no useful utilization (need p99 ≥ %v)",
			in.P99, b.ServiceMicros, time.Duration(tailFactor*service/(1-RhoMin)*float64(time.Second)).Round(time.Microsecond))
	}
	rho := b.Utilization
	lat := cal.latency(maxR)
	b.PublishP99Millis, b.EndToEndP99Millis = lat.PublishP99Millis, lat.EndToEndP99Millis
	if b.P99Millis < lat.PublishP99Millis {
		warn("--p99 %v is below the measured publish p99 of R%d (%s ms at half load): queuing cannot beat the fsync and replication it includes; expect ~%s ms",
			in.P99, lat.Replicas, num(lat.PublishP99Millis), num(lat.PublishP99Millis))
	}

	// Gateways: capacity at rho, plus one.
	gwNode := gwPerCore * cores
	b.Gateways = nodes(in.Rate, gwNode, rho, 1)
	b.Gateways.MemoryBytes = in.Gateway.MaxBodyBytesInFlight + int64(in.Gateway.PublishWindow)*in.Size
	// Little's law on one gateway with one lost, at the measured p99.
	inFlight := in.Rate / float64(b.Gateways.Count-1) * lat.PublishP99Millis / 1000
	if !in.Batch && in.Gateway.MaxInFlight > 0 && inFlight > float64(in.Gateway.MaxInFlight) {
		warn("gateway.max_in_flight %d is below the ~%s requests a gateway holds with one lost (rate × publish p99): raise it or add gateways",
			in.Gateway.MaxInFlight, num(inFlight))
	}
	if in.Gateway.PublishWindow > 0 && inFlight > float64(in.Gateway.PublishWindow) {
		warn("gateway.publish_window %d is below the ~%s publishes a gateway awaits with one lost (rate × publish p99): raise it or add gateways",
			in.Gateway.PublishWindow, num(inFlight))
	}

	// Brokers: CPU over all replicas spread over the brokers, plus one;
	// never fewer than the replicas.
	perMsg := brokerCPU / in.Rate
	b.Brokers = nodes(in.Rate, cores/perMsg, rho, maxR)
	var disk int64
	for i, t := range topics {
		tp := &b.Topics[i]
		tp.StreamBytes = t.MaxBytes
		if t.MaxMessages > 0 && t.MaxMessages*in.Size < t.MaxBytes {
			tp.StreamBytes = t.MaxMessages * in.Size
		}
		streams := int64(1 + len(t.Families))
		tp.DiskBytes = streams * tp.StreamBytes * int64(tp.Replicas)
		disk += streams * tp.StreamBytes // one replica of every stream
		tp.StreamCeiling = float64(tp.Replicas) * cores * rho / (tp.BrokerCPUMillis / 1000)
		if tp.Rate > tp.StreamCeiling {
			warn("topic %s: %s msg/s exceeds one R%d stream's ceiling of %s msg/s (a stream lives on %d brokers whatever the cluster's size): split it into more topics or give brokers more cores",
				tp.Name, num(tp.Rate), tp.Replicas, num(tp.StreamCeiling), tp.Replicas)
		}
		if in.Gateway.CommitBatchMax <= 1 && tp.Rate > cal.FsyncPerSecond {
			warn("topic %s: with gateway.commit_batch_max 1 every message is its own fsync, ~%s/s per stream; %s msg/s needs group commit",
				tp.Name, num(cal.FsyncPerSecond), num(tp.Rate))
		}
		b.BrokerDiskTotalBytes += tp.DiskBytes
	}
	b.Brokers.DiskBytes = disk
	b.BrokerDiskAvgBytes = b.BrokerDiskTotalBytes / int64(b.Brokers.Count)
	if maxR == 2 {
		warn("R2: a Raft quorum of 2 is 2, so losing either replica stops writes to the topic; R3 survives one loss")
	}
	if maxR == 1 {
		note("R1: each topic lives on one broker; losing it stops that topic until it returns (N-1 keeps capacity for the others)")
	} else if maxR >= 3 {
		note("brokers: never fewer than R%d (one per replica), and R%d brokers are enough for N-1 when the rate needs at most %d: the quorum survives one loss and the %d left carry the rate; one more would only let the lost replica be re-placed (durability, not capacity)",
			maxR, maxR, maxR-1, maxR-1)
	}
	note("disk: one fsync per message would cap a broker near %s msg/s; group commit (commit_batch_max %d) stores many per fsync, so CPU is the limit",
		num(cal.FsyncPerSecond), in.Gateway.CommitBatchMax)
	note("broker disk: every stream (topic and each family's dead letters, bounded like the topic) at min(max_bytes, max_messages × size), one replica of each per broker; %s on average over %d brokers; payload bytes only",
		bytesize.Size(b.BrokerDiskAvgBytes), b.Brokers.Count)

	// Workers, per family of every topic.
	total := 0
	for _, t := range topics {
		fams := slices.Clone(t.Families)
		slices.SortFunc(fams, func(x, y Family) int { return strings.Compare(x.Name, y.Name) })
		for _, f := range fams {
			rate, src := cal.Worker.Rate, "default"
			if r, ok := cal.Families[f.Name]; ok {
				rate, src = r, "calibration"
			}
			if r, ok := in.Families[f.Name]; ok {
				rate, src = r, "flag"
			}
			fn := FamilyNodes{Topic: t.Name, Family: f.Name, WorkerRate: rate, Source: src, Credit: f.Credit}
			fn.Nodes = nodes(topicRate, rate, RhoMax, 1)
			handler := float64(cal.Worker.Credit) / rate // seconds, Little's law at full credit
			fn.HandlerMillis = handler * 1000
			fn.CreditNeeded = int(math.Ceil(topicRate * handler / RhoMax))
			fn.MemoryBytes = int64(min(cal.Worker.Credit, max(f.Credit, 1))) * in.Size
			if f.Credit < fn.CreditNeeded {
				warn("family %s/%s: credit %d caps it at %s msg/s with a %s ms handler; set credit ≥ %d",
					t.Name, f.Name, f.Credit, num(float64(f.Credit)/handler), num(fn.HandlerMillis), fn.CreditNeeded)
			}
			total += fn.Count
			b.Workers = append(b.Workers, fn)
		}
	}
	b.Ratio = fmt.Sprintf("%d:%d:%d", b.Gateways.Count, b.Brokers.Count, total)
	return b, nil
}

func (in Input) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if in.Rate <= 0 || math.IsInf(in.Rate, 0) || math.IsNaN(in.Rate) {
		bad("rate must be positive")
	}
	if in.Size < 1 {
		bad("size must be at least 1 byte")
	}
	if in.P99 <= 0 {
		bad("p99 must be positive")
	}
	if in.Replicas < 0 {
		bad("replicas must not be negative")
	}
	if in.Cores < 1 {
		bad("cores must be at least 1")
	}
	if len(in.Topics) == 0 {
		bad("the topology has no topics")
	}
	for _, t := range in.Topics {
		if in.Replicas == 0 && t.Replicas < 1 {
			bad("topic %s: replicas must be at least 1", t.Name)
		}
		if len(t.Families) == 0 {
			bad("topic %s has no families", t.Name)
		}
	}
	for name, r := range in.Families {
		if r <= 0 {
			bad("family %s: rate must be positive", name)
		}
	}
	return errors.Join(errs...)
}

// nodes plans one kind: the nodes that carry rate at rho when each carries
// perNode at full load, plus one for N-1, and at least floor.
func nodes(rate, perNode, rho float64, floor int) Nodes {
	n := Nodes{NodeRate: perNode * rho}
	n.Needed = int(math.Ceil(rate/n.NodeRate - 1e-9))
	n.Count = max(n.Needed+1, floor)
	if n.Count == n.Needed+1 {
		n.Reason = fmt.Sprintf("%d for the rate at ρ %.2f, +1 for N-1", n.Needed, rho)
	} else {
		n.Reason = fmt.Sprintf("%d replicas (the rate needs %d, +1 for N-1)", floor, n.Needed)
	}
	n.Utilization = rate / (float64(n.Count) * perNode)
	n.UtilizationN1 = rate / (float64(n.Count-1) * perNode)
	return n
}

// WriteText writes the blueprint as aligned text tables.
func (b Blueprint) WriteText(w io.Writer) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "Capacity blueprint: %s msg/s of %s, publish p99 ≤ %s ms, %d cores per node",
		num(b.Rate), bytesize.Size(b.SizeBytes), num(b.P99Millis), b.Cores)
	if b.Batch {
		buf.WriteString(", NDJSON batches")
	}
	fmt.Fprintf(&buf, "\ncalibration: %s\n\n", b.Calibration)

	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODES\tCOUNT\tNEEDED\tMSG/S EACH\tUTIL\tUTIL N-1\tMEMORY EACH\tDISK EACH\tWHY")
	row := func(name string, n Nodes) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.2f\t%.2f\t%s\t%s\t%s\n", name, n.Count, n.Needed, num(n.NodeRate),
			n.Utilization, n.UtilizationN1, size(n.MemoryBytes), size(n.DiskBytes), n.Reason)
	}
	row("gateway", b.Gateways)
	row("broker", b.Brokers)
	for _, f := range b.Workers {
		row("worker "+f.Topic+"/"+f.Family, f.Nodes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&buf, "\nratio gateways:brokers:workers = %s\n", b.Ratio)
	fmt.Fprintf(&buf, "utilization target %.2f for gateways and brokers: min(%.2f, 1 − ln(100)·S/p99), S = %s µs; workers %.2f (not on the publish path)\n",
		b.Utilization, RhoMax, num(b.ServiceMicros), b.WorkerUtilization)
	if b.PublishP99Millis > 0 {
		fmt.Fprintf(&buf, "measured publish p99 %s ms", num(b.PublishP99Millis))
		if b.EndToEndP99Millis > 0 {
			fmt.Fprintf(&buf, ", end to end %s ms", num(b.EndToEndP99Millis))
		}
		buf.WriteString(" (calibration, at half load)\n")
	}

	buf.WriteString("\n")
	tw = tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tMSG/S\tREPLICAS\tBROKER CPU/MSG\tSTREAM CEILING\tSTREAM BOUND\tDISK (ALL REPLICAS)")
	for _, t := range b.Topics {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s µs\t%s\t%s\t%s\n", t.Name, num(t.Rate), t.Replicas, num(t.BrokerCPUMillis*1000),
			num(t.StreamCeiling), size(t.StreamBytes), size(t.DiskBytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	buf.WriteString("\n")
	tw = tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAMILY\tWORKER MSG/S\tFROM\tHANDLER\tCREDIT\tCREDIT NEEDED")
	for _, f := range b.Workers {
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s ms\t%d\t%d\n", f.Topic, f.Family, num(f.WorkerRate), f.Source,
			num(f.HandlerMillis), f.Credit, f.CreditNeeded)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&buf, "\nconfig: alarms.planned_rate: %s\n", strconv.FormatFloat(b.PlannedRate, 'f', -1, 64))
	list := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(&buf, "\n%s:\n", title)
		for _, s := range items {
			fmt.Fprintf(&buf, "  - %s\n", s)
		}
	}
	list("warnings", b.Warnings)
	list("notes", b.Notes)
	_, err := w.Write(buf.Bytes())
	return err
}

// num writes x with thousands separators: no decimals from 100 up, else up
// to three significant digits.
func num(x float64) string {
	if math.Abs(x) < 100 {
		return strconv.FormatFloat(x, 'g', 3, 64)
	}
	s := strconv.FormatInt(int64(math.Round(x)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func size(n int64) string {
	if n == 0 {
		return "-"
	}
	return bytesize.Size(n).String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

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
