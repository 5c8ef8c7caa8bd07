package test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestIntegrityGatewayCutOffPastDuplicateWindow: gateway A reaches the
// broker through a proxy, gateway B directly; the topic's duplicate window
// is 5 s. Under load through both (and through A alone), A's bus connection
// is cut for longer than the window, then let through again. While cut
// off, A answers 503 bus-unavailable (nothing stored) or outcome-unknown;
// the producers retry with the same key at B within the window. After the
// reconnect nothing is stored twice (A replays nothing it took while cut
// off) and every 202 is delivered.
func TestIntegrityGatewayCutOffPastDuplicateWindow(t *testing.T) {
	const window = 5 * time.Second
	topic := harness.Topic("orders", families...)
	topic.DuplicateWindow = window
	topics := map[string]topology.Topic{"orders": topic}
	b := harness.StartBroker(t, topics)
	js, _ := jetstream.New(harness.Connect(t, b))
	proxy := harness.StartProxy(t, strings.TrimPrefix(b.ClientURL(), "nats://"))
	gateway := func(url string, publishTimeout time.Duration) string {
		// As a gateway connects: nothing buffered across a reconnect.
		nc, err := bus.Connect([]string{url}, 2*time.Second, "gateway", harness.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		cfg := harness.GatewayConfig(topics)
		cfg.PublishTimeout = publishTimeout
		_, srv := harness.StartGateway(t, cfg, nc)
		return srv.URL
	}
	a, bURL := gateway(proxy.URL(), time.Second), gateway(b.ClientURL(), 2*time.Second)
	in := newIntegrity(js, []string{a, bURL})
	in.settleSeen = true // the window is long past when the load ends
	startHandlers(t, harness.Connect(t, b), in.chk, 16, nil)
	// Each message's retries end within the window of its first store
	// (the store comes after the first send): a retry is a duplicate.
	spec := loadSpec{prefix: "ab", timeout: window - 2*time.Second,
		retry: []sluice.ProducerOption{sluice.WithRetry(8, 20*time.Millisecond, 300*time.Millisecond)}}
	both := in.start(t, spec)
	spec.gateways, spec.prefix, spec.concurrency = []string{a}, "a", 2
	onlyA := in.start(t, spec)
	both.ackedMore(t, 300, "before the cut")

	onlyA.busy(t)
	proxy.Cut(true)
	cut := time.Now()
	time.Sleep(window * 8 / 5)
	proxy.Cut(false)
	healed := time.Now()
	aHost := strings.TrimPrefix(a, "http://")
	harness.Eventually(t, 30*time.Second, func() bool {
		return len(in.wire.with(func(ex exchange) bool { return ex.host == aHost && ex.sent.After(healed) && ex.status == 202 })) >= 100
	}, "gateway A should store again after the reconnect")
	both.ackedMore(t, 200, "after the reconnect")
	in.conclude(t, "gateway cut off past the duplicate window", both, onlyA)

	whileCut := in.wire.with(func(ex exchange) bool {
		return ex.host == aHost && ex.sent.After(cut) && ex.answered.Before(healed)
	})
	kinds := map[string]int{}
	for _, ex := range whileCut {
		kinds[ex.problem]++
		if ex.status != 503 || (ex.problem != sluice.ProblemBusUnavailable && ex.problem != sluice.ProblemOutcomeUnknown) {
			t.Errorf("gateway A answered %d %s (%q) while cut off; want 503 bus-unavailable or outcome-unknown", ex.status, ex.problem, ex.detail)
		}
	}
	t.Logf("gateway A while cut off for %v: %d answers by problem type %v", healed.Sub(cut).Round(time.Millisecond), len(whileCut), kinds)
	if kinds[sluice.ProblemBusUnavailable] == 0 {
		t.Error("gateway A refused nothing while cut off")
	}
}
