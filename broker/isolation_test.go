package broker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestWorkerCannotRedirectPulls: a worker names another family's
// dead-letter subject, and the topic itself, as the reply subject of a
// pull request on its own family. Within one account the server would
// deliver the pulled messages there from its own client (filling another
// family's dead letters, or replaying into the topic); with the worker in
// an account of its own, the reply leads back into that account. Nothing
// lands in the other family's dead letters nor in the topic, and the
// billing family still gets every message once its worker behaves.
func TestWorkerCannotRedirectPulls(t *testing.T) {
	a := startAuthed(t)
	anc, _ := a.connectRaw(t, a.admin)
	ajs, _ := jetstream.New(anc)
	ctx := context.Background()
	const n = 5
	for i := range n {
		if _, err := ajs.Publish(ctx, sluice.Subject("orders"), []byte{byte('a' + i)}, jetstream.WithMsgID(string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	wnc, _ := a.connectRaw(t, a.worker)
	pull, _ := json.Marshal(map[string]any{"batch": n, "expires": int64(500 * time.Millisecond)})
	for _, target := range []string{
		sluice.DeadLetterSubject("orders", "shipping", 1), // another family's dead letters
		sluice.Subject("orders"),                          // the topic: a replay
		sluice.DeadLetterSubject("orders", "billing", 1),  // its own dead letters (it may write there anyway)
	} {
		if err := wnc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+sluice.StreamName("orders")+".billing", target, pull); err != nil {
			t.Fatal(err)
		}
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The pulls are served at once (the messages are there); wait until
	// the family shows them delivered, then past their expiry.
	cons, err := ajs.Consumer(ctx, sluice.StreamName("orders"), "billing")
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.Delivered.Stream >= n
	}, "the hostile pulls were never served")
	time.Sleep(time.Second)
	if got := harness.StreamMsgs(t, ajs, sluice.DeadLetterStream("orders", "shipping")); got != 0 {
		t.Errorf("shipping's dead letters hold %d messages written by billing's worker", got)
	}
	if got := harness.StreamMsgs(t, ajs, sluice.StreamName("orders")); got != n {
		t.Errorf("the topic holds %d messages, want %d: a pull was replayed into it", got, n)
	}

	// The honest path: the same worker, pulling to its own inbox, gets
	// every message once the hostile pulls' ack wait has passed.
	wjs, _ := jetstream.New(wnc)
	wcons, err := wjs.Consumer(ctx, sluice.StreamName("orders"), "billing")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	deadline := time.Now().Add(2 * time.Minute)
	for len(got) < n && time.Now().Before(deadline) {
		batch, err := wcons.Fetch(n, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			got[string(m.Data())] = true
			if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(got) != n {
		t.Fatalf("billing's worker got %d of %d messages", len(got), n)
	}
}

// TestInboxesArePrivate: no gateway or worker identity may subscribe to
// the inboxes of all (_INBOX.>) nor to another identity's; each may
// subscribe to its own.
func TestInboxesArePrivate(t *testing.T) {
	a := startAuthed(t)
	for _, c := range []struct {
		who string
		id  identity
	}{{"gateway", a.gateway}, {"worker", a.worker}} {
		nc, errs := a.connectRaw(t, c.id)
		other := a.worker
		if c.id == a.worker {
			other = a.gateway
		}
		for _, subj := range []string{"_INBOX.>", sluice.InboxPrefix(other.Pub) + ".>", ">"} {
			if _, err := nc.Subscribe(subj, func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
			errs.waitDenied(t, "subscription", subj)
		}
		// Its own inbox: no violation by the time the server has answered
		// a ping sent after the subscription (it sends errors in order).
		errs.mu.Lock()
		before := len(errs.errs)
		errs.mu.Unlock()
		own := nc.NewInbox()
		if _, err := nc.SubscribeSync(own); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		errs.mu.Lock()
		if len(errs.errs) != before {
			t.Errorf("%s subscribing to its own inbox %s: %v", c.who, own, errs.errs[before:])
		}
		errs.mu.Unlock()
	}
}
