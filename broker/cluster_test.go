package broker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

func r3(name string, families ...string) map[string]topology.Topic {
	t := harness.Topic(name, families...)
	t.Replicas = 3
	return harness.Topics(t)
}

func TestClusterProvisionsR3(t *testing.T) {
	c := harness.StartCluster(t, 3, r3("orders", "billing", "shipping"))
	js, _ := jetstream.New(c.Connect(t))
	ctx := context.Background()
	c.WaitCurrent(t, js, "orders", "the topic should have a leader and two current replicas")
	s, _ := js.Stream(ctx, sluice.StreamName("orders"))
	if s.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("replicas = %d", s.CachedInfo().Config.Replicas)
	}
	cons, err := s.Consumer(ctx, "billing")
	if err != nil || cons.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("family not replicated: %v", err)
	}
}

// TestClusterLeaderLossLosesNothing: the stream leader stops hard while
// messages flow; publishing resumes through the SDK's retries, every
// accepted message is delivered, and the restarted broker catches up.
func TestClusterLeaderLossLosesNothing(t *testing.T) {
	topics := r3("orders", "billing")
	c := harness.StartCluster(t, 3, topics)
	js, _ := jetstream.New(c.Connect(t))
	ctx := context.Background()
	c.WaitCurrent(t, js, "orders", "cluster not settled")
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), c.Connect(t))

	var mu sync.Mutex
	got := map[string]int{}
	w, _ := sluice.NewWorker(c.Connect(t), "orders", "billing", sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		mu.Lock()
		got[m.ID]++
		mu.Unlock()
		return nil
	}))
	wctx, stopWorker := context.WithCancel(context.Background())
	defer stopWorker()
	go func() { _ = w.Run(wctx) }()

	p, _ := sluice.NewProducer([]string{srv.URL}, sluice.WithRetry(40, 50*time.Millisecond, 500*time.Millisecond))
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := p.Publish(pctx, "orders", []byte("x"), sluice.WithID(fmt.Sprintf("m-%d", i)))
			cancel()
			if err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	publish(0, 30)
	leader := c.Leader(t, js, "orders")
	if leader < 0 {
		t.Fatal("no leader")
	}
	c.Stop(leader)
	publish(30, 60) // accepted only once the two others have elected a leader
	c.Restart(leader)
	harness.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 60
	}, "every accepted message should be delivered")
	c.WaitCurrent(t, js, "orders", "the restarted broker should catch up")
	s, _ := js.Stream(ctx, sluice.StreamName("orders"))
	if last := s.CachedInfo().State.LastSeq; last != 60 {
		t.Errorf("stream stored %d messages for 60 ids: a retry was stored twice", last)
	}
}

// TestClusterMinorityNeverAccepts: a gateway that can reach only a broker
// cut off from the others answers 503, never 202; after the heal it accepts.
func TestClusterMinorityNeverAccepts(t *testing.T) {
	topics := r3("orders", "billing")
	c := harness.StartCluster(t, 3, topics)
	js, _ := jetstream.New(c.Connect(t))
	c.WaitCurrent(t, js, "orders", "cluster not settled")
	nc, err := nats.Connect(c.Nodes[0].URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := harness.GatewayConfig(topics)
	cfg.PublishTimeout = time.Second
	_, srv := harness.StartGateway(t, cfg, nc)

	c.Isolate(0)
	for i := range 5 {
		resp, err := http.Post(srv.URL+"/v1/topics/orders/messages", "", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("publish %d through the minority: %d, want 503 with Retry-After", i, resp.StatusCode)
		}
	}
	c.Heal(0)
	harness.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Post(srv.URL+"/v1/topics/orders/messages", "", strings.NewReader("x"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusAccepted
	}, "after the heal the gateway should accept again")
}
