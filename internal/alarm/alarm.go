// Package alarm is a node's alarm manager: conditions raise alarms, which
// clear only once their condition has stayed clear for a hold time, so a
// condition that comes and goes does not flap. Every raise and every clear
// is one structured log line; active alarms are the sluice_alarm_active
// gauges and the /v1/alarms listing.
//
// Raise and Clear report a condition as it is now; they are cheap and
// idempotent, meant to be called on every evaluation. Tick ends the alarms
// whose hold time has passed.
package alarm

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Severity of an alarm.
type Severity string

const (
	Critical Severity = "critical" // data at risk or service stopped: act now
	Major    Severity = "major"    // service degraded: clients are refused or delayed
	Minor    Severity = "minor"    // a bound or budget is being approached
)

// Name is an alarm's kind.
type Name string

// The alarms Sluice raises. System alarms are about nodes and the bus;
// business alarms are about topics and families.
const (
	// System.
	NoQuorum         Name = "no_quorum"         // subject: topic; its stream has no leader
	ReplicaLagging   Name = "replica_lagging"   // subject: topic/broker
	DiskUse          Name = "disk_use"          // subject: broker; data dir's file system over alarms.disk_use_max
	StoreFailed      Name = "store_failed"      // subject: broker; JetStream stopped after a store error
	StoreQuarantined Name = "store_quarantined" // subject: broker (or broker/stream); a damaged store moved aside at start
	BusUnreachable   Name = "bus_unreachable"   // subject: gateway; not connected to any broker
	Shedding         Name = "gateway_shedding"  // subject: gateway; an in-flight bound refused requests
	FamilyMissing    Name = "family_missing"    // subject: topic/family; its consumer is missing or unusable on the bus
	// Business.
	TopicThrottled     Name = "topic_throttled"      // subject: topic; admission or the stream refused messages
	FamilyStarved      Name = "family_starved"       // subject: topic/family; messages wait, no credit offered
	ConsumerLag        Name = "consumer_lag"         // subject: topic/family
	DeadLettersGrowing Name = "dead_letters_growing" // subject: topic/family
	RetryRate          Name = "retry_rate"           // subject: topic/family; redeliveries over alarms.retry_budget
	BlueprintExceeded  Name = "blueprint_exceeded"   // subject: cluster; ingest over alarms.planned_rate
)

// Catalog is every alarm with its severity and what it means, for docs,
// dashboards and the alert rules (a test keeps those in step).
var Catalog = []struct {
	Name     Name
	Severity Severity
	Meaning  string
}{
	{NoQuorum, Critical, "a topic's stream has no leader: publishes to it fail"},
	{ReplicaLagging, Major, "a replica of a topic is not current or lags by more than alarms.replica_lag_max messages"},
	{DiskUse, Major, "a broker's data directory file system is fuller than alarms.disk_use_max"},
	{StoreFailed, Critical, "the server stopped JetStream on a broker after its store failed (disk full, a write or fsync error): the broker stores nothing until restarted on a healthy disk (sluice broker exits for its supervisor to restart it)"},
	{StoreQuarantined, Critical, "a broker found a stream's store or Raft group damaged at start (a record failing its checksum, records cut off, a garbled family state or Raft snapshot) and moved it to <data_dir>/quarantine to be rebuilt from the other replicas (or kept as it is, with no other replica): check the disk, then remove the quarantined copy"},
	{BusUnreachable, Critical, "a gateway is not connected to any broker: it answers 503"},
	{Shedding, Major, "a gateway refused requests at one of its in-flight bounds (requests, body bytes, publish window)"},
	{FamilyMissing, Critical, "a declared family's consumer is missing or unusable (a broker's check or a gateway's reading found it so): the topic stores nothing for it meanwhile and gateways refuse the topic; brokers recreate a missing one"},
	{TopicThrottled, Major, "admission or the topic's own bound refused messages with 429"},
	{FamilyStarved, Major, "messages wait for a family that has offered no credit for longer than alarms.starved_after"},
	{ConsumerLag, Minor, "a family's backlog is over alarms.lag_max of its topic's max_messages"},
	{DeadLettersGrowing, Minor, "messages were dead-lettered for a family in the last evaluation"},
	{RetryRate, Minor, "redeliveries are over alarms.retry_budget of a family's deliveries"},
	{BlueprintExceeded, Minor, "the cluster's ingest rate passed alarms.planned_rate (the capacity plan)"},
}

