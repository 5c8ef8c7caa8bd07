package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

var startGatewayReg = harness.StartGatewayReg

func refusals(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	n, err := testutil.GatherAndCount(reg, "sluice_gateway_refusals_total")
	if err != nil || n == 0 {
		return 0
	}
	mfs, _ := reg.Gather()
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "sluice_gateway_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

var rateLimitRE = regexp.MustCompile(`^"topic";r=(\d+);t=(\d+)$`)

func TestTwoGatewaysShareAdmissionAndNeverReachTheHardBound(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessages = 20
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.AdmissionRefresh = 50 * time.Millisecond
	urlA, regA := startGatewayReg(t, cfg, harness.Connect(t, b))
	urlB, regB := startGatewayReg(t, cfg, harness.Connect(t, b))
	harness.Eventually(t, 10*time.Second, func() bool {
		return topicView(t, urlA).Admission.Share == 10 && topicView(t, urlB).Admission.Share == 10
	}, "each gateway should hold half of the topic's room once they hear each other")

	accepted, refused := 0, 0
	for i := range 60 {
		url := urlA
		if i%2 == 1 {
			url = urlB
		}
		resp := post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil)
		rl := resp.Header.Get("RateLimit")
		if resp.Header.Get("RateLimit-Policy") == "" || !rateLimitRE.MatchString(rl) {
			t.Fatalf("answer %d: RateLimit %q, policy %q", i, rl, resp.Header.Get("RateLimit-Policy"))
		}
		switch resp.StatusCode {
		case 202:
			accepted++
		case 429:
			wantProblem(t, resp, 429, sluice.ProblemTopicFull)
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
				t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
			}
			if m := rateLimitRE.FindStringSubmatch(rl); m[1] != "0" {
				t.Fatalf("refused with r=%s left", m[1])
			}
			refused++
		default:
			t.Fatalf("answer %d: status %d", i, resp.StatusCode)
		}
	}
	if accepted > 20 || accepted < 15 || refused == 0 {
		t.Fatalf("accepted %d refused %d of 60: want at most the 20 the topic holds, nearly all of them", accepted, refused)
	}
	// Offered slowly, across refills, the last free messages are admitted
	// too: the shares add up to the room, none is stranded.
	for i := 0; accepted < 20; i++ {
		if i == 200 {
			t.Fatalf("only %d of the topic's 20 messages admitted", accepted)
		}
		url := []string{urlA, urlB}[i%2]
		if post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil).StatusCode == 202 {
			accepted++
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp := post(t, urlA+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil); resp.StatusCode != 429 {
		t.Fatalf("a 21st message answered %d", resp.StatusCode)
	}
	// Shares refilled on two clocks can overlap for one refresh, so the
	// stream's own bound may refuse at the edge where it fills; a stream
	// refusal exhausts the gateway's credit and a refill of a full topic
	// gives none, so that happens at most once per gateway and stale refill
	// (TestStreamFullExhaustsStaleCredit pins the mechanism exactly). All
	// other refusals come from each gateway's own share.
	for name, reg := range map[string]*prometheus.Registry{"A": regA, "B": regB} {
		full, adm := refusals(t, reg, "topic_full"), refusals(t, reg, "admission")
		if full > 2 || adm == 0 || adm < 5*full {
			t.Errorf("gateway %s: %v refusals by the stream's bound, %v by its own share: the shares did not hold", name, full, adm)
		}
	}

	// A worker drains the topic: admission reopens by itself.
	harness.RunWorker(t, harness.Connect(t, b), "orders", "billing",
		func(context.Context, *sluice.Message) error { return nil })
	harness.Eventually(t, 10*time.Second, func() bool {
		resp := post(t, urlA+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil)
		return resp.StatusCode == 202
	}, "admission should reopen once the topic drains")
}

// slowBody starts a request whose body never ends, so it stays in flight.
func slowBody(t *testing.T, url string, length int) {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	if length > 0 {
		req.ContentLength = int64(length)
	}
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	_, _ = pw.Write([]byte("x"))
}

