//go:build chaos

package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicebus/sluice/internal/status"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestMembership (make chaos) changes the process cluster's membership and
// topology under load through both gateways: a fourth broker joins; a
// broker leaves for good (stopped, and its replicas moved to the others);
// a family is added to the loaded topic and a new topic with a family is
// added, by a rolling restart of every node with the new configuration;
// every node is restarted in turn twice in a row. The checker must find
// nothing lost in any family, stored twice, unexpected, corrupted or left
// unsettled; no answer may be a 5xx other than 503, and every 429 and 503
// carries Retry-After.
func TestMembership(t *testing.T) {
	grown := &grownTopology{}
	scenarios := []membershipScenario{
		{name: "add a fourth broker", fault: func(t *testing.T, c *chaosRun, l *publisher) {
			l.busy(t)
			c.p.do("restart", "broker-4")
			harness.Eventually(t, time.Minute, func() bool { return c.p.members("broker-1")["broker-4"] == "ok" },
				"broker-4 should join the JetStream meta group")
			t.Logf("broker-4 joined: members as broker-1 sees them %v", c.p.members("broker-1"))
			c.p.current(t, "broker-4 joined")
		}},
		{name: "remove the stream leader's broker (stop, peer-remove its replicas)", setup: func(t *testing.T, c *chaosRun) {
			c.p.do("restart", "broker-4")
		}, fault: func(t *testing.T, c *chaosRun, l *publisher) {
			l.busy(t)
			c.p.removeBroker(t, c.p.leader())
		}},
		{name: "add a family and a topic: rolling restart with the new config", fault: grown.fault, after: grown.after},
		{name: "rolling restart of every node, twice in a row", fault: func(t *testing.T, c *chaosRun, l *publisher) {
			for round := 1; round <= 2; round++ {
				c.p.rollingRestart(t, l, nil)
				l.busy(t)
				c.p.readers.restart()
				t.Logf("rolling restart %d done", round)
			}
		}},
	}
	rows := []string{history.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			c := newChaosRun(t, 900, false)
			if sc.setup != nil {
				sc.setup(t, c)
			}
			c.p.current(t, "cluster up")
			rows = append(rows, c.run(t, sc.name, func(l *publisher) { sc.fault(t, c, l) }))
			if sc.after != nil {
				rows = append(rows, sc.after(t, c)...)
			}
		})
	}
	fmt.Println("\n" + strings.Join(rows, "\n"))
}

// membershipScenario is one row of TestMembership.
type membershipScenario struct {
	name string
	// setup runs on the cluster before the load.
	setup func(t *testing.T, c *chaosRun)
	fault func(t *testing.T, c *chaosRun, l *publisher)
	// after runs once the load's report is in, for checks and rows of
	// its own.
	after func(t *testing.T, c *chaosRun) []string
}

// rollingRestart stops each broker (lame duck) and starts it again with
// env, each once the replicas are current and with publishes in flight,
// then each gateway.
func (p *processCluster) rollingRestart(t *testing.T, l *publisher, env []string) {
	t.Helper()
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("broker-%d", i)
		l.busy(t)
		p.do("stop", name)
		p.doEnv(env, "restart", name)
		p.current(t, name+" restarted")
	}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("gateway-%d", i)
		l.busy(t)
		p.do("stop", name)
		p.doEnv(env, "restart", name)
	}
}

// members is the cluster's brokers with their health (ok, lagging,
// offline) as broker via sees them on its ops listener's /v1/status: the
// JetStream meta group's members and the topics' replicas.
func (p *processCluster) members(via string) map[string]string {
	var i int
	if _, err := fmt.Sscanf(via, "broker-%d", &i); err != nil {
		return nil
	}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/status", 8221+i+p.offset))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st status.Status
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return nil
	}
	out := map[string]string{}
	for _, m := range st.Members {
		out[m.Name] = m.Health
	}
	return out
}

