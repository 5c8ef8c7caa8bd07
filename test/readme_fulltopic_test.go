package test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReadmeFullTopicProducerRidesItOut is README's full-topic scenario as
// a newcomer runs it: `sluice dev --topic-max-messages 5 --demo-delay 2s`,
// left idle for a while, then `sluice produce --count 20` (twice, idle
// between) with the producer's default retry policy (30 s deadline, 0.2
// retry budget). The topic holds 5 and its families take 2 s for them, so
// most messages are refused with 429 at first; every one must be acked in
// the end, none failed. Before issue 19 an idle topic had no drain rate,
// refusals advertised Retry-After: 60 and RateLimit t=60, and the producer
// failed 15 of 20 messages at once.
func TestReadmeFullTopicProducerRidesItOut(t *testing.T) {
	_, addr := startNode(t, nil, `http://(127\.0\.0\.1:\d+)/v1/topics`, "dev", "--topic-max-messages", "5", "--demo-delay", "2s",
		"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1")

	// Twice: on a fresh topic (no drain rate measured yet) and again
	// after an idle spell following real work (the rate the families last
	// worked at, not an average decayed by the idle readings).
	for round := 1; round <= 2; round++ {
		// Idle, as a reader is between starting the stack and producing:
		// the gateway reads the empty topic every admission_refresh.
		time.Sleep(5 * time.Second)
		before := topicFullRefusals(t, addr)
		produceREADME(t, addr, round)
		// The scenario is the one README promises: the topic was full and
		// the gateway refused while the producer waited it out.
		if n := topicFullRefusals(t, addr) - before; n == 0 {
			t.Errorf("round %d: no 429 topic-full refusals: the scenario did not fill the topic", round)
		} else {
			t.Logf("round %d: %d topic-full refusals ridden out", round, n)
		}
	}
}

// produceREADME runs `sluice produce --topic orders --count 20` with the
// default producer config against the gateway at addr and wants every
// message acked.
func produceREADME(t *testing.T, addr string, round int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prod := exec.CommandContext(ctx, sluiceBin, "produce", "--topic", "orders", "--count", "20", "--gateway", "http://"+addr)
	prod.Dir = repoRoot
	out, err := prod.Output()
	var stderrText string
	if ee, ok := err.(*exec.ExitError); ok {
		stderrText = string(ee.Stderr)
	}
	var rep struct {
		Sent, Acked, Duplicates, Unknown, Failed int
		Seconds                                  float64
	}
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("round %d: produce report %q: %v (exit: %v)\n%s", round, out, jerr, err, stderrText)
	}
	t.Logf("round %d: produce report: %s", round, strings.TrimSpace(string(out)))
	if err != nil || rep.Acked != 20 || rep.Failed != 0 || rep.Unknown != 0 {
		t.Fatalf("round %d of README's scenario: %+v, exit %v; want acked 20, failed 0\n%s", round, rep, err, stderrText)
	}
}

// topicFullRefusals is the gateway's count of 429 topic-full refusals for
// orders: for want of admission credit or by the stream itself.
func topicFullRefusals(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "sluice_gateway_refusals_total{") || !strings.Contains(line, `topic="orders"`) {
			continue
		}
		if strings.Contains(line, `reason="admission"`) || strings.Contains(line, `reason="topic_full"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
	}
	return n
}
