//go:build fuse

package powerfs

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestAckedMessagesSurvivePowerLoss is the promise the chaos scenarios
// rely on: a broker (JetStream file store, sync_always) on the mount acks a
// publish only after an fsync, so every message acked, even while the power
// is being cut, is in the stream after the power comes back and the broker
// restarts on the same directory.
func TestAckedMessagesSurvivePowerLoss(t *testing.T) {
	const (
		publishers  = 4
		perPub      = 150 // at most, each
		cutAfter    = 100 // acks before the power cut, or
		cutDeadline = 20 * time.Second
	)
	f := mount(t)
	dir := filepath.Join(f.Mountpoint(), "broker")
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBrokerIn(t, dir, topics)
	js, err := jetstream.New(harness.Connect(t, b))
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	acked := map[uint64][]byte{} // seq -> payload
	var acks atomic.Int64
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range perPub {
				payload := fmt.Appendf(nil, "publisher %d message %d", p, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ack, err := js.Publish(ctx, sluice.Subject("orders"), payload)
				cancel()
				if err != nil {
					return // the power is off
				}
				mu.Lock()
				acked[ack.Sequence] = payload
				mu.Unlock()
				acks.Add(1)
			}
		})
	}
	deadline := time.Now().Add(cutDeadline)
	for acks.Load() < cutAfter && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	lost, err := f.PowerOff()
	if err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	wg.Wait()
	b.Shutdown()
	t.Logf("%d publishes acked; the power cut lost %d bytes in %q", len(acked), lost.Bytes, lost.Files)
	if len(acked) == 0 {
		t.Fatal("no publish acked before the power cut")
	}

	f.PowerOn()
	b = harness.StartBrokerIn(t, dir, topics)
	js, err = jetstream.New(harness.Connect(t, b))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	missing := 0
	for seq, payload := range acked {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil || !bytes.Equal(m.Data, payload) {
			missing++
			if missing <= 10 {
				t.Errorf("acked seq %d (%q) after restart: %v", seq, payload, describe(m, err))
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acked messages lost", missing, len(acked))
	}
}

func describe(m *jetstream.RawStreamMsg, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("holds %q", m.Data)
}
