package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// Bad networks for tests: every Proxy forwards through a Link, a Toxiproxy
// proxy in this process whose bytes can be delayed, throttled, dropped or
// reset in either direction (Shape), and Loss drops a share of the packets
// of chosen loopback ports with iptables, as a lossy network would (TCP
// retransmits what is lost, so the bytes arrive late but whole).

// Direction is which way bytes go through a link.
type Direction string

const (
	// Upstream is from the side that dialled to the side that listens.
	Upstream Direction = "upstream"
	// Downstream is back from the side that listens to the side that dialled.
	Downstream Direction = "downstream"
)

// Link is a TCP proxy to one address whose traffic can be shaped with
// Toxiproxy's toxics: latency (with jitter), bandwidth, reset_peer, timeout,
// slicer, limit_data, slow_close.
type Link struct {
	p *toxiproxy.Proxy

	mu   sync.Mutex
	next int // names the toxics added
}

// StartLink starts a link to target (host:port) until the test ends.
func StartLink(t testing.TB, target string) *Link {
	t.Helper()
	// Toxics log through zerolog's global logger (bandwidth traces every
	// interruption): a test wants none of it.
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, target, "127.0.0.1:0", target)
	if err := p.Start(); err != nil {
		t.Fatalf("link to %s: %v", target, err)
	}
	t.Cleanup(p.Stop)
	return &Link{p: p}
}

// Addr is the link's listening address (host:port).
func (l *Link) Addr() string { return l.p.Listen }

// Add adds toxic typ with attrs (Toxiproxy's attributes, as JSON) to the
// bytes going dir, on the link's connections and on every later one, and
// returns the toxic's name.
func (l *Link) Add(dir Direction, typ string, attrs any) (string, error) {
	l.mu.Lock()
	l.next++
	name := fmt.Sprintf("%s_%s_%d", typ, dir, l.next)
	l.mu.Unlock()
	js, err := json.Marshal(map[string]any{"name": name, "type": typ, "stream": dir, "toxicity": 1.0, "attributes": attrs})
	if err != nil {
		return "", fmt.Errorf("toxic %s: %w", typ, err)
	}
	if _, err := l.p.Toxics.AddToxicJson(bytes.NewReader(js)); err != nil {
		return "", fmt.Errorf("toxic %s %s on the link to %s: %w", typ, dir, l.p.Upstream, err)
	}
	return name, nil
}

// Remove removes toxic name: what it held back goes on (a timeout toxic
// closes its connections instead, as the bytes it dropped are gone).
func (l *Link) Remove(name string) error {
	if err := l.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		return fmt.Errorf("toxic %s on the link to %s: %w", name, l.p.Upstream, err)
	}
	return nil
}

// Flow is one direction of a link.
type Flow struct {
	Link *Link
	Dir  Direction
}

// Flows is both directions of the link.
func (l *Link) Flows() []Flow { return []Flow{{l, Upstream}, {l, Downstream}} }

// Shape adds toxic typ with attrs to every flow and returns heal, which
// removes them (idempotent; also called when the test ends).
func Shape(t testing.TB, flows []Flow, typ string, attrs any) (heal func()) {
	t.Helper()
	type added struct {
		l    *Link
		name string
	}
	var toxics []added
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, a := range toxics {
				if err := a.l.Remove(a.name); err != nil {
					t.Errorf("heal: %v", err)
				}
			}
		})
	}
	t.Cleanup(heal)
	for _, f := range flows {
		name, err := f.Link.Add(f.Dir, typ, attrs)
		if err != nil {
			heal()
			t.Fatal(err)
		}
		toxics = append(toxics, added{f.Link, name})
	}
	return heal
}

// Latency delays every flow's bytes by latency ± jitter (milliseconds).
func Latency(t testing.TB, flows []Flow, latencyMS, jitterMS int) (heal func()) {
	t.Helper()
	return Shape(t, flows, "latency", map[string]int{"latency": latencyMS, "jitter": jitterMS})
}

// Bandwidth limits every flow to kbps KB/s.
func Bandwidth(t testing.TB, flows []Flow, kbps int) (heal func()) {
	t.Helper()
	return Shape(t, flows, "bandwidth", map[string]int{"rate": kbps})
}

// Blackhole drops every byte of the flows until heal, which then closes
// their connections (a one-way partition when the flows are one way).
func Blackhole(t testing.TB, flows []Flow) (heal func()) {
	t.Helper()
	return Shape(t, flows, "timeout", map[string]int{"timeout": 0})
}

// ResetPeer resets (TCP RST) every connection of the flows once bytes go
// through it, after timeoutMS, and every new one, until heal.
func ResetPeer(t testing.TB, flows []Flow, timeoutMS int) (heal func()) {
	t.Helper()
	return Shape(t, flows, "reset_peer", map[string]int{"timeout": timeoutMS})
}

// ErrNoIptables is why Loss cannot drop packets here.
var ErrNoIptables = errors.New("packet loss needs root and iptables")

// iptablesUsable reports whether Loss can add rules, and if not, why.
func iptablesUsable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrNoIptables)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return fmt.Errorf("%w: %w", ErrNoIptables, err)
	}
	return nil
}

