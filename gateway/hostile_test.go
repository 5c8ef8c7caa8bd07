package gateway_test

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// clientFrom is an HTTP client whose connections come from ip, another
// loopback address than the default client's 127.0.0.1: another client as
// the gateway sees it.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func sendWith(t *testing.T, c *http.Client, method, url string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func wantStatus(t *testing.T, resp *http.Response, status int, what string) {
	t.Helper()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %d, want %d: %s", what, resp.StatusCode, status, b)
	}
	resp.Body.Close()
}

// TestRotatingAuthorizationDoesNotDodgeClientRate: in open mode a client
// sending a new Authorization header with each request is one client (its
// address) and meets client_rate; another address keeps its own rate.
func TestRotatingAuthorizationDoesNotDodgeClientRate(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	cfg.ClientRate, cfg.ClientBurst = 0.1, 3
	url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
	msgs := url + "/v1/topics/orders/messages"
	for i := range 3 {
		wantStatus(t, post(t, msgs, "", strings.NewReader("x"), bearer(fmt.Sprintf("rotated-%d", i))), 202, "burst")
	}
	for i := range 5 {
		resp := post(t, msgs, "", strings.NewReader("x"), bearer(fmt.Sprintf("rotated-again-%d", i)))
		wantProblem(t, resp, 429, sluice.ProblemRateLimited)
		if resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if n := refusals(t, reg, "client_rate"); n != 5 {
		t.Fatalf("client_rate refusals %v, want 5", n)
	}
	// The honest client at another address is unaffected.
	honest := clientFrom(t, "127.0.0.2")
	for i := range 3 {
		wantStatus(t, sendWith(t, honest, "POST", msgs, strings.NewReader("x"), nil), 202, fmt.Sprintf("honest client %d", i))
	}
}

// TestChunkedBodyIsChargedByteAdmission: a body of unknown length is
// charged the topic's max message size at the door while it is read, so
// chunked bodies cannot pass the byte share uncharged; once read, the
// message holds its real size.
func TestChunkedBodyIsChargedByteAdmission(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessageSize = 1024
	orders.MaxBytes = 8 << 10
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
	msgs := url + "/v1/topics/orders/messages"

	// Eight chunked bodies not yet sent: 8 x 1 KiB, the whole byte share.
	type held struct {
		w    *io.PipeWriter
		done chan int
	}
	var hs []held
	for range 8 {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		req, _ := http.NewRequest(http.MethodPost, msgs, pr)
		h := held{pw, make(chan int, 1)}
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				h.done <- 0
				return
			}
			resp.Body.Close()
			h.done <- resp.StatusCode
		}()
		hs = append(hs, h)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return gaugeValue(t, reg, "sluice_gateway_body_bytes_in_flight") == 8*1024
	}, "the eight chunked bodies should be admitted and held")
	resp := post(t, msgs, "", strings.NewReader("small"), nil)
	wantProblem(t, resp, 429, sluice.ProblemTopicFull)
	if refusals(t, reg, "admission") != 1 {
		t.Fatal("the refusal was not admission's")
	}
	// The bodies end small: each holds its real size, and the credit comes
	// back at the next refill for honest publishes.
	for _, h := range hs {
		if _, err := h.w.Write([]byte("ten bytes!")); err != nil {
			t.Fatal(err)
		}
		h.w.Close()
		if code := <-h.done; code != 202 {
			t.Fatalf("chunked publish: %d", code)
		}
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		r := post(t, msgs, "", strings.NewReader("small"), nil)
		r.Body.Close()
		return r.StatusCode == 202
	}, "an honest publish should be admitted once the chunked bodies were charged their real size")
	if n := refusals(t, reg, "topic_full"); n != 0 {
		t.Fatalf("the stream refused %v messages as full: admission over-granted", n)
	}
}

