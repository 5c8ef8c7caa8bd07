package gateway

// Fuzz targets for the gateway's ingest edge. Plain `go test` runs their
// seeds (f.Add and testdata/fuzz/<FuzzName>/) as regular tests; `make fuzz`
// fuzzes each in turn, or one at a time:
//
//	go test -run '^$' -fuzz '^FuzzPublish$' -fuzztime 60s ./gateway/
//
// FuzzParseBatch needs no bus. FuzzPublish and FuzzPublishBatch start one
// embedded broker (in a process of its own, see TestFuzzBroker) and one
// gateway per fuzz process, before f.Fuzz, and serve every input through
// the gateway's whole handler chain in-process, with no HTTP round trip:
// the most executions per second. Each input becomes the request
// net/http's server would hand the handler: it is written out as HTTP/1.1
// and read back with http.ReadRequest, after the checks the server makes
// before any handler runs (request target, header names and values, header
// size), so the fuzzer never reports a request a real server would not
// pass on.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

const (
	// fuzzTopic is the fuzzed gateway's only topic.
	fuzzTopic = "fuzz"
	// fuzzMaxMessageSize is small, so that the fuzzer reaches the limit
	// with short inputs.
	fuzzMaxMessageSize = 128
	// fuzzBatchLines is above atomicMinR1, so a batch of valid lines
	// reaches the group commit's atomic batches.
	fuzzBatchLines = 40
	// fuzzPurgeEvery: the topic is purged every so many inputs, so the
	// fuzzer never fills it (a full topic only answers 429).
	fuzzPurgeEvery = 5000
)

func fuzzTopicDef() topology.Topic {
	t := topology.DefaultTopic()
	t.Name = fuzzTopic
	t.MaxMessageSize = fuzzMaxMessageSize
	t.MaxMessages = 1_000_000
	f := topology.DefaultFamily()
	f.Name = "sink"
	t.Families = map[string]topology.Family{f.Name: f}
	return t
}

func fuzzConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Topics = map[string]topology.Topic{fuzzTopic: fuzzTopicDef()}
	cfg.MaxBatchLines = fuzzBatchLines
	cfg.MaxBatchBytes = 256 << 10
	cfg.MaxLineBytes = 8 << 10
	// Background work between inputs is coverage noise to the fuzzer:
	// the control loops run once at the start, then rarely.
	cfg.AdmissionRefresh = 30 * time.Second
	cfg.HeartbeatInterval = 30 * time.Second
	cfg.Alarms.Interval = 30 * time.Second
	cfg.Alarms.Hold = 30 * time.Second
	return cfg
}

// errorLog keeps the gateway's error lines (a recovered handler panic is
// logged with its stack) for the failure message of the input that caused
// them.
type errorLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *errorLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *errorLog) Sync() error { return nil }

func (l *errorLog) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.buf.String()
	l.buf.Reset()
	return s
}

// fuzzGateway is a gateway on an embedded broker, shared by the inputs of
// one fuzz process.
type fuzzGateway struct {
	g     *Gateway
	js    jetstream.JetStream
	log   *errorLog
	execs atomic.Int64
}

// fuzzDataDir is the broker's store: on tmpfs when there is one, since the
// broker fsyncs every write and a disk's fsync would hold the fuzzer to a
// few hundred inputs per second.
func fuzzDataDir(f *testing.F) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "sluice-fuzz-"); err == nil {
			f.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return f.TempDir()
}

// fuzzBrokerEnv names the store of the broker process (see TestFuzzBroker).
const (
	fuzzBrokerEnv = "SLUICE_FUZZ_BROKER_DIR"
	fuzzBrokerURL = "sluice-fuzz-broker-url: "
)

