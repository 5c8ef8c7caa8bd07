package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Cluster is a cluster of brokers in this process, on random ports, whose
// routes go through proxies so that a broker can be cut off from the others.
type Cluster struct {
	t       testing.TB
	topics  map[string]topology.Topic
	Nodes   []*Node
	proxies map[[2]int]*Proxy // [from, to]: the route from node from to node to
}

// Node is one broker of a Cluster.
type Node struct {
	Name        string
	dir         string
	clientPort  int
	clusterPort int
	routes      []string
	mu          sync.Mutex
	broker      *broker.Broker
}

// Broker is the running broker, nil while stopped.
func (n *Node) Broker() *broker.Broker {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.broker
}

// URL is the node's client URL (fixed across restarts).
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort) }

// freePort finds a port nothing listens on (tests only: it may be taken again
// before use, which would fail the test loudly, not wrongly).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartCluster starts n brokers clustered together with the topology; they
// are shut down when the test ends.
func StartCluster(t testing.TB, n int, topics map[string]topology.Topic) *Cluster {
	t.Helper()
	return startRetried(t, topics, func() []string { // fresh stores for each try
		base := t.TempDir()
		dirs := make([]string, n)
		for i := range dirs {
			dirs[i] = filepath.Join(base, fmt.Sprintf("b%d", i+1))
		}
		return dirs
	})
}

// StartClusterOn is StartCluster with one broker per store directory in
// dirs (on a file system the test controls, say); a try that failed leaves
// the directories empty for the next.
func StartClusterOn(t testing.TB, dirs []string, topics map[string]topology.Topic) *Cluster {
	t.Helper()
	return startRetried(t, topics, func() []string {
		for _, d := range dirs {
			entries, _ := os.ReadDir(d)
			for _, e := range entries {
				if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
					t.Fatalf("clearing %s: %v", d, err)
				}
			}
		}
		return dirs
	})
}

// startRetried starts a cluster on the stores dirs gives. Free ports are
// picked, released and then bound by the brokers: another process may take
// one in between. Such a start is tried again on other ports; any other
// failure fails the test.
func startRetried(t testing.TB, topics map[string]topology.Topic, dirs func() []string) *Cluster {
	t.Helper()
	for try := 1; ; try++ {
		c, err := startCluster(t, dirs(), topics)
		if err == nil {
			t.Cleanup(func() {
				for i := range c.Nodes {
					c.Stop(i)
				}
			})
			return c
		}
		if !strings.Contains(err.Error(), "address already in use") || try == 3 {
			t.Fatal(err)
		}
		t.Logf("cluster start lost a port race (%v); trying other ports", err)
	}
}

