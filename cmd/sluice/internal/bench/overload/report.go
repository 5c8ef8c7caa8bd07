package overload

import (
	"fmt"
	"slices"
	"strings"
)

// Markdown renders the report as the table the issue asks for.
func (r Report) Markdown() string {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "### Overload %gx: %g msg/s per family, %v, %d senders, %d B messages, topic max %d, duplicate window %v\n\n",
		c.Factor, c.Capacity, c.Duration, c.Concurrency, c.MessageSize, c.TopicMaxMessages, c.DuplicateWindow)
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	b.WriteString("| measure | value |\n|---|---|\n")
	row("offered (msg/s)", fmt.Sprintf("%d (%.0f/s); unsent, all senders busy: %d", r.Offered, r.OfferedRate, r.Unsent))
	row("accepted (202)", fmt.Sprint(r.Accepted))
	row("refused 429 / 503", fmt.Sprintf("%d / %d", r.Refused429, r.Refused503))
	other := "none"
	if len(r.OtherStatus) > 0 || r.TransportErrors > 0 {
		other = fmt.Sprintf("%v, transport errors %d", r.OtherStatus, r.TransportErrors)
	}
	row("other answers", other)
	if r.NotDelivered != nil {
		row("accepted but not delivered", families(r.NotDelivered))
		row("duplicates delivered", families(r.Duplicates))
		row("drain after load (s)", fmt.Sprintf("%.1f", r.DrainSeconds))
	} else {
		row("accepted but not delivered", "not checked (external gateway)")
	}
	row("goodput (accepted msg/s while offered)", fmt.Sprintf("%.0f = %.2f x capacity", r.Goodput, r.GoodputRatio))
	row("refusals with Retry-After", fmt.Sprintf("%.1f%%", 100*r.RetryAfterShare))
	row("overload end to admission again (s)", fmt.Sprintf("%.2f", r.ReopenSeconds))
	row("accepted latency p50 / p99 (ms)", fmt.Sprintf("%.1f / %.1f", r.LatencyP50ms, r.LatencyP99ms))
	row("process RSS peak / after warm-up peak (MiB)", fmt.Sprintf("%.0f / %.0f", mib(r.PeakRSS), mib(r.WarmRSS)))
	row("Go heap in use peak (MiB)", fmt.Sprintf("%.0f", mib(r.PeakHeap)))
	b.WriteString("\nMemory every second (RSS MiB / heap MiB): ")
	for i, s := range r.Memory {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%.0f/%.0f", mib(s.RSSBytes), mib(s.Heap))
	}
	b.WriteString("\n")
	return b.String()
}

func families(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d", n, m[n])
	}
	return strings.Join(parts, ", ")
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
