package perf

import (
	"fmt"
	"slices"
	"strings"
)

// Target is one of issue 6's goals, checked on medians of per-round ratios.
type Target struct {
	Topology string  `json:"topology"`
	Size     int     `json:"size"`
	Name     string  `json:"name"`
	Want     float64 `json:"want"`
	Got      float64 `json:"got"`
	// Less: the target is an upper bound (latency), else a lower bound.
	Less bool `json:"less,omitempty"`
	Met  bool `json:"met"`
}

// Targets computes the goals from rows: within each round, the ratio of
// the two cases; then the median over rounds.
func Targets(rows []Row) []Target {
	var ts []Target
	ratio := func(topo string, size int, num, den string) float64 {
		var v []float64
		for _, r := range rows {
			if r.Topology != topo || r.Size != size || r.Case != num {
				continue
			}
			for _, d := range rows {
				if d.Topology == topo && d.Size == size && d.Case == den && d.Round == r.Round && d.MsgsPerSec > 0 {
					v = append(v, r.MsgsPerSec/d.MsgsPerSec)
				}
			}
		}
		return median(v)
	}
	for _, k := range keys(rows) {
		add := func(name string, want, got float64, less bool) {
			met := got >= want
			if less {
				met = got > 0 && got < want
			}
			ts = append(ts, Target{Topology: k.topo, Size: k.size, Name: name, Want: want, Got: got, Less: less, Met: met})
		}
		add("c/a: durable single message vs the HTTP floor", 0.65, ratio(k.topo, k.size, CaseSingle, CaseFloor), false)
		add("d/b2: Sluice batch vs raw atomic batch", 0.8, ratio(k.topo, k.size, CaseBatch, CaseRawBatch), false)
		if k.topo == "r3" {
			add("c/b1: single message vs raw per-message publish", 0.8, ratio(k.topo, k.size, CaseSingle, CaseRaw), false)
		}
		add("e: end-to-end p99 at half the max rate (ms)", 10, median(pick(rows, k.topo, k.size, CaseE2E, func(r Row) float64 { return r.E2EP99ms })), true)
	}
	return ts
}

type key struct {
	topo string
	size int
}

func keys(rows []Row) []key {
	var ks []key
	for _, r := range rows {
		if k := (key{r.Topology, r.Size}); !slices.Contains(ks, k) {
			ks = append(ks, k)
		}
	}
	return ks
}

// Markdown renders the medians per case and the targets.
func Markdown(c Compare, rows []Row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Side by side, one run: %d rounds of %v per case (after %v warm-up), %s, single messages at concurrency %d, "+
		"batches of %d at concurrency %d. Medians over rounds; CPU is seconds per 1,000 messages.\n\n",
		c.Rounds, c.Duration, c.Warmup, c.Proto, c.Concurrency, c.Batch, c.BatchConcurrency)
	for _, k := range keys(rows) {
		procs := []string{"loadgen"}
		for _, r := range rows {
			if r.Topology == k.topo {
				for name := range r.CPUPer1k {
					if !slices.Contains(procs, name) {
						procs = append(procs, name)
					}
				}
			}
		}
		slices.Sort(procs[1:])
		fmt.Fprintf(&b, "### %s, %d B\n\n| case | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | failed |", k.topo, k.size)
		for _, p := range procs {
			fmt.Fprintf(&b, " CPU %s |", p)
		}
		b.WriteString("\n|---|---|---|---|---|---|---|" + strings.Repeat("---|", len(procs)) + "\n")
		for _, cs := range []string{CaseFloor, CaseRaw, CaseRawBatch, CaseSingle, CaseBatch, CaseE2E} {
			get := func(f func(Row) float64) float64 { return median(pick(rows, k.topo, k.size, cs, f)) }
			if len(pick(rows, k.topo, k.size, cs, func(Row) float64 { return 0 })) == 0 {
				continue
			}
			name := cs
			if cs == CaseE2E {
				name = fmt.Sprintf("%s (%.0f/s; ingest to handler p50 %.2f, p99 %.2f, p99.9 %.2f ms)", cs, get(func(r Row) float64 { return r.Rate }),
					get(func(r Row) float64 { return r.E2EP50ms }), get(func(r Row) float64 { return r.E2EP99ms }), get(func(r Row) float64 { return r.E2EP999ms }))
			}
			fmt.Fprintf(&b, "| %s | %.0f | %.1f | %.2f | %.2f | %.2f | %.0f |", name,
				get(func(r Row) float64 { return r.MsgsPerSec }), get(func(r Row) float64 { return r.MBPerSec }),
				get(func(r Row) float64 { return r.P50ms }), get(func(r Row) float64 { return r.P99ms }),
				get(func(r Row) float64 { return r.P999ms }), get(func(r Row) float64 { return float64(r.Failed) }))
			for _, p := range procs {
				v := get(func(r Row) float64 { return r.CPUPer1k[p] })
				if v == 0 {
					b.WriteString(" |")
				} else {
					fmt.Fprintf(&b, " %.3f |", v)
				}
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	b.WriteString("### Targets (median of per-round ratios)\n\n| topology | size | target | want | got | met |\n|---|---|---|---|---|---|\n")
	for _, t := range Targets(rows) {
		op := ">="
		if t.Less {
			op = "<"
		}
		fmt.Fprintf(&b, "| %s | %d B | %s | %s %.2f | %.2f | %v |\n", t.Topology, t.Size, t.Name, op, t.Want, t.Got, map[bool]string{true: "yes", false: "**no**"}[t.Met])
	}
	return b.String()
}
