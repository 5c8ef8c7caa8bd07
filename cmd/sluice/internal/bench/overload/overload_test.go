package overload

import (
	"context"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
)

// TestShortOverload is the short version of `sluice bench overload`: it
// checks the invariants, not speed. Producers offer 10x what the families
// handle; nothing accepted is lost, every refusal is a 429 or 503 with
// Retry-After, and memory stays bounded.
func TestShortOverload(t *testing.T) {
	cfg := DefaultConfig()
	// The overload must happen whatever the machine's speed: families
	// that take 20 messages/s and a topic of 40 fill up within the 3 s
	// of load as soon as the gateway accepts more than ~35 messages/s,
	// which a loaded 2-core machine does many times over.
	cfg.Capacity = 20
	cfg.Duration = 3 * time.Second
	cfg.Concurrency = 16
	cfg.TopicMaxMessages = 40
	// Room for redelivery: a pull response lost in flight comes back only
	// after the family's ack wait, so the drain allows several.
	cfg.DrainTimeout = 3*topology.DefaultFamily().AckWait + 30*time.Second
	cfg.DataDir = t.TempDir()
	rep, err := Run(context.Background(), cfg, harness.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.Markdown())
	if rep.Accepted == 0 || rep.Refused429+rep.Refused503 == 0 {
		t.Fatalf("no overload happened: accepted %d, refused %d", rep.Accepted, rep.Refused429+rep.Refused503)
	}
	for fam, n := range rep.NotDelivered {
		if n != 0 {
			t.Errorf("%s: %d accepted messages never delivered", fam, n)
		}
	}
	if len(rep.OtherStatus) != 0 || rep.TransportErrors != 0 {
		t.Errorf("answers other than 202/429/503: %v, transport errors %d", rep.OtherStatus, rep.TransportErrors)
	}
	if rep.RetryAfterShare != 1 {
		t.Errorf("%.1f%% of refusals carried Retry-After, want all", 100*rep.RetryAfterShare)
	}
	if rep.PeakHeap > 512<<20 {
		t.Errorf("heap peaked at %d MiB", rep.PeakHeap>>20)
	}
	if rep.ReopenSeconds > 30 {
		t.Errorf("admission reopened %v s after the overload", rep.ReopenSeconds)
	}
}
