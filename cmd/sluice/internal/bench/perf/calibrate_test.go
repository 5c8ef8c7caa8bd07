package perf

import (
	"math"
	"testing"
)

func TestCalibrationFromRows(t *testing.T) {
	rows := []Row{
		{Topology: "single", Size: 128, Case: CaseSingle, CPUPer1k: map[string]float64{"gateway": 0.05, "broker-1": 0.04}},
		{Topology: "single", Size: 128, Case: CaseSingle, CPUPer1k: map[string]float64{"gateway": 0.04, "broker-1": 0.06}},
		{Topology: "single", Size: 128, Case: CaseBatch, CPUPer1k: map[string]float64{"gateway": 0.02}},
		{Topology: "single", Size: 128, Case: CaseRaw, MsgsPerSec: 5000},
		{Topology: "single", Size: 128, Case: CaseE2E, P99ms: 30, E2EP99ms: 900},
		{Topology: "single", Size: 128, Case: CaseWorker, MsgsPerSec: 1500},
		{Topology: "r3", Size: 1024, Case: CaseSingle, CPUPer1k: map[string]float64{"gateway": 0.06, "broker-1": 0.03, "broker-2": 0.03, "broker-3": 0.04}},
		{Topology: "r3", Size: 128, Case: CaseE2E, P99ms: 40, E2EP99ms: 70},
	}
	cal, err := Calibration(rows, WorkerSpec{Credit: 16})
	if err != nil {
		t.Fatal(err)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9*math.Max(1, math.Abs(want)) }
	// Gateway per core: median of 1000/0.05, 1000/0.04, 1000/0.06 (the r3 row counts too).
	if !near(cal.GatewayPerCore, 20000) || !near(cal.GatewayBatchPerCore, 50000) {
		t.Errorf("gateway per core %v, batch %v", cal.GatewayPerCore, cal.GatewayBatchPerCore)
	}
	if len(cal.Broker) != 2 || cal.Broker[0].Replicas != 1 || !near(cal.Broker[0].CPUMillis, 0.05) ||
		cal.Broker[1].Replicas != 3 || cal.Broker[1].SizeBytes != 1024 || !near(cal.Broker[1].CPUMillis, 0.10) {
		t.Errorf("broker points %+v", cal.Broker)
	}
	if len(cal.Latency) != 2 || cal.Latency[0].PublishP99Millis != 30 || cal.Latency[1].EndToEndP99Millis != 70 {
		t.Errorf("latency %+v", cal.Latency)
	}
	if cal.FsyncPerSecond != 5000 || cal.Worker.Rate != 1500 || cal.Worker.Credit != 16 {
		t.Errorf("fsync %v worker %+v", cal.FsyncPerSecond, cal.Worker)
	}
	if _, err := Calibration(rows[:2], WorkerSpec{Credit: 16}); err == nil {
		t.Error("a calibration without batch, latency or worker figures was accepted")
	}
}