// removeBroker stops gone for good (lame duck: its leaderships move) and
// moves its replica of every Sluice stream, with their consumers, to a
// broker that has none: JetStream's stream peer-remove, which a Sluice
// client may ask. It first asks the cluster to forget gone altogether
// ($JS.API.SERVER.REMOVE): only a system-account client may, and Sluice's
// brokers give none, so that request goes unanswered and gone stays an
// offline member of the meta group (see the report).
func (p *processCluster) removeBroker(t *testing.T, gone string) {
	t.Helper()
	p.do("stop", gone)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	req, _ := json.Marshal(map[string]string{"peer": gone})
	_, err := p.nc.RequestWithContext(ctx, "$JS.API.SERVER.REMOVE", req)
	cancel()
	t.Logf("$JS.API.SERVER.REMOVE %s from a Sluice client: %v", gone, err)
	streams := p.streamsOn(t, gone)
	if len(streams) == 0 {
		t.Fatalf("%s holds no replica of any stream", gone)
	}
	for _, s := range streams {
		harness.Eventually(t, time.Minute, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			msg, err := p.nc.RequestWithContext(ctx, "$JS.API.STREAM.PEER.REMOVE."+s, req)
			if err != nil {
				t.Logf("peer-remove %s from %s: %v", gone, s, err)
				time.Sleep(time.Second)
				return false
			}
			var resp struct {
				Success bool `json:"success"`
				Error   *struct {
					Description string `json:"description"`
				} `json:"error"`
			}
			if err := json.Unmarshal(msg.Data, &resp); err != nil || !resp.Success {
				t.Logf("peer-remove %s from %s: %s", gone, s, msg.Data)
				time.Sleep(time.Second)
				return false
			}
			return true
		}, "%s's replica of %s should be removed", gone, s)
	}
	begin := time.Now()
	harness.Eventually(t, 2*time.Minute, func() bool {
		return len(p.streamsOn(t, gone)) == 0 && harness.ReplicasCurrent(p.js, "orders")
	}, "every stream should be re-placed off %s with its replicas current", gone)
	t.Logf("%s removed from %v; re-placed and current after %v", gone, streams, time.Since(begin).Round(100*time.Millisecond))
	if len(p.streamsOn(t, "broker-4")) == 0 {
		t.Error("no stream was re-placed on broker-4")
	}
	t.Logf("members as broker-4 sees them: %v", p.members("broker-4"))
}

// streamsOn lists the Sluice streams with a replica (or their leader) on
// broker name.
func (p *processCluster) streamsOn(t *testing.T, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	list := p.js.ListStreams(ctx)
	for info := range list.Info() {
		if !strings.HasPrefix(info.Config.Name, "SLUICE_") || info.Cluster == nil {
			continue
		}
		on := info.Cluster.Leader == name
		for _, r := range info.Cluster.Replicas {
			on = on || r.Name == name
		}
		if on {
			out = append(out, info.Config.Name)
		}
	}
	if err := list.Err(); err != nil {
		t.Logf("listing streams: %v", err)
	}
	return out
}

// grownTopology is the scenario that adds a family (audit) to the loaded
// topic and a new topic (invoices, family ledger) by restarting every
// node in turn with the new configuration. audit is created on a topic
// that holds messages, so it starts with what is published after its
// creation (DeliverNew): every message stored after it must reach it.
type grownTopology struct {
	l *publisher
	// auditFrom: the orders stream's last seq once audit existed.
	auditFrom uint64
	mu        sync.Mutex
	audit     map[string][]uint64 // id -> seqs delivered to audit
	inv       *history.Checker
	invRow    string
}

const (
	newFamily = "audit"
	newTopic  = "invoices"
	newTopicF = "ledger"
	invoices  = 200 // messages published to the new topic
)

