package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// hostileStack is a broker with nkey users (a gateway, the billing and
// shipping workers, an admin; workers in accounts of their own) and a
// gateway in keys mode with two tenants sharing topic orders: acme, honest,
// and evil.
type hostileStack struct {
	b                            *broker.Broker
	gw, billing, shipping, admin harness.Identity
	url                          string
	reg                          *prometheus.Registry
	keys                         map[string]string
	adminJS                      jetstream.JetStream
	acmeAdmin, evilAdmin         *sluice.Admin
	handledMu                    sync.Mutex
	handled                      map[string]map[string][]uint64 // family -> payload -> seqs
}

func startHostileStack(t *testing.T) *hostileStack {
	t.Helper()
	s := &hostileStack{gw: harness.NewIdentity(t), billing: harness.NewIdentity(t), shipping: harness.NewIdentity(t), admin: harness.NewIdentity(t),
		handled: map[string]map[string][]uint64{"billing": {}, "shipping": {}}}
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	cfg := harness.BrokerConfig(t.TempDir(), topics)
	cfg.Auth.Users = []broker.User{
		{Name: "gateway", Nkey: s.gw.Pub, Role: broker.RoleGateway},
		{Name: "billing", Nkey: s.billing.Pub, Role: broker.RoleWorker, Families: []string{"orders/billing"}},
		{Name: "shipping", Nkey: s.shipping.Pub, Role: broker.RoleWorker, Families: []string{"orders/shipping"}},
		{Name: "admin", Nkey: s.admin.Pub, Role: broker.RoleAdmin},
	}
	b, err := broker.New(cfg, harness.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	s.b = b
	s.adminJS, _ = jetstream.New(s.connect(t, s.admin, "admin"))

	s.keys = map[string]string{}
	gcfg := harness.GatewayConfig(topics)
	gcfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{}}
	for _, name := range []string{"acme", "evil"} {
		key, _, err := tenant.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		s.keys[name] = key
		gcfg.Auth.Tenants[name] = tenant.Tenant{Keys: []tenant.Key{{ID: name, Hash: tenant.Hash(key)}},
			Publish: []string{"orders"}, Read: []string{"orders"}, Redrive: []string{"orders"}}
	}
	gcfg.ReadRate, gcfg.ReadBurst = 5, 20
	s.url, s.reg = harness.StartGatewayReg(t, gcfg, s.connect(t, s.gw, "gateway"))
	for name, a := range map[string]**sluice.Admin{"acme": &s.acmeAdmin, "evil": &s.evilAdmin} {
		if *a, err = sluice.NewAdmin(s.url, nil); err != nil {
			t.Fatal(err)
		}
		(*a).SetAPIKey(s.keys[name])
	}
	for family, id := range map[string]harness.Identity{"billing": s.billing, "shipping": s.shipping} {
		harness.RunWorker(t, s.connect(t, id, family), "orders", family, func(_ context.Context, m *sluice.Message) error {
			s.handledMu.Lock()
			key := m.Header.Get(sluice.HeaderTenant) + "/" + string(m.Data) // evil reuses acme's payloads
			s.handled[family][key] = append(s.handled[family][key], m.Seq)
			s.handledMu.Unlock()
			if strings.Contains(string(m.Data), "-bad-") {
				return sluice.Permanent(errors.New("refused by the handler"))
			}
			return nil
		})
	}
	return s
}