// TestFuzzBroker is not a test of its own: it is the embedded broker of
// FuzzPublish and FuzzPublishBatch, run by them in a process of its own
// (this test binary again, with fuzzBrokerEnv set). The fuzzer takes every
// code path run in its process while an input runs for coverage of that
// input: the broker's own goroutines (flushes, timers, consumers) would
// make most inputs look new, and the fuzzer would spend its time
// minimizing noise. It serves until its standard input closes: when the
// fuzz process ends, however it ends.
func TestFuzzBroker(t *testing.T) {
	dir := os.Getenv(fuzzBrokerEnv)
	if dir == "" {
		t.Skip("the broker process of FuzzPublish and FuzzPublishBatch")
	}
	bcfg := broker.DefaultConfig()
	bcfg.Name = "fuzz-broker"
	bcfg.DataDir = dir
	bcfg.Listen = "127.0.0.1:-1"
	bcfg.ReadyTimeout = 20 * time.Second
	bcfg.Topics = fuzzConfig().Topics
	b, err := broker.New(bcfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	defer b.Shutdown()
	fmt.Printf("\n%s%s\n", fuzzBrokerURL, b.ClientURL())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startFuzzBroker runs TestFuzzBroker in a process of its own and returns
// its client URL; the process ends with f.
func startFuzzBroker(f *testing.F) string {
	f.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFuzzBroker$", "-test.count=1")
	cmd.Env = append(os.Environ(), fuzzBrokerEnv+"="+fuzzDataDir(f))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		f.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		f.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		f.Fatalf("start broker process: %v", err)
	}
	exited := make(chan error, 1)
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if url, ok := strings.CutPrefix(sc.Text(), fuzzBrokerURL); ok {
				urlc <- url
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait() // after stdout is read to its end, as Wait wants
	}()
	f.Cleanup(func() {
		stdin.Close() // the broker shuts down
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case url := <-urlc:
		return url
	case err := <-exited:
		f.Fatalf("broker process ended: %v\n%s", err, stderr.Bytes())
	case <-time.After(60 * time.Second):
		f.Fatalf("broker process did not start in time\n%s", stderr.Bytes())
	}
	return ""
}

func startFuzzGateway(f *testing.F) *fuzzGateway {
	f.Helper()
	cfg := fuzzConfig()
	nc, err := nats.Connect(startFuzzBroker(f), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		f.Fatalf("connect: %v", err)
	}
	f.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		f.Fatal(err)
	}
	el := &errorLog{}
	logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), el, zap.ErrorLevel))
	g, err := New(cfg, nc, logger, nil, nil)
	if err != nil {
		f.Fatalf("gateway: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.RunControl(ctx) }()
	f.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.Errorf("gateway control: %v", err)
		}
	})
	// Ready once the control loop has read the topic from the bus.
	deadline := time.Now().Add(20 * time.Second)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		rec := httptest.NewRecorder()
		g.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			f.Fatalf("gateway not ready: %d %s", rec.Code, rec.Body)
		}
		time.Sleep(wait)
	}
	return &fuzzGateway{g: g, js: js, log: el}
}

// serve answers r with the gateway's handler; now and then it purges the
// topic first.
func (fg *fuzzGateway) serve(t *testing.T, r *http.Request) *httptest.ResponseRecorder {
	if fg.execs.Add(1)%fuzzPurgeEvery == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := fg.js.Stream(ctx, sluice.StreamName(fuzzTopic))
		if err == nil {
			err = s.Purge(ctx)
		}
		cancel()
		if err != nil {
			t.Logf("purge %s: %v", fuzzTopic, err)
		}
	}
	fg.log.take() // lines logged before this input are not its own
	rec := httptest.NewRecorder()
	fg.g.Handler().ServeHTTP(rec, r)
	return rec
}

// fuzzHeaders are the request's fuzzed header fields.
type fuzzHeaders struct {
	ctype, key, metaName, metaValue string
}

