package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

type receipt struct {
	Topic     string `json:"topic"`
	Seq       uint64 `json:"seq"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
	Line      int    `json:"line"`
	// problem members, in batch answers
	Type   string `json:"type"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func post(t *testing.T, url, ctype string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	if ctype != "" {
		h := map[string]string{"Content-Type": ctype}
		for k, v := range hdr {
			h[k] = v
		}
		hdr = h
	}
	return send(t, http.MethodPost, url, body, hdr)
}

func decode[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode %s answer: %v", resp.Status, err)
	}
	return v
}

// wantProblem checks an RFC 9457 answer with the given status and type.
func wantProblem(t *testing.T, resp *http.Response, status int, ptype string) sluice.Problem {
	t.Helper()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	p := decode[sluice.Problem](t, resp)
	if p.Status != status || p.Type != ptype || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem = %+v, want status %d type %s with title and detail", p, status, ptype)
	}
	return p
}

func streamMsg(t *testing.T, js jetstream.JetStream, topic string, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(context.Background(), sluice.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatalf("get seq %d: %v", seq, err)
	}
	return m
}

func TestPublishStoresPayloadHeadersAndDeduplicates(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	url := srv.URL + "/v1/topics/orders/messages"

	resp := post(t, url, "text/plain; charset=utf-8", strings.NewReader("hello"), map[string]string{
		"Idempotency-Key":      "order-1",
		"Sluice-Meta-Customer": "c-42",
	})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r1 := decode[receipt](t, resp)
	if r1.Topic != "orders" || r1.ID != "order-1" || r1.Seq == 0 || r1.Duplicate {
		t.Fatalf("receipt = %+v", r1)
	}
	js, _ := jetstream.New(nc)
	m := streamMsg(t, js, "orders", r1.Seq)
	if string(m.Data) != "hello" || m.Header.Get("Content-Type") != "text/plain; charset=utf-8" ||
		m.Header.Get("Sluice-Meta-Customer") != "c-42" || sluice.KeyOf(m.Header.Get("Nats-Msg-Id")) != "order-1" {
		t.Fatalf("stored message = %q %v", m.Data, m.Header)
	}

	// The same message with the same key again: the original receipt,
	// marked duplicate, nothing stored twice.
	resp = post(t, url, "text/plain; charset=utf-8", strings.NewReader("hello"), map[string]string{
		"Idempotency-Key":      "order-1",
		"Sluice-Meta-Customer": "c-42",
	})
	r2 := decode[receipt](t, resp)
	if resp.StatusCode != http.StatusAccepted || !r2.Duplicate || r2.Seq != r1.Seq || r2.ID != "order-1" {
		t.Fatalf("duplicate: %d %+v, want 202 seq %d duplicate", resp.StatusCode, r2, r1.Seq)
	}
	s, _ := js.Stream(context.Background(), sluice.StreamName("orders"))
	if info, _ := s.Info(context.Background()); info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}

	// No key: one is generated and returned.
	resp = post(t, url, "", strings.NewReader("x"), nil)
	r3 := decode[receipt](t, resp)
	if resp.StatusCode != http.StatusAccepted || r3.ID == "" || r3.Seq != r1.Seq+1 {
		t.Fatalf("generated key: %d %+v", resp.StatusCode, r3)
	}
}

