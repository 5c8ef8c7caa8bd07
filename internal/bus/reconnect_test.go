package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestNothingBufferedAcrossAReconnect: nats.go replays what was published
// while it reconnected, however late, and a publish replayed past the
// topic's duplicate window is stored twice (its retry was stored
// meanwhile). A bus connection buffers nothing: a publish while
// disconnected fails at once, unsent, and nothing arrives after the
// reconnect.
func TestNothingBufferedAcrossAReconnect(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	proxy := harness.StartProxy(t, strings.TrimPrefix(b.ClientURL(), "nats://"))
	nc, err := bus.Connect([]string{proxy.URL()}, 2*time.Second, "reconnect-test", harness.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)

	proxy.Cut(true)
	harness.Eventually(t, 30*time.Second, func() bool { return !nc.IsConnected() }, "the connection should notice the cut")
	if err := nc.Publish(sluice.Subject("orders"), []byte("while cut off")); !errors.Is(err, nats.ErrReconnectBufExceeded) {
		t.Fatalf("publish while reconnecting: %v, want ErrReconnectBufExceeded (refused unsent)", err)
	}
	if _, err := js.PublishAsync(sluice.Subject("orders"), []byte("async while cut off")); err == nil {
		t.Fatal("async publish while reconnecting was taken")
	}

	proxy.Cut(false)
	harness.Eventually(t, 30*time.Second, nc.IsConnected, "the connection should come back")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	direct, _ := jetstream.New(harness.Connect(t, b))
	s, err := direct.Stream(context.Background(), sluice.StreamName("orders"))
	if err != nil {
		t.Fatal(err)
	}
	if st := s.CachedInfo().State; st.LastSeq != 0 {
		t.Fatalf("the topic got %d messages after the reconnect: publishes made while cut off were replayed", st.LastSeq)
	}
}
