package test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/testkit/harness"
)

// readmeCurls returns the curl command lines of README's Quickstart section.
func readmeCurls(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(repoRoot + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Quickstart\n")
	if !ok {
		t.Fatal("README has no Quickstart section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var curls []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "curl ") {
			curls = append(curls, line)
		}
	}
	if len(curls) < 2 {
		t.Fatalf("README quickstart shows %d curl commands, want the post and the topic view", len(curls))
	}
	return curls
}

// logBuffer collects a process's output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) add(s string) { l.mu.Lock(); l.b.WriteString(s + "\n"); l.mu.Unlock() }
func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestQuickstart runs `sluice dev --config configs/dev.yaml` as `make run`
// does (on free ports and a temporary store) and runs README's curl lines.
func TestQuickstart(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("the quickstart test needs curl, as README does")
	}
	curls := readmeCurls(t)
	start := time.Now()
	dev, addr := startNode(t, []string{"SLUICE_GATEWAY_LISTEN=127.0.0.1:0", "SLUICE_BROKER_LISTEN=127.0.0.1:-1"},
		`curl -i -X POST http://(127\.0\.0\.1:\d+)/`, "dev", "--config", "configs/dev.yaml")
	logs := dev.logs
	t.Logf("sluice dev ready %v after exec", time.Since(start).Round(time.Millisecond))

	sh := func(line string) string {
		line = strings.ReplaceAll(line, "localhost:8080", addr)
		out, err := exec.Command("sh", "-c", line).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		return string(out)
	}
	posted := time.Now()
	out := sh(curls[0])
	if !strings.Contains(out, "HTTP/1.1 202 Accepted") ||
		!strings.Contains(out, `{"topic":"orders","seq":1,"id":"order-42","duplicate":false}`) {
		t.Fatalf("README's post answered:\n%s", out)
	}
	// Both demo families handle it; the topic empties.
	var depth struct {
		Depth    struct{ Messages uint64 }
		Families []struct{ Name string }
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		view := sh(curls[1])
		if err := json.Unmarshal([]byte(view), &depth); err != nil {
			t.Fatalf("README's topic view: %v\n%s", err, view)
		}
		if depth.Depth.Messages == 0 && strings.Count(logs.String(), `"id": "order-42"`) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("message not handled by both families\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("posted to acked by both families (polled) in %v", time.Since(posted).Round(time.Millisecond))
	for _, fam := range []string{`"family": "billing"`, `"family": "shipping"`} {
		if !strings.Contains(logs.String(), fam) {
			t.Errorf("no demo log line for %s", fam)
		}
	}
	if len(depth.Families) != 2 {
		t.Errorf("topic view shows %d families", len(depth.Families))
	}
	// The same key again: the original receipt.
	if out := sh(curls[0]); !strings.Contains(out, `"seq":1,"id":"order-42","duplicate":true`) {
		t.Fatalf("repeated post answered:\n%s", out)
	}
	// The families are younger than the duplicate window and the original
	// was handled (gone from the topic): the gateway cannot tell whether
	// they took it, so the duplicate is also copied to them (README,
	// Delivery guarantees), and the topic is empty again once they have.
	var metrics []byte
	harness.Eventually(t, 20*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		metrics, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(metrics), `sluice_topic_messages{topic="orders"} 0`)
	}, "the topic should be empty again")
	for _, want := range []string{
		`sluice_gateway_messages_total{outcome="accepted",topic="orders"} 1`,
		`sluice_gateway_messages_total{outcome="duplicate",topic="orders"} 1`,
		`sluice_worker_messages_total{family="billing",outcome="acked",topic="orders"}`,
		`sluice_gateway_publish_duration_seconds_count{topic="orders"} 2`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// SIGTERM: a clean, prompt exit.
	stopAt := time.Now()
	dev.stop(t)
	t.Logf("stopped %v after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
}