// fuzzRequest is the request net/http's server would hand the gateway for
// a POST to target with these header fields and body (chunked or with a
// Content-Length), or false when the server would refuse it itself.
func fuzzRequest(target string, h fuzzHeaders, body []byte, chunked bool) (*http.Request, bool) {
	if !validTarget(target) {
		return nil, false
	}
	fields := [][2]string{{"Host", "gateway"}}
	if h.ctype != "" {
		fields = append(fields, [2]string{"Content-Type", h.ctype})
	}
	if h.key != "" {
		fields = append(fields, [2]string{sluice.HeaderIdempotencyKey, h.key})
	}
	if h.metaName != "" || h.metaValue != "" {
		fields = append(fields, [2]string{sluice.HeaderMetaPrefix + h.metaName, h.metaValue})
	}
	var b bytes.Buffer
	b.WriteString("POST " + target + " HTTP/1.1\r\n")
	for _, f := range fields {
		if !validFieldName(f[0]) || !validFieldValue(f[1]) {
			return nil, false
		}
		b.WriteString(f[0] + ": " + f[1] + "\r\n")
	}
	// The server's own bound (see Run); past it, its plain 431.
	if b.Len() > 2*int(DefaultConfig().MaxHeaderBytes) {
		return nil, false
	}
	if chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		if len(body) > 0 {
			fmt.Fprintf(&b, "%x\r\n", len(body))
			b.Write(body)
			b.WriteString("\r\n")
		}
		b.WriteString("0\r\n\r\n")
	} else {
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
		b.Write(body)
	}
	r, err := http.ReadRequest(bufio.NewReader(&b))
	if err != nil {
		return nil, false
	}
	r.RemoteAddr = "192.0.2.1:1234"
	return r, true
}

// validTarget: the server splits the request line at spaces and refuses
// control characters in it.
func validTarget(s string) bool {
	if !strings.HasPrefix(s, "/") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// validFieldName is an HTTP token, as the server requires.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validFieldValue: no control characters but tab, as the server requires.
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// checkProblemType holds for every problem the gateway sends: a 4xx, or a
// 503 the client may retry; never a 500 (always a gateway bug) or another
// 5xx.
func checkProblemType(p sluice.Problem) error {
	switch {
	case p.Status == http.StatusInternalServerError || p.Type == sluice.ProblemInternal:
		return fmt.Errorf("internal error, a gateway bug: %+v", p)
	case p.Status == http.StatusServiceUnavailable:
		switch p.Type {
		case sluice.ProblemOverloaded, sluice.ProblemBusUnavailable, sluice.ProblemOutcomeUnknown:
		default:
			return fmt.Errorf("503 with problem type %q", p.Type)
		}
	case p.Status >= 400 && p.Status < 500:
		if !strings.HasPrefix(p.Type, "urn:sluice:problem:") {
			return fmt.Errorf("%d with problem type %q", p.Status, p.Type)
		}
	default:
		return fmt.Errorf("problem with status %d: %+v", p.Status, p)
	}
	if p.Title == "" {
		return fmt.Errorf("problem without a title: %+v", p)
	}
	return nil
}

// checkProblem: an error answer is a problem (RFC 9457) whose status is the
// HTTP status.
func checkProblem(rec *httptest.ResponseRecorder) error {
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		return fmt.Errorf("%d answered as %q, not application/problem+json: %q", rec.Code, ct, clipBody(rec.Body.Bytes()))
	}
	var p sluice.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		return fmt.Errorf("%d: problem does not decode (%v): %q", rec.Code, err, clipBody(rec.Body.Bytes()))
	}
	if p.Status != rec.Code {
		return fmt.Errorf("HTTP status %d, problem status %d: %+v", rec.Code, p.Status, p)
	}
	return checkProblemType(p)
}

// checkRedirect: ServeMux (not the gateway) redirects a path that is not
// clean, e.g. a topic segment "..", to its clean form.
func checkRedirect(r *http.Request, rec *httptest.ResponseRecorder) error {
	if p := r.URL.Path; path.Clean(p) == p && !strings.Contains(r.URL.EscapedPath(), "//") {
		return fmt.Errorf("%d for the clean path %q", rec.Code, p)
	}
	if rec.Header().Get("Location") == "" {
		return fmt.Errorf("%d without Location", rec.Code)
	}
	return nil
}

