package test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Issue 19, the command line a newcomer meets in the first hour.

// onFreePorts keeps a `sluice dev` off the ports of a `make run`.
var onFreePorts = []string{"SLUICE_GATEWAY_LISTEN=127.0.0.1:0", "SLUICE_BROKER_LISTEN=127.0.0.1:-1"}

// bounded runs cmd to its end, killed after a minute: a command that
// should refuse to start and starts instead fails the test, not hangs it.
func bounded(t *testing.T, cmd *exec.Cmd) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	err := cmd.Wait()
	if !killed.Stop() {
		t.Errorf("%v still running after a minute: killed\n%s", cmd.Args, out.String())
	}
	return out.Bytes(), err
}

// devProc is `sluice dev` started until its ready hint, with its output.
type devProc struct {
	*proc
	hint string // the lines from "Sluice is ready" to the blank line after
}

// startDev starts `sluice dev args...` with env on free ports and waits for
// its ready hint.
func startDev(t *testing.T, env []string, args ...string) *devProc {
	t.Helper()
	cmd := command(t, append([]string{"dev"}, args...)...)
	cmd.Env = append(cmd.Env, onFreePorts...)
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe() // a pipe: not a terminal
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &logBuffer{}, exited: make(chan error, 1)}
	hint := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var h []string
		for sc.Scan() {
			line := sc.Text()
			p.logs.add(line)
			switch {
			case strings.HasPrefix(line, "Sluice is ready"):
				h = []string{line}
			case h != nil && line == "":
				hint <- strings.Join(h, "\n")
				h = nil
			case h != nil:
				h = append(h, line)
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	select {
	case h := <-hint:
		return &devProc{proc: p, hint: h}
	case err := <-p.exited:
		t.Fatalf("sluice dev exited before ready: %v\n%s", err, p.logs.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("sluice dev not ready after 90s\n%s", p.logs.String())
	}
	return nil
}

// healthy runs `sluice health args...` until it exits 0 (the gateway is
// ready once it has read its topics on the bus, a moment after the hint).
func healthy(t *testing.T, args ...string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err := command(t, append([]string{"health"}, args...)...).CombinedOutput()
		if err == nil && strings.HasPrefix(string(out), "healthy") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %v: %v\n%s", args, err, out)
		}
	}
}

var hintURL = regexp.MustCompile(`curl -s .*?(https?://[0-9.:]+)/v1/topics/orders`)

// base is the gateway URL the hint gives.
func (d *devProc) base(t *testing.T) string {
	t.Helper()
	m := hintURL.FindStringSubmatch(d.hint)
	if m == nil {
		t.Fatalf("no topic view in the ready hint:\n%s", d.hint)
	}
	return m[1]
}

// TestFirstHourPlainDev: README's SLUICE_TOPICS_ORDERS_MAX_MESSAGES=500
// without --config sets the stream's limit; the hint is plain http; the
// logs carry no colour codes through a pipe; a misspelt SLUICE_* name is
// refused in one line naming it.
func TestFirstHourPlainDev(t *testing.T) {
	d := startDev(t, []string{"SLUICE_TOPICS_ORDERS_MAX_MESSAGES=500"})
	base := d.base(t)
	if !strings.HasPrefix(base, "http://") || strings.Contains(d.hint, "Authorization") || strings.Contains(d.hint, "--cacert") {
		t.Errorf("plain hint:\n%s", d.hint)
	}
	resp, err := http.Get(base + "/v1/topics/orders")
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		Limits struct {
			MaxMessages int64 `json:"max_messages"`
		} `json:"limits"`
	}
	err = json.NewDecoder(resp.Body).Decode(&view)
	resp.Body.Close()
	if err != nil || view.Limits.MaxMessages != 500 {
		t.Errorf("topic orders: max_messages %d (%v), want 500 from SLUICE_TOPICS_ORDERS_MAX_MESSAGES", view.Limits.MaxMessages, err)
	}
	healthy(t, "--url", base+"/readyz")
	d.stop(t)
	if logs := d.logs.String(); strings.Contains(logs, "\x1b[") {
		t.Errorf("logs to a pipe carry colour codes:\n%q", logs)
	}

	for _, env := range []string{"SLUICE_TOPICS_ORDERS_MAX_MESAGES=500", "SLUICE_GATEWAY_LISTNE=127.0.0.1:0"} {
		name, _, _ := strings.Cut(env, "=")
		for _, args := range [][]string{{"dev"}, {"dev", "--config", "configs/dev.yaml"}} {
			cmd := command(t, args...)
			cmd.Env = append(cmd.Env, onFreePorts...)
			cmd.Env = append(cmd.Env, env)
			out, err := bounded(t, cmd)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("%s %v: want exit 1, got %v\n%s", env, args, err, out)
			}
			line := strings.TrimSpace(string(out))
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "sluice: ") || !strings.Contains(line, name) || !strings.Contains(line, "unknown variable") {
				t.Errorf("%s %v: want one line naming the variable, got:\n%s", env, args, out)
			}
		}
	}
	cmd := command(t, "dev")
	cmd.Env = append(cmd.Env, onFreePorts...)
	cmd.Env = append(cmd.Env, "SLUICE_TOPICS_ORDERS_MAX_MESSAGES=lots")
	out, _ := bounded(t, cmd)
	for _, w := range []string{"SLUICE_TOPICS_ORDERS_MAX_MESSAGES", "topics.orders.max_messages", `"lots" is not a whole number`} {
		if !strings.Contains(string(out), w) {
			t.Errorf("bad value: output does not say %q:\n%s", w, out)
		}
	}
}

