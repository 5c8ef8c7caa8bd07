package capacity

import (
	"math"
	"strings"
	"testing"
	"time"
)

// devInput is configs/dev.yaml's topology and gateway bounds.
func devInput(rate float64, size int64, p99 time.Duration, replicas int) Input {
	return Input{Rate: rate, Size: size, P99: p99, Replicas: replicas, Cores: 2,
		Topics: []Topic{{Name: "orders", MaxMessages: 100_000, MaxBytes: 1 << 30, Replicas: 1,
			Families: []Family{{Name: "shipping", Credit: 64}, {Name: "billing", Credit: 64}}}},
		Gateway: GatewayBounds{MaxInFlight: 1024, MaxBodyBytesInFlight: 64 << 20, PublishWindow: 1024, CommitBatchMax: 500}}
}

func hasWarning(b Blueprint, sub string) bool {
	for _, w := range b.Warnings {
		if strings.Contains(w, sub) {
			return true
		}
	}
	return false
}

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		in                         Input
		cal                        func(*Calibration)
		gateways, brokers, workers int // workers: of each family
		brokerNeeded               int
		rho                        float64
		warn                       []string // substrings of expected warnings
		noWarn                     []string
	}{{
		// 1,000/s of 128 B: one node of each kind carries it; N-1 adds one.
		name: "R1 small", in: devInput(1000, 128, 50*time.Millisecond, 1),
		gateways: 2, brokers: 2, brokerNeeded: 1, workers: 2, rho: 0.8,
		noWarn: []string{"below the measured", "credit", "ceiling"},
	}, {
		// Gateway 18,000/core × 2 × 0.8 = 28,800: 100,000 needs 4 (+1).
		// Broker R1 at 128 B: 45 µs → 2 / 45e-6 × 0.8 = 35,556/s: needs 3 (+1).
		// Workers 1,600 × 0.8 = 1,280: 78.1 → 79 (+1).
		name: "R1 big", in: devInput(100_000, 128, 50*time.Millisecond, 1),
		gateways: 5, brokers: 4, brokerNeeded: 3, workers: 80, rho: 0.8,
		warn: []string{"credit 64 caps it", "ceiling"},
	}, {
		// Capacity needs one broker; R3 floors the count at 3 (not 4).
		name: "R3 small: replicas floor", in: devInput(1000, 1024, 50*time.Millisecond, 3),
		gateways: 2, brokers: 3, brokerNeeded: 1, workers: 2, rho: 0.8,
	}, {
		// Broker R3 at 1 KiB: 97 µs → 16,495/s each: 50,000 needs 4 (+1).
		name: "R3 big, p99 below the measured", in: devInput(50_000, 1024, 20*time.Millisecond, 3),
		gateways: 3, brokers: 5, brokerNeeded: 4, workers: 41, rho: 0.8,
		warn: []string{"below the measured publish p99 of R3", "set credit ≥ 625", "ceiling of 49,485"},
	}, {
		// ln(100) × 55.6 µs / 1 ms = 0.256: at rho 0.744 a gateway carries
		// 26,789/s, so 28,800/s (one gateway's worth at 0.8) needs 2 (+1).
		// Workers stay at 0.8: 22.5 → 23 (+1).
		name: "tight p99 lowers rho", in: devInput(28_800, 128, time.Millisecond, 1),
		gateways: 3, brokers: 2, brokerNeeded: 1, workers: 24, rho: 1 - math.Log(100)*(1.0/18000)/0.001,
		warn: []string{"below the measured"},
	}, {
		// The flag (3,200/s) wins over the calibration (800/s); shipping
		// takes the calibration's 800/s, not the default.
		name: "families: flag over calibration",
		in: func() Input {
			in := devInput(6400, 128, 50*time.Millisecond, 1)
			in.Families = map[string]float64{"billing": 3200}
			return in
		}(),
		cal:      func(c *Calibration) { c.Families = map[string]float64{"billing": 800, "shipping": 800} },
		gateways: 2, brokers: 2, brokerNeeded: 1, rho: 0.8,
	}, {
		name:     "R2 warns",
		in:       devInput(1000, 128, 50*time.Millisecond, 2),
		gateways: 2, brokers: 2, brokerNeeded: 1, workers: 2, rho: 0.8,
		warn: []string{"R2: a Raft quorum of 2"},
	}, {
		name: "no group commit: fsync bound",
		in: func() Input {
			in := devInput(8000, 128, 50*time.Millisecond, 1)
			in.Gateway.CommitBatchMax = 1
			return in
		}(),
		gateways: 2, brokers: 2, brokerNeeded: 1, workers: 8, rho: 0.8,
		warn: []string{"commit_batch_max 1"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cal := Default()
			if tc.cal != nil {
				tc.cal(&cal)
			}
			b, err := Build(tc.in, cal)
			if err != nil {
				t.Fatal(err)
			}
			if b.Gateways.Count != tc.gateways || b.Brokers.Count != tc.brokers || b.Brokers.Needed != tc.brokerNeeded {
				t.Errorf("gateways %d brokers %d (needed %d); want %d, %d (%d)", b.Gateways.Count, b.Brokers.Count,
					b.Brokers.Needed, tc.gateways, tc.brokers, tc.brokerNeeded)
			}
			if math.Abs(b.Utilization-tc.rho) > 1e-9 {
				t.Errorf("utilization %v, want %v", b.Utilization, tc.rho)
			}
			if tc.workers > 0 {
				for _, w := range b.Workers {
					if w.Count != tc.workers {
						t.Errorf("%s workers %d, want %d", w.Family, w.Count, tc.workers)
					}
				}
			}
			// N-1: the nodes left after one loss stay within the target.
			for _, n := range append([]Nodes{b.Gateways, b.Brokers}, workerNodes(b)...) {
				if n.UtilizationN1 > max(b.Utilization, b.WorkerUtilization)+1e-9 || n.Count < n.Needed+1 {
					t.Errorf("N-1 broken: %+v", n)
				}
			}
			for _, w := range tc.warn {
				if !hasWarning(b, w) {
					t.Errorf("no warning %q in %q", w, b.Warnings)
				}
			}
			for _, w := range tc.noWarn {
				if hasWarning(b, w) {
					t.Errorf("unexpected warning %q in %q", w, b.Warnings)
				}
			}
			if b.PlannedRate != tc.in.Rate {
				t.Errorf("planned rate %v, want %v", b.PlannedRate, tc.in.Rate)
			}
		})
	}
}

