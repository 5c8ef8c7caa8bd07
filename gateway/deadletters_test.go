package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// deliveries records what each family's handler saw, by message id.
type deliveries struct {
	mu   sync.Mutex
	seen map[string][]string // family -> ids
}

func (d *deliveries) add(fam, id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen[fam] = append(d.seen[fam], id)
}

func (d *deliveries) count(fam, id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, s := range d.seen[fam] {
		if s == id {
			n++
		}
	}
	return n
}

// TestDeadLettersListPeekRedrivePurge: billing fails "bad" messages for
// good; they are listed and peeked in billing's dead letters, redriven to
// billing only once it is fixed (shipping does not see them again), and
// purged.
func TestDeadLettersListPeekRedrivePurge(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	var fixed atomic.Bool
	got := &deliveries{seen: map[string][]string{}}
	for _, fam := range []string{"billing", "shipping"} {
		harness.RunWorker(t, nc, "orders", fam, func(_ context.Context, m *sluice.Message) error {
			got.add(fam, m.ID)
			if fam == "billing" && strings.HasPrefix(string(m.Data), "bad") && !fixed.Load() {
				return sluice.Permanent(errors.New("cannot bill " + string(m.Data)))
			}
			return nil
		})
	}
	p, err := sluice.NewProducer([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 4 {
		if _, err := p.Publish(ctx, "orders", []byte(fmt.Sprintf("bad-%d", i)), sluice.WithID(fmt.Sprintf("bad-%d", i)),
			sluice.WithMeta("customer", "c42")); err != nil {
			t.Fatal(err)
		}
	}
	admin, err := sluice.NewAdmin(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	var page sluice.DeadLetterPage
	harness.Eventually(t, 10*time.Second, func() bool {
		page, err = admin.ListDeadLetters(ctx, "orders", "billing", 0, 3)
		return err == nil && page.Total == 4
	}, "4 dead letters in billing (last: %+v, %v)", page, err)
	if len(page.DeadLetters) != 3 || page.Next == 0 {
		t.Fatalf("first page of 3: %+v", page)
	}
	// Handlers run concurrently: the messages die in any order.
	first := page.DeadLetters[0]
	if !strings.HasPrefix(first.ID, "bad-") || first.Reason != sluice.ReasonPermanent || first.Attempts != 1 ||
		first.OriginalSeq < 1 || first.OriginalSeq > 4 || !strings.Contains(first.Error, "cannot bill "+first.ID) || first.Data != nil {
		t.Errorf("list entry %+v", first)
	}
	rest, err := admin.ListDeadLetters(ctx, "orders", "billing", page.Next, 3)
	if err != nil || len(rest.DeadLetters) != 1 || rest.Next != 0 || rest.DeadLetters[0].Seq <= page.DeadLetters[2].Seq {
		t.Fatalf("second page: %+v, %v", rest, err)
	}
	peek, err := admin.PeekDeadLetter(ctx, "orders", "billing", first.Seq)
	if err != nil || peek.Data == nil || *peek.Data != first.ID || peek.Meta["Customer"] != "c42" || peek.MetaValue("customer") != "c42" {
		t.Fatalf("peek: %+v, %v", peek, err)
	}
	redriven := []string{page.DeadLetters[0].ID, page.DeadLetters[1].ID, rest.DeadLetters[0].ID}
	kept := page.DeadLetters[2].ID
	if shipping, _ := admin.ListDeadLetters(ctx, "orders", "shipping", 0, 10); shipping.Total != 0 {
		t.Errorf("shipping has %d dead letters, want 0", shipping.Total)
	}

	fixed.Store(true)
	res, err := admin.Redrive(ctx, "orders", "billing", 0, 2)
	if err != nil || res.Redriven != 2 || res.Remaining != 2 || len(res.Seqs) != 2 || res.Seqs[0].DeadLetter != first.Seq {
		t.Fatalf("redrive 2: %+v, %v", res, err)
	}
	one, err := admin.Redrive(ctx, "orders", "billing", rest.DeadLetters[0].Seq, 0)
	if err != nil || one.Redriven != 1 || one.Remaining != 1 {
		t.Fatalf("redrive the last: %+v, %v", one, err)
	}
	for _, id := range redriven {
		harness.Eventually(t, 10*time.Second, func() bool { return got.count("billing", id) == 2 },
			"billing should handle redriven %s under its own id", id)
	}
	if _, err := admin.PeekDeadLetter(ctx, "orders", "billing", first.Seq); !errors.Is(err, sluice.ErrNotFound) {
		t.Errorf("a redriven dead letter is gone: %v", err)
	}
	// Only billing consumes its redrive subject; the others never see it.
	time.Sleep(200 * time.Millisecond) // give a wrong delivery a chance to show
	for _, id := range []string{"bad-0", "bad-1", "bad-2", "bad-3"} {
		if n := got.count("shipping", id); n != 1 {
			t.Errorf("shipping handled %s %d times, want once", id, n)
		}
	}
	if got.count("billing", kept) != 1 {
		t.Errorf("%s was not redriven and must not be handled again", kept)
	}

	if res, err := admin.Purge(ctx, "orders", "billing", 0); err != nil || res.Purged != 1 {
		t.Fatalf("purge: %+v, %v", res, err)
	}
	if page, err := admin.ListDeadLetters(ctx, "orders", "billing", 0, 10); err != nil || page.Total != 0 || len(page.DeadLetters) != 0 {
		t.Errorf("after purge: %+v, %v", page, err)
	}
	if _, err := admin.ListDeadLetters(ctx, "orders", "nobody", 0, 10); !errors.Is(err, sluice.ErrNotFound) {
		t.Errorf("unknown family: %v", err)
	}
	var se *sluice.Error
	if _, err := admin.Redrive(ctx, "orders", "billing", 999, 0); !errors.As(err, &se) || se.Type != sluice.ProblemDeadLetterNotFound {
		t.Errorf("unknown dead letter: %v", err)
	}
	resp, err := http.Get(srv.URL + sluice.DeadLetterPath("orders", "billing") + "?limit=0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("limit=0: %d, want 400", resp.StatusCode)
	}
}

// TestRedriveGoesThroughAdmission: with the topic full, a redrive is
// refused like a publish (429 topic-full with Retry-After) and the dead
// letter stays.
func TestRedriveGoesThroughAdmission(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topic.MaxMessages = 4
	topics := harness.Topics(topic)
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	stopBilling := harness.RunWorker(t, nc, "orders", "billing", func(context.Context, *sluice.Message) error {
		return sluice.Permanent(errors.New("no"))
	})
	p, _ := sluice.NewProducer([]string{srv.URL}, sluice.WithRetry(1, time.Millisecond, time.Millisecond))
	if _, err := p.Publish(context.Background(), "orders", []byte("dies")); err != nil {
		t.Fatal(err)
	}
	admin, _ := sluice.NewAdmin(srv.URL, nil)
	harness.Eventually(t, 10*time.Second, func() bool {
		page, err := admin.ListDeadLetters(context.Background(), "orders", "billing", 0, 1)
		return err == nil && page.Total == 1
	}, "one dead letter")
	stopBilling() // the topic fills up
	for i := 0; ; i++ {
		_, err := p.Publish(context.Background(), "orders", []byte("fill"))
		if errors.Is(err, sluice.ErrThrottled) {
			break
		}
		if err != nil || i > 10 {
			t.Fatalf("filling the topic: %d published, then %v", i, err)
		}
	}
	_, err := admin.Redrive(context.Background(), "orders", "billing", 0, 10)
	var se *sluice.Error
	if !errors.As(err, &se) || se.Status != http.StatusTooManyRequests || se.Type != sluice.ProblemTopicFull || se.RetryAfter <= 0 {
		t.Fatalf("redrive into a full topic: %v, want 429 topic-full with Retry-After", err)
	}
	if page, _ := admin.ListDeadLetters(context.Background(), "orders", "billing", 0, 1); page.Total != 1 {
		t.Errorf("refused redrive: %d dead letters, want the 1 kept", page.Total)
	}
}