// TestReadRate: read endpoints are metered per tenant (all its keys
// together), per address in open mode, with a 429 problem and Retry-After;
// writes, health checks and other tenants are not affected.
func TestReadRate(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)

	t.Run("open mode, per address", func(t *testing.T) {
		cfg := harness.GatewayConfig(topics)
		cfg.ReadRate, cfg.ReadBurst = 0.1, 4
		url, reg := startGatewayReg(t, cfg, nc)
		paths := []string{"/v1/topics", "/v1/topics/orders", "/v1/topics/orders/families/billing/dead-letters", "/v1/status"}
		for _, p := range paths {
			wantStatus(t, send(t, "GET", url+p, nil, nil), 200, p)
		}
		for _, p := range append(paths, "/v1/alarms", "/v1/topics/orders/families/billing/dead-letters/1") {
			resp := send(t, "GET", url+p, nil, bearer("rotated-"+p))
			wantProblem(t, resp, 429, sluice.ProblemRateLimited)
			if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 {
				t.Fatalf("%s: Retry-After %q", p, resp.Header.Get("Retry-After"))
			}
		}
		if n := refusals(t, reg, "read_rate"); n != 6 {
			t.Fatalf("read_rate refusals %v, want 6", n)
		}
		wantStatus(t, send(t, "GET", url+"/healthz", nil, nil), 200, "healthz")
		wantStatus(t, post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil), 202, "publish")
		wantStatus(t, sendWith(t, clientFrom(t, "127.0.0.3"), "GET", url+"/v1/topics/orders", nil, nil), 200, "another address")
	})
	t.Run("keys, per tenant", func(t *testing.T) {
		cfg := harness.GatewayConfig(topics)
		cfg.ReadRate, cfg.ReadBurst = 0.1, 3
		keys := tenantKeys(t, "acme-1", "acme-2", "globex")
		cfg.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{
			"acme": {Keys: []tenant.Key{{ID: "k1", Hash: tenant.Hash(keys["acme-1"])}, {ID: "k2", Hash: tenant.Hash(keys["acme-2"])}},
				Publish: []string{"orders"}, Read: []string{"orders"}},
			"globex": {Keys: []tenant.Key{{ID: "k1", Hash: tenant.Hash(keys["globex"])}}, Publish: []string{"orders"}, Read: []string{"orders"}},
		}}
		url, _ := startGatewayReg(t, cfg, nc)
		for i := range 3 {
			wantStatus(t, send(t, "GET", url+"/v1/topics/orders", nil, bearer(keys[fmt.Sprintf("acme-%d", i%2+1)])), 200, "acme read")
		}
		for _, k := range []string{"acme-1", "acme-2"} {
			wantProblem(t, sendWith(t, clientFrom(t, "127.0.0.4"), "GET", url+"/v1/topics", nil, bearer(keys[k])), 429, sluice.ProblemRateLimited)
		}
		wantStatus(t, send(t, "GET", url+"/v1/topics/orders", nil, bearer(keys["globex"])), 200, "globex read")
		wantStatus(t, post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), bearer(keys["acme-1"])), 202, "acme publish")
	})
}

func TestReadRateConfig(t *testing.T) {
	cfg := harness.GatewayConfig(harness.Topics(harness.Topic("orders", "billing")))
	cfg.ReadRate, cfg.ReadBurst = 0, 0
	err := cfg.Validate()
	var ke *topology.KeyError
	if !errors.As(err, &ke) || !strings.Contains(err.Error(), "gateway.read_rate") || !strings.Contains(err.Error(), "gateway.read_burst") {
		t.Fatalf("Validate() = %v, want errors naming gateway.read_rate and gateway.read_burst", err)
	}
	if d := gateway.DefaultConfig(); d.ReadRate < 50 || d.ReadBurst < 100 {
		t.Fatalf("default read rate %v burst %d would bother a dashboard", d.ReadRate, d.ReadBurst)
	}
}

