package broker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

func TestProvisionsSyncAlwaysTopicsFamiliesAndDeadLetters(t *testing.T) {
	topic := harness.Topic("orders", "billing", "shipping")
	b := harness.StartBroker(t, harness.Topics(topic))
	// The running server fsyncs every write before its ack, and no stream
	// opts out of it (an async persist mode would, stream by stream).
	if on, err := broker.SyncAlways(b); err != nil || !on {
		t.Fatalf("the running server's sync_always = %v (%v); want every write fsynced before its ack", on, err)
	}
	js, _ := jetstream.New(harness.Connect(t, b))
	ctx := context.Background()
	s, err := js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	if sc.PersistMode != jetstream.DefaultPersistMode {
		t.Fatalf("topic stream persist mode %v, want the default (synced)", sc.PersistMode)
	}
	if sc.Retention != jetstream.InterestPolicy || sc.Storage != jetstream.FileStorage || sc.Discard != jetstream.DiscardNew ||
		sc.MaxMsgs != topic.MaxMessages || sc.MaxMsgSize != int32(topic.MaxMessageSize+topology.HeaderAllowance) || sc.Duplicates != topic.DuplicateWindow {
		t.Fatalf("stream config %+v", sc)
	}
	for _, fam := range []string{"billing", "shipping"} {
		c, err := s.Consumer(ctx, fam)
		if err != nil {
			t.Fatal(err)
		}
		cc := c.CachedInfo().Config
		// Ack-wait expiry follows the retry schedule: ack wait + 20ms, 40ms, 40ms.
		wantExpiry := []time.Duration{2020 * time.Millisecond, 2040 * time.Millisecond, 2040 * time.Millisecond}
		if cc.AckPolicy != jetstream.AckExplicitPolicy || cc.MaxAckPending != 64 || cc.AckWait != wantExpiry[0] ||
			!slices.Equal(cc.BackOff, wantExpiry) || cc.Metadata[sluice.MetadataAckWait] != "2s" ||
			!slices.Equal(cc.FilterSubjects, []string{sluice.Subject("orders"), sluice.RedriveSubject("orders", fam)}) ||
			cc.Metadata[sluice.MetadataMaxAttempts] != "3" || cc.Metadata[sluice.MetadataBackoff] != "20ms,40ms" {
			t.Fatalf("%s consumer config %+v", fam, cc)
		}
		dl, err := js.Stream(ctx, sluice.DeadLetterStream("orders", fam))
		if err != nil {
			t.Fatalf("%s dead letters: %v", fam, err)
		}
		if pm := dl.CachedInfo().Config.PersistMode; pm != jetstream.DefaultPersistMode {
			t.Fatalf("%s dead letters persist mode %v, want the default (synced)", fam, pm)
		}
	}
}

func TestReconcileUpdatesLimitsAndNeverDeletes(t *testing.T) {
	dir := t.TempDir()
	topic := harness.Topic("orders", "billing", "shipping")
	b := harness.StartBrokerIn(t, dir, harness.Topics(topic))
	nc := harness.Connect(t, b)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	b.Shutdown()

	// Restart on the same store with a changed limit and credit, and without
	// the shipping family: limits are updated, the message and the family stay.
	topic.MaxMessages = 500
	fam := topic.Families["billing"]
	fam.Credit = 7
	topic.Families["billing"] = fam
	delete(topic.Families, "shipping")
	b = harness.StartBrokerIn(t, dir, harness.Topics(topic))
	js, _ = jetstream.New(harness.Connect(t, b))
	s, err := js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxMsgs; got != 500 {
		t.Errorf("max_messages = %d after reconcile, want 500", got)
	}
	if got := s.CachedInfo().State.Msgs; got != 1 {
		t.Errorf("stream holds %d messages after restart, want 1", got)
	}
	c, err := s.Consumer(ctx, "billing")
	if err != nil || c.CachedInfo().Config.MaxAckPending != 7 {
		t.Errorf("billing credit not updated: %v", err)
	}
	if _, err := s.Consumer(ctx, "shipping"); err != nil {
		t.Errorf("undeclared family deleted: %v", err)
	}
	if _, err := js.Stream(ctx, sluice.DeadLetterStream("orders", "shipping")); err != nil {
		t.Errorf("undeclared dead letters deleted: %v", err)
	}
	// Reconciling the same topology again changes nothing and fails nothing.
	if err := broker.Provision(ctx, js, harness.Topics(topic), harness.Logger(t)); err != nil {
		t.Fatalf("second reconcile: %v", err)
	}
}

