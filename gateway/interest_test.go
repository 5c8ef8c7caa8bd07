package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// bareBus is a JetStream server with topics provisioned once and no
// Sluice broker around it, which would recreate a deleted family at once:
// here a family stays missing until the test provisions it again.
func bareBus(t *testing.T, topics map[string]topology.Topic) *nats.Conn {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true, SyncAlways: true}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	reprovision(t, js, topics)
	return nc
}

// quietGateway is a gateway whose alarm watcher reads the families only at
// start: the test alone decides when the gateway reads them (at commits).
func quietGateway(t *testing.T, topics map[string]topology.Topic, nc *nats.Conn) string {
	t.Helper()
	cfg := harness.GatewayConfig(topics)
	cfg.Alarms.Interval, cfg.Alarms.Hold = time.Hour, time.Hour
	_, srv := harness.StartGateway(t, cfg, nc)
	return srv.URL
}

func storedMsgs(t *testing.T, js jetstream.JetStream, topic string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), sluice.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func lastSeq(t *testing.T, js jetstream.JetStream, topic string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), sluice.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

func deleteFamily(t *testing.T, js jetstream.JetStream, topic, family string) {
	t.Helper()
	if err := js.DeleteConsumer(context.Background(), sluice.StreamName(topic), family); err != nil {
		t.Fatalf("delete %s/%s: %v", topic, family, err)
	}
}

func reprovision(t *testing.T, js jetstream.JetStream, topics map[string]topology.Topic) {
	t.Helper()
	if err := broker.Provision(context.Background(), js, topics, harness.Logger(t)); err != nil {
		t.Fatal(err)
	}
}

// fetchIDs pulls what family has waiting and acks it, by message id.
func fetchIDs(t *testing.T, js jetstream.JetStream, topic, family string) map[string]int {
	t.Helper()
	c, err := js.Consumer(context.Background(), sluice.StreamName(topic), family)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for {
		batch, err := c.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get(sluice.HeaderOriginalID)
			if id == "" {
				id = m.Headers().Get(sluice.HeaderMsgID)
			}
			got[sluice.KeyOf(id)]++
			_ = m.Ack()
		}
		if n == 0 {
			return got
		}
	}
}