func TestShedsBeyondInFlightAndBodyBounds(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessageSize = 1024
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)

	t.Run("in flight", func(t *testing.T) {
		cfg := harness.GatewayConfig(topics)
		cfg.MaxInFlight = 1
		cfg.Name = "gw-shed"
		url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
		slowBody(t, url+"/v1/topics/orders/messages", 10)
		harness.Eventually(t, 5*time.Second, func() bool {
			return gaugeValue(t, reg, "sluice_gateway_requests_in_flight") == 1
		}, "the slow request should be in flight")
		resp := post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil)
		wantProblem(t, resp, 503, sluice.ProblemOverloaded)
		if resp.Header.Get("Retry-After") == "" || refusals(t, reg, "in_flight") != 1 {
			t.Fatal("shed without Retry-After or uncounted")
		}
		if got := resp.Header.Get(gateway.HeaderAlarm); got != "gateway_shedding:gw-shed" {
			t.Fatalf("shed 503 names alarm %q, want gateway_shedding:gw-shed", got)
		}
		if !slices.Contains(ids(alarmsOf(t, url).Active), "gateway_shedding:gw-shed") {
			t.Fatal("gateway_shedding not active after shedding")
		}
	})
	t.Run("body bytes", func(t *testing.T) {
		cfg := harness.GatewayConfig(topics)
		cfg.MaxBodyBytesInFlight, cfg.MaxBatchBytes = 1024, 1024
		url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
		slowBody(t, url+"/v1/topics/orders/messages", -1) // chunked: reserves the max size
		harness.Eventually(t, 5*time.Second, func() bool {
			return gaugeValue(t, reg, "sluice_gateway_body_bytes_in_flight") == 1024
		}, "the slow body should hold its reservation")
		wantProblem(t, post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil), 503, sluice.ProblemOverloaded)
		if refusals(t, reg, "body_bytes") != 1 {
			t.Fatal("body_bytes refusal uncounted")
		}
	})
}

