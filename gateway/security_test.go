package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// tenantKeys makes a key per name and the tenant config holding its hash.
func tenantKeys(t *testing.T, names ...string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for _, n := range names {
		k, _, err := tenant.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[n] = k
	}
	return keys
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

func send(t *testing.T, method, url string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestBadRequests sends the hostile and broken requests an internet-facing
// edge gets, each after a message was accepted, and checks every one gets
// its documented 4xx with a problem JSON and that the stream holds exactly
// what was accepted, intact.
func TestBadRequests(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessageSize = 1024
	topics := harness.Topics(orders, harness.Topic("audit", "archive"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.MaxHeaderCount = 30
	cfg.MaxLineBytes = 2048
	cfg.MaxJSONDepth = 8
	keys := tenantKeys(t, "acme", "acme-expired", "globex")
	cfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{
		"acme": {Keys: []tenant.Key{{ID: "current", Hash: tenant.Hash(keys["acme"])},
			{ID: "retired", Hash: tenant.Hash(keys["acme-expired"]), Expires: time.Now().Add(-time.Hour)}},
			Publish: []string{"orders"}, Read: []string{"orders"}},
		"globex": {Keys: []tenant.Key{{ID: "k1", Hash: tenant.Hash(keys["globex"])}}, Publish: []string{"audit"}, Read: []string{"audit"}, Ops: true},
	}}
	_, srv := harness.StartGateway(t, cfg, nc)
	msgs := srv.URL + "/v1/topics/orders/messages"
	acme := bearer(keys["acme"])
	with := func(h map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}

	// Accepted first: nothing below may lose or change it.
	good := post(t, msgs, "text/plain", strings.NewReader("the good message"), with(acme, "Idempotency-Key", "good-1"))
	if good.StatusCode != http.StatusAccepted {
		t.Fatalf("good message: %d", good.StatusCode)
	}
	goodSeq := decode[receipt](t, good).Seq

	flood := with(acme)
	for i := range 40 {
		flood[fmt.Sprintf("X-Flood-%d", i)] = "x"
	}
	deep := `{"data":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + "}"
	type row struct {
		name, method, url string
		hdr               map[string]string
		body              func() io.Reader
		status            int
		ptype             string
		line              bool // the problem is the batch's line 1, in a 200 answer
	}
	str := func(s string) func() io.Reader { return func() io.Reader { return strings.NewReader(s) } }
	rows := []row{
		{"oversize (declared length)", "POST", msgs, acme, str(strings.Repeat("x", 1025)), 413, sluice.ProblemMessageTooLarge, false},
		{"chunked oversize (counted while read)", "POST", msgs, acme, func() io.Reader {
			return io.MultiReader(strings.NewReader(strings.Repeat("x", 1000)), strings.NewReader(strings.Repeat("y", 1000)))
		}, 413, sluice.ProblemMessageTooLarge, false},
		{"batch too many bytes for a line", "POST", msgs + ":batch", with(acme, "Content-Type", "application/x-ndjson"),
			str(`{"data":"` + strings.Repeat("z", 3000) + `"}`), 413, sluice.ProblemMessageTooLarge, true},
		{"malformed NDJSON", "POST", msgs + ":batch", with(acme, "Content-Type", "application/x-ndjson"), str(`{"data": "unterminated`), 400, sluice.ProblemBadRequest, true},
		{"NDJSON unknown field", "POST", msgs + ":batch", with(acme, "Content-Type", "application/x-ndjson"), str(`{"data":1,"topic":"audit"}`), 400, sluice.ProblemBadRequest, true},
		{"NDJSON trailing bytes after the item", "POST", msgs + ":batch", with(acme, "Content-Type", "application/x-ndjson"), str(`{"data":1}]`), 400, sluice.ProblemBadRequest, true},
		{"JSON nested too deep", "POST", msgs + ":batch", with(acme, "Content-Type", "application/x-ndjson"), str(deep), 400, sluice.ProblemBadRequest, true},
		{"empty batch", "POST", msgs + ":batch", with(acme, "Content-Type", "application/x-ndjson"), str("\n \n"), 400, sluice.ProblemBadRequest, false},
		{"invalid UTF-8 in metadata", "POST", msgs, with(acme, "Sluice-Meta-Note", "a\xff\xfeb"), str("x"), 400, sluice.ProblemBadRequest, false},
		{"C1 control character in metadata", "POST", msgs, with(acme, "Sluice-Meta-Note", "a\u0085b"), str("x"), 400, sluice.ProblemBadRequest, false},
		{"invalid UTF-8 in batch metadata", "POST", msgs + ":batch", with(acme, "Content-Type", "application/x-ndjson"), str("{\"data\":1,\"meta\":{\"note\":\"a\xffb\"}}"), 400, sluice.ProblemBadRequest, true},
		{"wrong content type (batch)", "POST", msgs + ":batch", with(acme, "Content-Type", "text/plain"), str(`{"data":1}`), 415, sluice.ProblemUnsupportedMediaType, false},
		{"compressed body", "POST", msgs, with(acme, "Content-Encoding", "gzip"), str("x"), 415, sluice.ProblemUnsupportedMediaType, false},
		{"missing key", "POST", msgs, nil, str("x"), 401, sluice.ProblemUnauthorized, false},
		{"bad key", "POST", msgs, bearer("slk_not-a-key"), str("x"), 401, sluice.ProblemUnauthorized, false},
		{"not a bearer key", "POST", msgs, map[string]string{"Authorization": "Basic " + keys["acme"]}, str("x"), 401, sluice.ProblemUnauthorized, false},
		{"expired key", "POST", msgs, bearer(keys["acme-expired"]), str("x"), 401, sluice.ProblemUnauthorized, false},
		{"other tenant's topic", "POST", srv.URL + "/v1/topics/audit/messages", acme, str("x"), 403, sluice.ProblemForbidden, false},
		{"other tenant's dead letters", "GET", srv.URL + "/v1/topics/audit/families/archive/dead-letters", acme, nil, 403, sluice.ProblemForbidden, false},
		{"redrive without the grant", "POST", srv.URL + "/v1/topics/orders/families/billing/dead-letters/redrive", acme, nil, 403, sluice.ProblemForbidden, false},
		{"status without ops", "GET", srv.URL + "/v1/status", acme, nil, 403, sluice.ProblemForbidden, false},
		{"undeclared topic, granted nothing", "POST", srv.URL + "/v1/topics/secret/messages", acme, str("x"), 403, sluice.ProblemForbidden, false},
		{"subject injection: wildcard topic", "POST", srv.URL + "/v1/topics/orders.%3E/messages", acme, str("x"), 400, sluice.ProblemBadRequest, false},
		{"subject injection: star topic", "POST", srv.URL + "/v1/topics/%2A/messages", acme, str("x"), 400, sluice.ProblemBadRequest, false},
		{"subject injection: space in topic", "POST", srv.URL + "/v1/topics/orders%20x/messages", acme, str("x"), 400, sluice.ProblemBadRequest, false},
		{"subject injection: family", "GET", srv.URL + "/v1/topics/orders/families/billing.%3E/dead-letters", acme, nil, 400, sluice.ProblemBadRequest, false},
		{"subject injection: idempotency key", "POST", msgs, with(acme, "Idempotency-Key", "a.*.>"), str("x"), 400, sluice.ProblemBadRequest, false},
		{"subject injection: metadata name", "POST", msgs, with(acme, "Sluice-Meta-A.B", "x"), str("x"), 400, sluice.ProblemBadRequest, false},
		{"over-long idempotency key", "POST", msgs, with(acme, "Idempotency-Key", strings.Repeat("k", 201)), str("x"), 400, sluice.ProblemBadRequest, false},
		{"over-long metadata value", "POST", msgs, with(acme, "Sluice-Meta-Note", strings.Repeat("v", 5000)), str("x"), 400, sluice.ProblemBadRequest, false},
		{"header flood (count)", "POST", msgs, flood, str("x"), 431, sluice.ProblemHeaderTooLarge, false},
		{"header flood (bytes)", "POST", msgs, with(acme, "X-Big", strings.Repeat("b", 70<<10)), str("x"), 431, sluice.ProblemHeaderTooLarge, false},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-40s %-6s %s\n", "REQUEST", "STATUS", "PROBLEM TYPE")
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			var body io.Reader = http.NoBody
			if r.body != nil {
				body = r.body()
			}
			resp := send(t, r.method, r.url, body, r.hdr)
			var p sluice.Problem
			if r.line {
				if resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(resp.Body)
					t.Fatalf("batch status %d, want 200 with a problem line: %s", resp.StatusCode, b)
				}
				sc := bufio.NewScanner(resp.Body)
				if !sc.Scan() {
					t.Fatal("no answer line")
				}
				if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
					t.Fatal(err)
				}
				if p.Status != r.status || p.Type != r.ptype || p.Line != 1 || p.Detail == "" {
					t.Fatalf("line problem %+v, want %d %s on line 1", p, r.status, r.ptype)
				}
			} else {
				p = wantProblem(t, resp, r.status, r.ptype)
				if r.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("401 without a Bearer challenge: %q", resp.Header.Get("WWW-Authenticate"))
				}
			}
			fmt.Fprintf(&table, "%-40s %-6d %s (%s)\n", r.name, p.Status, strings.TrimPrefix(p.Type, "urn:sluice:problem:"), clipDetail(p.Detail))
		})
	}
	t.Logf("bad-request table:\n%s", table.String())

	// Nothing accepted was lost or changed; nothing refused was stored.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m := streamMsg(t, js, "orders", goodSeq)
	if string(m.Data) != "the good message" || sluice.KeyOf(m.Header.Get(sluice.HeaderMsgID)) != "good-1" {
		t.Fatalf("accepted message changed: %q %v", m.Data, m.Header)
	}
	for _, topic := range []string{"orders", "audit"} {
		s, err := js.Stream(context.Background(), sluice.StreamName(topic))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]uint64{"orders": 1, "audit": 0}[topic]
		if n := s.CachedInfo().State.Msgs; n != want {
			t.Fatalf("topic %s holds %d messages, want %d (only what was accepted)", topic, n, want)
		}
	}
	// And the rightful callers still get in.
	if resp := post(t, srv.URL+"/v1/topics/audit/messages", "", strings.NewReader("x"), bearer(keys["globex"])); resp.StatusCode != 202 {
		t.Fatalf("globex on audit: %d", resp.StatusCode)
	}
	if resp := send(t, "GET", srv.URL+"/v1/status", nil, bearer(keys["globex"])); resp.StatusCode != 200 {
		t.Fatalf("globex status: %d", resp.StatusCode)
	}
	topicsSeen := decode[struct {
		Topics []struct{ Name string } `json:"topics"`
	}](t, send(t, "GET", srv.URL+"/v1/topics", nil, acme))
	if len(topicsSeen.Topics) != 1 || topicsSeen.Topics[0].Name != "orders" {
		t.Fatalf("acme lists %+v, want only orders", topicsSeen.Topics)
	}
}