func TestBatchOneBadLineFailsAlone(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)

	body := strings.Join([]string{
		`{"id":"a","data":{"n":1},"meta":{"source":"test"}}`,
		`{"id":"b","data":`, // malformed JSON
		``,                  // blank: skipped
		`{"id":"c","data_base64":"AAEC"}`,
		`{"id":"d"}`, // no data
		`{"id":"a","data":{"n":1},"meta":{"source":"test"}}`, // duplicate of line 1
	}, "\n")
	resp := post(t, srv.URL+"/v1/topics/orders/messages:batch", "application/x-ndjson", strings.NewReader(body), nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got []receipt
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var r receipt
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	if len(got) != 5 {
		t.Fatalf("got %d results, want 5: %+v", len(got), got)
	}
	want := []struct {
		line   int
		status int
		id     string
	}{{1, 0, "a"}, {2, 400, ""}, {4, 0, "c"}, {5, 400, "d"}, {6, 0, "a"}}
	for i, w := range want {
		g := got[i]
		if g.Line != w.line || g.Status != w.status || g.ID != w.id {
			t.Errorf("result %d = %+v, want line %d status %d id %s", i, g, w.line, w.status, w.id)
		}
		if w.status == 0 && g.Seq == 0 {
			t.Errorf("result %d has no seq", i)
		}
		if w.status != 0 && g.Type != sluice.ProblemBadRequest {
			t.Errorf("result %d type %q", i, g.Type)
		}
	}
	if !got[4].Duplicate || got[4].Seq != got[0].Seq {
		t.Errorf("repeated id: %+v, want duplicate of seq %d", got[4], got[0].Seq)
	}
	js, _ := jetstream.New(nc)
	if m := streamMsg(t, js, "orders", got[0].Seq); string(m.Data) != `{"n":1}` || m.Header.Get("Sluice-Meta-Source") != "test" {
		t.Errorf("line 1 stored as %q %v", m.Data, m.Header)
	}
	if m := streamMsg(t, js, "orders", got[2].Seq); string(m.Data) != "\x00\x01\x02" {
		t.Errorf("line 4 stored as %q", m.Data)
	}
}

func TestErrorStatusesAreProblems(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessageSize = 1024
	orders.MaxMessages = 2
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.MaxBatchLines = 3
	_, srv := harness.StartGateway(t, cfg, nc)
	msgs := srv.URL + "/v1/topics/orders/messages"

	t.Run("400 bad idempotency key", func(t *testing.T) {
		wantProblem(t, post(t, msgs, "", strings.NewReader("x"), map[string]string{"Idempotency-Key": "has space"}), 400, sluice.ProblemBadRequest)
	})
	t.Run("400 bad metadata", func(t *testing.T) {
		wantProblem(t, post(t, msgs, "", strings.NewReader("x"), map[string]string{"Sluice-Meta-Bad": "a\xff\xfeb"}), 400, sluice.ProblemBadRequest)
	})
	t.Run("400 bad content type", func(t *testing.T) {
		wantProblem(t, post(t, msgs, "text/", strings.NewReader("x"), nil), 400, sluice.ProblemBadRequest)
	})
	t.Run("400 empty batch", func(t *testing.T) {
		wantProblem(t, post(t, msgs+":batch", "application/x-ndjson", strings.NewReader("\n\n"), nil), 400, sluice.ProblemBadRequest)
	})
	t.Run("404 unknown topic", func(t *testing.T) {
		wantProblem(t, post(t, srv.URL+"/v1/topics/nope/messages", "", strings.NewReader("x"), nil), 404, sluice.ProblemTopicNotFound)
	})
	t.Run("404 unknown route", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/v2/whatever")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		wantProblem(t, resp, 404, sluice.ProblemNotFound)
	})
	t.Run("405 with Allow", func(t *testing.T) {
		resp, err := http.Get(msgs)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		wantProblem(t, resp, 405, sluice.ProblemMethodNotAllowed)
		if resp.Header.Get("Allow") != "POST" {
			t.Fatalf("Allow = %q", resp.Header.Get("Allow"))
		}
	})
	t.Run("413 declared length", func(t *testing.T) {
		wantProblem(t, post(t, msgs, "", strings.NewReader(strings.Repeat("x", 1025)), nil), 413, sluice.ProblemMessageTooLarge)
	})
	t.Run("413 chunked, checked while reading", func(t *testing.T) {
		// An io.Reader of unknown length makes the client send chunked.
		body := io.MultiReader(strings.NewReader(strings.Repeat("x", 1000)), strings.NewReader(strings.Repeat("y", 1000)))
		wantProblem(t, post(t, msgs, "", body, nil), 413, sluice.ProblemMessageTooLarge)
	})
	t.Run("413 too many batch lines", func(t *testing.T) {
		body := strings.Repeat(`{"data":1}`+"\n", 4)
		wantProblem(t, post(t, msgs+":batch", "application/x-ndjson", strings.NewReader(body), nil), 413, sluice.ProblemMessageTooLarge)
	})
	t.Run("415 batch content type", func(t *testing.T) {
		wantProblem(t, post(t, msgs+":batch", "application/json", strings.NewReader(`{"data":1}`), nil), 415, sluice.ProblemUnsupportedMediaType)
	})
	t.Run("415 content encoding", func(t *testing.T) {
		wantProblem(t, post(t, msgs, "", strings.NewReader("x"), map[string]string{"Content-Encoding": "gzip"}), 415, sluice.ProblemUnsupportedMediaType)
	})
	t.Run("429 topic full", func(t *testing.T) {
		// max_messages is 2 and no worker consumes: once two are stored the
		// next message is refused. Admission may refuse early (a reading
		// that counts a message both stored and outstanding), so the topic
		// is filled with retries: a 429 before it is full is conservative.
		stored := 0
		for try := 0; stored < 2; try++ {
			resp := post(t, msgs, "", strings.NewReader(fmt.Sprint("fill-", try)), nil)
			switch {
			case resp.StatusCode == 202:
				resp.Body.Close()
				stored++
			case try >= 200:
				t.Fatalf("filling, try %d: status %d, topic still not full", try, resp.StatusCode)
			default: // only the topic's admission credit may refuse early
				wantProblem(t, resp, 429, sluice.ProblemTopicFull)
				time.Sleep(50 * time.Millisecond) // a refill reads the topic again
			}
		}
		resp := post(t, msgs, "", strings.NewReader("x"), nil)
		wantProblem(t, resp, 429, sluice.ProblemTopicFull)
		if resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	})
}

