// Package perf is Sluice's benchmark kit: a latency histogram, an HTTP load
// generator (keep-alive HTTP/1.1 or h2c, closed or open loop), raw JetStream
// publish loads, child processes with their CPU time, and the side-by-side
// comparison behind `sluice bench compare` (make bench).
package perf

import (
	"math/bits"
	"time"
)

// subBits: each power of two is split in 32 buckets (3% wide).
const subBits = 5

const nBuckets = (64 - subBits + 1) << subBits

// Hist is a log-linear latency histogram from 1 ns to hours, about 3%
// precise. Not safe for concurrent use: give each goroutine its own and
// Merge them.
type Hist struct {
	counts [nBuckets]uint64
	n      uint64
	max    int64
}

func bucket(v int64) int {
	if v < 1<<subBits {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 1 // >= subBits
	sub := int(v>>(e-subBits)) - 1<<subBits
	return (e-subBits+1)<<subBits + sub
}

// upper is the largest value of bucket i.
func upper(i int) int64 {
	if i < 1<<subBits {
		return int64(i)
	}
	e := i>>subBits + subBits - 1
	sub := int64(i&(1<<subBits-1)) + 1<<subBits
	return (sub+1)<<(e-subBits) - 1
}

// Record adds one observation.
func (h *Hist) Record(d time.Duration) {
	h.counts[bucket(int64(d))]++
	h.n++
	h.max = max(h.max, int64(d))
}

// Merge adds o's observations to h.
func (h *Hist) Merge(o *Hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Count is the number of observations.
func (h *Hist) Count() uint64 { return h.n }

// Quantile is the q-quantile (0 < q <= 1), rounded up to its bucket's top.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(upper(i), h.max))
		}
	}
	return time.Duration(h.max)
}
