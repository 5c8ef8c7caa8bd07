// Package overload is Sluice's overload benchmark: producers offer a
// multiple of what the worker families can handle for a bounded time, then
// stop; the run drains and reports what was accepted, refused, lost (must be
// none), duplicated, the goodput against the families' capacity, memory over
// time, Retry-After coverage, the time to reopen, and latency.
package overload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Topic is the topic the benchmark loads.
const Topic = "overload"

// Config is one overload run.
type Config struct {
	// Capacity is what each family handles, in messages per second.
	Capacity float64 `json:"capacity_per_family"`
	// Factor: producers offer Factor x Capacity messages per second.
	Factor   float64       `json:"factor"`
	Duration time.Duration `json:"duration"`
	// Concurrency bounds the load generator's requests in flight; an
	// offered message that finds every sender busy is counted unsent.
	Concurrency      int   `json:"concurrency"`
	MessageSize      int   `json:"message_size"`
	TopicMaxMessages int64 `json:"topic_max_messages"`
	// DuplicateWindow is the topic's: every accepted idempotency key is
	// remembered this long, which the broker's memory holds.
	DuplicateWindow time.Duration `json:"duplicate_window"`
	Families        []string      `json:"families"`
	DrainTimeout    time.Duration `json:"drain_timeout"`
	// DataDir holds the in-process broker's store.
	DataDir string `json:"-"`
	// Gateway, when set, loads that gateway instead of an in-process stack
	// (deliveries are then not checked).
	Gateway string `json:"gateway,omitempty"`
}

// DefaultConfig is the 10x run of `make bench-overload`.
func DefaultConfig() Config {
	return Config{Capacity: 2000, Factor: 10, Duration: 60 * time.Second, Concurrency: 64, MessageSize: 128,
		TopicMaxMessages: 10_000, DuplicateWindow: 2 * time.Minute, Families: []string{"billing", "shipping"}, DrainTimeout: 2 * time.Minute}
}

// Sample is the process's memory at one moment of the run.
type Sample struct {
	At       float64 `json:"t_seconds"`
	RSSBytes uint64  `json:"rss_bytes"`
	Heap     uint64  `json:"heap_inuse_bytes"`
}

// Report is the outcome of a run.
type Report struct {
	Config Config `json:"config"`
	// Offered messages, and those the load generator could not send
	// because all its senders were busy.
	Offered int64 `json:"offered"`
	Unsent  int64 `json:"unsent"`
	// Answers to what was sent.
	Accepted        int64            `json:"accepted"`
	Refused429      int64            `json:"refused_429"`
	Refused503      int64            `json:"refused_503"`
	OtherStatus     map[int]int64    `json:"other_status"`
	TransportErrors int64            `json:"transport_errors"`
	RetryAfterShare float64          `json:"refusals_with_retry_after"`
	NotDelivered    map[string]int64 `json:"accepted_not_delivered"`
	Duplicates      map[string]int64 `json:"duplicates_delivered"`
	DrainSeconds    float64          `json:"drain_seconds"`
	// Goodput is accepted messages per second while offered; Ratio is it
	// divided by the families' capacity.
	Goodput       float64  `json:"goodput_per_second"`
	GoodputRatio  float64  `json:"goodput_ratio"`
	OfferedRate   float64  `json:"offered_per_second"`
	ReopenSeconds float64  `json:"reopen_seconds"`
	LatencyP50ms  float64  `json:"accepted_latency_p50_ms"`
	LatencyP99ms  float64  `json:"accepted_latency_p99_ms"`
	Memory        []Sample `json:"memory"`
	PeakRSS       uint64   `json:"peak_rss_bytes"`
	PeakHeap      uint64   `json:"peak_heap_bytes"`
	// WarmRSS is the peak after the first quarter of the load (warm-up).
	WarmRSS uint64 `json:"rss_after_warmup_first_bytes"`
}

// Run performs one overload run.
func Run(ctx context.Context, cfg Config, log *zap.Logger) (Report, error) {
	if cfg.Capacity <= 0 || cfg.Factor <= 0 || cfg.Duration <= 0 || cfg.Concurrency < 1 {
		return Report{}, errors.New("overload: capacity, factor, duration and concurrency must be positive")
	}
	rec := newRecorder(cfg.Families)
	url := cfg.Gateway
	if url == "" {
		st, err := startStack(ctx, cfg, rec, log)
		if err != nil {
			return Report{}, err
		}
		defer st.stop()
		url = st.url
	}
	rep := Report{Config: cfg, OtherStatus: map[int]int64{}}
	sampler := startSampler()
	gen := newGenerator(url, cfg)
	start := time.Now()
	gen.run(ctx, start)
	loadEnd := time.Now()
	rep.ReopenSeconds = gen.probeReopen(ctx, loadEnd)
	if cfg.Gateway == "" {
		rep.DrainSeconds = rec.waitDelivered(ctx, gen.acceptedIDs(), cfg.DrainTimeout)
		rep.NotDelivered, rep.Duplicates = rec.check(gen.acceptedIDs())
	}
	rep.Memory = sampler.stop()
	gen.fill(&rep, loadEnd.Sub(start))
	for i, s := range rep.Memory {
		rep.PeakRSS = max(rep.PeakRSS, s.RSSBytes)
		rep.PeakHeap = max(rep.PeakHeap, s.Heap)
		if float64(i) >= cfg.Duration.Seconds()/4 && s.At <= loadEnd.Sub(start).Seconds() {
			rep.WarmRSS = max(rep.WarmRSS, s.RSSBytes)
		}
	}
	return rep, nil
}

