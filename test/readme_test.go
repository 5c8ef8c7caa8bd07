package test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/sluicebus/sluice/internal/testkit/harness"
)

// notRun are README's shell command lines that a test cannot run, each
// with the reason. Every other shell line must be run by
// TestReadmeExamples: a new command in README fails the test until it is
// run there or listed here.
var notRun = map[string]string{
	"make run":       "serves on the fixed port 8080 until stopped; TestQuickstart runs its command (sluice dev --config configs/dev.yaml) on free ports",
	"make test":      "the whole suite, this test included",
	"make demo":      "Docker: builds the image and starts the compose cluster; make demo-test (build tag demo) is that test",
	"make demo-test": "Docker: the compose cluster's fault test itself (test/demo_test.go, build tag demo)",
	"make demo-down": "Docker: removes the compose cluster",
}

// readmeBlock is one fenced code block of README.md.
type readmeBlock struct {
	lang string
	line int // of the opening fence
	text string
}

func (b readmeBlock) name() string { return fmt.Sprintf("%s_line_%d", b.lang, b.line) }

// readmeBlocks returns README's fenced code blocks in order.
func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	path := filepath.Join(repoRoot, "README.md")
	if p := os.Getenv("README_UNDER_TEST"); p != "" {
		path = p // a changed copy, to see the test catch a broken example
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []readmeBlock
	var cur *readmeBlock
	for i, line := range strings.Split(string(raw), "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &readmeBlock{lang: strings.Fields(line[3:] + " text")[0], line: i + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	if cur != nil {
		t.Fatalf("README: the block opened at line %d is never closed", cur.line)
	}
	return blocks
}

