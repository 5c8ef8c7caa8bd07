package capacity

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPlanSpeaksOfItsReplicas: a plan for R2 takes its latency from the
// nearest measured count above (R3), says R2, and never speaks of R1.
func TestPlanSpeaksOfItsReplicas(t *testing.T) {
	cal := Default()
	if got := cal.latency(2).Replicas; got != 3 {
		t.Errorf("latency for R2 taken at R%d, want R3", got)
	}
	if got := cal.latency(1).Replicas; got != 1 {
		t.Errorf("latency for R1 taken at R%d", got)
	}
	if got := cal.latency(5).Replicas; got != 3 {
		t.Errorf("latency for R5 taken at R%d, want the highest measured, R3", got)
	}
	b, err := Build(devInput(1000, 128, 10*time.Millisecond, 2), cal)
	if err != nil {
		t.Fatal(err)
	}
	if !hasWarning(b, "publish p99 of R2 (30 ms at half load, measured at R3; R2 was not measured)") {
		t.Errorf("p99 warning: %q", b.Warnings)
	}
	var buf bytes.Buffer
	if err := b.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`\bR1\b`).Match(buf.Bytes()) {
		t.Errorf("an R2 plan speaks of R1:\n%s", buf.String())
	}
	b, err = Build(devInput(1000, 128, 10*time.Millisecond, 1), cal)
	if err != nil {
		t.Fatal(err)
	}
	if !hasWarning(b, "below the measured publish p99 of R1 (30 ms at half load)") || strings.Contains(strings.Join(b.Warnings, " "), "measured at") {
		t.Errorf("R1 p99 warning: %q", b.Warnings)
	}
}