// lossComment marks this process's rules (its pid: parallel test
// processes do not remove each other's).
func lossComment() string { return "sluice-test-" + strconv.Itoa(os.Getpid()) }

// Loss drops each TCP packet to or from the loopback ports with probability
// p, with iptables rules on INPUT marked with this process's comment, and
// returns heal, which removes them (idempotent; also called when the test
// ends, whatever happened). It skips the test when iptables cannot be used
// (not root, no iptables).
func Loss(t testing.TB, p float64, ports ...int) (heal func()) {
	t.Helper()
	if err := iptablesUsable(); err != nil {
		t.Skip(err)
	}
	var rules [][]string
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, r := range rules {
				if out, err := iptables(append([]string{"-D", "INPUT"}, r...)...); err != nil {
					t.Errorf("removing the loss rule %v: %v: %s", r, err, out)
				}
			}
		})
	}
	t.Cleanup(heal)
	prob := strconv.FormatFloat(p, 'f', -1, 64)
	for _, port := range ports {
		for _, side := range []string{"--dport", "--sport"} {
			r := []string{"-i", "lo", "-p", "tcp", side, strconv.Itoa(port),
				"-m", "statistic", "--mode", "random", "--probability", prob,
				"-m", "comment", "--comment", lossComment(), "-j", "DROP"}
			if out, err := iptables(append([]string{"-I", "INPUT"}, r...)...); err != nil {
				heal()
				t.Fatalf("adding a loss rule: %v: %s", err, out)
			}
			rules = append(rules, r)
		}
	}
	return heal
}

// LossRules is how many of this process's loss rules are in place, and
// how many packets they dropped.
func LossRules() (rules, dropped int, err error) {
	out, err := iptables("-L", "INPUT", "-v", "-x", "-n")
	if err != nil {
		return 0, 0, fmt.Errorf("listing rules: %w: %s", err, out)
	}
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "/* "+lossComment()+" */") {
			continue
		}
		rules++
		if f := strings.Fields(line); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			dropped += n
		}
	}
	return rules, dropped, nil
}

// iptables runs iptables with args (waiting for the lock other processes
// may hold) and returns its output.
func iptables(args ...string) (string, error) {
	out, err := exec.Command("iptables", append([]string{"-w", "5"}, args...)...).CombinedOutput()
	return string(out), err
}

// portOf is the port of a listener's address.
func portOf(addr net.Addr) int { return addr.(*net.TCPAddr).Port }

// The cluster's routes: the route from node i to node j goes through the
// proxy [i, j], whose link's upstream carries i's bytes to j and whose
// downstream carries j's bytes back (nats-server keeps one of the two
// directions' connections, or both in its pool: shape both).

// Sends is every flow carrying node i's bytes to the other brokers.
func (c *Cluster) Sends(i int) []Flow { return c.flowsOf(i, Upstream, Downstream) }

// Receives is every flow carrying the other brokers' bytes to node i.
func (c *Cluster) Receives(i int) []Flow { return c.flowsOf(i, Downstream, Upstream) }

// flowsOf is direction from of the routes node i dials and direction to of
// the routes dialled to it.
func (c *Cluster) flowsOf(i int, from, to Direction) []Flow {
	var flows []Flow
	for pair, p := range c.proxies {
		switch i {
		case pair[0]:
			flows = append(flows, Flow{p.link, from})
		case pair[1]:
			flows = append(flows, Flow{p.link, to})
		}
	}
	return flows
}

// Routes is both directions of every route.
func (c *Cluster) Routes() []Flow {
	var flows []Flow
	for _, p := range c.proxies {
		flows = append(flows, p.link.Flows()...)
	}
	return flows
}

// RoutePorts is the ports of the proxies of every route to or from one of
// nodes (of every route if nodes is empty), for Loss.
func (c *Cluster) RoutePorts(nodes ...int) []int {
	var ports []int
	for pair, p := range c.proxies {
		if len(nodes) == 0 || slices.Contains(nodes, pair[0]) || slices.Contains(nodes, pair[1]) {
			ports = append(ports, p.Port())
		}
	}
	return ports
}

// RouteConnections is how many route connections to or from node i the
// proxies forwarded so far: it grows as routes are reset and come back.
func (c *Cluster) RouteConnections(i int) int {
	n := 0
	for pair, p := range c.proxies {
		if pair[0] == i || pair[1] == i {
			n += p.Connections()
		}
	}
	return n
}

// MoveLeader makes node i the leader of topic's stream (a leader stepdown
// preferring it), asking through js.
func (c *Cluster) MoveLeader(t testing.TB, js jetstream.JetStream, topic string, i int) {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": c.Nodes[i].Name}})
	Eventually(t, time.Minute, func() bool {
		if c.Leader(t, js, topic) == i {
			return true
		}
		// Asked again while the stepdown has not taken (an election may
		// pick another node, or the request time out on a busy machine).
		_, _ = js.Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN."+sluice.StreamName(topic), req, 5*time.Second)
		return c.Leader(t, js, topic) == i
	}, "%s does not lead %s", c.Nodes[i].Name, topic)
}
