package capacity

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
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
		if lat.Replicas == maxR {
			warn("--p99 %v is below the measured publish p99 of R%d (%s ms at half load): queuing cannot beat the fsync and replication it includes; expect ~%s ms",
				in.P99, maxR, num(lat.PublishP99Millis), num(lat.PublishP99Millis))
		} else {
			warn("--p99 %v is below the publish p99 of R%d (%s ms at half load, measured at R%d; R%d was not measured): queuing cannot beat the fsync and replication it includes; expect ~%s ms",
				in.P99, maxR, num(lat.PublishP99Millis), lat.Replicas, maxR, num(lat.PublishP99Millis))
		}
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

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
