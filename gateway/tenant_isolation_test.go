package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// twoTenants is a keys-mode config with tenants a and b and an ops tenant,
// each granted every action on every topic; it returns the config and
// each tenant's key.
func twoTenants(t *testing.T) (tenant.Config, map[string]string) {
	t.Helper()
	keys := tenantKeys(t, "a", "b", "ops")
	all := []string{tenant.AnyTopic}
	cfg := tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{}}
	for _, n := range []string{"a", "b", "ops"} {
		cfg.Tenants[n] = tenant.Tenant{Keys: []tenant.Key{{ID: n, Hash: tenant.Hash(keys[n])}},
			Publish: all, Read: all, Redrive: all, Ops: n == "ops"}
	}
	return cfg, keys
}

// twoTenantStack is a broker with topic orders (family billing) and a
// gateway in keys mode with twoTenants; it returns the bus connection, the
// gateway and each tenant's key.
func twoTenantStack(t *testing.T) (*nats.Conn, *httptest.Server, map[string]string) {
	t.Helper()
	topics := harness.Topics(harness.Topic("orders", "billing"))
	nc := harness.Connect(t, harness.StartBroker(t, topics))
	cfg := harness.GatewayConfig(topics)
	var keys map[string]string
	cfg.Auth, keys = twoTenants(t)
	_, srv := harness.StartGateway(t, cfg, nc)
	return nc, srv, keys
}

// TestTenantsKeepTheirOwnIdempotencyKeys: tenant B publishing, single and
// in a batch, with the key and payload tenant A used is stored as B's own
// message (202 duplicate:false, its own seq), never as A's duplicate; A's
// and B's retries are each a duplicate of their own; every receipt and the
// worker give the key back as sent; the stored id and the Sluice-Tenant
// header carry the tenant whatever the client sent.
func TestTenantsKeepTheirOwnIdempotencyKeys(t *testing.T) {
	nc, srv, keys := twoTenantStack(t)
	url := srv.URL + "/v1/topics/orders/messages"
	js, _ := jetstream.New(nc)

	publish := func(who, key string, hdr map[string]string) receipt {
		t.Helper()
		h := map[string]string{"Idempotency-Key": key, "Authorization": "Bearer " + keys[who], "Sluice-Meta-Customer": "c-42"}
		for k, v := range hdr {
			h[k] = v
		}
		resp := post(t, url, "text/plain", strings.NewReader("the same payload"), h)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s publishing %s: status %d", who, key, resp.StatusCode)
		}
		return decode[receipt](t, resp)
	}
	a1 := publish("a", "order-1", nil)
	// B guesses A's key and sends the same message, claiming to be A.
	b1 := publish("b", "order-1", map[string]string{sluice.HeaderTenant: "a"})
	if a1.Duplicate || b1.Duplicate || b1.Seq == a1.Seq || b1.ID != "order-1" {
		t.Fatalf("A %+v, B %+v: B's message must be stored as its own, under the key it sent", a1, b1)
	}
	if a2 := publish("a", "order-1", nil); !a2.Duplicate || a2.Seq != a1.Seq || a2.ID != "order-1" {
		t.Fatalf("A's retry %+v, want a duplicate of seq %d", a2, a1.Seq)
	}
	if b2 := publish("b", "order-1", nil); !b2.Duplicate || b2.Seq != b1.Seq {
		t.Fatalf("B's retry %+v, want a duplicate of its own seq %d (never A's %d)", b2, b1.Seq, a1.Seq)
	}
	for who, seq := range map[string]uint64{"a": a1.Seq, "b": b1.Seq} {
		m := streamMsg(t, js, "orders", seq)
		id := m.Header.Get(sluice.HeaderMsgID)
		if got := m.Header.Values(sluice.HeaderTenant); len(got) != 1 || got[0] != who ||
			sluice.KeyOf(id) != "order-1" || sluice.TenantOf(id) != who {
			t.Errorf("%s's stored message: tenant %v, id %q", who, got, id)
		}
	}

	// A batch: the same, line by line.
	batch := func(who string) []receipt {
		t.Helper()
		body := `{"id":"order-2","data":{"n":2}}` + "\n" + `{"id":"order-3","data":{"n":3},"meta":{"tenant":"a"}}` + "\n"
		resp := post(t, url+":batch", "application/x-ndjson", strings.NewReader(body), bearer(keys[who]))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s's batch: status %d", who, resp.StatusCode)
		}
		return decodeLines[receipt](t, resp)
	}
	ab, bb := batch("a"), batch("b")
	for i := range ab {
		if ab[i].Duplicate || bb[i].Duplicate || ab[i].Seq == bb[i].Seq || ab[i].ID != bb[i].ID {
			t.Fatalf("line %d: A %+v, B %+v", i+1, ab[i], bb[i])
		}
		if m := streamMsg(t, js, "orders", bb[i].Seq); m.Header.Get(sluice.HeaderTenant) != "b" {
			t.Errorf("B's batch line %d stored with tenant %q", i+1, m.Header.Get(sluice.HeaderTenant))
		}
	}
	if again := batch("a"); !again[0].Duplicate || again[0].Seq != ab[0].Seq {
		t.Fatalf("A's batch retry %+v, want duplicates of %+v", again, ab)
	}

	// The worker, started once the stored messages were read (it removes
	// what it handles), sees each tenant's message under the key it was
	// sent with.
	seen := &deliveries{seen: map[string][]string{}}
	harness.RunWorker(t, nc, "orders", "billing", func(_ context.Context, m *sluice.Message) error {
		seen.add("billing", m.ID)
		return nil
	})
	for _, key := range []string{"order-1", "order-2", "order-3"} {
		harness.Eventually(t, 10*time.Second, func() bool { return seen.count("billing", key) == 2 },
			"billing should handle A's and B's %s, each under its key", key)
	}
}

