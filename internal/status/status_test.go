package status

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/busstats"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func sample() Status {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	orders := busstats.Topic{Name: "orders",
		Limits:  busstats.Limits{MaxMessages: 100000, MaxBytes: 1 << 30, Replicas: 3},
		Depth:   busstats.Depth{Messages: 100000, Bytes: 25 << 20},
		LastSeq: 412345,
		Cluster: &busstats.Cluster{Leader: "broker-1", Replicas: []busstats.Replica{
			{Name: "broker-2", Current: true, Active: "120ms"},
			{Name: "broker-3", Current: false, Offline: true, Active: "41s"},
		}},
		Families: []busstats.Family{
			{Name: "billing", Credit: 64, Pending: 99920, InFlight: 0, Waiting: 0, DeadLetters: 3},
			{Name: "shipping", Credit: 64, Pending: 0, InFlight: 12, Waiting: 2, Redelivered: 1},
		}}
	audit := busstats.Topic{Name: "audit", Limits: busstats.Limits{MaxMessages: 1000, Replicas: 1},
		Depth: busstats.Depth{Messages: 10, Bytes: 1200}, LastSeq: 10}
	topics := []Topic{
		{Topic: audit, Admission: &Admission{Share: 495, Remaining: 495, DrainRate: 0, RetryAfter: 1}},
		{Topic: orders, Admission: &Admission{Share: 0, Remaining: 0, DrainRate: 0, RetryAfter: 60}},
	}
	return Status{Node: "gateway-1:8080", Role: "gateway", Time: now, Bus: "connected to broker-2", Gateways: 2,
		Topics: topics, Members: MembersFromTopics(topics, "broker-2"),
		TopicErrors: map[string]string{"payments": "bus unavailable: context deadline exceeded"},
		Alarms: []alarm.Alarm{
			{ID: "replica_lagging:orders/broker-3", Name: alarm.ReplicaLagging, Subject: "orders/broker-3", Severity: alarm.Major,
				Cause: "replica broker-3: current false, offline true", Node: "gateway-1:8080", RaisedAt: now.Add(-40 * time.Second)},
			{ID: "family_starved:orders/billing", Name: alarm.FamilyStarved, Subject: "orders/billing", Severity: alarm.Major,
				Cause: "99920 messages wait, none delivered for 31s", Node: "gateway-1:8080", RaisedAt: now.Add(-21 * time.Second)},
			{ID: "topic_throttled:orders", Name: alarm.TopicThrottled, Subject: "orders", Severity: alarm.Major,
				Cause: "refusing messages: admission", Node: "gateway-1:8080", RaisedAt: now.Add(-20 * time.Second)},
		}}
}

func TestRenderGolden(t *testing.T) {
	var b bytes.Buffer
	if err := Render(&b, sample()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "status.golden")
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("status output differs from %s (go test -update to accept):\n%s", path, b.String())
	}
}

func TestMembersFromTopics(t *testing.T) {
	ms := sample().Members
	want := []struct{ name, health, leads string }{
		{"broker-1", "ok", "orders"}, {"broker-2", "ok", "audit"}, {"broker-3", "offline", ""},
	}
	if len(ms) != len(want) {
		t.Fatalf("members %+v", ms)
	}
	for i, w := range want {
		leads := ""
		if len(ms[i].Leads) > 0 {
			leads = ms[i].Leads[0]
		}
		if ms[i].Name != w.name || ms[i].Health != w.health || leads != w.leads {
			t.Errorf("member %d = %+v, want %v", i, ms[i], w)
		}
	}
}