func startCluster(t testing.TB, dirs []string, topics map[string]topology.Topic) (*Cluster, error) {
	c := &Cluster{t: t, topics: topics, proxies: map[[2]int]*Proxy{}}
	n := len(dirs)
	for i := range n {
		c.Nodes = append(c.Nodes, &Node{
			Name: fmt.Sprintf("b%d", i+1), dir: dirs[i],
			clientPort: freePort(t), clusterPort: freePort(t),
		})
	}
	for i, from := range c.Nodes {
		for j, to := range c.Nodes {
			if i == j {
				continue
			}
			p := StartProxy(t, fmt.Sprintf("127.0.0.1:%d", to.clusterPort))
			c.proxies[[2]int{i, j}] = p
			from.routes = append(from.routes, strings.Replace(p.URL(), "nats://", "nats-route://", 1))
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range c.Nodes {
		wg.Go(func() { errs[i] = c.start(i) }) // together: JetStream needs a quorum to be ready
	}
	wg.Wait()
	// A node that lost a port race makes the others fail too (no quorum):
	// report the race, which is worth another try.
	first := slices.IndexFunc(errs, func(err error) bool { return err != nil && strings.Contains(err.Error(), "address already in use") })
	if first < 0 {
		first = slices.IndexFunc(errs, func(err error) bool { return err != nil })
	}
	if first >= 0 {
		for j := range c.Nodes {
			c.Stop(j)
		}
		return nil, fmt.Errorf("start %s: %w", c.Nodes[first].Name, errs[first])
	}
	return c, nil
}

func (c *Cluster) config(i int) broker.Config {
	n := c.Nodes[i]
	cfg := broker.DefaultConfig()
	cfg.Name = n.Name
	cfg.DataDir = n.dir
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", n.clientPort)
	// A bound, not a speed test: on a loaded 2-core machine three brokers
	// starting together (meta election, then R3 placement) took over 30 s.
	cfg.ReadyTimeout = 2 * time.Minute
	// Advertise an address nobody listens on: brokers then connect only
	// through the configured routes, which go through the proxies.
	cfg.Cluster = broker.Cluster{Name: "test", Listen: fmt.Sprintf("127.0.0.1:%d", n.clusterPort),
		Routes: n.routes, Advertise: "127.0.0.1:1"}
	cfg.Topics = c.topics
	return cfg
}

func (c *Cluster) start(i int) error {
	b, err := broker.New(c.config(i), Logger(c.t).Named(c.Nodes[i].Name), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	n := c.Nodes[i]
	n.mu.Lock()
	n.broker = b
	n.mu.Unlock()
	return nil
}

// Stop stops node i without a lame-duck phase (idempotent).
func (c *Cluster) Stop(i int) {
	n := c.Nodes[i]
	n.mu.Lock()
	b := n.broker
	n.broker = nil
	n.mu.Unlock()
	if b != nil {
		b.Shutdown()
	}
}

// Restart starts a stopped node i again on its store and ports. It returns
// once the node is ready (it rejoins the running cluster).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatalf("restart %s: %v", c.Nodes[i].Name, err)
	}
}

// RestartAll starts every stopped node at once (a quorum must come back
// together before any of them is ready).
func (c *Cluster) RestartAll() {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		if n.Broker() == nil {
			wg.Go(func() { errs[i] = c.start(i) })
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			c.t.Fatalf("restart %s: %v", c.Nodes[i].Name, err)
		}
	}
}

// Isolate cuts node i off from the other brokers (clients still reach it);
// Heal reconnects it.
func (c *Cluster) Isolate(i int) { c.cut(i, true) }

// Heal undoes Isolate.
func (c *Cluster) Heal(i int) { c.cut(i, false) }

func (c *Cluster) cut(i int, cut bool) {
	for pair, p := range c.proxies {
		if pair[0] == i || pair[1] == i {
			p.Cut(cut)
		}
	}
}

// URLs is every node's client URL, comma-separated, as clients take them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Connect opens a client connection to every node, failing over between them.
func (c *Cluster) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Leader is the index of the node leading topic's stream, -1 if none.
func (c *Cluster) Leader(t testing.TB, js jetstream.JetStream, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, sluice.StreamName(topic))
	if err != nil || s.CachedInfo().Cluster == nil {
		return -1
	}
	for i, n := range c.Nodes {
		if n.Name == s.CachedInfo().Cluster.Leader {
			return i
		}
	}
	return -1
}

// Current reports whether topic's stream has a leader and all its
// followers current.
func (c *Cluster) Current(js jetstream.JetStream, topic string) bool {
	return ReplicasCurrent(js, topic)
}

// ReplicasCurrent reports whether topic's stream, seen through js, has a
// leader and every follower online and current.
func ReplicasCurrent(js jetstream.JetStream, topic string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, sluice.StreamName(topic))
	if err != nil || s.CachedInfo().Cluster == nil || s.CachedInfo().Cluster.Leader == "" {
		return false
	}
	reps := s.CachedInfo().Cluster.Replicas
	if len(reps) != s.CachedInfo().Config.Replicas-1 {
		return false
	}
	for _, r := range reps {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}

// WaitCurrent waits until topic's replicas are all current.
func (c *Cluster) WaitCurrent(t testing.TB, js jetstream.JetStream, topic string, why string) {
	t.Helper()
	Eventually(t, 30*time.Second, func() bool { return c.Current(js, topic) }, "%s: replicas of %s not current", why, topic)
}