// SeverityOf is name's severity in the Catalog (Minor if unknown).
func SeverityOf(name Name) Severity {
	for _, c := range Catalog {
		if c.Name == name {
			return c.Severity
		}
	}
	return Minor
}

// ID is an alarm's identity: name:subject, e.g. topic_throttled:orders.
// A subject may hold colons (a gateway's host:port) and slashes
// (topic/family); a name holds neither, so an id splits at its first colon
// (ParseID).
func ID(name Name, subject string) string { return string(name) + ":" + subject }

// ParseID splits an alarm id into its name and subject at its first colon:
// alarm names are lower-case letters and '_', never a colon, so whatever
// the subject holds (bus_unreachable:gw-1:8080 is bus_unreachable for
// gw-1:8080) the split is unambiguous. ok is false for an id without a
// colon or whose name is not in the Catalog.
func ParseID(id string) (name Name, subject string, ok bool) {
	n, subject, found := strings.Cut(id, ":")
	if !found || subject == "" {
		return "", "", false
	}
	for _, c := range Catalog {
		if string(c.Name) == n {
			return c.Name, subject, true
		}
	}
	return "", "", false
}

// Alarm is one alarm, active or cleared.
type Alarm struct {
	ID        string     `json:"id"`
	Name      Name       `json:"name"`
	Subject   string     `json:"subject"`
	Severity  Severity   `json:"severity"`
	Cause     string     `json:"cause"`
	Node      string     `json:"node"`
	RaisedAt  time.Time  `json:"raised_at"`
	ClearedAt *time.Time `json:"cleared_at,omitempty"`
}

type state struct {
	Alarm
	raised     time.Time // on the manager's now, as clearSince
	clearSince time.Time // zero while the condition holds
}

// historyLen bounds the cleared alarms kept for /v1/alarms.
const historyLen = 64

// Manager holds a node's alarms. Safe for concurrent use.
type Manager struct {
	node string
	hold time.Duration
	log  *zap.Logger
	// now measures hold times; stamp gives RaisedAt and ClearedAt.
	now, stamp func() time.Time

	mu      sync.Mutex
	active  map[string]*state
	known   map[string]Alarm // every alarm ever raised, for the 0-valued gauges
	history []Alarm          // recently cleared, newest last
	raised  *prometheus.CounterVec
}

// New is a manager for node with hold as the clear hold time, measured on
// now, which also stamps the alarms. now may be nil (time.Now).
func New(node string, hold time.Duration, log *zap.Logger, now func() time.Time) *Manager {
	return NewStamped(node, hold, log, now, nil)
}

// NewStamped is New with the alarms' RaisedAt and ClearedAt read from
// stamp (nil: now) and hold times still measured on now: a node that
// stamps in the bus's clock, for times that read alike on every node,
// keeps its holds on its own monotonic clock, which neither a skewed wall
// clock nor a correction of the bus clock's estimate can stretch.
func NewStamped(node string, hold time.Duration, log *zap.Logger, now, stamp func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	if stamp == nil {
		stamp = now
	}
	m := &Manager{node: node, hold: hold, log: log, now: now, stamp: stamp, active: map[string]*state{}, known: map[string]Alarm{},
		raised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_alarms_raised_total",
			Help: "Alarms raised, by name (a raise while active does not count).",
		}, []string{"name"})}
	for _, c := range Catalog {
		m.raised.WithLabelValues(string(c.Name)) // 0 until the first raise, so rate() sees it start
	}
	return m
}

// Raise reports name's condition for subject as present, with its cause,
// and returns the alarm's id. Raising an active alarm updates its cause and
// restarts its hold time; it logs nothing.
func (m *Manager) Raise(name Name, subject, cause string) string {
	id := ID(name, subject)
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, ok := m.active[id]; ok {
		st.Cause, st.clearSince = cause, time.Time{}
		return id
	}
	a := Alarm{ID: id, Name: name, Subject: subject, Severity: SeverityOf(name), Cause: cause, Node: m.node, RaisedAt: m.stamp()}
	m.active[id] = &state{Alarm: a, raised: m.now()}
	m.known[id] = a
	m.raised.WithLabelValues(string(name)).Inc()
	m.log.Warn("alarm raised", zap.String("alarm", id), zap.String("name", string(name)), zap.String("subject", subject),
		zap.String("severity", string(a.Severity)), zap.String("cause", cause), zap.String("node", m.node))
	return id
}