// TestTopicViewsServedFromLastReading: many topic views cost the bus one
// reading per topic per few seconds, not one per request; a publish here
// is seen by the next view here.
func TestTopicViewsServedFromLastReading(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	spy := harness.Connect(t, b)
	var reads atomic.Int64 // busstats.Read looks up each family's dead-letter stream once
	sub, err := spy.Subscribe("$JS.API.STREAM.INFO."+sluice.DeadLetterStream("orders", "billing"), func(*nats.Msg) { reads.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := harness.GatewayConfig(topics)
	cfg.ReadRate, cfg.ReadBurst = 1000, 1000
	url, _ := startGatewayReg(t, cfg, nc)
	start, before := time.Now(), reads.Load()
	const n = 100
	for i := range n {
		p := "/v1/topics/orders"
		if i%2 == 1 {
			p = "/v1/topics"
		}
		wantStatus(t, send(t, "GET", url+p, nil, nil), 200, p)
	}
	// The watcher reads every alarms.interval (1s); a view reads the bus
	// itself only once the last reading is two intervals old.
	if got, bound := reads.Load()-before, 2+2*int64(time.Since(start)/cfg.Alarms.Interval+1); got > bound {
		t.Fatalf("%d views read the bus %d times, want at most %d", n, got, bound)
	}
	wantStatus(t, post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil), 202, "publish")
	if v := topicView(t, url); v.Depth.Messages != 1 {
		t.Fatalf("depth %d right after a publish here, want 1", v.Depth.Messages)
	}
}

// TestSpoofedHeartbeatsDoNotShrinkShare: a bus identity publishing made-up
// gateway heartbeats cannot shrink a gateway's admission share: junk ids
// are ignored and well-formed made-up ones count for at most maxPeers (64).
func TestSpoofedHeartbeatsDoNotShrinkShare(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessages = 65_000
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	// Peers are forgotten after 3 intervals: long enough that a loaded
	// machine still sees each state (a peer alive, 64 alive) before it ends.
	cfg.HeartbeatInterval = 3 * time.Second
	url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
	share := topicView(t, url).Admission.Share
	if share != 65_000 {
		t.Fatalf("share %d alone, want the whole topic", share)
	}
	spoofer := harness.Connect(t, b)
	r := rand.New(rand.NewPCG(1, 2))
	junk := []func() string{
		func() string { return oddToken(r, 1+r.IntN(40)) },
		func() string { return strings.Repeat("A", 21) + "!" },
		func() string { return strings.Repeat("z", 100<<10) },
		func() string { return "" },
	}
	for i := range 1000 {
		if err := spoofer.Publish("sluice.gateway.heartbeat", []byte(junk[i%len(junk)]())); err != nil {
			t.Fatal(err)
		}
		_ = spoofer.Publish("sluice.gateway.hello", []byte(junk[i%len(junk)]()))
	}
	// A real-looking peer after the junk (one connection: delivered in
	// order): once it counts, the junk before it was heard.
	peer := nuid.Next()
	if err := spoofer.Publish("sluice.gateway.heartbeat", []byte(peer)); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, func() bool {
		return gaugeValue(t, reg, "sluice_gateway_gateways_alive") == 2
	}, "the well-formed peer should count, and nothing else: gateways_alive %v", gaugeValue(t, reg, "sluice_gateway_gateways_alive"))
	if n := ignoredHeartbeats(t, reg, "malformed"); n != 1000 {
		t.Fatalf("malformed heartbeats counted %v, want 1000", n)
	}
	// Without more heartbeats the peer is forgotten and the share is whole
	// again.
	harness.Eventually(t, time.Minute, func() bool { return topicView(t, url).Admission.Share == share },
		"share should be back to %d once the spoofed peer is silent", share)

	// Well-formed made-up ids: at most 64 count. On a gateway of its own
	// whose peers live three minutes, so that a loaded machine sees all 64
	// alive at once.
	cfg.HeartbeatInterval = time.Minute
	b = harness.StartBroker(t, topics)
	url, reg = startGatewayReg(t, cfg, harness.Connect(t, b))
	spoofer = harness.Connect(t, b)
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = nuid.Next()
	}
	for _, id := range ids {
		_ = spoofer.Publish("sluice.gateway.heartbeat", []byte(id))
	}
	harness.Eventually(t, time.Minute, func() bool {
		return gaugeValue(t, reg, "sluice_gateway_gateways_alive") == 65 && ignoredHeartbeats(t, reg, "peers_full") == 1000-64
	}, "64 made-up peers at most should count")
	if v := topicView(t, url).Admission; v.Share < 65_000/65-1 {
		t.Fatalf("share %d with 64 made-up peers, want at least %d", v.Share, 65_000/65-1)
	}
}

func ignoredHeartbeats(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	return metricSum(t, reg, "sluice_gateway_heartbeats_ignored_total", map[string]string{"reason": reason})
}
