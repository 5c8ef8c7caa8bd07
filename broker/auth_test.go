package broker_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// identity is a user nkey with its seed in a file.
type identity = harness.Identity

func newIdentity(t *testing.T) identity { return harness.NewIdentity(t) }

// authed is a broker with client auth on: a gateway, a worker for
// orders/billing and an admin.
type authed struct {
	b                      *broker.Broker
	gateway, worker, admin identity
}

func startAuthed(t *testing.T) authed {
	t.Helper()
	a := authed{gateway: newIdentity(t), worker: newIdentity(t), admin: newIdentity(t)}
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	a.b = startBroker(t, topics, func(c *broker.Config) {
		c.Auth.Users = []broker.User{
			{Name: "gw", Nkey: a.gateway.Pub, Role: broker.RoleGateway},
			{Name: "billing", Nkey: a.worker.Pub, Role: broker.RoleWorker, Families: []string{"orders/billing"}},
			{Name: "ops", Nkey: a.admin.Pub, Role: broker.RoleAdmin},
		}
	})
	return a
}

// connect signs in as id through internal/bus, as gateways and workers do;
// logs keeps what the connection logged (permission violations).
func (a authed) connect(t *testing.T, id identity, name string) (*nats.Conn, *observer.ObservedLogs) {
	t.Helper()
	log, logs := observed(t)
	nc, err := bus.Connect([]string{a.b.ClientURL()}, 5*time.Second, name, log, bus.WithNkeySeedFile(id.SeedFile))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	return nc, logs
}

// connectRaw signs in as id (with its inbox prefix) and collects the connection's async errors.
func (a authed) connectRaw(t *testing.T, id identity) (*nats.Conn, *asyncErrs) {
	t.Helper()
	errs := &asyncErrs{}
	opts, err := sluice.Identity(id.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(a.b.ClientURL(), append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		errs.add(err)
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

type asyncErrs struct {
	mu   sync.Mutex
	errs []string
}

func (e *asyncErrs) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err.Error())
}

// waitDenied waits for the server's permission violation naming subject.
func (e *asyncErrs) waitDenied(t *testing.T, op, subject string) {
	t.Helper()
	want := `permissions violation for ` + op + ` to "` + strings.ToLower(subject) + `"`
	harness.Eventually(t, 5*time.Second, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, s := range e.errs {
			if strings.Contains(strings.ToLower(s), want) {
				return true
			}
		}
		return false
	}, "no permission violation for %s to %s", op, subject)
}

func noViolations(t *testing.T, who string, logs *observer.ObservedLogs) {
	t.Helper()
	if s := allLogs(logs); strings.Contains(strings.ToLower(s), "permissions violation") {
		t.Errorf("%s hit a permission violation:\n%s", who, s)
	}
}

// TestAuthEndToEnd: with client auth on, a real gateway signed in as a
// gateway accepts messages, a real SDK worker signed in as the billing
// worker handles them, a failing handler dead-letters, and the gateway
// lists, redrives and purges the dead letters; nobody hits a permission
// violation on the way.
func TestAuthEndToEnd(t *testing.T) {
	a := startAuthed(t)
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	gnc, glogs := a.connect(t, a.gateway, "gateway")
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), gnc)
	wnc, wlogs := a.connect(t, a.worker, "worker")

	var mu sync.Mutex
	handled := map[string]int{}
	var healed atomic.Bool
	w, err := sluice.NewWorker(wnc, "orders", "billing", sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		if strings.HasPrefix(string(m.Data), "bad") && !healed.Load() {
			return sluice.Permanent(errors.New("refused"))
		}
		if string(m.Data) == "retry" && m.Attempt == 1 {
			return errors.New("try again") // nak with backoff; the redelivery looks up the dead letters
		}
		mu.Lock()
		handled[string(m.Data)]++
		mu.Unlock()
		return nil
	}), sluice.WithWorkerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	seen := func(data string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return handled[data] > 0
		}
	}

	p, err := sluice.NewProducer([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	for _, data := range []string{"good-1", "bad-1", "bad-2", "retry"} {
		if _, err := p.Publish(pctx, "orders", []byte(data)); err != nil {
			t.Fatalf("publish %s: %v", data, err)
		}
	}
	// A duplicate: the gateway compares it with the stored original.
	for range 2 {
		if _, err := p.Publish(pctx, "orders", []byte("dup"), sluice.WithID("dup-1")); err != nil {
			t.Fatalf("publish dup: %v", err)
		}
	}
	res, err := p.PublishBatch(pctx, "orders", []sluice.BatchMessage{{Data: []byte("good-2")}, {Data: []byte("good-3")}})
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("batch message: %v", r.Err)
		}
	}
	for _, data := range []string{"good-1", "good-2", "good-3", "retry", "dup"} {
		harness.Eventually(t, 10*time.Second, seen(data), "worker did not handle %s", data)
	}

	admin, err := sluice.NewAdmin(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	var page sluice.DeadLetterPage
	harness.Eventually(t, 10*time.Second, func() bool {
		page, err = admin.ListDeadLetters(pctx, "orders", "billing", 0, 10)
		return err == nil && len(page.DeadLetters) == 2
	}, "two dead letters should be listed (last: %+v, %v)", page, err)
	// bad-1 and bad-2 are handled concurrently: either may be dead first.
	dl, err := admin.PeekDeadLetter(pctx, "orders", "billing", page.DeadLetters[0].Seq)
	if err != nil || dl.Data == nil || (*dl.Data != "bad-1" && *dl.Data != "bad-2") {
		t.Fatalf("peek: %+v, %v", dl, err)
	}
	healed.Store(true)
	rr, err := admin.Redrive(pctx, "orders", "billing", page.DeadLetters[0].Seq, 0)
	if err != nil || rr.Redriven != 1 {
		t.Fatalf("redrive: %+v, %v", rr, err)
	}
	harness.Eventually(t, 10*time.Second, seen(*dl.Data), "the redriven message %s should be handled", *dl.Data)
	pr, err := admin.Purge(pctx, "orders", "billing", 0)
	if err != nil || pr.Purged != 1 {
		t.Fatalf("purge: %+v, %v", pr, err)
	}
	// The gateway's view of the topic: stream, families, dead letters.
	resp, err := http.Get(srv.URL + "/v1/topics/orders")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("topic view: %d", resp.StatusCode)
	}
	noViolations(t, "gateway", glogs)
	noViolations(t, "worker", wlogs)
}