// TestMissingFamilyIsRefusedAndNothingStored: with its families' consumers
// deleted, a topic's stream would answer a publish with a PubAck and store
// nothing. The gateway refuses unsent instead (503 naming the family), says
// so at /readyz and in an alarm, and takes the same key once the family is
// back, as a new message.
func TestMissingFamilyIsRefusedAndNothingStored(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	nc := bareBus(t, topics)
	js, _ := jetstream.New(nc)
	cfg := harness.GatewayConfig(topics)
	cfg.Alarms.Interval, cfg.Alarms.Hold = 100*time.Millisecond, 100*time.Millisecond
	g, srv := harness.StartGateway(t, cfg, nc)
	url := srv.URL + "/v1/topics/orders/messages"
	if resp := post(t, url, "", strings.NewReader("first"), nil); resp.StatusCode != 202 {
		t.Fatalf("first: %d", resp.StatusCode)
	}

	for round, missing := range [][]string{{"shipping"}, {"billing", "shipping"}} {
		for _, f := range missing {
			deleteFamily(t, js, "orders", f)
		}
		before := lastSeq(t, js, "orders")
		for i := range 5 {
			// The first may be sent under the gateway's last reading: the
			// reading after its ack finds the family gone, and it is an
			// unknown outcome. The others are refused unsent.
			want := sluice.ProblemBusUnavailable
			resp := post(t, url, "", strings.NewReader("m"), map[string]string{"Idempotency-Key": fmt.Sprintf("r%d-%d", round, i)})
			if i == 0 && resp.Header.Get("Content-Type") == "application/problem+json" {
				if p := decode[sluice.Problem](t, resp); p.Type == sluice.ProblemOutcomeUnknown {
					continue
				} else if p.Type != want {
					t.Fatalf("first publish with %v missing: %+v", missing, p)
				}
				continue
			}
			p := wantProblem(t, resp, http.StatusServiceUnavailable, want)
			for _, f := range missing {
				if !strings.Contains(p.Detail, f) {
					t.Fatalf("refusal does not name family %s: %q", f, p.Detail)
				}
			}
		}
		if got := lastSeq(t, js, "orders"); got > before+1 {
			t.Fatalf("families %v missing: last seq went from %d to %d: more than the one unknown outcome", missing, before, got)
		}
		before = lastSeq(t, js, "orders")
		harness.Eventually(t, 20*time.Second, func() bool {
			resp, err := http.Get(srv.URL + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusServiceUnavailable
		}, "/readyz should say 503 while %v is missing", missing)
		for _, f := range missing {
			if _, ok := g.Alarms().Active("family_missing", "orders/"+f); !ok {
				t.Fatalf("no family_missing alarm for orders/%s", f)
			}
		}
		reprovision(t, js, topics)
		resp := post(t, url, "", strings.NewReader("m"), map[string]string{"Idempotency-Key": fmt.Sprintf("r%d-1", round)})
		if r := decode[receipt](t, resp); resp.StatusCode != 202 || r.Duplicate || r.Seq != before+1 {
			t.Fatalf("after the families are back: %d %+v, want 202 new at seq %d", resp.StatusCode, r, before+1)
		}
	}
}

// TestFamilyDeletedBetweenReadingsIsUnknownThenRepaired: the consumer
// disappears after the gateway last read it and before it publishes. The
// stream stores the message for the other family only; the reading after
// the ack shows the family gone, so the answer is 503 unknown, not 202.
// Once the family is back, the retry (a duplicate) is repaired: a copy goes
// to that family alone, and the answer is 202.
func TestFamilyDeletedBetweenReadingsIsUnknownThenRepaired(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	nc := bareBus(t, topics)
	js, _ := jetstream.New(nc)
	url := quietGateway(t, topics, nc) + "/v1/topics/orders/messages"
	if resp := post(t, url, "", strings.NewReader("first"), map[string]string{"Idempotency-Key": "first"}); resp.StatusCode != 202 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	deleteFamily(t, js, "orders", "billing")
	key := map[string]string{"Idempotency-Key": "in-the-gap"}
	p := wantProblem(t, post(t, url, "", strings.NewReader("gap"), key), http.StatusServiceUnavailable, sluice.ProblemOutcomeUnknown)
	if !strings.Contains(p.Detail, "billing") {
		t.Fatalf("unknown outcome does not name billing: %q", p.Detail)
	}
	// Not the family back yet: still not confirmed.
	wantProblem(t, post(t, url, "", strings.NewReader("gap"), key), http.StatusServiceUnavailable, sluice.ProblemBusUnavailable)

	reprovision(t, js, topics)
	resp := post(t, url, "", strings.NewReader("gap"), key)
	r := decode[receipt](t, resp)
	if resp.StatusCode != 202 || !r.Duplicate || r.Seq != 2 {
		t.Fatalf("retry once billing is back: %d %+v, want 202 duplicate of seq 2", resp.StatusCode, r)
	}
	// Billing (recreated: new messages only, or all that is left) gets the
	// repaired copy; shipping got the original once and nothing more.
	billing := fetchIDs(t, js, "orders", "billing")
	shipping := fetchIDs(t, js, "orders", "shipping")
	if billing["in-the-gap"] < 1 {
		t.Fatalf("billing never got the message stored while it was missing: %v", billing)
	}
	if shipping["in-the-gap"] != 1 || shipping["first"] != 1 {
		t.Fatalf("shipping got %v, want each message once", shipping)
	}
	// A further retry within the window is a duplicate repaired again at
	// most once per family (the copy has its own id).
	resp = post(t, url, "", strings.NewReader("gap"), key)
	if r := decode[receipt](t, resp); resp.StatusCode != 202 || !r.Duplicate {
		t.Fatalf("second retry: %d %+v", resp.StatusCode, r)
	}
	if again := fetchIDs(t, js, "orders", "billing"); again["in-the-gap"] != 0 {
		t.Fatalf("billing got the repaired copy again: %v", again)
	}
}

// TestRedriveWithFamilyMissingKeepsTheDeadLetter: a redrive to a family
// without a consumer would be acked and stored nowhere, and its dead letter
// deleted: the message would exist nowhere. It is refused and the dead
// letter kept.
func TestRedriveWithFamilyMissingKeepsTheDeadLetter(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	nc := bareBus(t, topics)
	js, _ := jetstream.New(nc)
	url := quietGateway(t, topics, nc)
	// A dead letter, as a worker writes it.
	dl := nats.NewMsg(sluice.DeadLetterSubject("orders", "billing", 7))
	dl.Data = []byte("dead")
	dl.Header.Set(sluice.HeaderOriginalID, "lost-7")
	dl.Header.Set(sluice.HeaderDeadReason, sluice.ReasonPermanent)
	if _, err := js.PublishMsg(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	dead := url + "/v1/topics/orders/families/billing/dead-letters"
	if resp := post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("warm"), nil); resp.StatusCode != 202 {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	deleteFamily(t, js, "orders", "billing")
	// The redrive may be sent under the gateway's last reading (the
	// stream then acks it and stores nothing): the reading after the ack
	// finds billing gone, and the dead letter stays.
	before := storedMsgs(t, js, "orders")
	for range 2 {
		resp := post(t, dead+"/redrive", "", nil, nil)
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("redrive to a missing family answered 200")
		}
		resp.Body.Close()
	}
	if got := storedMsgs(t, js, "orders"); got != before {
		t.Fatalf("redrive stored something (%d -> %d messages)", before, got)
	}
	if resp, err := http.Get(dead + "/1"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the dead letter is gone after a refused redrive: %v %v", resp, err)
	}

	reprovision(t, js, topics)
	resp := post(t, dead+"/redrive", "", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("redrive once billing is back: %d", resp.StatusCode)
	}
	resp.Body.Close()
	if got := fetchIDs(t, js, "orders", "billing"); got["lost-7"] != 1 {
		t.Fatalf("billing got %v, want the redriven message", got)
	}
	if resp, err := http.Get(dead + "/1"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the redriven dead letter is still listed: %v %v", resp, err)
	}
}

// TestDuplicateProvedWithoutTheOriginal: once every family has handled a
// message it is gone from its topic, and a duplicate used to be accepted
// unverified: another payload under the same key was answered 202
// duplicate and stored nowhere. The digest in the deduplication id proves
// a duplicate without the original: the same message is a duplicate, any
// other is stored.
func TestDuplicateProvedWithoutTheOriginal(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	js, _ := jetstream.New(nc)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	url := srv.URL + "/v1/topics/orders/messages"
	key := map[string]string{"Idempotency-Key": "pay-1", "Content-Type": "text/plain"}
	if r := decode[receipt](t, post(t, url, "", strings.NewReader("amount=10"), key)); r.Seq != 1 {
		t.Fatalf("first: %+v", r)
	}
	if got := fetchIDs(t, js, "orders", "billing"); got["pay-1"] != 1 {
		t.Fatalf("billing got %v", got)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return storedMsgs(t, js, "orders") == 0 }, "the handled message should leave the topic")

	resp := post(t, url, "", strings.NewReader("amount=99"), key)
	if r := decode[receipt](t, resp); resp.StatusCode != 202 || r.Duplicate || r.Seq != 2 {
		t.Fatalf("another payload under the key: %d %+v, want stored at seq 2", resp.StatusCode, r)
	}
	resp = post(t, url, "", strings.NewReader("amount=10"), key)
	if r := decode[receipt](t, resp); resp.StatusCode != 202 || !r.Duplicate || r.Seq != 1 {
		t.Fatalf("the first message again: %d %+v, want a duplicate of seq 1", resp.StatusCode, r)
	}
	// Billing gets the second payload, and a copy of the first: its
	// consumer is younger than the duplicate window and the original is gone
	// from the topic, so nothing proves the first store reached it.
	if got := fetchIDs(t, js, "orders", "billing"); got["pay-1"] != 2 {
		t.Fatalf("billing got %v, want the second payload and a repair copy of the first", got)
	}
}
