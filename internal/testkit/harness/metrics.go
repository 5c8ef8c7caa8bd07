package harness

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Gauge is the value of the gauge named name on reg, which must hold one
// series of it.
func Gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s: not gathered as one series", name)
	return 0
}