func checkReceipt(rc Receipt) error {
	switch {
	case rc.Topic != fuzzTopic:
		return fmt.Errorf("receipt for topic %q", rc.Topic)
	case rc.Seq == 0:
		return fmt.Errorf("receipt without a sequence: %+v", rc)
	}
	if err := validateID(rc.ID); err != nil {
		return fmt.Errorf("receipt with an invalid id %q: %v", rc.ID, err)
	}
	return nil
}

// nonBlankLines are the 1-based numbers of the lines of an NDJSON body that
// are not blank, each with the line itself, trimmed.
func nonBlankLines(body []byte) (nums []int, lines [][]byte) {
	for i, l := range bytes.Split(body, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			nums = append(nums, i+1)
			lines = append(lines, l)
		}
	}
	return nums, lines
}

func clipBody(b []byte) []byte {
	if len(b) > 2000 {
		return b[:2000]
	}
	return b
}

// dump describes the request for a failure message.
func dump(r *http.Request, body []byte, chunked bool) string {
	return fmt.Sprintf("POST %s chunked=%v\nheader: %q\nbody (%d bytes): %q", r.RequestURI, chunked, r.Header, len(body), clipBody(body))
}

// fuzzSeed is one input of FuzzPublish and FuzzPublishBatch.
type fuzzSeed struct {
	body                            []byte
	ctype, key, metaName, metaValue string
	topic                           string
	chunked                         bool
	// heavy: long or slow to run, a seed for plain `go test` only. The
	// fuzzer minimizes every new input it derives from a seed byte by byte,
	// in time quadratic in its length: derived from a heavy seed, that
	// takes up the whole of -fuzzminimizetime (60s) for each.
	heavy bool
}

// fuzzing: this process fuzzes (go test -fuzz), rather than running the
// seeds as tests.
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}

func addSeeds(f *testing.F, seeds []fuzzSeed) {
	for _, s := range seeds {
		if !s.heavy || !fuzzing() {
			f.Add(s.body, s.ctype, s.key, s.metaName, s.metaValue, s.topic, s.chunked)
		}
	}
}

