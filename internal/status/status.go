// Package status is a node's view of the cluster for `sluice status`:
// members and their health, topics with depth, credits, lag per family,
// dead letters, and active alarms. Gateways serve it at GET /v1/status,
// brokers on their ops listener; Render prints it for people.
package status

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/busstats"
)

// Status is one node's view.
type Status struct {
	Node string    `json:"node"`
	Role string    `json:"role"` // gateway or broker
	Time time.Time `json:"time"`
	// Bus: for a gateway, the broker it is connected to, or why not.
	Bus string `json:"bus,omitempty"`
	// Gateways alive, as this gateway hears them (0 from a broker).
	Gateways int      `json:"gateways_alive,omitempty"`
	Members  []Member `json:"members"`
	Topics   []Topic  `json:"topics"`
	// TopicErrors: topics that could not be read, with why.
	TopicErrors map[string]string `json:"topic_errors,omitempty"`
	Alarms      []alarm.Alarm     `json:"alarms"`
}

// Member is a broker of the cluster.
type Member struct {
	Name string `json:"name"`
	// Health: ok, lagging, offline.
	Health string `json:"health"`
	// Leads: the topics (streams) it leads.
	Leads  []string `json:"leads"`
	Detail string   `json:"detail,omitempty"`
}

// Topic is a topic's state on the bus and, from a gateway, its admission.
type Topic struct {
	busstats.Topic
	Admission *Admission `json:"admission,omitempty"`
}

// Admission is a gateway's admission for a topic: its share of the
// topic's free capacity, what is left, the gateways sharing it, the
// measured drain and the current Retry-After.
type Admission struct {
	Share      int64   `json:"share"`
	Remaining  int64   `json:"remaining"`
	Gateways   int     `json:"gateways"`
	DrainRate  float64 `json:"drain_per_second"`
	RetryAfter float64 `json:"retry_after_seconds"`
}

// AddTopics reads each named topic with read, adding it to s.Topics, or
// its error to s.TopicErrors: a status view is most needed when parts fail.
func (s *Status) AddTopics(names []string, read func(name string) (Topic, error)) {
	for _, name := range names {
		t, err := read(name)
		if err != nil {
			if s.TopicErrors == nil {
				s.TopicErrors = map[string]string{}
			}
			s.TopicErrors[name] = err.Error()
			continue
		}
		s.Topics = append(s.Topics, t)
	}
}

// statusLagMax: a replica further behind shows as lagging (the alarm has
// its own threshold, alarms.replica_lag_max).
const statusLagMax = 1000

// MembersFromTopics derives the brokers and their health from the
// topics' Raft groups, for a node that cannot see the cluster's meta
// group (a gateway); lone is the broker a single-node bus runs on.
func MembersFromTopics(topics []Topic, lone string) []Member {
	byName := map[string]*Member{}
	get := func(name string) *Member {
		m := byName[name]
		if m == nil {
			m = &Member{Name: name, Health: "ok", Leads: []string{}}
			byName[name] = m
		}
		return m
	}
	for _, t := range topics {
		c := t.Cluster
		if c == nil {
			if lone != "" {
				get(lone).Leads = append(get(lone).Leads, t.Name)
			}
			continue
		}
		if c.Leader != "" {
			get(c.Leader).Leads = append(get(c.Leader).Leads, t.Name)
		}
		for _, r := range c.Replicas {
			m := get(r.Name)
			switch {
			case r.Offline:
				m.Health, m.Detail = "offline", fmt.Sprintf("offline for %s (seen by %s)", r.Active, t.Name)
			case r.Lagging(statusLagMax) && m.Health == "ok":
				m.Health, m.Detail = "lagging", fmt.Sprintf("%s: %d behind, current %v", t.Name, r.Lag, r.Current)
			}
		}
	}
	out := make([]Member, 0, len(byName))
	for _, m := range byName {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Render writes s as aligned tables.
func Render(w io.Writer, s Status) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Sluice status from %s %s at %s", s.Role, s.Node, s.Time.UTC().Format(time.RFC3339))
	if s.Bus != "" {
		fmt.Fprintf(&b, "; bus: %s", s.Bus)
	}
	if s.Gateways > 0 {
		fmt.Fprintf(&b, "; gateways alive: %d", s.Gateways)
	}
	b.WriteString("\n\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBERS\tHEALTH\tLEADS\tDETAIL")
	for _, m := range s.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.Health, dash(strings.Join(m.Leads, ",")), dash(m.Detail))
	}
	if len(s.Members) == 0 {
		fmt.Fprintln(tw, "(none seen)")
	}
	_ = tw.Flush()
	b.WriteString("\n")

	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tDEPTH\tFULL\tBYTES\tSTORED\tREPLICAS\tLEADER\tADMISSION SHARE/LEFT\tDRAIN/S\tRETRY-AFTER")
	for _, t := range s.Topics {
		full := 0.0
		if t.Limits.MaxMessages > 0 {
			full = float64(t.Depth.Messages) / float64(t.Limits.MaxMessages) * 100
		}
		leader := "-"
		if t.Cluster != nil {
			leader = t.Cluster.Leader
			if leader == "" {
				leader = "NONE"
			}
		}
		adm, drain, retry := "-", "-", "-"
		if a := t.Admission; a != nil {
			adm = fmt.Sprintf("%d/%d", a.Share, a.Remaining)
			drain = fmt.Sprintf("%.1f", a.DrainRate)
			retry = fmt.Sprintf("%.0fs", a.RetryAfter)
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%.0f%%\t%s\t%d\tR%d\t%s\t%s\t%s\t%s\n", t.Name, t.Depth.Messages, t.Limits.MaxMessages, full,
			humanize.IBytes(t.Depth.Bytes), t.LastSeq, t.Limits.Replicas, leader, adm, drain, retry)
	}
	_ = tw.Flush()
	for _, name := range sortedKeys(s.TopicErrors) {
		fmt.Fprintf(&b, "%s: unreadable: %s\n", name, s.TopicErrors[name])
	}
	b.WriteString("\n")

	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAMILY\tLAG\tPENDING\tIN FLIGHT/CREDIT\tWAITING PULLS\tREDELIVERED\tDEAD LETTERS")
	for _, t := range s.Topics {
		for _, f := range t.Families {
			fmt.Fprintf(tw, "%s/%s\t%d\t%d\t%d/%d\t%d\t%d\t%d\n", t.Name, f.Name, f.Pending+uint64(f.InFlight), f.Pending,
				f.InFlight, f.Credit, f.Waiting, f.Redelivered, f.DeadLetters)
		}
	}
	_ = tw.Flush()
	b.WriteString("\n")

	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ALARMS (%d active)\tSEVERITY\tFOR\tNODE\tCAUSE\n", len(s.Alarms))
	for _, a := range s.Alarms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, a.Severity, s.Time.Sub(a.RaisedAt).Round(time.Second), a.Node, a.Cause)
	}
	_ = tw.Flush()
	_, err := io.WriteString(w, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
