package capacity

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBrokerCPU(t *testing.T) {
	cal := Default()
	slope := (0.097 - 0.066) / (1024 - 128) // ms per byte at R3
	for _, tc := range []struct {
		replicas int
		size     int64
		ms       float64
	}{
		{3, 128, 0.066},
		{3, 1024, 0.097},
		{1, 128, 0.045},
		{1, 1024, 0.045 + 896*slope/3}, // R1's slope is R3's per replica
		{2, 128, 0.0555},               // interpolated
		{5, 128, 0.087},                // extrapolated
	} {
		got, err := cal.BrokerCPU(tc.replicas, tc.size)
		if err != nil || math.Abs(got*1000-tc.ms) > 1e-9 {
			t.Errorf("R%d %d B: %v ms, %v; want %v", tc.replicas, tc.size, got*1000, err, tc.ms)
		}
	}
}

func TestLoadCalibration(t *testing.T) {
	dir := t.TempDir()
	good, _ := json.Marshal(Default())
	path := filepath.Join(dir, "cal.json")
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCalibration(path)
	if err != nil || c.GatewayPerCore != 18_000 || len(c.Broker) != 3 {
		t.Fatalf("round trip: %+v, %v", c, err)
	}
	for name, body := range map[string]string{
		"unknown field": `{"gateway_per_core": 1, "bogus": 2}`,
		"partial":       `{"gateway_per_core": 18000}`,
		"not json":      `gateway`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCalibration(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