func clipDetail(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

// TestNoisyTenantDoesNotStarveOthers: tenant A publishes at 10x its rate
// quota while tenant B publishes at half of its own; A is cut to its quota
// with 429s, B sees no refusal at all.
func TestNoisyTenantDoesNotStarveOthers(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	keys := tenantKeys(t, "a", "b")
	const rate, burst = 20, 20
	cfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{
		"a": {Keys: []tenant.Key{{ID: "a", Hash: tenant.Hash(keys["a"])}}, Publish: []string{"orders"}, Rate: rate, Burst: burst, AdmissionShare: 0.5},
		"b": {Keys: []tenant.Key{{ID: "b", Hash: tenant.Hash(keys["b"])}}, Publish: []string{"orders"}, Rate: rate, Burst: burst, AdmissionShare: 0.5},
	}}
	_, srv := harness.StartGateway(t, cfg, nc)
	url := srv.URL + "/v1/topics/orders/messages"

	const seconds = 2
	type tally struct{ accepted, refused, other int }
	run := func(key string, perSec int, out *tally, done chan<- struct{}) {
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(perSec))
		defer tick.Stop()
		for range perSec * seconds {
			<-tick.C
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("m"))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out.other++
				continue
			}
			var p sluice.Problem
			switch resp.StatusCode {
			case http.StatusAccepted:
				out.accepted++
			case http.StatusTooManyRequests:
				if json.NewDecoder(resp.Body).Decode(&p) == nil && p.Type == sluice.ProblemRateLimited && resp.Header.Get("Retry-After") != "" {
					out.refused++
				} else {
					out.other++
				}
			default:
				out.other++
			}
			resp.Body.Close()
		}
	}
	var ta, tb tally
	da, db := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go run(keys["a"], 10*rate, &ta, da)
	go run(keys["b"], rate/2, &tb, db)
	<-da
	<-db
	elapsed := time.Since(start)
	t.Logf("tenant A at %d/s (quota %d/s): %d accepted, %d refused (429); tenant B at %d/s: %d accepted, %d refused; %v",
		10*rate, rate, ta.accepted, ta.refused, rate/2, tb.accepted, tb.refused, elapsed.Round(time.Millisecond))
	if tb.refused != 0 || tb.other != 0 || tb.accepted != rate/2*seconds {
		t.Fatalf("tenant B: %+v, want all %d accepted", tb, rate/2*seconds)
	}
	if most := burst + int(rate*elapsed.Seconds()) + 1; ta.accepted > most || ta.refused == 0 || ta.other != 0 {
		t.Fatalf("tenant A: %+v, want at most %d accepted and the rest refused with 429 rate-limited", ta, most)
	}
}

