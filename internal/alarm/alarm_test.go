package alarm

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// clock is a manual clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// step is one event on the manager: a condition report or a tick, after
// moving the clock by after; active is whether the alarm is active then.
type step struct {
	after  time.Duration
	op     string // raise, clear, tick
	active bool
}

func TestRaiseClearHold(t *testing.T) {
	const hold = 10 * time.Second
	cases := []struct {
		name  string
		steps []step
		// raises and clears: log lines expected over the whole run.
		raises, clears int
	}{
		{"raise is idempotent", []step{
			{0, "raise", true}, {time.Second, "raise", true}, {time.Second, "tick", true}, {time.Hour, "raise", true},
		}, 1, 0},
		{"clear waits for the hold time", []step{
			{0, "raise", true}, {0, "clear", true}, {hold - time.Millisecond, "tick", true}, {time.Millisecond, "tick", false},
		}, 1, 1},
		{"a clear without a tick does not clear", []step{
			{0, "raise", true}, {0, "clear", true}, {2 * hold, "clear", true},
		}, 1, 0},
		{"repeated clears keep the first clear time", []step{
			{0, "raise", true}, {0, "clear", true}, {hold / 2, "clear", true}, {hold / 2, "tick", false},
		}, 1, 1},
		{"a raise during the hold restarts it (no flapping)", []step{
			{0, "raise", true}, {0, "clear", true}, {hold - time.Second, "raise", true}, {0, "clear", true},
			{hold - time.Second, "tick", true}, {time.Second, "tick", false},
		}, 1, 1},
		{"flapping condition stays one alarm", []step{
			{0, "raise", true}, {time.Second, "clear", true}, {time.Second, "tick", true}, {time.Second, "raise", true},
			{time.Second, "clear", true}, {time.Second, "tick", true}, {time.Second, "raise", true},
		}, 1, 0},
		{"raised again after clearing is a new alarm", []step{
			{0, "raise", true}, {0, "clear", true}, {hold, "tick", false}, {time.Second, "raise", true},
			{0, "clear", true}, {hold, "tick", false},
		}, 2, 2},
		{"clear of an inactive alarm is a no-op", []step{
			{0, "clear", false}, {hold, "tick", false},
		}, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
			core, logs := observer.New(zap.InfoLevel)
			m := New("gw-1", hold, zap.New(core), c.now)
			for i, s := range tc.steps {
				c.advance(s.after)
				switch s.op {
				case "raise":
					if id := m.Raise(TopicThrottled, "orders", "admission refused"); id != "topic_throttled:orders" {
						t.Fatalf("step %d: id %q", i, id)
					}
				case "clear":
					m.Clear(TopicThrottled, "orders")
				case "tick":
					m.Tick()
				}
				if _, ok := m.Active(TopicThrottled, "orders"); ok != s.active {
					t.Fatalf("step %d (%s): active %v, want %v", i, s.op, ok, s.active)
				}
			}
			if n := logs.FilterMessage("alarm raised").Len(); n != tc.raises {
				t.Errorf("raise log lines %d, want %d", n, tc.raises)
			}
			if n := logs.FilterMessage("alarm cleared").Len(); n != tc.clears {
				t.Errorf("clear log lines %d, want %d", n, tc.clears)
			}
		})
	}
}