func TestIncompatibleChangeIsAClearError(t *testing.T) {
	b := harness.StartBroker(t, harness.Topics(harness.Topic("orders", "billing")))
	js, _ := jetstream.New(harness.Connect(t, b))
	ctx := context.Background()
	// Someone made "audit" a limits stream by hand; the config declares a topic of that name.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: sluice.StreamName("audit"), Subjects: []string{sluice.Subject("audit")}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	err := broker.Provision(ctx, js, harness.Topics(harness.Topic("audit", "f")), harness.Logger(t))
	if !errors.Is(err, broker.ErrIncompatible) || !strings.Contains(err.Error(), "topic audit") || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("want ErrIncompatible naming topic audit and retention, got %v", err)
	}
}

func TestNewRefusesBadConfigAndExportsMetrics(t *testing.T) {
	cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
	cfg.Listen = "nonsense"
	if _, err := broker.New(cfg, harness.Logger(t), nil); err == nil || !strings.Contains(err.Error(), "broker.listen") {
		t.Fatalf("bad listen accepted: %v", err)
	}
	cfg = harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
	reg := prometheus.NewRegistry()
	b, err := broker.New(cfg, harness.Logger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	if !b.Ready() {
		t.Fatal("not ready after New")
	}
	js, _ := jetstream.New(harness.Connect(t, b))
	for range 3 {
		if _, err := js.Publish(context.Background(), sluice.Subject("orders"), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP sluice_topic_messages Messages stored in the topic (not yet acked by every family).
# TYPE sluice_topic_messages gauge
sluice_topic_messages{topic="orders"} 3
# HELP sluice_family_pending_messages Messages stored and not yet delivered to the family.
# TYPE sluice_family_pending_messages gauge
sluice_family_pending_messages{family="billing",topic="orders"} 3
`
	// The consumer's pending count follows the store asynchronously: poll.
	harness.Eventually(t, 10*time.Second, func() bool {
		err = testutil.GatherAndCompare(reg, strings.NewReader(want), "sluice_topic_messages", "sluice_family_pending_messages")
		return err == nil
	}, "scraped state: %v", &err)
	b.Shutdown()
	b.Shutdown() // idempotent
}

func TestStatusAndDiskAlarm(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	m := alarm.New("test-broker", time.Second, zap.NewNop(), nil)
	m.Raise(alarm.DiskUse, "test-broker", "full")
	st := b.Status(context.Background(), m)
	if st.Role != "broker" || st.Node != "test-broker" || len(st.TopicErrors) != 0 || len(st.Topics) != 1 || st.Topics[0].Name != "orders" ||
		len(st.Topics[0].Families) != 1 {
		t.Fatalf("status %+v", st)
	}
	if len(st.Members) != 1 || st.Members[0].Name != "test-broker" || st.Members[0].Health != "ok" || len(st.Members[0].Leads) != 1 {
		t.Fatalf("members %+v", st.Members)
	}
	if len(st.Alarms) != 1 || st.Alarms[0].ID != "disk_use:test-broker" {
		t.Fatalf("alarms %+v", st.Alarms)
	}
	if use, err := broker.DiskUse(t.TempDir()); err != nil || use <= 0 || use > 1 {
		t.Fatalf("disk use %v, %v", use, err)
	}
}
