package perf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// The benchmark's topic and the family that reads it end to end.
const (
	Topic  = "bench"
	Family = "e2e"
)

// Cases, in the order they run in each round.
const (
	CaseFloor    = "a HTTP floor"
	CaseRaw      = "b1 raw JetStream, per message"
	CaseRawBatch = "b2 raw JetStream, atomic batch"
	CaseSingle   = "c Sluice, single message"
	CaseBatch    = "d Sluice, NDJSON batch"
	CaseE2E      = "e end to end, half max rate"
)

// Compare is a side-by-side run: the HTTP floor, raw JetStream and Sluice,
// on the same machine, the same stream, one after the other, in Rounds
// rounds so that ratios can be taken within a round and their median kept.
type Compare struct {
	Bin        string   `json:"-"` // the sluice binary the nodes run as
	Dir        string   `json:"-"` // configs, stores and logs
	Topologies []string // "single" (1 broker, R1) and/or "r3" (3 brokers, R3)
	Sizes      []int    // payload bytes
	// Concurrency: single-message HTTP clients and raw per-message publishers.
	Concurrency int
	// BatchConcurrency: NDJSON clients and raw atomic-batch publishers, each
	// with Batch messages per request or batch.
	BatchConcurrency int
	Batch            int
	Duration, Warmup time.Duration
	Rounds           int
	Proto            string
	// Profile, when set, is a directory for the gateway's CPU and
	// allocation profiles taken during the first round of c and d.
	Profile string `json:"-"`
	// Worker, when set, is also measured on the first topology's stack.
	Worker *WorkerSpec                      `json:"-"`
	Logf   func(format string, args ...any) `json:"-"`
}

