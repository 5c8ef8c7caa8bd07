package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestProcessClusterSurvivesSIGKILL runs `make cluster`'s script (3 brokers,
// 2 gateways, demo workers as processes, on shifted ports), kills one broker
// with SIGKILL under load, and checks that every accepted message reaches
// both families.
func TestProcessClusterSurvivesSIGKILL(t *testing.T) {
	runDir := t.TempDir()
	script := func(verb string) *exec.Cmd {
		cmd := exec.Command("deploy/cluster.sh", verb)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "BIN="+sluiceBin, "RUN_DIR="+runDir, "PORT_OFFSET=500")
		return cmd
	}
	if out, err := script("up").CombinedOutput(); err != nil {
		_ = script("down").Run()
		t.Fatalf("cluster up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := script("down").CombinedOutput(); err != nil {
			t.Errorf("cluster down: %v\n%s", err, out)
		}
	})
	p, err := sluice.NewProducer([]string{"http://127.0.0.1:8580", "http://127.0.0.1:8581"},
		sluice.WithRetry(30, 50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := p.Publish(ctx, "orders", []byte("x"), sluice.WithID(fmt.Sprintf("pc-%d", i)))
			cancel()
			if err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	publish(0, 20)
	pid, err := os.ReadFile(filepath.Join(runDir, "pids", "broker-1.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(string(pid), &n)
	if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	publish(20, 40)
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for _, fam := range []string{"billing", "shipping"} {
			var logs strings.Builder
			for i := 1; i <= 2; i++ {
				b, _ := os.ReadFile(filepath.Join(runDir, "logs", fmt.Sprintf("worker-%s-%d.log", fam, i)))
				logs.Write(b)
			}
			for i := range 40 {
				if !strings.Contains(logs.String(), fmt.Sprintf(`"id":"pc-%d"`, i)) {
					missing++
				}
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries missing after a broker's SIGKILL", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