// recorder counts deliveries per family by message number.
type recorder struct {
	mu    sync.Mutex
	count map[string][]uint8
}

func newRecorder(families []string) *recorder {
	r := &recorder{count: map[string][]uint8{}}
	for _, f := range families {
		r.count[f] = nil
	}
	return r
}

func (r *recorder) delivered(family string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.count[family]
	for len(c) <= n {
		c = append(c, make([]uint8, max(1024, len(c)))...)
	}
	if c[n] < 255 {
		c[n]++
	}
	r.count[family] = c
}

// waitDelivered polls until every accepted message reached every family.
func (r *recorder) waitDelivered(ctx context.Context, accepted []int, timeout time.Duration) float64 {
	start := time.Now()
	for time.Since(start) < timeout && ctx.Err() == nil {
		missing, _ := r.check(accepted)
		done := true
		for _, n := range missing {
			if n > 0 {
				done = false
			}
		}
		if done {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start).Seconds()
}

func (r *recorder) check(accepted []int) (missing, dups map[string]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	missing, dups = map[string]int64{}, map[string]int64{}
	for fam, c := range r.count {
		missing[fam], dups[fam] = 0, 0
		for _, n := range accepted {
			switch {
			case n >= len(c) || c[n] == 0:
				missing[fam]++
			case c[n] > 1:
				dups[fam] += int64(c[n] - 1)
			}
		}
	}
	return missing, dups
}

// stack is the in-process single-node Sluice under test.
type stack struct {
	url  string
	stop func()
}

func startStack(ctx context.Context, cfg Config, rec *recorder, log *zap.Logger) (*stack, error) {
	t := topology.DefaultTopic()
	t.Name = Topic
	t.MaxMessages = cfg.TopicMaxMessages
	if cfg.DuplicateWindow > 0 {
		t.DuplicateWindow = cfg.DuplicateWindow
	}
	t.Families = map[string]topology.Family{}
	for _, f := range cfg.Families {
		fam := topology.DefaultFamily()
		fam.Name = f
		fam.Credit = 512
		t.Families[f] = fam
	}
	topics := map[string]topology.Topic{Topic: t}
	bcfg := broker.DefaultConfig()
	bcfg.DataDir, bcfg.Listen, bcfg.Topics = cfg.DataDir, "", topics
	bcfg.SharedAlarms = true // the gateway's alarm manager is on reg
	reg := prometheus.NewRegistry()
	b, err := broker.New(bcfg, log, reg)
	if err != nil {
		return nil, err
	}
	// One teardown for every way out: stop the nodes, wait for them, close
	// their connections, stop the broker.
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var conns []*nats.Conn
	stop := func() {
		cancel()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
		b.Shutdown()
	}
	fail := func(err error) (*stack, error) {
		stop()
		return nil, err
	}
	gnc, err := b.Connect("overload-gateway")
	if err != nil {
		return fail(err)
	}
	conns = append(conns, gnc)
	gcfg := gateway.DefaultConfig()
	gcfg.Listen, gcfg.Topics = "127.0.0.1:0", topics
	g, err := gateway.New(gcfg, gnc, log, reg, reg)
	if err != nil {
		return fail(err)
	}
	addr, err := g.Listen()
	if err != nil {
		return fail(err)
	}
	wg.Go(func() { _ = g.Run(runCtx) })
	for _, fam := range cfg.Families {
		limit := rate.NewLimiter(rate.Limit(cfg.Capacity), max(1, int(cfg.Capacity/100)))
		wnc, err := b.Connect("overload-" + fam)
		if err != nil {
			return fail(err)
		}
		conns = append(conns, wnc)
		w, err := sluice.NewWorker(wnc, Topic, fam, sluice.HandlerFunc(func(ctx context.Context, m *sluice.Message) error {
			if err := limit.Wait(ctx); err != nil {
				return err
			}
			if n, ok := messageNumber(m.ID); ok {
				rec.delivered(fam, n)
			}
			return nil
		}), sluice.WithCredit(256))
		if err != nil {
			return fail(err)
		}
		wg.Go(func() { _ = w.Run(runCtx) })
	}
	url := "http://" + addr.String()
	if err := waitReady(ctx, url); err != nil {
		return fail(err)
	}
	return &stack{url: url, stop: stop}, nil
}

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("overload: gateway at %s not ready", url)
}

// messageNumber reads the n of an id "m-<n>".
func messageNumber(id string) (int, bool) {
	s, ok := strings.CutPrefix(id, "m-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// sampler reads the process's RSS and Go heap every second.
type sampler struct {
	stopc chan struct{}
	done  chan []Sample
}

func startSampler() *sampler {
	s := &sampler{stopc: make(chan struct{}), done: make(chan []Sample, 1)}
	start := time.Now()
	go func() {
		var out []Sample
		t := time.NewTicker(time.Second)
		defer t.Stop()
		take := func() {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			out = append(out, Sample{At: time.Since(start).Seconds(), RSSBytes: rss(), Heap: ms.HeapInuse})
		}
		take()
		for {
			select {
			case <-s.stopc:
				take()
				s.done <- out
				return
			case <-t.C:
				take()
			}
		}
	}()
	return s
}

func (s *sampler) stop() []Sample {
	close(s.stopc)
	return <-s.done
}

// rss is the process's resident set (Linux /proc; 0 elsewhere).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