// TestPublishTimeoutIsNeverSuccess: a publish that cannot be acked in time
// is never a success. Here its timeout passes before the group commit sends
// it, so the gateway knows nothing was stored: 503 overloaded (a definite
// failure), and the retry stores the message once. TestStoredButAckLost
// covers a timeout after the message was sent and stored (outcome unknown).
func TestPublishTimeoutIsNeverSuccess(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.PublishTimeout = time.Nanosecond // the ack can never arrive in time
	_, hurried := harness.StartGateway(t, cfg, nc)
	_, normal := harness.StartGateway(t, harness.GatewayConfig(topics), nc)

	hdr := map[string]string{"Idempotency-Key": "maybe-stored"}
	resp := post(t, hurried.URL+"/v1/topics/orders/messages", "", strings.NewReader("m"), hdr)
	wantProblem(t, resp, 503, sluice.ProblemOverloaded)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// The client retries with the same key; whatever happened before, the
	// message is stored exactly once.
	resp = post(t, normal.URL+"/v1/topics/orders/messages", "", strings.NewReader("m"), hdr)
	if resp.StatusCode != 202 {
		t.Fatalf("retry: %d", resp.StatusCode)
	}
	js, _ := jetstream.New(nc)
	s, _ := js.Stream(context.Background(), sluice.StreamName("orders"))
	harness.Eventually(t, 5*time.Second, func() bool {
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	}, "stream should hold exactly one message")
}

func TestBusUnavailable(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	b.Shutdown()
	harness.Eventually(t, 5*time.Second, func() bool { return !nc.IsConnected() }, "client still connected")

	resp := post(t, srv.URL+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil)
	p := wantProblem(t, resp, 503, sluice.ProblemBusUnavailable)
	if !strings.HasPrefix(p.Alarm, "bus_unreachable:") || resp.Header.Get("Sluice-Alarm") != p.Alarm {
		t.Fatalf("503 bus-unavailable names alarm %q (header %q)", p.Alarm, resp.Header.Get("Sluice-Alarm"))
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" && ra != "2" {
		t.Fatalf("Retry-After = %q, want the 1s minimum jittered up to 2s", ra)
	}
	r, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.StatusCode != 503 {
		t.Fatalf("readyz = %d with the bus down", r.StatusCode)
	}
}

