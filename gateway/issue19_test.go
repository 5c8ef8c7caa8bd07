package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/testkit/harness"
)

// TestKnownSeriesStartAtZero: before any request, the gateway's counters
// have a 0 series for each known label set: messages and refusals per
// topic, refusals about no topic, redrives per family, authentication
// failures, tenant refusals per tenant, ignored heartbeats, protocol
// errors and raised alarms.
func TestKnownSeriesStartAtZero(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	keys := tenantKeys(t, "acme")
	cfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{
		"acme": {Keys: []tenant.Key{{ID: "k1", Hash: tenant.Hash(keys["acme"])}}, Publish: []string{"orders"}},
	}}
	reg := prometheus.NewRegistry()
	if _, err := gateway.New(cfg, harness.Connect(t, b), harness.Logger(t), reg, reg); err != nil {
		t.Fatal(err)
	}
	want := map[string][]map[string]string{
		"sluice_gateway_messages_total": {{"topic": "orders", "outcome": "accepted"}, {"topic": "orders", "outcome": "refused_full"}},
		"sluice_gateway_refusals_total": {{"topic": "orders", "reason": "admission"}, {"topic": "orders", "reason": "topic_full"},
			{"topic": "orders", "reason": "client_rate"}, {"topic": "", "reason": "in_flight"}},
		"sluice_gateway_dead_letters_redriven_total": {{"topic": "orders", "family": "billing"}, {"topic": "orders", "family": "shipping"}},
		"sluice_gateway_auth_failures_total":         {{"reason": "missing"}, {"reason": "forbidden"}},
		"sluice_gateway_tenant_refusals_total":       {{"tenant": "acme", "reason": "tenant_rate"}, {"tenant": "acme", "reason": "tenant_share"}},
		"sluice_gateway_heartbeats_ignored_total":    {{"reason": "malformed"}, {"reason": "peers_full"}},
		"sluice_gateway_commit_fallbacks_total":      {{"topic": "orders", "code": "10201"}},
		"sluice_gateway_protocol_errors_total":       {{"kind": "http2"}, {"kind": "tls"}},
		"sluice_alarms_raised_total":                 {{"name": "topic_throttled"}, {"name": "gateway_shedding"}},
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string][]map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter().GetValue() != 0 {
				t.Errorf("%s %v = %v before any request", mf.GetName(), m.GetLabel(), m.GetCounter().GetValue())
			}
			ls := map[string]string{}
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = l.GetValue()
			}
			have[mf.GetName()] = append(have[mf.GetName()], ls)
		}
	}
	for name, sets := range want {
		for _, set := range sets {
			if !hasSeries(have[name], set) {
				t.Errorf("%s%v: no series before the first event (has %d)", name, set, len(have[name]))
			}
		}
	}
}

func hasSeries(series []map[string]string, want map[string]string) bool {
	for _, s := range series {
		if len(s) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			if s[k] != v {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

// TestAnswersKeepTheirFields: /v1/alarms answers "cleared": [] when
// nothing has cleared, never null; a redrive's answer always has
// "stopped" and "retry_after_seconds".
func TestAnswersKeepTheirFields(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), harness.Connect(t, b))

	resp, err := http.Get(srv.URL + "/v1/alarms")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"cleared":[]`) || !strings.Contains(string(body), `"active":[]`) {
		t.Fatalf("alarms: %d %s", resp.StatusCode, body)
	}

	resp = post(t, srv.URL+"/v1/topics/orders/families/billing/dead-letters/redrive", "", http.NoBody, nil)
	var res map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("redrive: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	if string(res["stopped"]) != `""` || string(res["retry_after_seconds"]) != "0" || string(res["redriven"]) != "0" {
		t.Fatalf("redrive answer %v: want stopped \"\" and retry_after_seconds 0", res)
	}
}

// runObserved runs a gateway with Run, logging at debug to an observer,
// and returns its address, its logs and its registry.
func runObserved(t *testing.T) (string, *observer.ObservedLogs, *prometheus.Registry) {
	t.Helper()
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	g, err := gateway.New(harness.GatewayConfig(topics), harness.Connect(t, b), zap.New(core), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	addr := runGateway(t, g)
	harness.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "gateway not ready")
	return addr, logs, reg
}

// TestCleartextHTTP2ByPriorKnowledgeAndUpgradeIgnored: without TLS the
// gateway speaks HTTP/2 to a client that knows it does (prior knowledge);
// a request asking for Upgrade: h2c (deprecated by RFC 9113) is answered
// over HTTP/1.1 like any other, with no 101.
func TestCleartextHTTP2ByPriorKnowledgeAndUpgradeIgnored(t *testing.T) {
	addr, _, _ := runObserved(t)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &p}}
	resp, err := h2c.Post("http://"+addr+"/v1/topics/orders/messages", "text/plain", strings.NewReader("over h2c"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.ProtoMajor != 2 {
		t.Fatalf("prior knowledge: %s %s", resp.Proto, resp.Status)
	}

	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "POST /v1/topics/orders/messages HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
		"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nupgrade"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.Proto != "HTTP/1.1" || !strings.Contains(string(body), `"seq"`) {
		t.Fatalf("Upgrade: h2c answered %s %s %s", resp.Proto, resp.Status, body)
	}
}

// TestHTTP2ProtocolErrorsLoggedAtDebug: a client that breaks HTTP/2
// (a PING before its SETTINGS) costs a debug line and a count, no line at
// info or above.
func TestHTTP2ProtocolErrorsLoggedAtDebug(t *testing.T) {
	addr, logs, reg := runObserved(t)
	for range 3 {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		ping := []byte{0, 0, 8, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		if _, err := conn.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ping...)); err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, conn) // until the server closes it
		conn.Close()
	}
	protocolErrors := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "sluice_gateway_protocol_errors_total" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == "http2" {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return -1
	}
	harness.Eventually(t, 10*time.Second, func() bool { return protocolErrors() == 3 }, "3 http2 protocol errors counted (have %v)", protocolErrors())
	debug := 0
	for _, e := range logs.All() {
		if !strings.Contains(e.Message, "http2") {
			continue
		}
		if e.Level != zapcore.DebugLevel {
			t.Errorf("logged at %s: %s", e.Level, e.Message)
		}
		debug++
	}
	if debug < 3 {
		t.Errorf("%d debug lines for 3 protocol errors", debug)
	}
}