// shellLines are a shell block's command lines, continuations joined and
// comments cut; in a console block, the lines after a "$ " prompt.
func shellLines(lang, text string) []string {
	var lines []string
	cont := ""
	for _, l := range strings.Split(text, "\n") {
		if lang == "console" && cont == "" {
			var ok bool
			if l, ok = strings.CutPrefix(l, "$ "); !ok {
				continue // output
			}
		}
		if strings.HasSuffix(l, `\`) {
			cont += strings.TrimSuffix(l, `\`) + " "
			continue
		}
		l = cont + l
		cont = ""
		if i := strings.Index(l, " #"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// readmeStack is the test stack README's examples run against: a broker
// with the dev topology and two gateways, standing in for 127.0.0.1:8080,
// :8081 and :4222.
type readmeStack struct {
	natsURL  string
	gateways [2]string // http://host:port
}

func (s readmeStack) substitute(text string) string {
	return strings.NewReplacer(
		"http://127.0.0.1:8080", s.gateways[0], "http://127.0.0.1:8081", s.gateways[1],
		"localhost:8080", strings.TrimPrefix(s.gateways[0], "http://"),
		"127.0.0.1:8080", strings.TrimPrefix(s.gateways[0], "http://"),
		"nats://127.0.0.1:4222", s.natsURL,
	).Replace(text)
}

// TestReadmeExamples runs README's examples: every Go block is a complete
// file, compiled (and vetted) in a module of its own that uses this
// repository through a replace directive, and each `package main` runs
// against a test stack; every shell command runs against the stack (curl
// at the stack's gateway, sluice commands with the built binary, `sluice
// dev` started on free ports until ready and stopped) unless notRun says
// why it cannot; every YAML block is a configuration fragment the loader
// takes (its placeholders filled in: nkeys, key hashes, certificates and
// seed files made for it), and one with a broker section starts a broker;
// every JSON block parses.
func TestReadmeExamples(t *testing.T) {
	blocks := readmeBlocks(t)
	topics := harness.Topics(harness.Topic("orders", "billing", "shipping"))
	b := harness.StartBroker(t, topics)
	var st readmeStack
	st.natsURL = b.ClientURL()
	for i := range st.gateways {
		_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), harness.Connect(t, b))
		st.gateways[i] = srv.URL
	}

	counts := map[string]int{}
	var goBlocks []readmeBlock
	for _, blk := range blocks {
		switch blk.lang {
		case "go":
			goBlocks = append(goBlocks, blk)
		case "sh", "bash", "console", "shell":
			for _, line := range shellLines(blk.lang, blk.text) {
				if why, ok := notRun[line]; ok {
					t.Logf("README line %d: %q not run: %s", blk.line, line, why)
					counts["shell lines not run (notRun)"]++
					continue
				}
				counts["shell lines run"]++
				t.Run(blk.name()+"/"+line, func(t *testing.T) { runShellLine(t, st, line) })
			}
		case "yaml", "yml":
			counts["yaml blocks loaded"]++
			t.Run(blk.name(), func(t *testing.T) { loadYAMLBlock(t, blk.text) })
		case "json":
			counts["json blocks parsed"]++
			if !json.Valid([]byte(blk.text)) {
				t.Errorf("README line %d: the JSON block does not parse:\n%s", blk.line, blk.text)
			}
		case "text":
			counts["untagged blocks (diagrams, not run)"]++
		default:
			t.Errorf("README line %d: a %q block: tag it go, sh, yaml or json (and run it here), or leave it untagged for a diagram", blk.line, blk.lang)
		}
	}
	counts["go blocks compiled"] = len(goBlocks)
	t.Run("go", func(t *testing.T) { counts["go programs run"] = runGoBlocks(t, st, goBlocks) })
	t.Logf("README: %d blocks; %v", len(blocks), counts)
}

// runShellLine runs one command line of README against the stack.
func runShellLine(t *testing.T, st readmeStack, line string) {
	fields := strings.Fields(line)
	switch {
	case fields[0] == "curl":
		out, err := exec.Command("sh", "-c", st.substitute(line)).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		if strings.Contains(line, "-X POST") && !strings.Contains(string(out), " 202 ") {
			t.Fatalf("%s answered:\n%s", line, out)
		}
		t.Logf("%s\n%s", line, out)
	case sluiceLine.MatchString(line):
		// Leading NAME=value words are the command's environment.
		var env []string
		for strings.Contains(fields[0], "=") {
			env, fields = append(env, fields[0]), fields[1:]
		}
		args := fields[1:]
		switch args[0] {
		case "dev":
			runDevUntilReady(t, env, args)
			return
		case "dlq":
			args = append(args, "--gateway", st.gateways[0])
		case "status", "health":
			args = append(args, "--url", st.gateways[0])
		default:
			t.Fatalf("README runs `sluice %s`: teach TestReadmeExamples how (or list the line in notRun with the reason)", args[0])
		}
		cmd := exec.Command(sluiceBin, args...)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		t.Logf("%s\n%s", line, out)
	default:
		t.Fatalf("README shell line %q is neither run by TestReadmeExamples nor in notRun with a reason", line)
	}
}

// sluiceLine is a sluice command, after environment assignments if any.
var sluiceLine = regexp.MustCompile(`^([A-Z][A-Z0-9_]*=\S* +)*(\./bin/)?sluice +\S`)

// devReady is the hint `sluice dev` prints once it serves.
var devReady = regexp.MustCompile(`curl .*https?://127\.0\.0\.1:\d+/v1/topics`)

// runDevUntilReady starts `sluice dev` with README's environment and flags
// on free ports and a fresh store, waits until it is ready, and stops it
// with SIGTERM.
func runDevUntilReady(t *testing.T, env, args []string) {
	cmd := exec.Command(sluiceBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(append(os.Environ(), env...), "SLUICE_GATEWAY_LISTEN=127.0.0.1:0", "SLUICE_BROKER_LISTEN=127.0.0.1:-1",
		"SLUICE_BROKER_DATA_DIR="+t.TempDir())
	waitLogLine(t, cmd, devReady)
}

// waitLogLine starts cmd, waits for a line of its stderr matching re,
// then stops it with SIGTERM and wants a clean exit.
func waitLogLine(t *testing.T, cmd *exec.Cmd, re *regexp.Regexp) {
	t.Helper()
	p, _ := startCmd(t, cmd, re)
	t.Logf("%v: ready", cmd.Args[1:])
	p.stop(t)
}

// runGoBlocks compiles every Go block in one module of their own (each a
// package of its own, using this repository through a replace directive),
// vets them, runs the main packages against the stack, and returns how
// many it ran.
func runGoBlocks(t *testing.T, st readmeStack, blocks []readmeBlock) int {
	t.Helper()
	dir := t.TempDir()
	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	gomod := regexp.MustCompile(`(?m)^module .*$`).ReplaceAllString(string(mod), "module example.com/readme") +
		"\nrequire github.com/sluicebus/sluice v0.0.0\n\nreplace github.com/sluicebus/sluice => " + repoRoot + "\n"
	sum, err := os.ReadFile(filepath.Join(repoRoot, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "go.mod"), []byte(gomod))
	write(filepath.Join(dir, "go.sum"), sum)
	var mains []readmeBlock
	for _, blk := range blocks {
		if !regexp.MustCompile(`(?m)^package \w+$`).MatchString(blk.text) {
			t.Errorf("README line %d: a Go block must be a complete file (package clause and imports), so that it compiles as shown", blk.line)
			continue
		}
		write(filepath.Join(dir, blk.name(), "example.go"), []byte(st.substitute(blk.text)))
		if strings.Contains(blk.text, "package main\n") {
			mains = append(mains, blk)
		}
	}
	goCmd := func(ctx context.Context, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		// Offline: every module comes from this repository's go.sum and the module cache.
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOPROXY=off", "GOTOOLCHAIN=local")
		return cmd
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := goCmd(ctx, "vet", "./...").CombinedOutput(); err != nil {
		t.Fatalf("README's Go blocks do not compile or vet cleanly (line numbers: the directory names): %v\n%s", err, out)
	}
	for _, blk := range mains {
		bin := filepath.Join(dir, "bin", blk.name())
		if out, err := goCmd(ctx, "build", "-o", bin, "./"+blk.name()).CombinedOutput(); err != nil {
			t.Fatalf("README line %d: build: %v\n%s", blk.line, err, out)
		}
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(rctx, bin).CombinedOutput()
		rcancel()
		if err != nil {
			t.Fatalf("README line %d: the program failed: %v\n%s", blk.line, err, out)
		}
		t.Logf("README line %d: the program ran:\n%s", blk.line, out)
		if strings.Contains(blk.text, `sluice.NewWorker(`) && !strings.Contains(string(out), "handled:") {
			t.Errorf("README line %d: the worker handled nothing against a stack with no other worker:\n%s", blk.line, out)
		}
	}
	return len(mains)
}

// yamlPlaceholder are README's elisions in configuration examples.
var (
	nkeyPlaceholder = regexp.MustCompile(`\bU[A-Z0-9]{3}\.\.\.`)
	hashPlaceholder = regexp.MustCompile(`sha256:[0-9a-f]*\.\.\.`)
)

// loadYAMLBlock fills in a configuration fragment's placeholders, makes
// the files it names (`sluice certs --out certs`, `sluice nkey --out
// gateway.nk`, as README's set-up says), and loads it with the config
// loader through `sluice plan` (every section decoded, unknown keys
// refused; gateway and bus sections validated); one with a broker section
// must also start a broker.
func loadYAMLBlock(t *testing.T, text string) {
	dir := t.TempDir()
	text = nkeyPlaceholder.ReplaceAllStringFunc(text, func(string) string {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		return pub
	})
	text = hashPlaceholder.ReplaceAllStringFunc(text, func(string) string {
		sum := sha256.Sum256([]byte(rand.Text()))
		return "sha256:" + hex.EncodeToString(sum[:])
	})
	if regexp.MustCompile(`[A-Za-z0-9]\.\.\.`).MatchString(text) {
		t.Fatalf("a placeholder the test cannot fill in:\n%s", text)
	}
	run := func(args ...string) string {
		cmd := exec.Command(sluiceBin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sluice %s: %v\n%s\nconfig:\n%s", strings.Join(args, " "), err, out, text)
		}
		return string(out)
	}
	run("certs", "--out", "certs")
	run("nkey", "--out", "gateway.nk")
	if err := os.WriteFile(filepath.Join(dir, "sluice.yaml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	run("plan", "--config", "sluice.yaml", "--rate", "100")
	if regexp.MustCompile(`(?m)^broker:`).MatchString(text) {
		cmd := exec.Command(sluiceBin, "broker", "--config", "sluice.yaml")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SLUICE_BROKER_LISTEN=127.0.0.1:-1", "SLUICE_BROKER_DATA_DIR="+t.TempDir())
		waitLogLine(t, cmd, regexp.MustCompile(`broker ready`))
	}
}
