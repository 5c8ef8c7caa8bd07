package test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is a sluice process whose log is scanned for a pattern.
type proc struct {
	cmd    *exec.Cmd
	logs   *logBuffer
	exited chan error
}

// startNode starts `sluice args...` with env and returns it once its log
// matches ready; the submatch is returned too.
func startNode(t *testing.T, env []string, ready string, args ...string) (*proc, string) {
	t.Helper()
	cmd := command(t, args...)
	cmd.Env = append(cmd.Env, env...)
	return startCmd(t, cmd, regexp.MustCompile(ready))
}

// startCmd starts cmd and returns it once a line of its log matches
// ready, with the last submatch (or the whole match).
func startCmd(t *testing.T, cmd *exec.Cmd, ready *regexp.Regexp) (*proc, string) {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &logBuffer{}, exited: make(chan error, 1)}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.logs.add(sc.Text())
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[len(m)-1]:
				default:
				}
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	select {
	case s := <-found:
		return p, s
	case err := <-p.exited:
		t.Fatalf("%v exited: %v\n%s", cmd.Args, err, p.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%v: no %q in 60s\n%s", cmd.Args, ready, p.logs.String())
	}
	return nil, ""
}

func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("%v: exit %v\n%s", p.cmd.Args, err, p.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%v: no exit 30s after SIGTERM", p.cmd.Args)
	}
}

// TestSeparateNodes runs a broker, a gateway and one worker per family as
// separate processes connected only through the bus.
func TestSeparateNodes(t *testing.T) {
	brokerProc, natsURL := startNode(t, []string{"SLUICE_BROKER_LISTEN=127.0.0.1:-1", "SLUICE_BROKER_OPS_LISTEN=127.0.0.1:0"},
		`"msg":"broker ready".*"client_url":"(nats://[0-9.:]+)"`, "broker")
	opsRE := regexp.MustCompile(`"msg":"ops endpoints listening".*"addr":"([0-9.:]+)"`)
	var ops []string
	for deadline := time.Now().Add(10 * time.Second); ops == nil; time.Sleep(5 * time.Millisecond) {
		if ops = opsRE.FindStringSubmatch(brokerProc.logs.String()); ops == nil && time.Now().After(deadline) {
			t.Fatalf("broker ops endpoints not listening:\n%s", brokerProc.logs.String())
		}
	}
	for path, want := range map[string]string{"/readyz": `"ready":true`, "/metrics": `sluice_topic_messages{topic="orders"} 0`} {
		r, err := http.Get("http://" + ops[1] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("broker %s = %d, lacks %s", path, r.StatusCode, want)
		}
	}
	busEnv := []string{"SLUICE_BUS_URLS=" + natsURL}
	gw, addr := startNode(t, append(busEnv, "SLUICE_GATEWAY_LISTEN=127.0.0.1:0"),
		`"msg":"gateway listening".*"addr":"([0-9.:]+)"`, "gateway")
	var workers []*proc
	for _, fam := range []string{"billing", "shipping"} {
		w, _ := startNode(t, busEnv, `"msg":"(worker started)"`, "worker", "--topic", "orders", "--family", fam, "--demo-delay", "1ms")
		workers = append(workers, w)
	}

	resp, err := http.Post("http://"+addr+"/v1/topics/orders/messages", "application/json", strings.NewReader(`{"order":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := http.Get("http://" + addr + "/v1/topics/orders")
		if err != nil {
			t.Fatal(err)
		}
		var st struct{ Depth struct{ Messages uint64 } }
		err = json.NewDecoder(r.Body).Decode(&st)
		r.Body.Close()
		if err == nil && st.Depth.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not handled; worker logs:\n%s\n%s", workers[0].logs.String(), workers[1].logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, w := range workers {
		if !strings.Contains(w.logs.String(), `"msg":"handled"`) {
			t.Errorf("worker %v did not handle the message:\n%s", w.cmd.Args, w.logs.String())
		}
	}
	// Shutdown order: workers drain, gateway stops intake, broker last.
	for _, w := range workers {
		w.stop(t)
	}
	gw.stop(t)
	brokerProc.stop(t)
	if !strings.Contains(workers[0].logs.String(), "worker drained") {
		t.Errorf("worker did not drain on SIGTERM:\n%s", workers[0].logs.String())
	}
}