// Row is one measured run.
type Row struct {
	Topology    string  `json:"topology"`
	Size        int     `json:"size"`
	Case        string  `json:"case"`
	Round       int     `json:"round"`
	Concurrency int     `json:"concurrency"`
	Batch       int     `json:"batch,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	Msgs        int64   `json:"msgs"`
	Failed      int64   `json:"failed"`
	Seconds     float64 `json:"seconds"`
	MsgsPerSec  float64 `json:"msgs_per_sec"`
	MBPerSec    float64 `json:"mb_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	P999ms      float64 `json:"p999_ms"`
	// CPUPer1k: CPU seconds per 1,000 messages by process (loadgen: this
	// one, with the end-to-end worker when there is one).
	CPUPer1k map[string]float64 `json:"cpu_s_per_1k_msgs"`
	Status   map[int]int64      `json:"status,omitempty"`
	Late     int64              `json:"late,omitempty"`
	// E2E: ingest (request sent) to the worker's handler, per message.
	E2EP50ms  float64 `json:"e2e_p50_ms,omitempty"`
	E2EP99ms  float64 `json:"e2e_p99_ms,omitempty"`
	E2EP999ms float64 `json:"e2e_p999_ms,omitempty"`
	Delivered int64   `json:"delivered,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// stack is the nodes of one topology.
type stack struct {
	topology string
	procs    []*Proc
	gateway  string // http://host:port
	floor    string
	pprof    string // the gateway's profiles: http://host:port, or ""
	nc       *nats.Conn
	js       jetstream.JetStream
}

func (s *stack) stop() {
	if s.nc != nil {
		s.nc.Close()
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].Stop(15 * time.Second)
	}
}

func (s *stack) cpu() map[string]time.Duration {
	m := map[string]time.Duration{"loadgen": SelfCPU()}
	for _, p := range s.procs {
		if c, err := p.CPU(); err == nil {
			m[p.Name] = c
		}
	}
	return m
}

// Run runs every topology and returns the rows.
func (c Compare) Run(ctx context.Context) ([]Row, error) {
	var rows []Row
	for _, topo := range c.Topologies {
		s, err := c.start(ctx, topo)
		if err != nil {
			if s != nil {
				s.stop()
			}
			return rows, err
		}
		r, err := c.runStack(ctx, s)
		s.stop()
		rows = append(rows, r...)
		if err != nil {
			return rows, err
		}
	}
	return rows, nil
}

func (c Compare) runStack(ctx context.Context, s *stack) ([]Row, error) {
	var rows []Row
	for _, size := range c.Sizes {
		for round := 1; round <= c.Rounds; round++ {
			for _, cs := range []string{CaseFloor, CaseRaw, CaseRawBatch, CaseSingle, CaseBatch} {
				row, err := c.runCase(ctx, s, cs, size, round, 0)
				if err != nil {
					return rows, fmt.Errorf("%s %s %d B: %w", s.topology, cs, size, err)
				}
				rows = append(rows, row)
			}
		}
		max := median(pick(rows, s.topology, size, CaseSingle, func(r Row) float64 { return r.MsgsPerSec }))
		row, err := c.runCase(ctx, s, CaseE2E, size, 1, max/2)
		if err != nil {
			return rows, fmt.Errorf("%s %s %d B: %w", s.topology, CaseE2E, size, err)
		}
		rows = append(rows, row)
	}
	if c.Worker != nil && s.topology == c.Topologies[0] {
		row, err := measureWorker(ctx, s, *c.Worker)
		if err != nil {
			return rows, fmt.Errorf("%s worker: %w", s.topology, err)
		}
		c.logf("%-6s %5d B  %-32s: %9.0f msg/s with credit %d", s.topology, row.Size, CaseWorker, row.MsgsPerSec, c.Worker.Credit)
		rows = append(rows, row)
	}
	return rows, nil
}

// runCase warms up, then measures one case.
func (c Compare) runCase(ctx context.Context, s *stack, cs string, size, round int, rate float64) (Row, error) {
	if cs != CaseE2E && c.Warmup > 0 {
		if _, err := c.load(ctx, s, cs, size, c.Warmup, 0, nil); err != nil {
			return Row{}, err
		}
	}
	if err := purge(ctx, s.js); err != nil {
		return Row{}, err
	}
	var w *e2eWorker
	if cs == CaseE2E {
		var err error
		if w, err = startE2E(ctx, s.nc); err != nil {
			return Row{}, err
		}
	}
	var prof *profiling
	if c.Profile != "" && s.pprof != "" && round == 1 && (cs == CaseSingle || cs == CaseBatch) {
		prof = startProfiles(ctx, s.pprof, c.Duration, filepath.Join(c.Profile, fmt.Sprintf("gateway-%s-%d-%s", s.topology, size, cs[:1])))
	}
	before := s.cpu()
	res, err := c.load(ctx, s, cs, size, c.Duration, rate, w)
	after := s.cpu()
	if prof != nil {
		if perr := prof.wait(); perr != nil {
			c.logf("  profile: %v", perr)
		}
	}
	if err != nil {
		if w != nil {
			w.stop()
		}
		return Row{}, err
	}
	row := Row{Topology: s.topology, Size: size, Case: cs, Round: round, Rate: rate,
		Msgs: res.Msgs, Failed: res.Failed, Seconds: res.Elapsed.Seconds(), Status: res.Status, Late: res.Late,
		P50ms: ms(res.Latency.Quantile(0.5)), P99ms: ms(res.Latency.Quantile(0.99)), P999ms: ms(res.Latency.Quantile(0.999)),
		CPUPer1k: map[string]float64{}}
	row.Concurrency, row.Batch = c.shape(cs)
	row.MsgsPerSec = float64(res.Msgs) / res.Elapsed.Seconds()
	row.MBPerSec = row.MsgsPerSec * float64(size) / 1e6
	if res.Msgs > 0 {
		for name, t := range after {
			row.CPUPer1k[name] = (t - before[name]).Seconds() / float64(res.Msgs) * 1000
		}
	}
	if w != nil {
		h, n := w.finish(res.Msgs, 30*time.Second)
		row.Delivered = n
		row.E2EP50ms, row.E2EP99ms, row.E2EP999ms = ms(h.Quantile(0.5)), ms(h.Quantile(0.99)), ms(h.Quantile(0.999))
	}
	c.logf("%-6s %5d B  %-32s round %d: %9.0f msg/s  p50 %6.2f ms  p99 %7.2f ms  failed %d%s",
		s.topology, size, cs, round, row.MsgsPerSec, row.P50ms, row.P99ms, row.Failed, e2eNote(row))
	return row, nil
}

func e2eNote(r Row) string {
	if r.Case != CaseE2E {
		return ""
	}
	return fmt.Sprintf("  at %.0f/s: end to end p50 %.2f ms p99 %.2f ms, %d of %d delivered", r.Rate, r.E2EP50ms, r.E2EP99ms, r.Delivered, r.Msgs)
}

// shape is a case's concurrency and batch size.
func (c Compare) shape(cs string) (int, int) {
	switch cs {
	case CaseRawBatch, CaseBatch:
		return c.BatchConcurrency, c.Batch
	}
	return c.Concurrency, 0
}

func (c Compare) load(ctx context.Context, s *stack, cs string, size int, d time.Duration, rate float64, w *e2eWorker) (*Result, error) {
	conc, batch := c.shape(cs)
	progress := func(el time.Duration, n int64) {
		if d > c.Warmup {
			c.logf("  %4.1f s  %d messages", el.Seconds(), n)
		}
	}
	switch cs {
	case CaseFloor:
		return RunHTTP(ctx, Load{URL: s.floor + "/v1/topics/" + Topic + "/messages", Proto: c.Proto, Concurrency: conc, Duration: d, Size: size})
	case CaseRaw, CaseRawBatch:
		return RunRaw(ctx, s.nc, Raw{Subject: sluice.Subject(Topic), Stream: sluice.StreamName(Topic), Concurrency: conc, Duration: d, Size: size, Batch: batch})
	case CaseSingle, CaseE2E:
		return RunHTTP(ctx, Load{URL: s.gateway + "/v1/topics/" + Topic + "/messages", Proto: c.Proto, Concurrency: conc,
			Duration: d, Size: size, Rate: rate, Stamp: w != nil, Progress: progress})
	case CaseBatch:
		return RunHTTP(ctx, Load{URL: s.gateway + "/v1/topics/" + Topic + "/messages:batch", Proto: c.Proto, Concurrency: conc,
			Duration: d, Size: size, Batch: batch, Progress: progress})
	}
	return nil, fmt.Errorf("unknown case %q", cs)
}

func (c Compare) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

func purge(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, sluice.StreamName(Topic))
	if err != nil {
		return err
	}
	return st.Purge(ctx)
}

// e2eWorker is the family's SDK worker in this process; it records the
// time from each message's send (stamped in its payload) to its handler.
type e2eWorker struct {
	w      *sluice.Worker
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	hist   Hist
	n      int64
}

func startE2E(ctx context.Context, nc *nats.Conn) (*e2eWorker, error) {
	e := &e2eWorker{done: make(chan error, 1)}
	w, err := sluice.NewWorker(nc, Topic, Family, sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		if len(m.Data) >= 8 {
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))
			e.mu.Lock()
			e.hist.Record(time.Since(sent))
			e.n++
			e.mu.Unlock()
		}
		return nil
	}), sluice.WithCredit(512))
	if err != nil {
		return nil, err
	}
	e.w = w
	ctx, e.cancel = context.WithCancel(ctx)
	go func() { e.done <- w.Run(ctx) }()
	return e, nil
}

// finish waits until want messages were handled (or wait passes), stops
// the worker and returns the latencies and how many were handled.
func (e *e2eWorker) finish(want int64, wait time.Duration) (*Hist, int64) {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		n := e.n
		e.mu.Unlock()
		if n >= want {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.hist
	return &h, e.n
}

func (e *e2eWorker) stop() {
	e.cancel()
	<-e.done
}

// start writes the topology's config and starts its processes.
func (c Compare) start(ctx context.Context, topo string) (*stack, error) {
	brokers := 1
	if topo == "r3" {
		brokers = 3
	}
	dir := filepath.Join(c.Dir, topo)
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	ports, err := FreePorts(3*brokers + 3)
	if err != nil {
		return nil, err
	}
	client, route, ops := ports[:brokers], ports[brokers:2*brokers], ports[2*brokers:3*brokers]
	gwPort, floorPort, pprofPort := ports[3*brokers], ports[3*brokers+1], ports[3*brokers+2]
	var urls []string
	for _, p := range client {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(configYAML(urls, brokers, c)), 0o644); err != nil {
		return nil, err
	}
	s := &stack{topology: topo,
		gateway: fmt.Sprintf("http://127.0.0.1:%d", gwPort), floor: fmt.Sprintf("http://127.0.0.1:%d", floorPort)}
	readyCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	type waiting struct {
		p   *Proc
		url string
	}
	var wait []waiting
	run := func(name, readyURL string, env []string, args ...string) error {
		p, err := StartProc(name, c.Bin, append(args, "--config", cfgPath), env, filepath.Join(dir, "logs", name+".log"))
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		wait = append(wait, waiting{p, readyURL})
		return nil
	}
	for i := range brokers {
		name := fmt.Sprintf("broker-%d", i+1)
		env := []string{"SLUICE_BROKER_NAME=" + name,
			fmt.Sprintf("SLUICE_BROKER_LISTEN=127.0.0.1:%d", client[i]),
			"SLUICE_BROKER_DATA_DIR=" + filepath.Join(dir, "data", name),
			fmt.Sprintf("SLUICE_BROKER_OPS_LISTEN=127.0.0.1:%d", ops[i])}
		if brokers > 1 {
			var routes []string
			for j, p := range route {
				if j != i {
					routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
				}
			}
			env = append(env, fmt.Sprintf("SLUICE_BROKER_CLUSTER_LISTEN=127.0.0.1:%d", route[i]),
				"SLUICE_BROKER_CLUSTER_ROUTES="+strings.Join(routes, ","))
		}
		if err := run(name, fmt.Sprintf("http://127.0.0.1:%d/readyz", ops[i]), env, "broker"); err != nil {
			return s, err
		}
	}
	for _, w := range wait {
		if err := WaitReady(readyCtx, w.p, w.url); err != nil {
			return s, err
		}
	}
	gwArgs := []string{"gateway"}
	if c.Profile != "" {
		s.pprof = fmt.Sprintf("http://127.0.0.1:%d", pprofPort)
		gwArgs = append(gwArgs, "--pprof-listen", fmt.Sprintf("127.0.0.1:%d", pprofPort))
	}
	if err := run("gateway", s.gateway+"/readyz", []string{fmt.Sprintf("SLUICE_GATEWAY_LISTEN=127.0.0.1:%d", gwPort)}, gwArgs...); err != nil {
		return s, err
	}
	if err := run("floor", s.floor+"/", nil, "bench", "floor", "--listen", fmt.Sprintf("127.0.0.1:%d", floorPort)); err != nil {
		return s, err
	}
	for _, w := range wait[brokers:] {
		if err := WaitReady(readyCtx, w.p, w.url); err != nil {
			return s, err
		}
	}
	s.nc, err = nats.Connect(strings.Join(urls, ","), nats.Name("sluice-bench"), nats.MaxReconnects(-1))
	if err != nil {
		return s, err
	}
	s.js, err = jetstream.New(s.nc)
	if err != nil {
		return s, err
	}
	c.logf("%s: %d broker(s), gateway %s, floor %s; logs in %s", topo, brokers, s.gateway, s.floor, filepath.Join(dir, "logs"))
	return s, nil
}

// configYAML is every node's config; what differs per node comes from
// SLUICE_* variables. The gateway's own bounds are raised above the load's
// concurrency: the benchmark measures throughput, not shedding.
func configYAML(urls []string, brokers int, c Compare) string {
	cluster := ""
	if brokers > 1 {
		cluster = fmt.Sprintf("  cluster:\n    name: bench\n    size: %d\n", brokers)
	}
	return fmt.Sprintf(`log:
  level: warn
  format: json
bus:
  urls: [%s]
  connect_timeout: 5s
broker:
  ready_timeout: 60s
%sgateway:
  max_in_flight: %d
  publish_window: %d
  max_body_bytes_in_flight: 1GiB
demo:
  enabled: false
topics:
  %s:
    max_messages: 100000000
    max_bytes: 16GiB
    max_message_size: 1MiB
    replicas: %d
    duplicate_window: 2m
    families:
      %s:
        credit: 1024
        ack_wait: 30s
        max_attempts: 5
        backoff: [1s]
`, strings.Join(urls, ", "), cluster, 4*max(c.Concurrency, c.BatchConcurrency*c.Batch),
		4*max(c.Concurrency, c.BatchConcurrency*c.Batch), Topic, brokers, Family)
}

// pick returns f of the rows of one topology, size and case.
func pick(rows []Row, topo string, size int, cs string, f func(Row) float64) []float64 {
	var v []float64
	for _, r := range rows {
		if r.Topology == topo && r.Size == size && r.Case == cs {
			v = append(v, f(r))
		}
	}
	return v
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// ErrTargetMissed is returned by Check when a target is missed.
var ErrTargetMissed = errors.New("performance target missed")