func TestTopicsAndHealth(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	post(t, srv.URL+"/v1/topics/orders/messages", "", strings.NewReader("x"), nil)

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s = %d", path, resp.StatusCode)
		}
	}
	resp, err := http.Get(srv.URL + "/v1/topics/orders")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Name   string
		Limits struct {
			MaxMessages int64 `json:"max_messages"`
		}
		Depth    struct{ Messages uint64 }
		Families []struct {
			Name     string
			Pending  uint64
			InFlight int `json:"in_flight"`
			Credit   int
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Name != "orders" || st.Depth.Messages != 1 || st.Limits.MaxMessages != 100_000 || len(st.Families) != 2 ||
		st.Families[0].Name != "billing" || st.Families[0].Pending != 1 || st.Families[0].Credit != 64 {
		t.Fatalf("topic stats = %+v", st)
	}
	all, err := http.Get(srv.URL + "/v1/topics")
	if err != nil {
		t.Fatal(err)
	}
	defer all.Body.Close()
	var list struct{ Topics []struct{ Name string } }
	if err := json.NewDecoder(all.Body).Decode(&list); err != nil || len(list.Topics) != 1 {
		t.Fatalf("list = %+v %v", list, err)
	}
}

func TestMetadataBounds(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), harness.Connect(t, b))
	url := srv.URL + "/v1/topics/orders/messages"
	hdr := map[string]string{"Content-Type": "text/plain"}
	for i := range 64 {
		hdr[fmt.Sprintf("Sluice-Meta-K%d", i)] = "v"
	}
	if resp := post(t, url, "", strings.NewReader("x"), hdr); resp.StatusCode != 202 {
		t.Fatalf("64 metadata entries: %d", resp.StatusCode)
	}
	hdr["Sluice-Meta-K64"] = "v"
	wantProblem(t, post(t, url, "", strings.NewReader("x"), hdr), 400, sluice.ProblemBadRequest)
	wantProblem(t, post(t, url, "", strings.NewReader("x"), map[string]string{"Sluice-Meta-K": strings.Repeat("v", 4097)}), 400, sluice.ProblemBadRequest)
}

func TestPayloadAtTheLimitWithMetadataIsStored(t *testing.T) {
	orders := harness.Topic("orders", "billing")
	orders.MaxMessageSize = 1024
	topics := harness.Topics(orders)
	b := harness.StartBroker(t, topics)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), harness.Connect(t, b))
	// Exactly max_message_size of payload plus near the metadata bound: the
	// stream's header allowance takes it.
	hdr := map[string]string{"Idempotency-Key": strings.Repeat("k", 200), "Content-Type": "application/octet-stream"}
	for i := range 15 {
		hdr[fmt.Sprintf("Sluice-Meta-K%d", i)] = strings.Repeat("v", 1000)
	}
	resp := post(t, srv.URL+"/v1/topics/orders/messages", "", strings.NewReader(strings.Repeat("x", 1024)), hdr)
	if resp.StatusCode != 202 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	hdr["Sluice-Meta-K15"] = strings.Repeat("v", 2000) // past the 16 KiB metadata bound
	wantProblem(t, post(t, srv.URL+"/v1/topics/orders/messages", "", strings.NewReader("x"), hdr), 400, sluice.ProblemBadRequest)
}