// TestFirstHourSecuredDev: with the gateway on HTTPS with the dev CA and
// API keys, the ready hint speaks https and names the CA and the key;
// `sluice health --ca-file` probes it (and fails without it); errors say
// "sluice: " once and quote "<key>" as it is.
func TestFirstHourSecuredDev(t *testing.T) {
	dir := t.TempDir()
	if out, err := command(t, "certs", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("certs: %v\n%s", err, out)
	}
	out, err := command(t, "keys", "new", "--tenant", "acme").Output()
	if err != nil {
		t.Fatalf("keys new: %v", err)
	}
	m := regexp.MustCompile(`(?m)^# (\S+)\n# config entry.*\n- id: (\S+)\n  hash: (\S+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("keys new printed:\n%s", out)
	}
	key, id, hash := m[1], m[2], m[3]
	ca, cert, certKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	cfg := filepath.Join(dir, "sluice.yaml")
	yaml := `
gateway:
  tls: {cert_file: ` + cert + `, key_file: ` + certKey + `}
producer:
  tls: {ca_file: ` + ca + `}
auth:
  mode: keys
  tenants:
    acme:
      keys: [{id: ` + id + `, hash: "` + hash + `"}]
      publish: [orders]
      read: ["*"]
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDev(t, nil, "--config", cfg)
	base := d.base(t)
	for _, w := range []string{"https://", "--cacert " + ca, `-H "Authorization: Bearer $SLUICE_API_KEY"`, "auth.mode is keys", "acme"} {
		if !strings.Contains(d.hint, w) {
			t.Errorf("ready hint does not say %q:\n%s", w, d.hint)
		}
	}
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("hint's URL %s is not https", base)
	}
	if strings.Contains(d.logs.String(), `"gateway": "http://`) {
		t.Errorf("ready log line says http:\n%s", d.logs.String())
	}

	// The hint's request, as a client with the CA and the key makes it.
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/topics/orders/messages", strings.NewReader(`{"id":42}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("the hint's post with the CA and key: %s\n%s", resp.Status, body)
	}

	healthy(t, "--url", base+"/readyz", "--ca-file", ca)
	out, err = command(t, "health", "--url", base+"/readyz").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "certificate") {
		t.Errorf("health without --ca-file against the dev CA: %v\n%s", err, out)
	}

	// Errors: one "sluice: ", no JSON escapes.
	for _, args := range [][]string{
		{"status", "--url", base, "--ca-file", ca},
		{"health", "--url", base + "/readyz", "--ca-file", filepath.Join(dir, "nope.pem")},
	} {
		cmd := command(t, args...)
		cmd.Env = append(cmd.Env, "SLUICE_API_KEY=")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%v succeeded:\n%s", args, out)
			continue
		}
		s := string(out)
		t.Logf("%v: %s", args, s)
		if !strings.Contains(s, "sluice: ") || strings.Contains(s, "sluice: sluice:") || strings.Contains(s, `\u003c`) || strings.Contains(s, `\u003e`) {
			t.Errorf("%v: error line:\n%s", args, s)
		}
	}
	d.stop(t)
	if strings.Contains(d.logs.String(), "\x1b[") {
		t.Errorf("logs to a pipe carry colour codes")
	}
}

// TestFirstHourCertsTwice: a second `sluice certs` (make certs) keeps the
// files and exits 0; some files missing, or other --hosts, is an error.
func TestFirstHourCertsTwice(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if out, err := command(t, "certs", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("certs: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	out, err := command(t, "certs", "--out", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kept") {
		t.Fatalf("second certs: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(after) != string(before) {
		t.Fatal("second certs replaced ca.pem")
	}
	if out, err := command(t, "certs", "--out", dir, "--hosts", "other").CombinedOutput(); err == nil {
		t.Errorf("certs --hosts over kept files succeeded:\n%s", out)
	}
	if err := os.Remove(filepath.Join(dir, "node.pem")); err != nil {
		t.Fatal(err)
	}
	out, err = command(t, "certs", "--out", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--force") {
		t.Errorf("certs with node.pem missing: %v\n%s", err, out)
	}
}

// TestFirstHourPlanReplicas: `sluice plan --replicas 2` speaks of R2, not
// of the R1 its latency figure was measured at.
func TestFirstHourPlanReplicas(t *testing.T) {
	for _, p99 := range []string{"50ms", "10ms"} {
		out, err := command(t, "plan", "--rate", "2000", "--replicas", "2", "--p99", p99).CombinedOutput()
		if err != nil {
			t.Fatalf("plan: %v\n%s", err, out)
		}
		if regexp.MustCompile(`\bR1\b`).Match(out) {
			t.Errorf("plan --replicas 2 --p99 %s speaks of R1:\n%s", p99, out)
		}
		if !strings.Contains(string(out), "R2") {
			t.Errorf("plan --replicas 2 --p99 %s never says R2:\n%s", p99, out)
		}
	}
}

// TestFirstHourMakeRunSaysWhatItDoes: make run (through make build) says,
// before the build, that it builds and that the first build takes minutes,
// and says when it starts the node (make -n: nothing is built here).
func TestFirstHourMakeRunSaysWhatItDoes(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	cmd := exec.Command("make", "-n", "run")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n run: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	build := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "go build") && !strings.HasPrefix(l, "echo") })
	say := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "echo") && strings.Contains(l, "first build") })
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "echo") && strings.Contains(l, "starting") })
	run := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "sluice dev") && !strings.HasPrefix(l, "echo") })
	if build < 0 || say < 0 || say > build || start < 0 || run < 0 || start > run {
		t.Fatalf("make run does not say what it does before it does it:\n%s", out)
	}
}
