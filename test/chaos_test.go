//go:build chaos

package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/checker"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// processCluster is `make cluster` without demo workers: the test's own SDK
// readers record every delivery.
type processCluster struct {
	t      *testing.T
	runDir string
	js     jetstream.JetStream
}

func (p *processCluster) script(args ...string) *exec.Cmd {
	cmd := exec.Command("deploy/cluster.sh", args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "BIN="+sluiceBin, "RUN_DIR="+p.runDir, "PORT_OFFSET=700", "WORKERS=0")
	return cmd
}

func (p *processCluster) do(args ...string) {
	p.t.Helper()
	if out, err := p.script(args...).CombinedOutput(); err != nil {
		p.t.Fatalf("cluster %v: %v\n%s", args, err, out)
	}
}

func (p *processCluster) signal(name string, sig syscall.Signal) {
	p.t.Helper()
	out, err := p.script("pid", name).Output()
	if err != nil {
		p.t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if err := syscall.Kill(pid, sig); err != nil {
		p.t.Fatalf("%s %v: %v", name, sig, err)
	}
}

// leader is the broker process leading the topic's stream.
func (p *processCluster) leader() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil || s.CachedInfo().Cluster == nil {
		p.t.Fatalf("no stream leader: %v", err)
	}
	return s.CachedInfo().Cluster.Leader
}

const brokerURLs = "nats://127.0.0.1:4922,nats://127.0.0.1:4923,nats://127.0.0.1:4924"

func startProcessCluster(t *testing.T, chk *checker.Checker, slowShipping bool) *processCluster {
	p := &processCluster{t: t, runDir: t.TempDir()}
	if out, err := p.script("up").CombinedOutput(); err != nil {
		_ = p.script("down").Run()
		t.Fatalf("cluster up: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = p.script("down").Run() })
	nc, err := nats.Connect(brokerURLs, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p.js, _ = jetstream.New(nc)
	slow := time.Duration(0)
	if slowShipping {
		slow = 20 * time.Millisecond
	}
	startReaders(t, nc, chk, 8, slow)
	return p
}

// TestChaos (make chaos) runs the fault scenarios against the process
// cluster with real SIGKILL and SIGSTOP, for minutes, and prints the
// checker table; each scenario must show lost = 0, unexpected = 0 and
// stored twice = 0.
func TestChaos(t *testing.T) {
	settle := 10 * time.Second
	gateways := []string{"http://127.0.0.1:8780", "http://127.0.0.1:8781"}
	scenarios := []struct {
		name  string
		slow  bool
		fault func(p *processCluster)
	}{
		{"SIGKILL a broker, restart after 10 s", false, func(p *processCluster) {
			p.signal("broker-2", syscall.SIGKILL)
			time.Sleep(10 * time.Second)
			p.do("restart", "broker-2")
		}},
		{"SIGKILL the stream leader, 3 times", false, func(p *processCluster) {
			for range 3 {
				l := p.leader()
				p.signal(l, syscall.SIGKILL)
				time.Sleep(5 * time.Second)
				p.do("restart", l)
				time.Sleep(5 * time.Second)
			}
		}},
		{"SIGSTOP a broker for 15 s", false, func(p *processCluster) {
			p.signal("broker-3", syscall.SIGSTOP)
			time.Sleep(15 * time.Second)
			p.signal("broker-3", syscall.SIGCONT)
		}},
		{"SIGKILL all brokers, restart", false, func(p *processCluster) {
			for i := 1; i <= 3; i++ {
				p.signal(fmt.Sprintf("broker-%d", i), syscall.SIGKILL)
			}
			time.Sleep(3 * time.Second)
			for i := 1; i <= 3; i++ {
				cmd := p.script("restart", fmt.Sprintf("broker-%d", i))
				cmd.Env = append(cmd.Env, "WAIT=0") // a lone broker waits for a quorum
				if out, err := cmd.CombinedOutput(); err != nil {
					p.t.Fatalf("restart: %v\n%s", err, out)
				}
			}
		}},
		{"SIGKILL a gateway mid-load, restart", false, func(p *processCluster) {
			p.signal("gateway-1", syscall.SIGKILL)
			time.Sleep(5 * time.Second)
			p.do("restart", "gateway-1")
		}},
		{"slow family while another is fast", true, func(p *processCluster) {
			time.Sleep(20 * time.Second)
		}},
	}
	rows := []string{checker.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			chk := checker.New("billing", "shipping")
			p := startProcessCluster(t, chk, sc.slow)
			r := drive(t, chk, gateways, settle, func() { sc.fault(p) })
			rows = append(rows, r.Row(sc.name))
			t.Log(r.Row(sc.name))
			if r.Acked == 0 || r.Lost != 0 || r.Unexpected != 0 || r.StoredTwice != 0 {
				t.Errorf("%s: %+v", sc.name, r)
			}
		})
	}
	fmt.Println("\n" + strings.Join(rows, "\n"))
}