func publishSeeds() []fuzzSeed {
	big := bytes.Repeat([]byte("x"), fuzzMaxMessageSize)
	over := append(bytes.Repeat([]byte("x"), fuzzMaxMessageSize), 'y')
	return []fuzzSeed{
		{body: []byte(`{"order":1}`), ctype: "application/json", key: "order-1", metaName: "tenant", metaValue: "acme", topic: fuzzTopic},
		{body: []byte("hello"), ctype: "text/plain; charset=utf-8", topic: fuzzTopic, chunked: true},
		{body: nil, topic: fuzzTopic},
		{body: big, ctype: "application/octet-stream", topic: fuzzTopic},                    // exactly the limit
		{body: over, ctype: "application/octet-stream", topic: fuzzTopic},                   // one byte over
		{body: over, topic: fuzzTopic, chunked: true},                                       // over, no declared length
		{body: []byte("\xff\xfe\xfd invalid utf-8"), ctype: "text/plain", topic: fuzzTopic}, // invalid UTF-8 payload
		{body: []byte("a\x00b\x00"), key: "nul", topic: fuzzTopic},                          // NUL bytes
		{body: []byte(`{"a":[[[[[[[[[[{"b":{}}]]]]]]]]]]}`), ctype: "application/json", topic: fuzzTopic},
		{body: []byte("line1\r\nline2\r\n"), ctype: "text/plain", topic: fuzzTopic}, // CRLF
		{body: []byte("x"), topic: "orders.>"},                                      // subject injection
		{body: []byte("x"), topic: "orders.%3E"},                                    // escaped
		{body: []byte("x"), topic: "fuzz.*"},
		{body: []byte("x"), topic: "fu%7Az"}, // escaped, yet the topic
		{body: []byte("x"), topic: "%2E%2E"},
		{body: []byte("x"), topic: ".."}, // ServeMux redirects
		{body: []byte("x"), topic: "FUZZ"},
		{body: []byte("x"), topic: "nope"},
		{body: []byte("x"), topic: strings.Repeat("a", 65)},
		{body: []byte("x"), key: strings.Repeat("k", 201), topic: fuzzTopic}, // key too long
		{body: []byte("x"), key: "k\u00e9y", topic: fuzzTopic},               // non-ASCII key
		{body: []byte("same key"), key: "dup-1", topic: fuzzTopic},
		{body: []byte("other payload"), key: "dup-1", topic: fuzzTopic}, // 409 after the one before
		{body: []byte("x"), metaName: "bad_name", metaValue: "v", topic: fuzzTopic},
		{body: []byte("x"), metaName: "", metaValue: "v", topic: fuzzTopic},
		{body: []byte("x"), metaName: "n", metaValue: "\xff", topic: fuzzTopic},
		{body: []byte("x"), metaName: "n", metaValue: strings.Repeat("v", 5000), topic: fuzzTopic, heavy: true},
		{body: []byte("x"), ctype: "not a media type", topic: fuzzTopic},
		{body: []byte("x"), ctype: "text/plain; charset=\"unterminated", topic: fuzzTopic},
		{body: []byte("x"), ctype: "text/" + strings.Repeat("p", 300), topic: fuzzTopic},
	}
}

func batchSeeds() []fuzzSeed {
	nd := "application/x-ndjson"
	many := strings.Repeat("{\"data\":0}\n", atomicMinR1) // a batch of valid lines: an atomic batch
	tooMany := strings.Repeat("{}\n", fuzzBatchLines+1)
	return []fuzzSeed{
		{body: []byte(`{"id":"b-1","data":{"order":1},"meta":{"tenant":"acme"}}` + "\n" + `{"data_base64":"aGVsbG8="}` + "\n"), ctype: nd, topic: fuzzTopic},
		{body: []byte(`{"data":1}`), ctype: "application/jsonl", topic: fuzzTopic, chunked: true},
		{body: nil, ctype: nd, topic: fuzzTopic},
		{body: []byte("\n \r\n\t\n"), ctype: nd, topic: fuzzTopic},
		{body: []byte(many), ctype: nd, topic: fuzzTopic, heavy: true},
		{body: []byte(`{"data":"` + strings.Repeat("y", 9<<10) + `"}`), ctype: nd, topic: fuzzTopic, heavy: true}, // over max_line_bytes
		{body: []byte(tooMany), ctype: nd, topic: fuzzTopic},
		{body: []byte("{\"data\":1}\r\n\r\n{\"data\":2}\r\n"), ctype: nd, topic: fuzzTopic},                               // CRLF, blank line
		{body: []byte("{\"data\":\"a\\u0000b\"}\n{\"data\x00\":1}\n"), ctype: nd, topic: fuzzTopic},                       // NUL bytes
		{body: []byte("{\"data\":\"\xff\xfe\"}\n{\"data_base64\":\"////\"}\n"), ctype: nd, topic: fuzzTopic},              // invalid UTF-8
		{body: []byte(`{"data":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`), ctype: nd, topic: fuzzTopic}, // too deep
		{body: []byte(`{"data":"` + strings.Repeat("x", fuzzMaxMessageSize) + `"}`), ctype: nd, topic: fuzzTopic},         // over the limit
		{body: []byte(`{"data":1,"data_base64":"eA=="}` + "\n" + `{"id":""}` + "\n" + `{"data":1,"extra":2}` + "\n" + `{"data":1}{"data":2}`), ctype: nd, topic: fuzzTopic},
		{body: []byte(`{"id":"dup-b","data":1}` + "\n" + `{"id":"dup-b","data":2}`), ctype: nd, topic: fuzzTopic}, // one key, two payloads
		{body: []byte(`{"data":1,"meta":{"bad name":"v","ok":"\u0001"}}`), ctype: nd, topic: fuzzTopic},
		{body: []byte(`{"data":1}`), ctype: "application/json", topic: fuzzTopic},
		{body: []byte(`{"data":1}`), ctype: "", topic: fuzzTopic},
		{body: []byte(`{"data":1}`), ctype: nd, topic: "orders.>"},
		{body: []byte(`{"data":1}`), ctype: nd, topic: "orders.%3E"},
		{body: []byte(`{"data":1}`), ctype: nd, topic: ".."},
		{body: []byte(`{"data":1}`), ctype: nd, topic: "nope"},
	}
}

