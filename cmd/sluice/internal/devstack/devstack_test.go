package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/internal/testkit/harness"
)

func testConfig(dir string, failureRate float64) config.Config {
	cfg := config.DefaultConfig()
	cfg.Broker.DataDir = dir
	cfg.Broker.Listen = "127.0.0.1:-1"
	cfg.Gateway.Listen = "127.0.0.1:0"
	cfg.Demo.Delay = 0
	cfg.Demo.FailureRate = failureRate
	return cfg
}

// run starts a stack and returns its gateway URL, registry and a stop func.
func run(t *testing.T, cfg config.Config) (string, *prometheus.Registry, func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := Start(cfg, harness.Logger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	ready := make(chan struct{})
	go func() { errc <- s.Run(ctx, func() { close(ready) }) }()
	<-ready
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return "http://" + s.Addr().String(), reg, stop
}

type topicState struct {
	Depth    struct{ Messages uint64 }
	Families []struct {
		Name        string
		InFlight    int    `json:"in_flight"`
		Pending     uint64 `json:"pending"`
		DeadLetters uint64 `json:"dead_letters"`
	}
}

func state(t *testing.T, url string) topicState {
	t.Helper()
	resp, err := http.Get(url + "/v1/topics/orders")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st topicState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRestartKeepsUnackedMessages(t *testing.T) {
	dir := t.TempDir()
	// First life: every attempt fails, so nothing is acked.
	url, _, stop := run(t, testConfig(dir, 1))
	const n = 5
	for i := range n {
		resp, err := http.Post(url+"/v1/topics/orders/messages", "text/plain", strings.NewReader(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("publish %d: %d", i, resp.StatusCode)
		}
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		st := state(t, url)
		return st.Families[0].Pending == 0 && st.Families[1].Pending == 0
	}, "every message should have been delivered (and failed) once")
	if st := state(t, url); st.Depth.Messages != n {
		t.Fatalf("depth %d before restart, want %d", st.Depth.Messages, n)
	}
	stop()

	// Second life on the same store: the messages are still there and the
	// healthy demo workers handle all of them, in both families.
	url, reg, _ := run(t, testConfig(dir, 0))
	harness.Eventually(t, 20*time.Second, func() bool {
		return state(t, url).Depth.Messages == 0
	}, "the restarted stack should handle the kept messages")
	for _, fam := range []string{"billing", "shipping"} {
		if got := acked(t, reg, fam); got != n {
			t.Errorf("%s acked %v messages after restart, want %d", fam, got, n)
		}
	}
	for _, f := range state(t, url).Families {
		if f.DeadLetters != 0 {
			t.Errorf("%s has %d dead letters", f.Name, f.DeadLetters)
		}
	}
}

// acked is the family's sluice_worker_messages_total{outcome="acked"} in reg.
func acked(t *testing.T, reg *prometheus.Registry, family string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_worker_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["family"] == family && labels["outcome"] == "acked" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestBrokerAlarmsJoinTheGateways: `sluice dev` is one node with one alarm
// manager: the broker's disk_use is listed on the gateway's /v1/alarms,
// and the one registry holds one set of alarm gauges beside the broker's
// own metrics.
func TestBrokerAlarmsJoinTheGateways(t *testing.T) {
	cfg := testConfig(t.TempDir(), 0)
	cfg.Alarms.DiskUseMax = 1e-9 // any disk in use raises disk_use
	url, reg, _ := run(t, cfg)
	id := "disk_use:" + cfg.Broker.Name
	var view struct {
		Node   string
		Active []struct{ ID, Node string }
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(url + "/v1/alarms")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		view.Active = nil
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&view) != nil {
			return false
		}
		for _, a := range view.Active {
			if a.ID == id {
				return a.Node == view.Node
			}
		}
		return false
	}, "the gateway's /v1/alarms should list the broker's %s on the node's one manager: %+v", id, &view)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]int{}
	for _, mf := range mfs {
		found[mf.GetName()] = len(mf.GetMetric())
	}
	if found["sluice_alarm_active"] < 1 || found["sluice_topic_messages"] != 1 {
		t.Fatalf("registry: %d sluice_alarm_active, %d sluice_topic_messages; want the alarm gauges and the broker's metrics",
			found["sluice_alarm_active"], found["sluice_topic_messages"])
	}
}
