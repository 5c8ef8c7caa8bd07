package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// metricSum adds up a counter's or a histogram's observations (count) over
// the series whose labels include match.
func metricSum(t *testing.T, reg *prometheus.Registry, name string, match map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range match {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue series
				}
			}
			if h := m.GetHistogram(); h != nil {
				total += float64(h.GetSampleCount())
			} else if g := m.GetGauge(); g != nil {
				total += g.GetValue()
			} else {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// batchResult is a line of a batch answer: a receipt or a problem.
type batchResult struct {
	Line      int    `json:"line"`
	Seq       uint64 `json:"seq"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
	Status    int    `json:"status"`
	Type      string `json:"type"`
}

func postBatch(t *testing.T, url string, lines []string) []batchResult {
	t.Helper()
	resp := post(t, url+"/v1/topics/orders/messages:batch", "application/x-ndjson", strings.NewReader(strings.Join(lines, "\n")), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("batch: status %d", resp.StatusCode)
	}
	var got []batchResult
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var r batchResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	return got
}

// TestGroupCommitRefusedBatchFallsBackMessageByMessage: a batch holding a
// key that is already stored is refused whole by JetStream (10201); the
// gateway then publishes its messages one by one, so the old key is a
// duplicate of its first seq and every other message is stored once, with
// its own seq. A key twice in one request: the first line wins.
func TestGroupCommitRefusedBatchFallsBackMessageByMessage(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	url, reg := startGatewayReg(t, harness.GatewayConfig(topics), nc)
	js, _ := jetstream.New(nc)

	var first []string
	for i := range 40 {
		first = append(first, fmt.Sprintf(`{"id":"k%d","data":{"n":%d}}`, i, i))
	}
	got := postBatch(t, url, first)
	if n := metricSum(t, reg, "sluice_gateway_commit_batch_messages", nil); n != 1 {
		t.Fatalf("40 lines took %v atomic commits, want 1", n)
	}
	seqs := map[uint64]bool{}
	for i, r := range got {
		if r.Status != 0 || r.Duplicate || r.ID != fmt.Sprintf("k%d", i) || seqs[r.Seq] {
			t.Fatalf("line %d: %+v", i+1, r)
		}
		seqs[r.Seq] = true
		if m := streamMsg(t, js, "orders", r.Seq); string(m.Data) != fmt.Sprintf(`{"n":%d}`, i) ||
			sluice.KeyOf(m.Header.Get(jetstream.MsgIDHeader)) != r.ID {
			t.Fatalf("line %d: seq %d holds %q %v", i+1, r.Seq, m.Data, m.Header)
		}
	}

	var second []string
	for i := range 40 {
		second = append(second, fmt.Sprintf(`{"id":"n%d","data":{"n":%d}}`, i, 100+i))
	}
	second[10] = `{"id":"k7","data":{"n":7}}`     // stored by the first request
	second[30] = `{"id":"n5","data":{"other":1}}` // line 6's key again
	got2 := postBatch(t, url, second)
	if n := metricSum(t, reg, "sluice_gateway_commit_fallbacks_total", map[string]string{"code": "10201"}); n != 1 {
		t.Fatalf("fallbacks for a stored key: %v, want 1", n)
	}
	for i, r := range got2 {
		switch i {
		case 10:
			if r.Status != 0 || !r.Duplicate || r.Seq != got[7].Seq {
				t.Errorf("stored key k7: %+v, want duplicate of seq %d", r, got[7].Seq)
			}
		case 30:
			// Another message under a used key is another message.
			if r.Status != 0 || r.Duplicate || seqs[r.Seq] {
				t.Errorf("line 6's key with another payload: %+v, want stored anew", r)
			}
			seqs[r.Seq] = true
		default:
			if r.Status != 0 || r.Duplicate || seqs[r.Seq] {
				t.Fatalf("line %d: %+v", i+1, r)
			}
			seqs[r.Seq] = true
			if m := streamMsg(t, js, "orders", r.Seq); string(m.Data) != fmt.Sprintf(`{"n":%d}`, 100+i) {
				t.Fatalf("line %d: seq %d holds %q", i+1, r.Seq, m.Data)
			}
		}
	}
	if s, _ := js.Stream(t.Context(), sluice.StreamName("orders")); s != nil {
		if info, _ := s.Info(t.Context()); info.State.Msgs != 79 {
			t.Errorf("stream holds %d messages, want 40 + 39", info.State.Msgs)
		}
	}
}

// TestGroupCommitConcurrentRequestsOnR3: single-message requests racing on
// a replicated topic are stored once each, every receipt naming the seq
// that holds its own message, however the commits grouped them; with
// commit_atomic_replicated on, those grouped are one atomic batch.
func TestGroupCommitConcurrentRequestsOnR3(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topic.Replicas = 3
	topics := harness.Topics(topic)
	c := harness.StartCluster(t, 3, topics)
	// The brokers' answers are held until every request awaits its commit:
	// the first commit stays in flight and the others queue behind it, so
	// they group whatever the machine's load.
	proxy, nc := harness.ConnectThrough(t, c.Nodes[0].URL())
	cfg := harness.GatewayConfig(topics)
	cfg.CommitsInFlight = 1 // requests queue behind each commit: they group
	cfg.CommitAtomicReplicated = true
	cfg.PublishTimeout = time.Minute // the held answers come within it
	url, reg := startGatewayReg(t, cfg, nc)
	js, _ := jetstream.New(nc)

	const n = 300
	receipts := make([]sluice.Receipt, n)
	var wg sync.WaitGroup
	proxy.HoldReplies(true)
	for i := range n {
		wg.Go(func() {
			hdr := map[string]string{sluice.HeaderIdempotencyKey: fmt.Sprintf("m%d", i)}
			resp := post(t, url+"/v1/topics/orders/messages", "text/plain", strings.NewReader(fmt.Sprintf("payload %d", i)), hdr)
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("message %d: status %d", i, resp.StatusCode)
				return
			}
			receipts[i] = decode[sluice.Receipt](t, resp)
		})
	}
	harness.Eventually(t, time.Minute, func() bool {
		return gaugeValue(t, reg, "sluice_gateway_publish_window_used") == n
	}, "every request should await its commit")
	proxy.HoldReplies(false)
	wg.Wait()
	if t.Failed() {
		return
	}
	seqs := map[uint64]int{}
	for i, r := range receipts {
		if j, ok := seqs[r.Seq]; ok || r.Duplicate {
			t.Fatalf("messages %d and %d both got seq %d", j, i, r.Seq)
		}
		seqs[r.Seq] = i
		m := streamMsg(t, js, "orders", r.Seq)
		if string(m.Data) != fmt.Sprintf("payload %d", i) || sluice.KeyOf(m.Header.Get(jetstream.MsgIDHeader)) != r.ID {
			t.Fatalf("message %d: seq %d holds %q %v", i, r.Seq, m.Data, m.Header)
		}
	}
	commits := metricSum(t, reg, "sluice_gateway_commit_batch_messages", nil)
	fallbacks := metricSum(t, reg, "sluice_gateway_commit_fallbacks_total", nil)
	t.Logf("%d messages, %v atomic commits", n, commits)
	if commits < 1 || fallbacks != 0 {
		t.Fatalf("%v atomic commits, %v refused and published one by one; want the queued requests stored as atomic batches", commits, fallbacks)
	}
}