func workerNodes(b Blueprint) []Nodes {
	var ns []Nodes
	for _, w := range b.Workers {
		ns = append(ns, w.Nodes)
	}
	return ns
}

// N-1 adds exactly one node when capacity sets the count: at exactly k nodes'
// capacity k are needed and k+1 run; one message more needs k+1 and k+2 run.
func TestHeadroomAddsOne(t *testing.T) {
	const gwNode = 18_000 * 2 * 0.8
	for k := 1; k <= 5; k++ {
		at, err := Build(devInput(gwNode*float64(k), 128, 50*time.Millisecond, 1), Default())
		if err != nil {
			t.Fatal(err)
		}
		over, err := Build(devInput(gwNode*float64(k)+1, 128, 50*time.Millisecond, 1), Default())
		if err != nil {
			t.Fatal(err)
		}
		if at.Gateways.Needed != k || at.Gateways.Count != k+1 || over.Gateways.Needed != k+1 || over.Gateways.Count != k+2 {
			t.Errorf("k=%d: at %d/%d, over %d/%d", k, at.Gateways.Needed, at.Gateways.Count, over.Gateways.Needed, over.Gateways.Count)
		}
	}
}

func TestFamilySources(t *testing.T) {
	in := devInput(6400, 128, 50*time.Millisecond, 1)
	in.Families = map[string]float64{"billing": 3200}
	cal := Default()
	cal.Families = map[string]float64{"billing": 800, "shipping": 800}
	b, err := Build(in, cal)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		rate    float64
		src     string
		workers int
		credit  int // 6,400/s × (16/rate) / 0.8
	}{"billing": {3200, "flag", 4, 40}, "shipping": {800, "calibration", 11, 160}}
	for _, w := range b.Workers {
		x := want[w.Family]
		if w.WorkerRate != x.rate || w.Source != x.src || w.Count != x.workers || w.CreditNeeded != x.credit {
			t.Errorf("%s: rate %v from %s, %d workers, credit %d; want %+v", w.Family, w.WorkerRate, w.Source, w.Count, w.CreditNeeded, x)
		}
	}
	cal.Families = nil
	if b, _ = Build(in, cal); b.Workers[1].Source != "default" || b.Workers[1].WorkerRate != 1600 {
		t.Errorf("shipping without figures: %+v", b.Workers[1])
	}
}

