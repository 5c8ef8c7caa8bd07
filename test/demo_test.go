//go:build demo

package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/internal/tlsconf"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// demoCluster is the compose demo (deploy/docker-compose.yml) under its own
// project name and host ports, so it runs beside a `make demo`.
type demoCluster struct {
	t       *testing.T
	compose []string
	env     []string
}

const demoProject = "sluice-demo-test"

func (d *demoCluster) cmd(args ...string) *exec.Cmd {
	all := append(append(append([]string{}, d.compose[1:]...), "-f", "deploy/docker-compose.yml", "-p", demoProject), args...)
	cmd := exec.Command(d.compose[0], all...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), d.env...)
	return cmd
}

func (d *demoCluster) run(args ...string) string {
	d.t.Helper()
	out, err := d.cmd(args...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("%s %v: %v\n%s", d.compose, args, err, out)
	}
	return string(out)
}

// docker runs a docker command on the engine.
func (d *demoCluster) docker(args ...string) string {
	d.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("docker %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// containers is the ids of a service's containers, running or not, found
// by compose's labels with the docker CLI (docker-compose v1 takes seconds
// to start on a loaded machine, docker a fraction of one).
func (d *demoCluster) containers(service string) []string {
	d.t.Helper()
	ids := strings.Fields(d.docker("ps", "-aq", "--filter", "label=com.docker.compose.project="+demoProject,
		"--filter", "label=com.docker.compose.service="+service))
	if len(ids) == 0 {
		d.t.Fatalf("no container for %s", service)
	}
	return ids
}

// container is the id of a service's (first) container.
func (d *demoCluster) container(service string) string {
	d.t.Helper()
	return d.containers(service)[0]
}

// TestDemo (make demo-test) brings the compose cluster up from the sluice:dev
// image and publishes through both gateways with the SDK while it kills a
// broker and starts it again, cuts a broker off the cluster network for 15 s,
// restarts a gateway, pauses the stream leader for longer than the families'
// ack_wait, and gives the stream leader a lossy, narrow network for 15 s
// (demo_faults_test.go). The demo's own worker containers are the readers:
// their logs say what each family handled (ids and seqs; payloads are not
// logged). Each fault strikes with publishes in flight; the checker must find
// nothing lost in any family, stored twice, unexpected or left unsettled,
// the topic must end empty, every broker must be current again after each
// fault, no answer may be a 5xx other than 503, and every 429 and 503 must
// carry Retry-After. Everything is torn down, pass or fail. The bus is secured with
// deploy/secrets/ (make demo-test makes it): first the test checks that a
// broker refuses a plain client and one without an nkey, and that a worker's
// identity may not publish to a topic.
func TestDemo(t *testing.T) {
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Fatalf("no Docker engine answers (make demo-test needs one): %v\n%s", err, out)
	}
	secrets := filepath.Join(repoRoot, "deploy", "secrets")
	if _, err := os.Stat(filepath.Join(secrets, "broker.yaml")); err != nil {
		t.Fatalf("the demo's secrets are missing (make demo-test runs deploy/demo-secrets.sh first): %v", err)
	}
	busTLS := bus.WithTLS(tlsconf.Config{CAFile: filepath.Join(secrets, "ca.pem")})
	compose := strings.Fields(os.Getenv("COMPOSE"))
	if len(compose) == 0 {
		compose = []string{"docker-compose"}
	}
	d := &demoCluster{t: t, compose: compose, env: []string{
		"SLUICE_DEMO_GATEWAY_1=18080", "SLUICE_DEMO_GATEWAY_2=18081",
		"SLUICE_DEMO_NATS_1=24222", "SLUICE_DEMO_NATS_2=24223", "SLUICE_DEMO_NATS_3=24224",
	}}
	_, _ = d.cmd("down", "-v", "--remove-orphans").CombinedOutput() // a previous run's leftovers
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := d.cmd("logs", "--no-color", "--tail", "40").CombinedOutput()
			t.Logf("last logs:\n%s", out)
		}
		if out, err := d.cmd("down", "-v", "--remove-orphans").CombinedOutput(); err != nil {
			t.Errorf("demo down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	d.run("up", "-d")
	gateways := []string{"http://127.0.0.1:18080", "http://127.0.0.1:18081"}
	for _, g := range gateways {
		harness.Eventually(t, 3*time.Minute, func() bool {
			resp, err := http.Get(g + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, "gateway %s ready", g)
	}
	t.Logf("demo cluster ready %v after `up -d`", time.Since(start).Round(100*time.Millisecond))

	demoBusSecured(t, "127.0.0.1:24222", secrets)
	nc, err := bus.Connect([]string{"nats://127.0.0.1:24222", "nats://127.0.0.1:24223", "nats://127.0.0.1:24224"},
		5*time.Second, "demo-test", zap.NewNop(), busTLS, bus.WithNkeySeedFile(filepath.Join(secrets, "admin.nk")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	current := func(why string) {
		t.Helper()
		begin := time.Now()
		harness.Eventually(t, 2*time.Minute, func() bool { return harness.ReplicasCurrent(js, "orders") },
			"%s: all 3 replicas of orders should be current", why)
		t.Logf("%s: all 3 replicas current after %v", why, time.Since(begin).Round(100*time.Millisecond))
	}
	current("cluster up")

	// Each scenario has its own checker and ids (prefix); the workers'
	// logs are read whole each time and filtered by the prefix.
	var chk *history.Checker
	var prefix string
	var seen map[string]bool
	workers := append(d.containers("billing"), d.containers("shipping")...)
	readLogs := func() {
		var out bytes.Buffer
		for _, id := range workers {
			cmd := exec.Command("docker", "logs", id)
			cmd.Stdout, cmd.Stderr = &out, &out // whichever the logger writes to
			if cmd.Run() != nil {
				return
			}
		}
		sc := bufio.NewScanner(&out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if seen[line] || !strings.Contains(line, `"handled"`) {
				continue
			}
			seen[line] = true
			var h struct {
				Msg, Family, ID string
				Seq             uint64
				Copy            bool
			}
			if json.Unmarshal([]byte(line), &h) == nil && h.Msg == "handled" && strings.HasPrefix(h.ID, prefix) {
				if h.Copy { // the log line has no payload
					chk.DeliveredUnseenCopy(h.Family, h.ID, h.Seq)
				} else {
					chk.DeliveredUnseen(h.Family, h.ID, h.Seq)
				}
			}
		}
	}
	rows := []string{history.Header}
	scenarios := []struct {
		name  string
		fault func()
	}{
		{"docker kill a broker, start it after 10 s", func() {
			id := d.container("broker-2")
			d.docker("kill", id)
			time.Sleep(10 * time.Second)
			d.docker("start", id)
			current("broker-2 killed and started")
		}},
		{"a broker off the network for 15 s", func() {
			id := d.container("broker-3")
			network := d.docker("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}", id)
			d.docker("network", "disconnect", network, id)
			time.Sleep(15 * time.Second)
			d.docker("network", "connect", "--alias", "broker-3", network, id)
			current("broker-3 reconnected")
		}},
		{"a gateway restarted", func() {
			d.docker("restart", d.container("gateway-1"))
		}},
		// Longer than the families' ack_wait (30 s in configs/compose) and
		// than the bus's ping timeout (a ping every 2 s, 3 outstanding):
		// clients give the leader up, the others elect a new one, and the
		// deliveries its consumers handed out expire.
		{"docker pause the stream leader 35 s", func() {
			leader := streamLeader(t, js, "orders")
			d.pause(leader, 35*time.Second)
			current(leader + " (stream leader) paused and unpaused")
		}},
		// The stream leader, because every publish crosses its links (the
		// gateway's request in, the append out to both followers, their
		// acks in, the answer out); a follower's bad link is hidden by the
		// other follower's quorum and would test only its catch-up.
		{"bad network on the stream leader 15 s", func() {
			leader := streamLeader(t, js, "orders")
			bad := badNetwork{loss: 0.05, rate: "1mbit", latency: "200ms"}
			heal := d.degrade(leader, bad)
			time.Sleep(15 * time.Second)
			dropped, overlimits := heal()
			t.Logf("%s (stream leader), %v: %d packets dropped in, the bucket held packets back %d times", leader, bad, dropped, overlimits)
			if dropped == 0 {
				t.Errorf("the bad network on %s dropped no packet: the fault did not happen", leader)
			}
			current(leader + " (stream leader) network healed")
		}},
	}
	for i, sc := range scenarios {
		chk, prefix, seen = history.New(families...), fmt.Sprintf("s%d-", i+1), map[string]bool{}
		counter := newStatusCounter()
		d := drive{chk: chk, js: js, gateways: gateways, prefix: prefix, load: 5 * time.Second, quiet: 10 * time.Second,
			collect: readLogs, opts: append(httpClient(counter), sluice.WithRetry(30, 50*time.Millisecond, time.Second))}
		began := time.Now()
		r := d.run(t, func(l *publisher) {
			l.busy(t)
			sc.fault()
		})
		checkAnswers(t, sc.name, counter)
		rows = append(rows, judge(t, sc.name, r))
		t.Logf("%s: scenario took %v", sc.name, time.Since(began).Round(time.Second))
	}
	fmt.Println("\n" + strings.Join(rows, "\n"))
	t.Logf("demo test took %v", time.Since(start).Round(time.Second))
}

// demoBusSecured checks a demo broker's client port at addr: it asks for TLS
// and authentication and answers no plain client, refuses a TLS client
// without an nkey, and lets a worker's identity (billing) neither publish to
// the topic nor subscribe to every inbox, and keeps it in an account of its
// own.
func demoBusSecured(t *testing.T, addr, secrets string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the broker's INFO: %v", err)
	}
	var info struct {
		TLS  bool `json:"tls_required"`
		Auth bool `json:"auth_required"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "INFO ")), &info); err != nil || !info.TLS || !info.Auth {
		t.Fatalf("broker INFO should require TLS and auth: %v %q", err, line)
	}
	if _, err := conn.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err == nil {
		if rest, _ := r.ReadString('\n'); strings.HasPrefix(rest, "PONG") {
			t.Fatalf("a plain client was answered: %q", rest)
		}
	}

	// The brokers' other client URLs (container addresses) are not for the
	// host: only addr is tried.
	url, only := "nats://"+addr, nats.IgnoreDiscoveredServers()
	ca := nats.RootCAs(filepath.Join(secrets, "ca.pem"))
	if nc, err := nats.Connect(url, ca, only, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a TLS client without an nkey was let in")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("a TLS client without an nkey: want an authorization error, got %v", err)
	}

	id, err := sluice.Identity(filepath.Join(secrets, "billing.nk"))
	if err != nil {
		t.Fatal(err)
	}
	errs := harness.NewViolations()
	nc, err := nats.Connect(url, append(id, ca, only, nats.NoReconnect(), nats.ErrorHandler(errs.Handler()))...)
	if err != nil {
		t.Fatalf("the billing worker's identity: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish(sluice.Subject("orders"), []byte("not a worker's")); err != nil {
		t.Fatal(err)
	}
	errs.Wait(t, nc, "a worker's identity publishing to the topic")
	if _, err := nc.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	errs.Wait(t, nc, "a worker's identity subscribing to every inbox")
	// In an account of its own the worker reaches its families' imports
	// only: the streams' account info does not answer it (in the streams'
	// account it would).
	if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err == nil {
		t.Fatal("the billing worker's identity got the streams' account info: it is not in an account of its own")
	}
	t.Logf("bus secured: TLS and auth required, no nkey refused, a worker may not publish to orders nor read every inbox, and is in an account of its own")
}