// connect signs in as id through internal/bus, as Sluice's nodes do.
func (s *hostileStack) connect(t *testing.T, id harness.Identity, name string) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect([]string{s.b.ClientURL()}, 5*time.Second, name, zap.NewNop(), bus.WithNkeySeedFile(id.SeedFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// raw signs in as id with its inbox prefix and collects its async errors
// (the broker's permission violations).
func (s *hostileStack) raw(t *testing.T, id harness.Identity) (*nats.Conn, harness.Violations) {
	t.Helper()
	opts, err := sluice.Identity(id.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	v := harness.NewViolations()
	nc, err := nats.Connect(s.b.ClientURL(), append(opts, nats.ErrorHandler(v.Handler()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, v
}

// call sends an API request as tenant who; it returns the status and body.
func (s *hostileStack) call(t *testing.T, who, method, path string, body io.Reader, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+s.keys[who])
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// TestHostileTenantMatrix: tenants acme (honest) and evil share a topic
// on brokers with nkey users, workers in accounts of their own. acme
// publishes throughout while evil, a worker identity and raw HTTP clients
// run every attack README's Security matrix lists, each met by its
// expected refusal; then acme's traffic is whole: every message it was
// answered 202 for reached both families (handled, or in that family's
// dead letters, which acme alone lists), none stored twice, and acme never
// got a refusal.
func TestHostileTenantMatrix(t *testing.T) {
	s := startHostileStack(t)
	ctx := context.Background()

	// acme's traffic, throughout the matrix: bounded in count and time.
	const acmeMessages = 150
	acme, err := sluice.NewProducer([]string{s.url}, sluice.WithAPIKey(s.keys["acme"]))
	if err != nil {
		t.Fatal(err)
	}
	var acmeErrs []error // written by the publishing goroutine, read once it is done
	acked := []string{"acme-bad-0"}
	if _, err := acme.Publish(ctx, "orders", []byte("acme-bad-0"), sluice.WithID("order-0")); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(2 * time.Minute)
		for i := 1; i < acmeMessages && time.Now().Before(deadline); i++ {
			data := fmt.Sprintf("acme-%d", i)
			if i%15 == 0 {
				data = fmt.Sprintf("acme-bad-%d", i)
			}
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := acme.Publish(pctx, "orders", []byte(data), sluice.WithID(fmt.Sprintf("order-%d", i)))
			cancel()
			if err != nil {
				acmeErrs = append(acmeErrs, fmt.Errorf("%s: %w", data, err))
			} else {
				acked = append(acked, data)
			}
			select {
			case <-stop:
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var stopOnce sync.Once
	finish := func() { stopOnce.Do(func() { close(stop) }); <-done }
	defer finish()

	t.Run("evil reuses acme's idempotency key", func(t *testing.T) {
		// acme's first message used key order-0; evil sends the same key
		// and the same payload.
		code, _, body := s.call(t, "evil", "POST", "/v1/topics/orders/messages", strings.NewReader("acme-bad-0"), map[string]string{"Idempotency-Key": "order-0"})
		var r struct {
			Seq       uint64 `json:"seq"`
			ID        string `json:"id"`
			Duplicate bool   `json:"duplicate"`
		}
		if code != http.StatusAccepted || json.Unmarshal(body, &r) != nil || r.Duplicate || r.ID != "order-0" {
			t.Fatalf("evil's message with acme's key: %d %s, want 202, its own message, the key as sent", code, body)
		}
		// acme's retry is still its own duplicate, at its own seq.
		code, _, body = s.call(t, "acme", "POST", "/v1/topics/orders/messages", strings.NewReader("acme-bad-0"), map[string]string{"Idempotency-Key": "order-0"})
		var a struct {
			Seq       uint64 `json:"seq"`
			Duplicate bool   `json:"duplicate"`
		}
		if code != http.StatusAccepted || json.Unmarshal(body, &a) != nil || !a.Duplicate || a.Seq == r.Seq {
			t.Fatalf("acme's retry: %d %s, want 202 duplicate of its own (evil's seq %d)", code, body, r.Seq)
		}
	})

	t.Run("evil stamps acme's tenant header", func(t *testing.T) {
		code, _, body := s.call(t, "evil", "POST", "/v1/topics/orders/messages", strings.NewReader("evil-bad-spoof"),
			map[string]string{sluice.HeaderTenant: "acme", "Idempotency-Key": "spoof-1"})
		var r struct {
			Seq uint64 `json:"seq"`
		}
		if code != http.StatusAccepted || json.Unmarshal(body, &r) != nil {
			t.Fatalf("evil's publish: %d %s", code, body)
		}
		st, err := s.adminJS.Stream(ctx, sluice.StreamName("orders"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetMsg(ctx, r.Seq)
		if err != nil {
			// Handled by both families already (interest retention):
			// the dead letters show its tenant below.
			return
		}
		if got := m.Header.Get(sluice.HeaderTenant); got != "evil" {
			t.Fatalf("stored with tenant %q, want evil", got)
		}
	})

	t.Run("evil reads, deletes, purges and redrives acme's dead letters", func(t *testing.T) {
		var page sluice.DeadLetterPage
		harness.Eventually(t, time.Minute, func() bool {
			page, err = s.acmeAdmin.ListDeadLetters(ctx, "orders", "billing", 0, 100)
			return err == nil && len(page.DeadLetters) >= 2
		}, "acme's dead letters in billing (last %+v, %v)", page, err)
		evilPage, err := s.evilAdmin.ListDeadLetters(ctx, "orders", "billing", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range evilPage.DeadLetters {
			if strings.HasPrefix(d.ID, "order-") && !strings.HasPrefix(d.ID, "order-0") {
				t.Fatalf("evil lists acme's dead letter %+v", d)
			}
		}
		seq := page.DeadLetters[len(page.DeadLetters)-1].Seq
		if _, err := s.evilAdmin.PeekDeadLetter(ctx, "orders", "billing", seq); !errors.Is(err, sluice.ErrNotFound) {
			t.Fatalf("evil peeks acme's dead letter: %v, want not found", err)
		}
		if _, err := s.evilAdmin.Purge(ctx, "orders", "billing", seq); !errors.Is(err, sluice.ErrNotFound) {
			t.Fatalf("evil deletes acme's dead letter: %v, want not found", err)
		}
		if _, err := s.evilAdmin.Redrive(ctx, "orders", "billing", seq, 0); !errors.Is(err, sluice.ErrNotFound) {
			t.Fatalf("evil redrives acme's dead letter: %v, want not found", err)
		}
		if _, err := s.evilAdmin.Purge(ctx, "orders", "billing", 0); err != nil {
			t.Fatalf("evil purges its own: %v", err)
		}
		if _, err := s.acmeAdmin.PeekDeadLetter(ctx, "orders", "billing", seq); err != nil {
			t.Fatalf("acme's dead letter after evil's attempts: %v", err)
		}
	})

	t.Run("odd methods, paths and headers before authentication", func(t *testing.T) {
		for i := range 200 {
			method := fmt.Sprintf("M%dX", i)
			path := fmt.Sprintf("/v1/topics/t%d/messages?x=%d", i, i)
			code, _, _ := s.call(t, "", method, path, nil, map[string]string{fmt.Sprintf("X-Odd-%d", i): "v"})
			if code < 400 || code >= 500 {
				t.Fatalf("%s %s: %d, want a 4xx", method, path, code)
			}
		}
		families, err := s.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if strings.HasPrefix(f.GetName(), "sluice_gateway_requests_total") && len(f.GetMetric()) > 100 {
				t.Fatalf("%s has %d series after 200 odd requests", f.GetName(), len(f.GetMetric()))
			}
		}
	})

	t.Run("evil floods the read endpoints", func(t *testing.T) {
		refused := 0
		for range 60 {
			code, h, _ := s.call(t, "evil", "GET", "/v1/topics/orders", nil, nil)
			if code == http.StatusTooManyRequests {
				if h.Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
				refused++
			}
		}
		if refused == 0 {
			t.Fatal("60 reads at once past a burst of 20: none refused")
		}
		if code, _, body := s.call(t, "acme", "GET", "/v1/topics/orders", nil, nil); code != http.StatusOK {
			t.Fatalf("acme's read during evil's flood: %d %s", code, body)
		}
	})

	t.Run("a worker redirects its pulls into another family's dead letters and into the topic", func(t *testing.T) {
		nc, _ := s.raw(t, s.billing)
		pull, _ := json.Marshal(map[string]any{"batch": 5, "expires": int64(500 * time.Millisecond)})
		for _, target := range []string{sluice.DeadLetterSubject("orders", "shipping", 1), sluice.Subject("orders")} {
			if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+sluice.StreamName("orders")+".billing", target, pull); err != nil {
				t.Fatal(err)
			}
		}
		_ = nc.Flush()
		time.Sleep(time.Second) // past the pulls' expiry
		// Whatever they pulled went back into the worker's account: every
		// message in shipping's dead letters is a dead letter, none a raw copy.
		st, err := s.adminJS.Stream(ctx, sluice.DeadLetterStream("orders", "shipping"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue
			}
			if m.Header.Get(sluice.HeaderDeadReason) == "" {
				t.Fatalf("shipping's dead letter %d was written by billing's worker: %q", seq, m.Data)
			}
		}
		// A replay into the topic would show as acme's payloads stored twice below.
	})

	t.Run("a worker snoops on inboxes, publishes past the gateway, spoofs heartbeats, uses another family", func(t *testing.T) {
		nc, errs := s.raw(t, s.billing)
		for _, subj := range []string{"_INBOX.>", sluice.InboxPrefix(s.gw.Pub) + ".>"} {
			if _, err := nc.Subscribe(subj, func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
			errs.Wait(t, nc, "subscribing to "+subj)
		}
		for _, subj := range []string{sluice.Subject("orders"), "sluice.gateway.heartbeat",
			"$JS.API.CONSUMER.INFO." + sluice.StreamName("orders") + ".shipping", sluice.DeadLetterSubject("orders", "shipping", 9)} {
			if err := nc.Publish(subj, []byte("x")); err != nil {
				t.Fatal(err)
			}
			errs.Wait(t, nc, "publishing to "+subj)
		}
	})

	t.Run("a gateway identity snoops on another's inbox and consumes", func(t *testing.T) {
		nc, errs := s.raw(t, s.gw)
		if _, err := nc.Subscribe(sluice.InboxPrefix(s.billing.Pub)+".>", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		errs.Wait(t, nc, "a gateway subscribing to a worker's inbox")
		if err := nc.Publish("$JS.API.CONSUMER.MSG.NEXT."+sluice.StreamName("orders")+".billing", []byte(`{"batch":1}`)); err != nil {
			t.Fatal(err)
		}
		errs.Wait(t, nc, "a gateway pulling")
	})

	// acme's traffic is whole.
	finish()
	if len(acmeErrs) > 0 {
		t.Fatalf("acme got %d errors during the matrix, first: %v", len(acmeErrs), acmeErrs[0])
	}
	inDeadLetters := map[string]map[string]bool{"billing": {}, "shipping": {}}
	harness.Eventually(t, 2*time.Minute, func() bool {
		s.handledMu.Lock()
		defer s.handledMu.Unlock()
		for family := range s.handled {
			for _, data := range acked {
				if len(s.handled[family]["acme/"+data]) == 0 {
					return false
				}
			}
		}
		return true
	}, "every message acme was answered 202 for should reach both families")
	for family := range inDeadLetters {
		page, err := s.acmeAdmin.ListDeadLetters(ctx, "orders", family, 0, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page.DeadLetters {
			inDeadLetters[family][d.ID] = true
		}
	}
	s.handledMu.Lock()
	defer s.handledMu.Unlock()
	for family, byData := range s.handled {
		for _, data := range acked {
			if data == "acme-bad-0" {
				// acme retried it above, after both families may have
				// handled it: in families younger than the duplicate
				// window (these are seconds old) the gateway cannot tell
				// whether the original reached them and copies the retry
				// to them (README, Delivery guarantees). Not a tenant's doing.
				continue
			}
			seqs := map[uint64]bool{}
			for _, seq := range byData["acme/"+data] {
				seqs[seq] = true
			}
			if len(seqs) > 1 {
				t.Errorf("%s: acme's %s stored twice (seqs %v; all %v)", family, data, byData["acme/"+data], byData)
			}
		}
	}
	bad := 0
	for _, data := range acked {
		if strings.Contains(data, "-bad-") {
			bad++
		}
	}
	for family, ids := range inDeadLetters {
		n := 0
		for id := range ids {
			if strings.HasPrefix(id, "order-") {
				n++
			}
		}
		if n < bad {
			t.Errorf("%s: acme lists %d of its dead letters, want %d", family, n, bad)
		}
	}
	t.Logf("acme: %d messages answered 202, each reached both families; %d dead letters each, listed to acme alone", len(acked), bad)
}