// TestStoredButAckLost: the broker stores the message but its ack never
// reaches the gateway. The answer is 503 outcome-unknown, never 202 and never
// 500, and the client's retry with the same key is deduplicated.
func TestStoredButAckLost(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	direct := harness.Connect(t, b)
	proxy, viaProxy := harness.ConnectThrough(t, b.ClientURL())
	cfg := harness.GatewayConfig(topics)
	cfg.PublishTimeout = 300 * time.Millisecond
	_, cut := harness.StartGateway(t, cfg, viaProxy)
	_, other := harness.StartGateway(t, harness.GatewayConfig(topics), direct)

	// One message through first: the gateway has read the families.
	if resp := post(t, cut.URL+"/v1/topics/orders/messages", "", strings.NewReader("warm"), nil); resp.StatusCode != 202 {
		t.Fatalf("first message: %d", resp.StatusCode)
	}
	proxy.HoldReplies(true)
	hdr := map[string]string{"Idempotency-Key": "lost-ack-1"}
	resp := post(t, cut.URL+"/v1/topics/orders/messages", "", strings.NewReader("m"), hdr)
	wantProblem(t, resp, 503, sluice.ProblemOutcomeUnknown)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// It was stored: the outcome really was unknown, not a failure.
	js, _ := jetstream.New(direct)
	if m := streamMsg(t, js, "orders", 2); sluice.KeyOf(m.Header.Get("Nats-Msg-Id")) != "lost-ack-1" {
		t.Fatalf("stored message has id %q", m.Header.Get("Nats-Msg-Id"))
	}
	// The retry through another gateway is answered with the original receipt.
	resp = post(t, other.URL+"/v1/topics/orders/messages", "", strings.NewReader("m"), hdr)
	r := decode[receipt](t, resp)
	if resp.StatusCode != 202 || r.Seq != 2 || !r.Duplicate {
		t.Fatalf("retry: %d %+v, want 202 seq 2 duplicate", resp.StatusCode, r)
	}
	// Replies flow again: the first gateway agrees too.
	proxy.HoldReplies(false)
	resp = post(t, cut.URL+"/v1/topics/orders/messages", "", strings.NewReader("m"), hdr)
	if r := decode[receipt](t, resp); resp.StatusCode != 202 || r.Seq != 2 || !r.Duplicate {
		t.Fatalf("retry after the cut: %d %+v", resp.StatusCode, r)
	}
	s, _ := js.Stream(context.Background(), sluice.StreamName("orders"))
	if info, _ := s.Info(context.Background()); info.State.Msgs != 2 {
		t.Fatalf("%d messages stored, want 2 (the first and the lost ack's)", info.State.Msgs)
	}
}

// TestSameKeyOtherMessageIsAnotherMessage: a duplicate is the same key and
// the same message (payload, content type and metadata: its digest is in
// the deduplication id), so it proves itself without reading the original,
// which may be gone from the topic. The same key with another message is
// another message, stored and delivered; nothing is confirmed unverified.
func TestSameKeyOtherMessageIsAnotherMessage(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), harness.Connect(t, b))
	url := srv.URL + "/v1/topics/orders/messages"
	key := map[string]string{"Idempotency-Key": "order-9", "Content-Type": "text/plain", "Sluice-Meta-Shop": "a"}
	first := decode[receipt](t, post(t, url, "", strings.NewReader("total=10"), key))
	if first.Seq != 1 || first.Duplicate {
		t.Fatalf("first: %+v", first)
	}
	others := []map[string]string{
		{"Idempotency-Key": "order-9", "Content-Type": "text/plain", "Sluice-Meta-Shop": "a", "body": "total=99"},
		{"Idempotency-Key": "order-9", "Content-Type": "text/csv", "Sluice-Meta-Shop": "a", "body": "total=10"},
		{"Idempotency-Key": "order-9", "Content-Type": "text/plain", "Sluice-Meta-Shop": "b", "body": "total=10"},
		{"Idempotency-Key": "order-9", "Content-Type": "text/plain", "body": "total=10"},
	}
	for i, h := range others {
		body := h["body"]
		delete(h, "body")
		resp := post(t, url, "", strings.NewReader(body), h)
		if r := decode[receipt](t, resp); resp.StatusCode != 202 || r.Duplicate || r.Seq != uint64(i+2) || r.ID != "order-9" {
			t.Fatalf("other message %d %v: %d %+v, want 202 stored anew at seq %d", i, h, resp.StatusCode, r, i+2)
		}
	}
	if r := decode[receipt](t, post(t, url, "", strings.NewReader("total=10"), key)); !r.Duplicate || r.Seq != 1 || r.ID != "order-9" {
		t.Fatalf("the same message again: %+v", r)
	}
	resp := post(t, url+":batch", "application/x-ndjson", strings.NewReader(`{"id":"order-9","data_base64":"b3RoZXI="}`+"\n"), nil)
	var line receipt
	if err := json.NewDecoder(resp.Body).Decode(&line); err != nil || line.Status != 0 || line.Duplicate || line.Seq != 6 {
		t.Fatalf("batch line: %+v %v", line, err)
	}
}