func (g *grownTopology) fault(t *testing.T, c *chaosRun, l *publisher) {
	g.l = l
	g.audit = map[string][]uint64{}
	g.inv = history.New(newTopicF)
	cfg := grownConfig(t)
	env := []string{"CONFIG=" + cfg}
	// The first broker restarted creates audit and invoices at its start.
	l.busy(t)
	c.p.do("stop", "broker-1")
	c.p.doEnv(env, "restart", "broker-1")
	harness.Eventually(t, time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := c.p.js.Consumer(ctx, sluice.StreamName("orders"), newFamily)
		if err != nil {
			return false
		}
		ci := cons.CachedInfo()
		// The consumer's leader picks the start from its own replica of
		// the stream, which may lag (a broker that just restarted): the
		// stream leader's last seq now, with the family in place, is the
		// first point every message after is sure to be stored after the
		// creation.
		s, err := c.p.js.Stream(ctx, sluice.StreamName("orders"))
		if err != nil {
			return false
		}
		g.auditFrom = max(ci.Delivered.Stream, s.CachedInfo().State.LastSeq)
		leader := ""
		if ci.Cluster != nil {
			leader = ci.Cluster.Leader
		}
		t.Logf("family %s created %v with deliver policy %v: its leader %s starts at stream seq %d; the stream's last seq once it exists is %d",
			newFamily, ci.Created.Format(time.RFC3339Nano), ci.Config.DeliverPolicy, leader, ci.Delivered.Stream+1, s.CachedInfo().State.LastSeq)
		return true
	}, "broker-1 restarted with the new config should create family %s", newFamily)
	harness.RunWorker(t, c.p.nc, "orders", newFamily, func(_ context.Context, m *sluice.Message) error {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.audit[m.ID] = append(g.audit[m.ID], m.Seq)
		return nil
	}, sluice.WithCredit(8))
	harness.RunWorker(t, c.p.nc, newTopic, newTopicF, func(_ context.Context, m *sluice.Message) error {
		g.inv.Deliver(newTopicF, harness.DeliveryOf(m))
		return nil
	}, sluice.WithCredit(8))
	c.p.current(t, "broker-1 restarted")
	for i := 2; i <= 3; i++ {
		name := fmt.Sprintf("broker-%d", i)
		l.busy(t)
		c.p.do("stop", name)
		c.p.doEnv(env, "restart", name)
		c.p.current(t, name+" restarted")
	}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("gateway-%d", i)
		l.busy(t)
		c.p.do("stop", name)
		c.p.doEnv(env, "restart", name)
	}
	g.publishInvoices(t, c)
}