// Clear reports name's condition for subject as absent: the alarm, if
// active, clears at the first Tick after it has stayed absent for the
// hold time.
func (m *Manager) Clear(name Name, subject string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, ok := m.active[ID(name, subject)]; ok && st.clearSince.IsZero() {
		st.clearSince = m.now()
	}
}

// Set raises (on) or clears (off) name for subject.
func (m *Manager) Set(on bool, name Name, subject, cause string) {
	if on {
		m.Raise(name, subject, cause)
		return
	}
	m.Clear(name, subject)
}

// Active returns the id of name's alarm for subject if it is active.
func (m *Manager) Active(name Name, subject string) (string, bool) {
	id := ID(name, subject)
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.active[id]
	return id, ok
}

// Tick clears the alarms whose condition has been absent for the hold time.
func (m *Manager) Tick() {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, st := range m.active {
		if st.clearSince.IsZero() || now.Sub(st.clearSince) < m.hold {
			continue
		}
		delete(m.active, id)
		a := st.Alarm
		cleared := m.stamp()
		a.ClearedAt = &cleared
		m.history = append(m.history, a)
		if len(m.history) > historyLen {
			m.history = slices.Delete(m.history, 0, len(m.history)-historyLen)
		}
		m.log.Info("alarm cleared", zap.String("alarm", id), zap.String("name", string(a.Name)), zap.String("subject", a.Subject),
			zap.String("severity", string(a.Severity)), zap.String("node", m.node),
			zap.Duration("active_for", now.Sub(st.raised)), zap.Duration("clear_for", now.Sub(st.clearSince)))
	}
}

// List returns the active alarms, most severe then oldest first, and the
// recently cleared ones, newest first.
func (m *Manager) List() (active, cleared []Alarm) {
	m.mu.Lock()
	defer m.mu.Unlock()
	active = make([]Alarm, 0, len(m.active))
	for _, st := range m.active {
		active = append(active, st.Alarm)
	}
	Sort(active)
	cleared = append(make([]Alarm, 0, len(m.history)), m.history...) // [] when none: never null in JSON
	slices.Reverse(cleared)
	return active, cleared
}

// Sort orders alarms most severe first, then oldest, then by id.
func Sort(as []Alarm) {
	rank := map[Severity]int{Critical: 0, Major: 1, Minor: 2}
	slices.SortFunc(as, func(a, b Alarm) int {
		if d := rank[a.Severity] - rank[b.Severity]; d != 0 {
			return d
		}
		if c := a.RaisedAt.Compare(b.RaisedAt); c != 0 {
			return c
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
}

var descActive = prometheus.NewDesc("sluice_alarm_active",
	"1 while an alarm is active, 0 once it has cleared, by name, subject, severity and node.",
	[]string{"name", "subject", "severity", "node"}, nil)

// Describe and Collect make the manager a Prometheus collector of
// sluice_alarm_active and sluice_alarms_raised_total.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- descActive
	m.raised.Describe(ch)
}

func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	ms := make([]prometheus.Metric, 0, len(m.known))
	for id, a := range m.known {
		v := 0.0
		if _, ok := m.active[id]; ok {
			v = 1
		}
		ms = append(ms, prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, v, string(a.Name), a.Subject, string(a.Severity), m.node))
	}
	m.mu.Unlock() // a scrape never holds up a raise
	for _, metric := range ms {
		ch <- metric
	}
	m.raised.Collect(ch)
}

// View is a node's alarms as served at GET /v1/alarms.
type View struct {
	Node    string  `json:"node"`
	Active  []Alarm `json:"active"`
	Cleared []Alarm `json:"cleared"`
}

// View returns the node's active and recently cleared alarms.
func (m *Manager) View() View {
	active, cleared := m.List()
	return View{Node: m.node, Active: active, Cleared: cleared}
}