func TestPublishWindowWaitsBrieflyThen503(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	proxy, nc := harness.ConnectThrough(t, b.ClientURL())
	cfg := harness.GatewayConfig(topics)
	cfg.PublishWindow = 1
	cfg.PublishWindowWait = 50 * time.Millisecond
	cfg.PublishTimeout = 3 * time.Second
	url, reg := startGatewayReg(t, cfg, nc)
	proxy.HoldReplies(true) // the first publish waits for its ack, holding the window
	go func() {
		resp, err := http.Post(url+"/v1/topics/orders/messages", "", strings.NewReader("first"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	harness.Eventually(t, 5*time.Second, func() bool {
		return gaugeValue(t, reg, "sluice_gateway_publish_window_used") == 1
	}, "the first publish should hold the window")
	resp := post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("second"), nil)
	wantProblem(t, resp, 503, sluice.ProblemOverloaded)
	if refusals(t, reg, "publish_window") != 1 {
		t.Fatal("publish_window refusal uncounted")
	}
	proxy.HoldReplies(false)
}

func TestClientRateLimit(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	cfg.ClientRate, cfg.ClientBurst = 0.5, 2
	url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
	msgs := url + "/v1/topics/orders/messages"
	for i := range 2 {
		if resp := post(t, msgs, "", strings.NewReader("x"), map[string]string{"Authorization": "Bearer a"}); resp.StatusCode != 202 {
			t.Fatalf("burst %d: %d", i, resp.StatusCode)
		}
	}
	resp := post(t, msgs, "", strings.NewReader("x"), map[string]string{"Authorization": "Bearer a"})
	wantProblem(t, resp, 429, sluice.ProblemRateLimited)
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q, want the 2s until the next token", resp.Header.Get("Retry-After"))
	}
	// Another client (address: open mode keys no one by header) has its
	// own bucket; the refused one cost no publish.
	if resp := sendWith(t, clientFrom(t, "127.0.0.2"), "POST", msgs, strings.NewReader("x"), nil); resp.StatusCode != 202 {
		t.Fatalf("other client: %d", resp.StatusCode)
	}
	if refusals(t, reg, "client_rate") != 1 {
		t.Fatal("client_rate refusal uncounted")
	}
}

type admissionView struct {
	Depth  struct{ Messages int64 }
	Limits struct {
		MaxMessages int64 `json:"max_messages"`
	}
	Admission struct {
		Share     int64
		Remaining int64
	}
}

func topicView(t *testing.T, url string) admissionView {
	t.Helper()
	resp, err := http.Get(url + "/v1/topics/orders")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v admissionView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestConcurrentAdmissionAcrossRefills: many publishes in flight while the
// credit is refilled over and over. A single gateway's credit accounts for
// what it admitted but the bus does not show yet, so it never lets the
// stream's own bound refuse; and every counter returns to its baseline.
func TestConcurrentAdmissionAcrossRefills(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessages = 300
	orders.MaxMessageSize = 64
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	cfg.AdmissionRefresh = 10 * time.Millisecond
	url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
	msgs := url + "/v1/topics/orders/messages"

	var wg sync.WaitGroup
	var accepted atomic.Int64
	for w := range 16 {
		wg.Go(func() {
			for i := range 40 {
				var resp *http.Response
				var err error
				switch (w + i) % 4 {
				case 0: // admitted, then refused while reading: chunked over the limit
					resp, err = http.Post(msgs, "", io.MultiReader(strings.NewReader(strings.Repeat("x", 60)), strings.NewReader(strings.Repeat("y", 60))))
				case 1: // a batch of two
					resp, err = http.Post(msgs+":batch", "application/x-ndjson", strings.NewReader("{\"data\":1}\n{\"data\":2}\n"))
				default:
					resp, err = http.Post(msgs, "", strings.NewReader("x"))
				}
				if err != nil {
					t.Error(err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 202:
					accepted.Add(1)
				case resp.StatusCode == 200:
					accepted.Add(int64(strings.Count(string(body), `"seq"`)))
				case resp.StatusCode != 429 && resp.StatusCode != 413:
					t.Errorf("status %d: %s", resp.StatusCode, body)
				}
			}
		})
	}
	wg.Wait()
	if n := refusals(t, reg, "topic_full"); n != 0 {
		t.Errorf("the stream's own bound refused %v messages: admission over-granted", n)
	}
	if a := accepted.Load(); a < 250 || a > 300 {
		t.Errorf("accepted %d of a 300-message topic", a)
	}
	// Quiet: nothing held, and the credit is exactly the free room again.
	harness.Eventually(t, 5*time.Second, func() bool {
		v := topicView(t, url)
		free := v.Limits.MaxMessages - v.Depth.Messages
		return v.Admission.Share == free && v.Admission.Remaining == free
	}, "admission credit should return to the topic's free room (a leak keeps it lower)")
	for _, g := range []string{"sluice_gateway_requests_in_flight", "sluice_gateway_body_bytes_in_flight", "sluice_gateway_publish_window_used"} {
		if v := gaugeValue(t, reg, g); v != 0 {
			t.Errorf("%s = %v after the load, want 0", g, v)
		}
	}
}

func TestBatchRefusedWholeWithoutReadingWhenNoCredit(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessages = 2
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	url, reg := startGatewayReg(t, harness.GatewayConfig(topics), harness.Connect(t, b))
	// Fill the topic. Admission may refuse a publish early (429 topic-full)
	// while a stored message still counts as outstanding: publish until
	// the share is 0.
	harness.Eventually(t, 30*time.Second, func() bool {
		if topicView(t, url).Admission.Share == 0 {
			return true
		}
		post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil).Body.Close()
		return false
	}, "share should reach 0")
	before := refusals(t, reg, "admission")
	resp := post(t, url+"/v1/topics/orders/messages:batch", "application/x-ndjson", strings.NewReader("{\"data\":1}\n"), nil)
	wantProblem(t, resp, 429, sluice.ProblemTopicFull)
	if rl := resp.Header.Get("RateLimit"); !strings.HasPrefix(rl, `"topic";r=0;t=`) {
		t.Fatalf("RateLimit %q", rl)
	}
	if refusals(t, reg, "admission") != before+1 {
		t.Fatal("refusal uncounted")
	}
}

func TestLameDuckStopsReadinessBeforeIntake(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	cfg.LameDuck = 700 * time.Millisecond
	g, err := gateway.New(cfg, harness.Connect(t, b), harness.Logger(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := g.Listen()
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr.String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	status := func(path string) int {
		resp, err := http.Get(url + path)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	harness.Eventually(t, 10*time.Second, func() bool { return status("/readyz") == 200 }, "not ready")
	cancel() // SIGTERM
	harness.Eventually(t, 5*time.Second, func() bool { return status("/readyz") == 503 }, "readyz should turn 503 at once")
	if resp := post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil); resp.StatusCode != 202 {
		t.Fatalf("a publish during the lame duck answered %d, want 202", resp.StatusCode)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the lame duck")
	}
	if status("/healthz") != -1 {
		t.Fatal("still listening after stop")
	}
}

func TestStreamFullExhaustsStaleCredit(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessages = 5
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	cfg := harness.GatewayConfig(topics)
	cfg.AdmissionRefresh = time.Hour // only the first reading: 5 free
	url, reg := startGatewayReg(t, cfg, harness.Connect(t, b))
	js, _ := jetstream.New(harness.Connect(t, b))
	for range 5 { // filled behind the gateway's back
		if _, err := js.Publish(context.Background(), sluice.Subject("orders"), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		wantProblem(t, post(t, url+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil), 429, sluice.ProblemTopicFull)
	}
	// The stream's refusal showed the credit stale: the others never reached the bus.
	if full, adm := refusals(t, reg, "topic_full"), refusals(t, reg, "admission"); full != 1 || adm != 4 {
		t.Fatalf("refusals: %v by the stream, %v by admission; want 1 and 4", full, adm)
	}
}