// publishInvoices publishes to the new topic through both gateways while
// the load goes on, settles unknown outcomes, and checks with its own
// checker that the new topic's family got everything.
func (g *grownTopology) publishInvoices(t *testing.T, c *chaosRun) {
	t.Helper()
	p, err := sluice.NewProducer(c.p.gateways(), append([]sluice.ProducerOption{sluice.WithRetry(8, 20*time.Millisecond, 500*time.Millisecond)},
		httpClient(c.counter)...)...)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(ctx context.Context, id string, payload []byte) history.Answer {
		ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		return answerOf(p.Publish(ctx, newTopic, payload, sluice.WithID(id)))
	}
	for i := range invoices {
		id := fmt.Sprintf("inv-%d", i)
		payload := fmt.Appendf(nil, "%s %d", id, time.Now().UnixNano())
		g.inv.Attempted(id, payload, publish(context.Background(), id, payload))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 3 {
		if g.inv.Settle(ctx, publish) == 0 {
			break
		}
	}
	qctx, qcancel := context.WithTimeout(context.Background(), time.Minute)
	defer qcancel()
	if err := g.inv.Quiesce(qctx, 2*time.Second, 50*time.Millisecond, nil); err != nil {
		t.Fatalf("%s/%s should receive every stored message: %v", newTopic, newTopicF, err)
	}
	harness.CheckFinalState(t, c.p.js, newTopic, g.inv, 30*time.Second)
	g.invRow = judge(t, "new topic "+newTopic+", family "+newTopicF, g.inv.Report())
}

// after checks that every message of orders stored after audit's creation
// reached audit, once, at the seq its 202 named. Messages stored while it
// was being created may reach it or not.
func (g *grownTopology) after(t *testing.T, c *chaosRun) []string {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	var owed, lost, early, twice int
	var missing []uint64
	for n := int64(1); n <= min(g.l.started.Load(), loadMaxMessages); n++ {
		id := fmt.Sprintf("p%d", n)
		for _, seq := range c.chk.Receipts(id) {
			if seq <= g.auditFrom {
				continue
			}
			owed++
			if !slices.Contains(g.audit[id], seq) {
				lost++
				missing = append(missing, seq)
			}
		}
	}
	if len(missing) > 0 {
		first := slices.Min(missing)
		var before []string
		for id, seqs := range g.audit {
			for _, seq := range seqs {
				if seq < first {
					before = append(before, fmt.Sprintf("%s@%d", id, seq))
				}
			}
		}
		t.Logf("seqs of orders never delivered to %s: %s; %d deliveries below them\n%s", newFamily, seqRanges(missing), len(before),
			c.p.logLines(newFamily))
	}
	for _, seqs := range g.audit {
		for _, seq := range seqs {
			if seq <= g.auditFrom {
				early++
			}
		}
		if len(slices.Compact(slices.Sorted(slices.Values(seqs)))) > 1 {
			twice++
		}
	}
	t.Logf("family %s: %d acked messages stored after its creation, %d of them never delivered to it, %d deliveries of messages stored while it was created, %d ids at two seqs, %d ids delivered",
		newFamily, owed, lost, early, twice, len(g.audit))
	if owed == 0 || lost > 0 || twice > 0 {
		t.Errorf("family %s added under load: %d owed, %d family-lost, %d stored twice", newFamily, owed, lost, twice)
	}
	row := fmt.Sprintf("| new family %s on the loaded topic (DeliverNew): messages stored after its creation | %d | - | %d | %d | | | | | | | | | | |",
		newFamily, owed, lost, twice)
	t.Log(row)
	tableRow(t, row)
	return []string{g.invRow, row}
}

// grownConfig writes configs/cluster/cluster.yaml with family audit added
// to orders and topic invoices (family ledger) added, and returns its path.
func grownConfig(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "configs", "cluster", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	topics, _ := cfg["topics"].(map[string]any)
	orders, _ := topics["orders"].(map[string]any)
	fams, _ := orders["families"].(map[string]any)
	if fams == nil {
		t.Fatal("configs/cluster/cluster.yaml declares no families of orders")
	}
	fams[newFamily] = fams["billing"]
	topics[newTopic] = map[string]any{
		"max_messages": 100000, "max_bytes": "64MiB", "max_message_size": "1MiB", "replicas": 3,
		"duplicate_window": "2m", "families": map[string]any{newTopicF: fams["billing"]},
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cluster-grown.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// seqRanges renders seqs as sorted ranges ("3-7, 9").
func seqRanges(seqs []uint64) string {
	slices.Sort(seqs)
	var out []string
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] <= seqs[j]+1 {
			j++
		}
		if j == i {
			out = append(out, fmt.Sprint(seqs[i]))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", seqs[i], seqs[j]))
		}
		i = j + 1
	}
	return strings.Join(out, ", ")
}

// logLines is every line of the brokers' logs that holds word, for a
// failure's report.
func (p *processCluster) logLines(word string) string {
	var out []string
	for i := 1; i <= 4; i++ {
		name := fmt.Sprintf("broker-%d", i)
		data, err := os.ReadFile(p.logPath(name))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(data)) {
			if strings.Contains(line, word) {
				out = append(out, name+": "+strings.TrimSpace(line))
			}
		}
	}
	return strings.Join(out, "\n")
}