// TestTenantAdmissionShare: a tenant with admission_share 0.5 takes at most
// half of a refill's credit for a topic; the other tenant still gets its
// half. Refills are an hour apart here, so one refill's credit is the
// whole story.
func TestTenantAdmissionShare(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessages = 40
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.AdmissionRefresh = time.Hour
	keys := tenantKeys(t, "a", "b")
	cfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{
		"a": {Keys: []tenant.Key{{ID: "a", Hash: tenant.Hash(keys["a"])}}, Publish: []string{"orders"}, AdmissionShare: 0.5},
		"b": {Keys: []tenant.Key{{ID: "b", Hash: tenant.Hash(keys["b"])}}, Publish: []string{"orders"}, AdmissionShare: 0.5},
	}}
	_, srv := harness.StartGateway(t, cfg, nc)
	url := srv.URL + "/v1/topics/orders/messages"
	count := func(key string, n int) (accepted, shareRefused int) {
		for range n {
			resp := post(t, url, "", strings.NewReader("m"), bearer(key))
			switch resp.StatusCode {
			case http.StatusAccepted:
				accepted++
			case http.StatusTooManyRequests:
				p := decode[sluice.Problem](t, resp)
				if p.Type != sluice.ProblemRateLimited || !strings.Contains(p.Detail, "admission share") {
					t.Fatalf("refusal %+v, want the tenant's admission share", p)
				}
				shareRefused++
			default:
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		return accepted, shareRefused
	}
	aOK, aRefused := count(keys["a"], 60)
	bOK, bRefused := count(keys["b"], 20)
	t.Logf("topic credit 40: tenant A sent 60, %d accepted, %d refused; tenant B sent 20, %d accepted, %d refused", aOK, aRefused, bOK, bRefused)
	if aOK != 20 || aRefused != 40 || bOK != 20 || bRefused != 0 {
		t.Fatalf("A %d/%d, B %d/%d; want A 20 accepted (half the credit), B all 20", aOK, aRefused, bOK, bRefused)
	}
}

// TestOpenAuthSaysSoLoudly: a gateway without keys logs a warning and its
// /readyz says it is open.
func TestOpenAuthSaysSoLoudly(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	core, logs := observer.New(zap.WarnLevel)
	g, err := gateway.New(harness.GatewayConfig(topics), nc, zap.New(core), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("AUTHENTICATION IS OFF").Len() != 1 {
		t.Fatalf("no loud warning: %v", logs.All())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.RunControl(ctx) }()
	defer func() { cancel(); <-done }()
	var body map[string]any
	harness.Eventually(t, 10*time.Second, func() bool {
		rec := httptest.NewRecorder()
		g.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		body = nil
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return body["ready"] == true
	}, "not ready")
	checks, _ := body["checks"].(map[string]any)
	if a, _ := checks["auth"].(string); !strings.HasPrefix(a, "OPEN") {
		t.Fatalf("readyz auth check = %q, want it to say OPEN", a)
	}
}

// TestClientRateFollowsTheKeyNotItsSpelling: "Bearer K" and "bearer  K" are
// one key, so they share one client bucket (review finding: each spelling
// used to get a fresh burst).
func TestClientRateFollowsTheKeyNotItsSpelling(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.ClientRate, cfg.ClientBurst = 0.001, 1
	keys := tenantKeys(t, "a")
	cfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{
		"a": {Keys: []tenant.Key{{ID: "a", Hash: tenant.Hash(keys["a"])}}, Publish: []string{"orders"}},
	}}
	_, srv := harness.StartGateway(t, cfg, nc)
	url := srv.URL + "/v1/topics/orders/messages"
	if resp := post(t, url, "", strings.NewReader("m"), map[string]string{"Authorization": "Bearer " + keys["a"]}); resp.StatusCode != 202 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	for _, spelling := range []string{"bearer  ", "BEARER ", "Bearer "} {
		resp := post(t, url, "", strings.NewReader("m"), map[string]string{"Authorization": spelling + keys["a"]})
		wantProblem(t, resp, 429, sluice.ProblemRateLimited)
	}
}