func TestListGaugesAndLogFields(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	core, logs := observer.New(zap.InfoLevel)
	m := New("gw-1", time.Second, zap.New(core), c.now)
	m.Raise(ConsumerLag, "orders/billing", "backlog 900")
	c.advance(time.Second)
	m.Raise(NoQuorum, "orders", "no leader")
	c.advance(time.Second)
	m.Raise(FamilyStarved, "orders/shipping", "no credit for 12s")
	m.Raise(FamilyStarved, "orders/shipping", "no credit for 13s") // cause updated, no new line
	active, cleared := m.List()
	var ids []string
	for _, a := range active {
		ids = append(ids, a.ID)
	}
	if got, want := strings.Join(ids, " "), "no_quorum:orders family_starved:orders/shipping consumer_lag:orders/billing"; got != want {
		t.Fatalf("active order %q, want %q", got, want)
	}
	if active[1].Cause != "no credit for 13s" || active[1].Severity != Major || active[1].Node != "gw-1" {
		t.Fatalf("alarm %+v", active[1])
	}
	if len(cleared) != 0 {
		t.Fatalf("cleared %v", cleared)
	}
	m.Set(false, NoQuorum, "orders", "")
	c.advance(time.Second)
	m.Tick()
	active, cleared = m.List()
	if len(active) != 2 || len(cleared) != 1 || cleared[0].ID != "no_quorum:orders" || cleared[0].ClearedAt == nil {
		t.Fatalf("after clear: active %v cleared %v", active, cleared)
	}
	if n := testutil.CollectAndCount(m, "sluice_alarm_active"); n != 3 {
		t.Fatalf("%d alarm gauges, want 3 (a cleared one stays at 0)", n)
	}
	want := `
# HELP sluice_alarm_active 1 while an alarm is active, 0 once it has cleared, by name, subject, severity and node.
# TYPE sluice_alarm_active gauge
sluice_alarm_active{name="consumer_lag",node="gw-1",severity="minor",subject="orders/billing"} 1
sluice_alarm_active{name="family_starved",node="gw-1",severity="major",subject="orders/shipping"} 1
sluice_alarm_active{name="no_quorum",node="gw-1",severity="critical",subject="orders"} 0
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "sluice_alarm_active"); err != nil {
		t.Fatal(err)
	}
	raised := logs.FilterMessage("alarm raised").All()
	if len(raised) != 3 {
		t.Fatalf("%d raise lines", len(raised))
	}
	f := raised[1].ContextMap()
	if f["alarm"] != "no_quorum:orders" || f["severity"] != "critical" || f["cause"] != "no leader" || f["node"] != "gw-1" {
		t.Fatalf("raise line fields %v", f)
	}
	cl := logs.FilterMessage("alarm cleared").All()
	if len(cl) != 1 || cl[0].ContextMap()["alarm"] != "no_quorum:orders" {
		t.Fatalf("clear lines %v", cl)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	m := New("b", 0, zap.NewNop(), c.now)
	for i := range historyLen + 10 {
		m.Raise(DiskUse, "b", "full")
		m.Clear(DiskUse, "b")
		c.advance(time.Second)
		m.Tick()
		if _, cleared := m.List(); len(cleared) != min(i+1, historyLen) {
			t.Fatalf("after %d clears: %d kept", i+1, len(cleared))
		}
	}
}

func TestCatalogSeverities(t *testing.T) {
	seen := map[Name]bool{}
	for _, c := range Catalog {
		if seen[c.Name] {
			t.Fatalf("%s twice in the catalog", c.Name)
		}
		seen[c.Name] = true
		if SeverityOf(c.Name) != c.Severity || c.Meaning == "" {
			t.Fatalf("catalog entry %+v", c)
		}
	}
	if len(seen) != 14 { // every Name constant above
		t.Fatalf("catalog has %d alarms", len(seen))
	}
}

// TestStampedHoldsIgnoreTheStampClock: the hold is measured on now while
// the alarm's times come from stamp; a stamp clock that jumps (an estimate
// of the bus's clock corrected, or a skewed wall clock) neither ends a hold
// early nor stretches it, and the times are the stamp clock's.
func TestStampedHoldsIgnoreTheStampClock(t *testing.T) {
	const hold = 10 * time.Second
	mono := &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	bus := &clock{t: time.Date(2026, 11, 24, 11, 0, 0, 0, time.UTC)}
	m := NewStamped("gw-1", hold, zap.NewNop(), mono.now, bus.now)
	m.Raise(NoQuorum, "orders", "no leader")
	m.Clear(NoQuorum, "orders")
	bus.advance(time.Hour) // a jump forward is no hold time
	mono.advance(hold - time.Second)
	m.Tick()
	if _, ok := m.Active(NoQuorum, "orders"); !ok {
		t.Fatal("cleared before its hold time")
	}
	bus.advance(-2 * time.Hour) // nor does a jump back hold it longer
	mono.advance(time.Second)
	m.Tick()
	_, cleared := m.List()
	if len(cleared) != 1 {
		t.Fatalf("not cleared after its hold time: %v", cleared)
	}
	a := cleared[0]
	if want := time.Date(2026, 11, 24, 11, 0, 0, 0, time.UTC); !a.RaisedAt.Equal(want) {
		t.Errorf("raised at %v, want the stamp clock's %v", a.RaisedAt, want)
	}
	if want := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC); a.ClearedAt == nil || !a.ClearedAt.Equal(want) {
		t.Errorf("cleared at %v, want the stamp clock's %v", a.ClearedAt, want)
	}
}
