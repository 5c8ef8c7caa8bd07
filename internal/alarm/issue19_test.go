package alarm

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// TestViewListsNoClearedAsEmpty: /v1/alarms answers "cleared": [] (and
// "active": []) before anything cleared, never null.
func TestViewListsNoClearedAsEmpty(t *testing.T) {
	m := New("gw-1", time.Second, zap.NewNop(), nil)
	b, err := json.Marshal(m.View())
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, `"active":[]`) || !strings.Contains(s, `"cleared":[]`) {
		t.Fatalf("view = %s, want empty lists", s)
	}
	m.Raise(Shedding, "gw-1", "x")
	if b, _ = json.Marshal(m.View()); !strings.Contains(string(b), `"cleared":[]`) {
		t.Fatalf("view = %s, want cleared []", b)
	}
}

// TestRaisedCounterStartsAtZero: sluice_alarms_raised_total has a 0 for
// every alarm of the Catalog before any is raised.
func TestRaisedCounterStartsAtZero(t *testing.T) {
	m := New("gw-1", time.Second, zap.NewNop(), nil)
	if n := testutil.CollectAndCount(m, "sluice_alarms_raised_total"); n != len(Catalog) {
		t.Fatalf("%d series, want one per alarm (%d)", n, len(Catalog))
	}
	if v := testutil.ToFloat64(m.raised.WithLabelValues(string(NoQuorum))); v != 0 {
		t.Fatalf("no_quorum raised %v times", v)
	}
}

// TestParseIDSplitsSubjectsWithColons: an id splits at its first colon,
// whatever colons and slashes its subject holds.
func TestParseIDSplitsSubjectsWithColons(t *testing.T) {
	cases := []struct {
		name    Name
		subject string
	}{
		{BusUnreachable, "gw-1:8080"},
		{Shedding, "[::1]:8080"},
		{FamilyMissing, "orders/billing"},
		{StoreQuarantined, "broker-1/SLUICE_orders"},
		{TopicThrottled, "orders"},
	}
	for _, c := range cases {
		id := ID(c.name, c.subject)
		name, subject, ok := ParseID(id)
		if !ok || name != c.name || subject != c.subject {
			t.Errorf("ParseID(%q) = %q, %q, %v", id, name, subject, ok)
		}
	}
	for _, bad := range []string{"", "no_quorum", "no_quorum:", "not_an_alarm:orders", ":orders"} {
		if _, _, ok := ParseID(bad); ok {
			t.Errorf("ParseID(%q) ok", bad)
		}
	}
}