func TestMemoryAndDisk(t *testing.T) {
	for _, tc := range []struct {
		name          string
		in            Input
		gwMem, wkMem  int64
		stream, total int64 // one replica of the topic stream; all streams, all replicas
		perBroker     int64
	}{{
		// max_messages × size (100,000 × 1 KiB) < 1 GiB; topic + 2 dead-letter streams, R3.
		name: "max_messages binds", in: devInput(50_000, 1024, 20*time.Millisecond, 3),
		gwMem: 64<<20 + 1024*1024, wkMem: 16 * 1024,
		stream: 100_000 * 1024, total: 3 * 3 * 100_000 * 1024, perBroker: 3 * 100_000 * 1024,
	}, {
		// 100,000 × 64 KiB > 1 GiB: max_bytes binds. Family credit 8 < worker credit 16.
		name: "max_bytes binds",
		in: func() Input {
			in := devInput(1000, 64<<10, 50*time.Millisecond, 1)
			in.Topics[0].Families = []Family{{Name: "billing", Credit: 8}}
			return in
		}(),
		gwMem: 64<<20 + 1024*64<<10, wkMem: 8 * 64 << 10,
		stream: 1 << 30, total: 2 << 30, perBroker: 2 << 30,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Build(tc.in, Default())
			if err != nil {
				t.Fatal(err)
			}
			if b.Gateways.MemoryBytes != tc.gwMem || b.Workers[0].MemoryBytes != tc.wkMem {
				t.Errorf("memory: gateway %d worker %d; want %d, %d", b.Gateways.MemoryBytes, b.Workers[0].MemoryBytes, tc.gwMem, tc.wkMem)
			}
			if b.Topics[0].StreamBytes != tc.stream || b.BrokerDiskTotalBytes != tc.total || b.Brokers.DiskBytes != tc.perBroker {
				t.Errorf("disk: stream %d total %d per broker %d; want %d, %d, %d", b.Topics[0].StreamBytes,
					b.BrokerDiskTotalBytes, b.Brokers.DiskBytes, tc.stream, tc.total, tc.perBroker)
			}
			if b.BrokerDiskAvgBytes != tc.total/int64(b.Brokers.Count) {
				t.Errorf("average disk %d", b.BrokerDiskAvgBytes)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	if _, err := Build(devInput(1000, 128, 100*time.Microsecond, 1), Default()); err == nil || !strings.Contains(err.Error(), "too tight") {
		t.Errorf("p99 100µs: %v", err)
	}
	in := devInput(0, 0, 0, -1)
	in.Cores = 0
	in.Topics = nil
	if _, err := Build(in, Default()); err == nil {
		t.Error("bad input accepted")
	}
	cal := Default()
	cal.Broker = nil
	if _, err := Build(devInput(1000, 128, 50*time.Millisecond, 1), cal); err == nil {
		t.Error("calibration without broker figures accepted")
	}
}