// FuzzPublish: POST /v1/topics/{topic}/messages with fuzzed body,
// Content-Type, Idempotency-Key, one Sluice-Meta-<name> field and topic
// path segment. Never a 500 or a 5xx but a retryable 503; every refusal a
// problem with the HTTP status; a 202 a receipt for the topic with a
// sequence.
func FuzzPublish(f *testing.F) {
	fuzzRoute(f, publishSeeds(), "/messages", http.StatusAccepted, func(r *http.Request, _ []byte, rec *httptest.ResponseRecorder) error {
		return checkPublished(r, rec)
	})
}

// fuzzRoute fuzzes POST /v1/topics/{topic}<suffix>: an answer with status
// ok is checked by checkOK, a redirect (unclean paths) by checkRedirect,
// anything else must be a problem.
func fuzzRoute(f *testing.F, seeds []fuzzSeed, suffix string, ok int, checkOK func(*http.Request, []byte, *httptest.ResponseRecorder) error) {
	addSeeds(f, seeds)
	fg := startFuzzGateway(f)
	f.Fuzz(func(t *testing.T, body []byte, ctype, key, metaName, metaValue, topic string, chunked bool) {
		r, valid := fuzzRequest("/v1/topics/"+topic+suffix, fuzzHeaders{ctype, key, metaName, metaValue}, body, chunked)
		if !valid {
			t.Skip("net/http's server refuses this request itself")
		}
		rec := fg.serve(t, r)
		var err error
		switch {
		case rec.Code == ok:
			err = checkOK(r, body, rec)
		case rec.Code >= 300 && rec.Code < 400:
			err = checkRedirect(r, rec)
		default:
			err = checkProblem(rec)
		}
		if err != nil {
			t.Fatalf("%v\nrequest: %s\ngateway error log:\n%s", err, dump(r, body, chunked), fg.log.take())
		}
	})
}

func checkPublished(r *http.Request, rec *httptest.ResponseRecorder) error {
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("202 as %q", ct)
	}
	var rc Receipt
	if err := json.Unmarshal(rec.Body.Bytes(), &rc); err != nil {
		return fmt.Errorf("202: receipt does not decode (%v): %q", err, rec.Body)
	}
	if err := checkReceipt(rc); err != nil {
		return err
	}
	if key := r.Header.Get(sluice.HeaderIdempotencyKey); key != "" && rc.ID != key {
		return fmt.Errorf("receipt id %q for Idempotency-Key %q", rc.ID, key)
	}
	return nil
}

// FuzzPublishBatch: POST /v1/topics/{topic}/messages:batch with the same
// fuzzed parts. Besides FuzzPublish's invariants: a 200 answers each
// non-blank line, in order, with a receipt or a problem of its own.
func FuzzPublishBatch(f *testing.F) {
	fuzzRoute(f, batchSeeds(), "/messages:batch", http.StatusOK, func(_ *http.Request, body []byte, rec *httptest.ResponseRecorder) error {
		return checkBatchAnswer(body, rec)
	})
}

