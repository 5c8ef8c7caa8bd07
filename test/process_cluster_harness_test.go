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
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// processCluster is `make cluster` without demo workers: the test's own SDK
// readers record every delivery.
type processCluster struct {
	t      *testing.T
	runDir string
	offset int        // PORT_OFFSET: brokers on 4222+offset.., gateways on 8080+offset..
	nc     *nats.Conn // the test's connection to the brokers
	js     jetstream.JetStream
	// readers are the test's workers, one per family.
	readers *readers
}

func (p *processCluster) script(args ...string) *exec.Cmd {
	cmd := exec.Command("deploy/cluster.sh", args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "BIN="+sluiceBin, "RUN_DIR="+p.runDir, "PORT_OFFSET="+strconv.Itoa(p.offset), "WORKERS=0")
	return cmd
}

func (p *processCluster) do(args ...string) {
	p.t.Helper()
	p.doEnv(nil, args...)
}

// doEnv runs the script with env added to its environment (CONFIG=...).
func (p *processCluster) doEnv(env []string, args ...string) {
	p.t.Helper()
	cmd := p.script(args...)
	cmd.Env = append(cmd.Env, env...)
	if out, err := cmd.CombinedOutput(); err != nil {
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

// gateways is the URLs of the cluster's two gateways.
func (p *processCluster) gateways() []string {
	return []string{fmt.Sprintf("http://127.0.0.1:%d", 8080+p.offset), fmt.Sprintf("http://127.0.0.1:%d", 8081+p.offset)}
}

// startProcessCluster runs deploy/cluster.sh up with ports shifted by
// offset and no demo workers, and starts the test's readers on it.
func startProcessCluster(t *testing.T, offset int, chk *history.Checker, slowShipping bool) *processCluster {
	p := &processCluster{t: t, runDir: t.TempDir(), offset: offset}
	if out, err := p.script("up").CombinedOutput(); err != nil {
		_ = p.script("down").Run()
		t.Fatalf("cluster up: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = p.script("down").Run() })
	var urls []string
	for i := range 3 {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", 4222+offset+i))
	}
	// As the `sluice worker` command connects: moving off a leaving broker.
	nc, err := bus.Connect(urls, 5*time.Second, "test-readers", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p.nc = nc
	p.js, _ = jetstream.New(nc)
	slow := time.Duration(0)
	if slowShipping {
		slow = 20 * time.Millisecond
	}
	p.readers = startReaders(t, nc, chk, 8, slow)
	return p
}

// diagnose describes the topic's stream and families, for a test that
// finds deliveries missing.
func (p *processCluster) diagnose() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil {
		return err.Error()
	}
	out := fmt.Sprintf("stream: %+v cluster: %+v", s.CachedInfo().State, s.CachedInfo().Cluster)
	for _, fam := range families {
		if c, err := s.Consumer(ctx, fam); err == nil {
			ci := c.CachedInfo()
			out += fmt.Sprintf("\n%s: delivered %+v ack floor %+v ack pending %d redelivered %d pending %d waiting %d",
				fam, ci.Delivered, ci.AckFloor, ci.NumAckPending, ci.NumRedelivered, ci.NumPending, ci.NumWaiting)
		}
	}
	return out
}