// TestAuthGatewayCannotConsume: a gateway identity may read a family's
// state but neither create a consumer nor pull.
func TestAuthGatewayCannotConsume(t *testing.T) {
	a := startAuthed(t)
	nc, errs := a.connectRaw(t, a.gateway)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte("x")); err != nil {
		t.Fatalf("gateway publish: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := js.CreateOrUpdateConsumer(short, sluice.StreamName("orders"), jetstream.ConsumerConfig{Durable: "sneaky"}); err == nil {
		t.Fatal("gateway created a consumer")
	}
	errs.waitDenied(t, "publish", "$JS.API.CONSUMER.CREATE.SLUICE_orders.sneaky")

	cons, err := js.Consumer(ctx, sluice.StreamName("orders"), "billing") // family state: allowed
	if err != nil {
		t.Fatalf("gateway reading the family: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond))
	if err == nil {
		for range batch.Messages() {
			t.Fatal("gateway pulled a message")
		}
	}
	errs.waitDenied(t, "publish", "$JS.API.CONSUMER.MSG.NEXT.SLUICE_orders.billing")
}

// TestAuthWorkerConfined: a worker identity may not publish to a topic nor
// touch another family.
func TestAuthWorkerConfined(t *testing.T) {
	a := startAuthed(t)
	nc, errs := a.connectRaw(t, a.worker)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := js.Publish(short, sluice.Subject("orders"), []byte("x")); err == nil {
		t.Fatal("worker published to the topic")
	}
	errs.waitDenied(t, "publish", "sluice.topic.orders")

	if _, err := js.Consumer(ctx, sluice.StreamName("orders"), "billing"); err != nil {
		t.Fatalf("worker finding its own family: %v", err)
	}
	other, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if _, err := js.Consumer(other, sluice.StreamName("orders"), "shipping"); err == nil {
		t.Fatal("worker found another family's consumer")
	}
	errs.waitDenied(t, "publish", "$JS.API.CONSUMER.INFO.SLUICE_orders.shipping")
	if err := nc.Publish("$JS.API.CONSUMER.MSG.NEXT.SLUICE_orders.shipping", []byte(`{"batch":1}`)); err != nil {
		t.Fatal(err)
	}
	errs.waitDenied(t, "publish", "$JS.API.CONSUMER.MSG.NEXT.SLUICE_orders.shipping")
	if err := nc.Publish(sluice.DeadLetterSubject("orders", "shipping", 1), []byte("x")); err != nil {
		t.Fatal(err)
	}
	errs.waitDenied(t, "publish", sluice.DeadLetterSubject("orders", "shipping", 1))
}

// TestAuthRefusesUnknownClients: an nkey not among the users, and a client
// without any, are refused; the broker's in-process connection is not.
func TestAuthRefusesUnknownClients(t *testing.T) {
	a := startAuthed(t)
	stranger := newIdentity(t)
	opt, err := nats.NkeyOptionFromSeed(stranger.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(a.b.ClientURL(), opt); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("unknown nkey: %v, want an authorization violation", err)
	}
	if nc, err := nats.Connect(a.b.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("no credentials: %v, want an authorization violation", err)
	}
	_, err = bus.Connect([]string{a.b.ClientURL()}, 5*time.Second, "stranger", harness.Logger(t), bus.WithNkeySeedFile(stranger.SeedFile))
	if !errors.Is(err, nats.ErrAuthorization) || !strings.Contains(err.Error(), "broker.auth.users") {
		t.Fatalf("bus.Connect as a stranger: %v", err)
	}
	// In-process (sluice dev's nodes): the broker's own identity, full rights.
	nc, err := a.b.Connect("in-process")
	if err != nil {
		t.Fatalf("in-process connection: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("in-process JetStream: %v", err)
	}
}
