package perf

import (
	"testing"
	"time"
)

func TestHistBucketsAreOrderedAndContainTheirValues(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 31, 32, 33, 63, 64, 100, 1000, 12345, 1e6, 1e9, 3.6e12} {
		b := bucket(v)
		if b < prev || b >= nBuckets {
			t.Fatalf("bucket(%d) = %d after %d", v, b, prev)
		}
		if upper(b) < v || (b > 0 && upper(b-1) >= v) {
			t.Fatalf("value %d in bucket %d spanning (%d, %d]", v, b, upper(b-1), upper(b))
		}
		prev = b
	}
}

func TestHistQuantiles(t *testing.T) {
	var h, o Hist
	for i := 1; i <= 900; i++ {
		h.Record(time.Millisecond)
	}
	for i := 1; i <= 100; i++ {
		o.Record(time.Duration(i) * 10 * time.Millisecond) // 10 ms .. 1 s
	}
	h.Merge(&o)
	if h.Count() != 1000 {
		t.Fatalf("count %d", h.Count())
	}
	near := func(got, want time.Duration) bool { return got >= want && float64(got) <= float64(want)*1.04 }
	if p50 := h.Quantile(0.5); !near(p50, time.Millisecond) {
		t.Errorf("p50 = %v, want 1ms", p50)
	}
	if p99 := h.Quantile(0.99); !near(p99, 900*time.Millisecond) {
		t.Errorf("p99 = %v, want 900ms", p99)
	}
	if p100 := h.Quantile(1); p100 != time.Second {
		t.Errorf("max = %v, want 1s", p100)
	}
}
