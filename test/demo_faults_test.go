//go:build demo

package test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// The compose demo's gentler-than-a-cut faults: a paused broker and a bad
// network on one broker. Both act on a container from the host: docker pause
// (the cgroup freezer stops every process in it, its sockets stay open), and
// iptables and tc run inside the container's network namespace (nsenter),
// since the image is FROM scratch and has neither.

// streamLeader is the broker leading topic's stream, asked from the stream
// (JetStream's cluster info names the leader by server name, which in the
// compose cluster is the broker's service name); it waits out an election.
func streamLeader(t *testing.T, js jetstream.JetStream, topic string) string {
	t.Helper()
	var leader string
	harness.Eventually(t, time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, sluice.StreamName(topic))
		if err != nil || s.CachedInfo().Cluster == nil {
			return false
		}
		leader = s.CachedInfo().Cluster.Leader
		return leader != ""
	}, "the stream of %s should have a leader", topic)
	if !regexp.MustCompile(`^broker-[1-3]$`).MatchString(leader) {
		t.Fatalf("the stream leader %q is not one of the compose services broker-1..3", leader)
	}
	return leader
}

// pause freezes service's container (docker pause) for how long and thaws
// it. If the test stops half way, its cleanup thaws it, so that compose down
// can stop it.
func (d *demoCluster) pause(service string, how time.Duration) {
	d.t.Helper()
	id := d.container(service)
	d.docker("pause", id)
	d.t.Cleanup(func() { _ = exec.Command("docker", "unpause", id).Run() }) // an error: not paused any more
	time.Sleep(how)
	d.docker("unpause", id)
}

// badNetwork is a lossy, narrow link on one container, made without netem
// (this kernel has none): iptables drops a random share of the packets it
// receives, and a token bucket (tc tbf) on its network interface limits what it sends to
// rate, queueing the excess for up to latency and dropping the rest.
type badNetwork struct {
	loss    float64 // share of received packets dropped
	rate    string  // tbf rate, as tc spells it: "1mbit"
	latency string  // longest wait in the bucket's queue: "200ms"
}

func (b badNetwork) String() string {
	return fmt.Sprintf("%.0f %% loss in, %s out (queue %s)", 100*b.loss, b.rate, b.latency)
}

// degrade gives service's container the bad network b and returns heal,
// which takes it away again and reports how many packets it dropped on the
// way in and how often the bucket held packets back. heal is idempotent and
// also a cleanup, so a test stopping half way leaves no rule or qdisc; it
// does nothing if the container (and its namespace) is gone or was
// restarted, so that it can never act on another process's namespace.
func (d *demoCluster) degrade(service string, b badNetwork) (heal func() (dropped, overlimits int)) {
	d.t.Helper()
	id := d.container(service)
	pid := d.docker("inspect", "-f", "{{.State.Pid}}", id)
	if n, err := strconv.Atoi(pid); err != nil || n <= 0 {
		d.t.Fatalf("%s is not running (pid %q)", service, pid)
	}
	ns := func(args ...string) (string, error) {
		out, err := exec.Command("nsenter", append([]string{"-t", pid, "-n"}, args...)...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("nsenter -t %s -n %v: %w\n%s", pid, args, err, out)
		}
		return string(out), nil
	}
	// The container's network interface: eth0, unless the container was
	// disconnected from its network and connected again (then eth1, ...).
	links, err := ns("ip", "-o", "link", "show")
	if err != nil {
		d.t.Fatal(err)
	}
	dev := ""
	for line := range strings.Lines(links) {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "eth") {
			dev, _, _ = strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			break
		}
	}
	if dev == "" {
		d.t.Fatalf("%s: no eth* interface:\n%s", service, links)
	}
	rule := []string{"INPUT", "-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(b.loss, 'f', -1, 64), "-j", "DROP"}
	var once sync.Once
	heal = func() (dropped, overlimits int) {
		once.Do(func() {
			if now, err := exec.Command("docker", "inspect", "-f", "{{.State.Pid}}", id).Output(); err != nil || strings.TrimSpace(string(now)) != pid {
				return // its namespace went with it
			}
			if out, err := ns("iptables", "-L", "INPUT", "-v", "-x", "-n"); err == nil {
				dropped = counted(dropLine, out)
			}
			if out, err := ns("tc", "-s", "qdisc", "show", "dev", dev); err == nil {
				overlimits = counted(overlimitsLine, out)
			}
			if _, err := ns(append([]string{"iptables", "-D"}, rule...)...); err != nil {
				d.t.Errorf("healing %s: %v", service, err)
			}
			if _, err := ns("tc", "qdisc", "del", "dev", dev, "root"); err != nil {
				d.t.Errorf("healing %s: %v", service, err)
			}
		})
		return dropped, overlimits
	}
	d.t.Cleanup(func() { heal() })
	if _, err := ns(append([]string{"iptables", "-A"}, rule...)...); err != nil {
		d.t.Fatal(err)
	}
	if _, err := ns("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", b.rate, "burst", "32kbit", "latency", b.latency); err != nil {
		d.t.Fatal(err)
	}
	return heal
}

var (
	dropLine       = regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+DROP\b.*statistic`)
	overlimitsLine = regexp.MustCompile(`qdisc tbf .*\n\s*Sent .*overlimits (\d+)`)
)

// counted is the number re's first group finds in listing (0 if none): the
// packets the statistic DROP rule matched (dropLine, in iptables -L -v -x
// -n) or how often the token bucket held packets back (overlimitsLine, in
// tc -s qdisc show).
func counted(re *regexp.Regexp, listing string) int {
	m := re.FindStringSubmatch(listing)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
