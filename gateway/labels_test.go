package gateway_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/testkit/harness"
)

// gatewayRoutes are the route labels a gateway may count: its registered
// patterns and "unmatched".
var gatewayRoutes = []string{
	"/v1/topics/{topic}/messages", "/v1/topics/{topic}/messages:batch", "/v1/topics", "/v1/topics/{topic}",
	"/v1/topics/{topic}/families/{family}/dead-letters", "/v1/topics/{topic}/families/{family}/dead-letters/redrive",
	"/v1/topics/{topic}/families/{family}/dead-letters/{seq}", "/v1/topics/{topic}/families/{family}/dead-letters/{seq}/redrive",
	"/healthz", "/readyz", "/v1/alarms", "/v1/status", "/metrics", "unmatched",
}

// methodLabels are the method labels: the methods HTTP defines and "other".
var methodLabels = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other"}

// codeLabels are the code labels: every status HTTP names, and "other".
func codeLabels() []string {
	out := []string{"other"}
	for c := 100; c < 600; c++ {
		if http.StatusText(c) != "" {
			out = append(out, fmt.Sprint(c))
		}
	}
	return out
}

// gatewaySeries counts the series of each sluice_gateway_ metric family
// and checks every label value against its fixed set.
func gatewaySeries(t *testing.T, reg *prometheus.Registry, tenants []string) map[string]int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string][]string{
		"route": gatewayRoutes, "method": methodLabels, "code": codeLabels(),
		"topic": {"orders", ""}, "family": {"billing"}, "tenant": tenants,
	}
	out := map[string]int{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "sluice_gateway_") {
			continue
		}
		out[mf.GetName()] = len(mf.GetMetric())
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				if set, ok := allowed[l.GetName()]; ok && !contains(set, v) && !(l.GetName() == "code" && mf.GetName() == "sluice_gateway_commit_fallbacks_total") {
					t.Errorf("%s{%s=%.80q}: not in the fixed set", mf.GetName(), l.GetName(), v)
				}
				if len(v) > 64 {
					t.Errorf("%s{%s}: a label value of %d bytes", mf.GetName(), l.GetName(), len(v))
				}
			}
		}
	}
	return out
}

func contains(set []string, v string) bool {
	for _, s := range set {
		if s == v {
			return true
		}
	}
	return false
}

// oddToken is a random HTTP token n bytes long.
func oddToken(r *rand.Rand, n int) string {
	const chars = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	for i := range b {
		b[i] = chars[r.IntN(len(chars))]
	}
	return string(b)
}

// TestMetricLabelsStayBounded sends what a hostile client sends before and
// after authentication fails (hundreds of made-up methods, one of 100 KB,
// random paths, unknown topics and families, header floods, bad keys) in
// two waves of different random values, and checks every gateway metric
// label comes from its fixed set and that the second wave adds no series:
// the series are bounded by routes x methods x codes, not by the clients.
func TestMetricLabelsStayBounded(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	cfg.MaxHeaderCount = 30
	keys := tenantKeys(t, "acme")
	cfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{
		"acme": {Keys: []tenant.Key{{ID: "k1", Hash: tenant.Hash(keys["acme"])}}, Publish: []string{"orders"}, Read: []string{"orders"}, Redrive: []string{"orders"}},
	}}
	url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
	acme := bearer(keys["acme"])

	wave := func(seed uint64) {
		r := rand.New(rand.NewPCG(seed, seed))
		do := func(method, path string, hdr map[string]string) {
			req, err := http.NewRequest(method, url+path, strings.NewReader("x"))
			if err != nil {
				t.Fatalf("%.40s %s: %v", method, path, err)
			}
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%.40s %s: %v", method, path, err)
			}
			resp.Body.Close()
		}
		auths := []map[string]string{nil, acme, bearer("sk_" + oddToken(r, 20)), {"Authorization": oddToken(r, 50)}}
		paths := func() []string {
			tok := oddToken(r, 12)
			tok = strings.NewReplacer("#", "", "%", "", "?", "").Replace(tok)
			return []string{"/v1/topics/orders/messages", "/v1/topics/" + tok + "/messages", "/" + tok, "/v1/" + tok + "/x",
				"/v1/topics/" + tok, "/v1/topics/orders/families/" + tok + "/dead-letters", "/v1/topics/orders/families/billing/dead-letters/" + tok}
		}
		for i := range 200 {
			method := "X" + oddToken(r, 8)
			do(method, paths()[i%7], auths[i%4])
		}
		do(strings.Repeat("M", 100<<10), "/v1/topics/orders/messages", acme) // a 100 KB method
		for _, auth := range auths {
			for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"} {
				for _, p := range paths() {
					do(m, p, auth)
				}
			}
			flood := map[string]string{"X-" + oddToken(r, 10): oddToken(r, 30)}
			for k, v := range auth {
				flood[k] = v
			}
			do("POST", "/v1/topics/orders/messages", flood)
			for i := range 40 {
				flood[fmt.Sprintf("X-Flood-%d-%s", i, oddToken(r, 6))] = "x"
			}
			do("POST", "/v1/topics/orders/messages", flood) // over max_header_count: 431
		}
	}
	wave(1)
	first := gatewaySeries(t, reg, []string{"acme"})
	wave(2)
	second := gatewaySeries(t, reg, []string{"acme"})

	codes := len(codeLabels())
	if n, bound := second["sluice_gateway_requests_total"], len(gatewayRoutes)*len(methodLabels)*codes; n > bound {
		t.Errorf("sluice_gateway_requests_total has %d series, over routes x methods x codes = %d", n, bound)
	}
	if n := second["sluice_gateway_request_duration_seconds"]; n > len(gatewayRoutes) {
		t.Errorf("sluice_gateway_request_duration_seconds has %d series, over the %d routes", n, len(gatewayRoutes))
	}
	for name, n := range second {
		if n != first[name] {
			t.Errorf("%s: %d series after the first wave, %d after the second: labels follow the clients' values", name, first[name], n)
		}
	}
	t.Logf("series after two waves: %v", second)
}