// batchResult is a line of a batch answer: a receipt or a problem.
type batchResult struct {
	Line int `json:"line"`
	Receipt
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func checkBatchAnswer(body []byte, rec *httptest.ResponseRecorder) error {
	if ct := rec.Header().Get("Content-Type"); ct != "application/x-ndjson" {
		return fmt.Errorf("200 as %q", ct)
	}
	want, _ := nonBlankLines(body)
	dec := json.NewDecoder(rec.Body)
	for i := 0; ; i++ {
		var res batchResult
		err := dec.Decode(&res)
		if errors.Is(err, io.EOF) {
			if i != len(want) {
				return fmt.Errorf("%d results for %d non-blank lines", i, len(want))
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("result %d does not decode: %v", i+1, err)
		}
		if i >= len(want) {
			return fmt.Errorf("more results than the %d non-blank lines", len(want))
		}
		if res.Line != want[i] {
			return fmt.Errorf("result %d is for line %d, want line %d", i+1, res.Line, want[i])
		}
		if res.Type != "" || res.Status != 0 {
			if err := checkProblemType(sluice.Problem{Type: res.Type, Title: res.Title, Status: res.Status, Detail: res.Detail}); err != nil {
				return fmt.Errorf("line %d: %v", res.Line, err)
			}
			continue
		}
		if err := checkReceipt(res.Receipt); err != nil {
			return fmt.Errorf("line %d: %v", res.Line, err)
		}
	}
}

// FuzzParseBatch feeds arbitrary bodies to the NDJSON batch parser. Never a
// panic; every error, of the batch or of a line, a 4xx problem; at most
// max_batch_lines items, one per non-blank line; every accepted line one
// JSON object within max_line_bytes and max_json_depth, with a valid id, a
// payload within the topic's max_message_size and valid metadata.
func FuzzParseBatch(f *testing.F) {
	seeds := []string{
		`{"id":"a-1","data":{"order":1},"meta":{"tenant":"acme"}}`,
		`{"data_base64":"aGVsbG8="}` + "\n" + `{"data":"x"}` + "\n",
		"",
		"\n\n \t\r\n",
		`{"data":1}` + "\r\n" + `{"data":2}` + "\r\n",
		"{\"data\":\"a\\u0000b\"}\n{\"da\x00ta\":1}",
		"{\"data\":\"\xff\xfe\"}\n{\"id\":\"\xff\",\"data\":1}",
		`{"data":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`,
		`{"data":` + strings.Repeat(`{"a":`, 31) + "1" + strings.Repeat("}", 31) + `}`,
		`{"data":"` + strings.Repeat("x", 62) + `"}`,        // payload of exactly 64 bytes
		`{"data":"` + strings.Repeat("x", 63) + `"}`,        // 65: over
		`{"data_base64":"` + strings.Repeat("A", 88) + `"}`, // 66 bytes decoded: over
		`{"data":1,"data_base64":"eA=="}`,
		`{"id":""}`,
		`{"id":"` + strings.Repeat("k", 201) + `","data":1}`,
		`{"data":1,"extra":true}`,
		`{"data":1}{"data":2}`,
		`{"data":1} x`,
		`{"data":null}`,
		`{"DATA":1,"Id":"case"}`,
		`{"data":1,"meta":{"bad name":"v","ok":"\u0001"}}`,
		`{"data_base64":"not base64!"}`,
		`[1,2,3]`,
		`"just a string"`,
		strings.Repeat("{\"data\":1}\n", 9), // over max_batch_lines (8)
		strings.Repeat("{\"data\":1}\n", 8) + "\n\n",
		`{"data":"` + strings.Repeat("y", 90) + `"}`, // over max_line_bytes
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	cfg := DefaultConfig()
	cfg.MaxBatchLines = 8
	cfg.MaxLineBytes = 96 // below the 1KiB Validate wants: short inputs reach it
	cfg.MaxJSONDepth = 32
	topic := fuzzTopicDef()
	topic.MaxMessageSize = 64
	g := &Gateway{cfg: cfg}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := g.parseBatch(body, topic)
		nums, lines := nonBlankLines(body)
		if err != nil {
			p, _ := problemFor(err)
			if p.Status < 400 || p.Status >= 500 {
				t.Fatalf("batch refused with %d: %v", p.Status, err)
			}
			switch {
			case len(nums) == 0 && p.Status == http.StatusBadRequest:
			case len(nums) > cfg.MaxBatchLines && p.Status == http.StatusRequestEntityTooLarge:
			default:
				t.Fatalf("batch of %d non-blank lines refused with %d: %v", len(nums), p.Status, err)
			}
			return
		}
		if len(items) > cfg.MaxBatchLines {
			t.Fatalf("%d items, max_batch_lines is %d", len(items), cfg.MaxBatchLines)
		}
		if len(items) != len(nums) {
			t.Fatalf("%d items for %d non-blank lines", len(items), len(nums))
		}
		for i, it := range items {
			if it.line != nums[i] {
				t.Fatalf("item %d is line %d, want %d", i, it.line, nums[i])
			}
			if it.err != nil {
				if p, _ := problemFor(it.err); p.Status < 400 || p.Status >= 500 {
					t.Fatalf("line %d refused with %d: %v", it.line, p.Status, it.err)
				}
				continue
			}
			if err := checkItem(it, lines[i], topic, cfg); err != nil {
				t.Fatalf("line %d %q accepted: %v", it.line, clipBody(lines[i]), err)
			}
		}
	})
}

// checkItem holds for an accepted batch line.
func checkItem(it *pending, line []byte, t topology.Topic, cfg Config) error {
	if err := validateID(it.key); err != nil {
		return fmt.Errorf("key %q: %v", it.key, err)
	}
	if it.id != sluice.DedupID(it.key, digest(it.msg)) {
		return fmt.Errorf("deduplication id %q is not key %q and the message's digest", it.id, it.key)
	}
	if it.msg == nil {
		return errors.New("no message")
	}
	if it.msg.Subject != sluice.Subject(t.Name) {
		return fmt.Errorf("subject %q", it.msg.Subject)
	}
	if len(it.msg.Data) > int(t.MaxMessageSize) {
		return fmt.Errorf("payload of %d bytes, max_message_size is %d", len(it.msg.Data), t.MaxMessageSize)
	}
	if len(line) > int(cfg.MaxLineBytes) {
		return fmt.Errorf("line of %d bytes, max_line_bytes is %d", len(line), cfg.MaxLineBytes)
	}
	if !json.Valid(line) {
		return errors.New("the line is not one JSON value")
	}
	if d := jsonNesting(line); d > cfg.MaxJSONDepth {
		return fmt.Errorf("JSON nested %d deep, max_json_depth is %d", d, cfg.MaxJSONDepth)
	}
	switch ct := it.msg.Header.Get(sluice.HeaderContentType); ct {
	case "application/json":
		if !json.Valid(it.msg.Data) {
			return fmt.Errorf("application/json payload %q is not JSON", it.msg.Data)
		}
	case "application/octet-stream":
	default:
		return fmt.Errorf("Content-Type %q", ct)
	}
	for k, vs := range it.msg.Header {
		name, ok := strings.CutPrefix(k, sluice.HeaderMetaPrefix)
		if !ok {
			continue
		}
		if !validMetaName(name) {
			return fmt.Errorf("metadata name %q", name)
		}
		for _, v := range vs {
			if !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
				return fmt.Errorf("metadata %s value %q", name, v)
			}
		}
	}
	return nil
}

// jsonNesting is the deepest nesting of objects and arrays of a valid JSON
// text, read with the standard decoder's tokens (independently of the
// gateway's own count).
func jsonNesting(b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			deepest = max(deepest, depth)
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}
