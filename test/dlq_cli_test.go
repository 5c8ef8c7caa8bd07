package test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestDLQCommand drives `sluice dlq` against a gateway whose billing family
// dead-letters everything: list, peek, redrive one, purge the rest.
func TestDLQCommand(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	harness.RunWorker(t, nc, "orders", "billing", func(_ context.Context, m *sluice.Message) error {
		return sluice.Permanent(errors.New("card declined for " + string(m.Data)))
	})
	p, _ := sluice.NewProducer([]string{srv.URL})
	for _, id := range []string{"o-1", "o-2", "o-3"} {
		if _, err := p.Publish(context.Background(), "orders", []byte("order "+id), sluice.WithID(id)); err != nil {
			t.Fatal(err)
		}
	}
	dlq := func(args ...string) string {
		t.Helper()
		out, err := command(t, append([]string{"dlq", args[0], "--gateway", srv.URL, "--topic", "orders", "--family", "billing"}, args[1:]...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sluice dlq %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var page sluice.DeadLetterPage
	harness.Eventually(t, 10*time.Second, func() bool {
		return json.Unmarshal([]byte(dlq("list", "-o", "json")), &page) == nil && page.Total == 3
	}, "3 dead letters listed")
	text := dlq("list")
	for _, want := range []string{"orders/billing: 3 dead letters", "o-1", "o-3", "permanent", "card declined for order o-2"} {
		if !strings.Contains(text, want) {
			t.Errorf("list does not show %q:\n%s", want, text)
		}
	}
	// Handlers run concurrently: dead letters come in any order.
	var dead uint64
	for _, d := range page.DeadLetters {
		if d.ID == "o-1" {
			dead = d.Seq
		}
	}
	seq := strconv.FormatUint(dead, 10)
	if out := dlq("peek", "--seq", seq); !strings.Contains(out, `"data": "order o-1"`) {
		t.Errorf("peek:\n%s", out)
	}
	if out := dlq("redrive", "--seq", seq); !strings.Contains(out, "redriven 1, ") {
		t.Errorf("redrive:\n%s", out)
	}
	// Billing still declines it: it dies again, under its original id.
	harness.Eventually(t, 10*time.Second, func() bool {
		if json.Unmarshal([]byte(dlq("list", "-o", "json")), &page) != nil || page.Total != 3 {
			return false
		}
		for _, d := range page.DeadLetters {
			if d.ID == "o-1" && d.Seq > dead {
				return true
			}
		}
		return false
	}, "the redriven o-1 dead again, under a new seq")
	// Redrive all while billing still declines: each is redriven once,
	// not again when it dies anew during the same request.
	var res sluice.RedriveResult
	if err := json.Unmarshal([]byte(dlq("redrive", "--limit", "100", "-o", "json")), &res); err != nil || res.Redriven != 3 {
		t.Fatalf("redrive all: %+v (%v)", res, err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return json.Unmarshal([]byte(dlq("list", "-o", "json")), &page) == nil && page.Total == 3
	}, "all three dead again")
	if out := dlq("purge", "--all"); !strings.Contains(out, "purged 3") {
		t.Errorf("purge:\n%s", out)
	}
	out, err := command(t, "dlq", "purge", "--gateway", srv.URL, "--topic", "orders", "--family", "nobody", "--all").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Family not found") {
		t.Errorf("unknown family: %v\n%s", err, out)
	}
}

// TestProduceCommand publishes through a gateway with the producer config
// and reports every message's outcome; the stream holds them all.
func TestProduceCommand(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	out, err := command(t, "produce", "--topic", "orders", "--count", "50", "--rate", "0", "--gateway", srv.URL, "--id-prefix", "p-").Output()
	if err != nil {
		t.Fatalf("produce: %v\n%s", err, out)
	}
	var rep struct{ Sent, Acked, Unknown, Failed int }
	if err := json.Unmarshal(out, &rep); err != nil || rep.Sent != 50 || rep.Acked != 50 || rep.Unknown != 0 || rep.Failed != 0 {
		t.Fatalf("report %s (%v)", out, err)
	}
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), sluice.StreamName("orders"))
	if err != nil || s.CachedInfo().State.Msgs != 50 {
		t.Fatalf("stream: %v %+v", err, s)
	}
	// The same run again: every key is a duplicate, nothing stored twice.
	out, err = command(t, "produce", "--topic", "orders", "--count", "50", "--rate", "0", "--gateway", srv.URL, "--id-prefix", "p-").Output()
	if err != nil || !strings.Contains(string(out), `"duplicates":50`) {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	bad := command(t, "produce", "--topic", "orders", "--count", "1", "--gateway", srv.URL)
	bad.Env = append(bad.Env, "SLUICE_PRODUCER_RETRY_BUDGET=-1")
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "producer.retry") {
		t.Errorf("a negative retry budget: %v\n%s", err, out)
	}
}
