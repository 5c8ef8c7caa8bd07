package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/status"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

func alarmsOf(t *testing.T, url string) alarm.View {
	t.Helper()
	resp, err := http.Get(url + "/v1/alarms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v alarm.View
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/alarms: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func statusOf(t *testing.T, url string) status.Status {
	t.Helper()
	resp, err := http.Get(url + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st status.Status
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/status: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func ids(as []alarm.Alarm) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

// A family whose workers stop: its messages wait (family_starved), the
// topic fills and admission refuses (topic_throttled, named by the 429);
// once a worker is back, both clear after the hold time.
func TestStoppedFamilyRaisesStarvedAndThrottledThenBothClear(t *testing.T) {
	topic := harness.Topic("orders", "billing", "shipping")
	topic.MaxMessages = 20
	topics := harness.Topics(topic)
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.Name = "gw-test"
	cfg.AdmissionRefresh = 50 * time.Millisecond
	cfg.Alarms.Interval = 50 * time.Millisecond
	cfg.Alarms.Hold = time.Second
	cfg.Alarms.StarvedAfter = 500 * time.Millisecond
	url, reg := startGatewayReg(t, cfg, nc)
	ok := func(context.Context, *sluice.Message) error { return nil }
	harness.RunWorker(t, nc, "orders", "shipping", ok)
	stopBilling := harness.RunWorker(t, nc, "orders", "billing", ok)

	for i := range 5 {
		resp := post(t, url+"/v1/topics/orders/messages", "text/plain", strings.NewReader("before"), nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("message %d: %s", i, resp.Status)
		}
		resp.Body.Close()
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return topicView(t, url).Depth.Messages == 0
	}, "both families handle the first messages")
	if v := alarmsOf(t, url); len(v.Active) != 0 || v.Node != "gw-test" {
		t.Fatalf("alarms before the stop: %+v", v)
	}

	stopBilling()
	var refusal sluice.Problem
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("no 429 after 100 messages into a topic of 20")
		}
		resp := post(t, url+"/v1/topics/orders/messages", "text/plain", strings.NewReader("while stopped"), nil)
		if resp.StatusCode == http.StatusAccepted {
			resp.Body.Close()
			continue
		}
		refusal = wantProblem(t, resp, http.StatusTooManyRequests, sluice.ProblemTopicFull)
		if got := resp.Header.Get(gateway.HeaderAlarm); got != "topic_throttled:orders" {
			t.Fatalf("429 %s header %q, want topic_throttled:orders", gateway.HeaderAlarm, got)
		}
		break
	}
	if refusal.Alarm != "topic_throttled:orders" {
		t.Fatalf("429 problem alarm %q", refusal.Alarm)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		active := ids(alarmsOf(t, url).Active)
		return slices.Contains(active, "family_starved:orders/billing") && slices.Contains(active, "topic_throttled:orders")
	}, "family_starved and topic_throttled raised")
	v := alarmsOf(t, url)
	if slices.Contains(ids(v.Active), "family_starved:orders/shipping") {
		t.Fatalf("shipping keeps up, yet starved: %v", ids(v.Active))
	}
	for _, a := range v.Active {
		if a.ID == "family_starved:orders/billing" && (a.Severity != alarm.Major || a.Node != "gw-test" || !strings.Contains(a.Cause, "none delivered")) {
			t.Fatalf("starved alarm %+v", a)
		}
	}
	if got := metricSum(t, reg, "sluice_alarm_active", map[string]string{"name": "family_starved", "subject": "orders/billing"}); got != 1 {
		t.Fatalf("sluice_alarm_active family_starved = %v", got)
	}

	// The status view during the overload: what `sluice status` prints.
	st := statusOf(t, url)
	var screen strings.Builder
	if err := status.Render(&screen, st); err != nil {
		t.Fatal(err)
	}
	t.Logf("sluice status during the overload:\n%s", screen.String())
	if st.Role != "gateway" || st.Node != "gw-test" || len(st.Members) != 1 || st.Members[0].Health != "ok" ||
		len(st.Topics) != 1 || st.Topics[0].Depth.Messages == 0 || st.Topics[0].Admission == nil {
		t.Fatalf("status %+v", st)
	}
	for _, f := range st.Topics[0].Families {
		if f.Name == "billing" && (f.Pending == 0 || f.Pending != st.Topics[0].Depth.Messages) {
			t.Fatalf("billing pending %d, depth %d: the stopped family holds the backlog", f.Pending, st.Topics[0].Depth.Messages)
		}
	}
	if !slices.Contains(ids(st.Alarms), "family_starved:orders/billing") {
		t.Fatalf("status alarms %v", ids(st.Alarms))
	}

	harness.RunWorker(t, nc, "orders", "billing", ok) // resumes
	harness.Eventually(t, 20*time.Second, func() bool {
		v := alarmsOf(t, url)
		cleared := ids(v.Cleared)
		return len(v.Active) == 0 && slices.Contains(cleared, "family_starved:orders/billing") && slices.Contains(cleared, "topic_throttled:orders")
	}, "both alarms cleared once billing is back and nothing is refused for the hold time")
	if got := metricSum(t, reg, "sluice_alarm_active", map[string]string{"name": "topic_throttled"}); got != 0 {
		t.Fatalf("sluice_alarm_active topic_throttled = %v after clearing", got)
	}
}

// A family whose handler always fails: its retries exceed the budget and
// its dead letters grow; the ingest passes a tiny planned rate.
func TestRetriesDeadLettersAndBlueprintRaiseAlarms(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topics := harness.Topics(topic)
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.Name = "gw-test"
	cfg.Alarms.Interval = 50 * time.Millisecond
	cfg.Alarms.Hold = time.Minute // nothing clears during the test
	cfg.Alarms.PlannedRate = 1
	url, _ := startGatewayReg(t, cfg, nc)
	harness.RunWorker(t, nc, "orders", "billing", func(context.Context, *sluice.Message) error {
		return errors.New("always fails")
	})
	if v := alarmsOf(t, url); len(v.Active) != 0 {
		t.Fatalf("alarms on an idle topic: %v", ids(v.Active))
	}
	harness.Eventually(t, 20*time.Second, func() bool {
		resp := post(t, url+"/v1/topics/orders/messages", "text/plain", strings.NewReader("doomed"), nil)
		resp.Body.Close()
		active := ids(alarmsOf(t, url).Active)
		return slices.Contains(active, "retry_rate:orders/billing") && slices.Contains(active, "dead_letters_growing:orders/billing") &&
			slices.Contains(active, "blueprint_exceeded:cluster")
	}, "retry_rate, dead_letters_growing and blueprint_exceeded raised while messages fail")
}