// decodeLines decodes an NDJSON answer.
func decodeLines[T any](t *testing.T, resp *http.Response) []T {
	t.Helper()
	var out []T
	dec := json.NewDecoder(resp.Body)
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// TestOpenModeStoresNoTenant: without tenants the id is the open-mode
// one, and a client's Sluice-Tenant header is not stored.
func TestOpenModeStoresNoTenant(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	resp := post(t, srv.URL+"/v1/topics/orders/messages", "", strings.NewReader("m"),
		map[string]string{"Idempotency-Key": "k-1", sluice.HeaderTenant: "a"})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := decode[receipt](t, resp)
	js, _ := jetstream.New(nc)
	m := streamMsg(t, js, "orders", r.Seq)
	if id := m.Header.Get(sluice.HeaderMsgID); m.Header.Get(sluice.HeaderTenant) != "" || strings.Count(id, ".") != 1 || sluice.KeyOf(id) != "k-1" {
		t.Fatalf("open mode stored %v", m.Header)
	}
}

// TestTenantsSeeOnlyTheirOwnDeadLetters: tenants a and b share topic
// orders, whose billing family dead-letters everything. Each tenant lists,
// peeks, deletes, purges and redrives its own dead letters only: another
// tenant's is not found (404) and stays; the ops tenant sees every one,
// the tenant-less one too (a message published on the bus directly).
func TestTenantsSeeOnlyTheirOwnDeadLetters(t *testing.T) {
	nc, srv, keys := twoTenantStack(t)
	var fixed atomic.Bool
	seen := &deliveries{seen: map[string][]string{}}
	harness.RunWorker(t, nc, "orders", "billing", func(_ context.Context, m *sluice.Message) error {
		seen.add("billing", m.ID)
		seen.add("tenant", m.ID+"@"+m.Header.Get(sluice.HeaderTenant))
		if !fixed.Load() {
			return sluice.Permanent(errors.New("cannot bill"))
		}
		return nil
	})
	ctx := context.Background()
	admin := map[string]*sluice.Admin{}
	for _, who := range []string{"a", "b", "ops"} {
		a, err := sluice.NewAdmin(srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.SetAPIKey(keys[who])
		admin[who] = a
	}
	for who, n := range map[string]int{"a": 3, "b": 2} {
		p, err := sluice.NewProducer([]string{srv.URL}, sluice.WithAPIKey(keys[who]))
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if _, err := p.Publish(ctx, "orders", []byte(who), sluice.WithID(fmt.Sprintf("%s-%d", who, i))); err != nil {
				t.Fatal(err)
			}
		}
		// One key and message in both tenants: two dead letters.
		if _, err := p.Publish(ctx, "orders", []byte("same"), sluice.WithID("shared")); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := jetstream.New(nc)
	raw := nats.NewMsg(sluice.Subject("orders"))
	raw.Data = []byte("raw")
	if _, err := js.PublishMsg(ctx, raw, jetstream.WithMsgID("raw-1")); err != nil {
		t.Fatal(err)
	}

	ids := func(who string, limit int) ([]string, []uint64) {
		t.Helper()
		var out []string
		var seqs []uint64
		var after uint64
		for range 100 {
			page, err := admin[who].ListDeadLetters(ctx, "orders", "billing", after, limit)
			if err != nil {
				t.Fatalf("%s lists: %v", who, err)
			}
			for _, d := range page.DeadLetters {
				out = append(out, d.ID)
				seqs = append(seqs, d.Seq)
			}
			if page.Next == 0 {
				break
			}
			after = page.Next
		}
		slices.Sort(out)
		return out, seqs
	}
	harness.Eventually(t, 10*time.Second, func() bool { got, _ := ids("ops", 50); return len(got) == 8 },
		"8 dead letters in billing")
	aIDs, aSeqs := ids("a", 1)
	bIDs, bSeqs := ids("b", 2)
	if want := []string{"a-0", "a-1", "a-2", "shared"}; !slices.Equal(aIDs, want) {
		t.Fatalf("A lists %v, want %v", aIDs, want)
	}
	if want := []string{"b-0", "b-1", "shared"}; !slices.Equal(bIDs, want) {
		t.Fatalf("B lists %v, want %v", bIDs, want)
	}
	if all, _ := ids("ops", 3); !slices.Contains(all, "raw-1") {
		t.Fatalf("ops lists %v, want the tenant-less raw-1 too", all)
	}

	// B names A's dead letters: not found, whatever it tries.
	for _, seq := range aSeqs {
		if _, err := admin["b"].PeekDeadLetter(ctx, "orders", "billing", seq); !errors.Is(err, sluice.ErrNotFound) {
			t.Errorf("B peeks A's %d: %v, want not found", seq, err)
		}
		if _, err := admin["b"].Purge(ctx, "orders", "billing", seq); !errors.Is(err, sluice.ErrNotFound) {
			t.Errorf("B deletes A's %d: %v, want not found", seq, err)
		}
		if _, err := admin["b"].Redrive(ctx, "orders", "billing", seq, 0); !errors.Is(err, sluice.ErrNotFound) {
			t.Errorf("B redrives A's %d: %v, want not found", seq, err)
		}
	}
	if d, err := admin["a"].PeekDeadLetter(ctx, "orders", "billing", aSeqs[0]); err != nil || d.Data == nil || (*d.Data != "a" && *d.Data != "same") {
		t.Fatalf("A peeks its own: %+v, %v", d, err)
	}

	// B deletes one of its own, purges the rest: A's stay.
	if res, err := admin["b"].Purge(ctx, "orders", "billing", bSeqs[0]); err != nil || res.Purged != 1 {
		t.Fatalf("B deletes its own: %+v, %v", res, err)
	}
	if res, err := admin["b"].Purge(ctx, "orders", "billing", 0); err != nil || res.Purged != 2 {
		t.Fatalf("B purges: %+v, %v, want its 2 left", res, err)
	}
	if got, _ := ids("b", 10); len(got) != 0 {
		t.Fatalf("B still lists %v", got)
	}
	if got, _ := ids("a", 10); !slices.Equal(got, aIDs) {
		t.Fatalf("after B's purge A lists %v, want %v", got, aIDs)
	}

	// A redrives all it may: its own, with its tenant; B's redrive finds
	// nothing of A's.
	fixed.Store(true)
	if res, err := admin["b"].Redrive(ctx, "orders", "billing", 0, 100); err != nil || res.Redriven != 0 {
		t.Fatalf("B redrives: %+v, %v, want nothing", res, err)
	}
	res, err := admin["a"].Redrive(ctx, "orders", "billing", 0, 100)
	if err != nil || res.Redriven != 4 {
		t.Fatalf("A redrives: %+v, %v, want its 4", res, err)
	}
	for _, id := range aIDs {
		// Handled when it died and once redriven, both times as A's.
		harness.Eventually(t, 10*time.Second, func() bool { return seen.count("tenant", id+"@a") == 2 },
			"billing should handle redriven %s under its key, as A's", id)
	}
	if got, _ := ids("ops", 10); !slices.Equal(got, []string{"raw-1"}) {
		t.Fatalf("ops lists %v, want raw-1 alone", got)
	}
	if res, err := admin["ops"].Purge(ctx, "orders", "billing", 0); err != nil || res.Purged != 1 {
		t.Fatalf("ops purges: %+v, %v", res, err)
	}
}
