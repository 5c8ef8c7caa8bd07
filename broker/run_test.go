package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
)

// get is path's status and body at addr.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	r, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return r.StatusCode, string(body)
}

// TestRunServesOpsAndStopsWithContext: Run evaluates the broker's alarms
// on the manager New registered and serves them on the ops listener; when
// ctx ends it returns, the listener closed and the server down.
func TestRunServesOpsAndStopsWithContext(t *testing.T) {
	cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
	cfg.OpsListen = "127.0.0.1:0"
	cfg.Alarms.Interval, cfg.Alarms.Hold = 50*time.Millisecond, 100*time.Millisecond
	cfg.Alarms.DiskUseMax = 1e-9 // any disk in use raises disk_use
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(harness.Logger(t).Core(), core))
	reg := prometheus.NewRegistry()
	b, err := broker.New(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = b.Run(ctx) })
	defer wg.Wait() // after a failure, cancel first (defers run last first)

	var addr string
	harness.Eventually(t, 10*time.Second, func() bool {
		if l := logs.FilterMessage("ops endpoints listening").All(); len(l) > 0 {
			addr = l[0].ContextMap()["addr"].(string)
		}
		return addr != ""
	}, "the ops listener should be listening")
	id := alarm.ID(alarm.DiskUse, "test-broker")
	var view alarm.View
	harness.Eventually(t, 10*time.Second, func() bool {
		code, body := get(t, addr, "/v1/alarms")
		view = alarm.View{}
		return code == http.StatusOK && json.Unmarshal([]byte(body), &view) == nil && len(view.Active) == 1
	}, "GET /v1/alarms should list one active alarm: %+v", &view)
	if a := view.Active[0]; view.Node != "test-broker" || a.ID != id || a.Node != "test-broker" || !strings.Contains(a.Cause, cfg.DataDir) {
		t.Fatalf("alarms %+v, want %s raised by test-broker naming %s", view, id, cfg.DataDir)
	}
	if a := b.Alarms(); a == nil {
		t.Fatal("Alarms() is nil")
	} else if _, ok := a.Active(alarm.DiskUse, "test-broker"); !ok {
		t.Fatalf("%s served but not active on Alarms()", id)
	}
	for path, want := range map[string]string{
		"/v1/status": `"id":"` + id + `"`,
		"/metrics":   `sluice_alarm_active{name="disk_use",node="test-broker",severity="major",subject="test-broker"} 1`,
		"/readyz":    `"ready":true`,
	} {
		if code, body := get(t, addr, path); code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d %s; lacks %s", path, code, body, want)
		}
	}

	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("Run: %v", runErr)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("the ops listener %s still accepts after Run returned", addr)
	}
	if b.Ready() {
		t.Fatal("ready after Run returned")
	}
}

// TestRunEndsWhenTheServerStops: a server that stops under Run (here
// Shutdown) ends Run with an error, the ops listener closed.
func TestRunEndsWhenTheServerStops(t *testing.T) {
	cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
	cfg.OpsListen = "127.0.0.1:0"
	core, logs := observer.New(zap.InfoLevel)
	b, err := broker.New(cfg, zap.New(zapcore.NewTee(harness.Logger(t).Core(), core)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- b.Run(context.Background()) }()
	harness.Eventually(t, 10*time.Second, func() bool {
		return logs.FilterMessage("ops endpoints listening").Len() > 0
	}, "the ops listener should be listening")
	addr := logs.FilterMessage("ops endpoints listening").All()[0].ContextMap()["addr"].(string)
	b.Shutdown()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "server stopped") {
			t.Fatalf("Run = %v, want the server's stop", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the server stopped")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("the ops listener %s still accepts after Run returned", addr)
	}
}

// TestNewRefusesBadAlarmConfig: New validates the alarm thresholds and
// names the key at fault.
func TestNewRefusesBadAlarmConfig(t *testing.T) {
	for _, tc := range []struct {
		key string
		bad func(*alarm.Config)
	}{
		{"alarms.interval", func(c *alarm.Config) { c.Interval = 0 }},
		{"alarms.hold", func(c *alarm.Config) { c.Hold = c.Interval / 2 }},
		{"alarms.disk_use_max", func(c *alarm.Config) { c.DiskUseMax = 1.5 }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
			tc.bad(&cfg.Alarms)
			b, err := broker.New(cfg, harness.Logger(t), prometheus.NewRegistry())
			if err == nil {
				b.Shutdown()
				t.Fatalf("New accepted a bad %s", tc.key)
			}
			var ke *topology.KeyError
			if !errors.As(err, &ke) || ke.Key != tc.key {
				t.Fatalf("New = %v, want a *topology.KeyError naming %s", err, tc.key)
			}
		})
	}
	cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
	cfg.OpsListen = "127.0.0.1:0"
	if b, err := broker.New(cfg, harness.Logger(t), nil); err == nil {
		b.Shutdown()
		t.Fatal("New accepted an ops listener with no registry for its /metrics")
	}
}

// TestSharedAlarms: on a registry that holds another node's alarm manager
// (a gateway's, in `sluice dev`), New refuses to register a second one, and
// with SharedAlarms keeps none; WatchAlarms raises its alarms on the
// shared manager.
func TestSharedAlarms(t *testing.T) {
	cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
	cfg.Alarms.DiskUseMax = 1e-9
	reg := prometheus.NewRegistry()
	shared := alarm.New("gateway-1", time.Second, harness.Logger(t), nil)
	reg.MustRegister(shared)
	if b, err := broker.New(cfg, harness.Logger(t), reg); err == nil {
		b.Shutdown()
		t.Fatal("New registered a second alarm manager on one registry")
	} else if !strings.Contains(err.Error(), "broker metrics") {
		t.Fatalf("New = %v, want a broker metrics registration error", err)
	}
	cfg.SharedAlarms = true
	b, err := broker.New(cfg, harness.Logger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	if b.Alarms() != nil {
		t.Fatal("a broker sharing its alarms has a manager of its own")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.WatchAlarms(ctx, shared) })
	harness.Eventually(t, 10*time.Second, func() bool {
		_, ok := shared.Active(alarm.DiskUse, "test-broker")
		return ok
	}, "the broker's disk_use should be raised on the shared manager")
	cancel()
	wg.Wait()
}
