package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad writes arbitrary bytes as the configuration file and loads it:
// never a panic; either a configuration that validates, or a *Error naming
// the file. Plain `go test` runs the seeds; fuzz with
//
//	go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 60s ./internal/config/
func FuzzLoad(f *testing.F) {
	for _, env := range os.Environ() {
		if strings.HasPrefix(env, EnvPrefix+"_") {
			f.Skipf("%s overrides the file; unset it to fuzz Load", env)
		}
	}
	dev, err := os.ReadFile("../../../../configs/dev.yaml")
	if err != nil {
		f.Fatal(err)
	}
	// A valid file, compact: the fuzzer minimizes every new input it
	// derives byte by byte, in time quadratic in its length.
	small := "log:\n  level: warn\nbus:\n  urls: [nats://127.0.0.1:4222]\ngateway:\n  listen: 127.0.0.1:9090\n" +
		"  max_header_bytes: 32KiB\n  publish_timeout: 2s\ntopics:\n  orders:\n    max_messages: 1000\n" +
		"    families:\n      billing:\n        backoff: [1s, 5s]\n"
	// Long seeds only as tests: derived from them, an input takes the
	// whole -fuzzminimizetime (60s) to minimize.
	heavy := []string{
		string(dev),
		"log:\n  level: " + strings.Repeat("x", 10000) + "\n",
		strings.Repeat("[", 200) + strings.Repeat("]", 200),
	}
	seeds := []string{
		small,
		"",
		"{}",
		"null",
		"---\n...\n",
		"gateway:\n  listen: 127.0.0.1:9090\n  max_batch_lines: 10\n",
		"gateway:\n  read_header_timeout: 30\n",      // a duration without a unit
		"gateway:\n  read_header_timeout: -5s\n",     // negative
		"gateway:\n  max_header_bytes: 12 parsecs\n", // not a size
		"gateway:\n  max_batch_lines: 1.5\n",
		"gateway:\n  max_batch_lines: true\n",
		"gateway:\n  listen: [a, b]\n",
		"gateway: 7\n",
		"unknown_section:\n  x: 1\n",
		"gateway:\n  lsten: typo\n",
		"topics:\n  orders:\n    max_messages: 10\n    families:\n      billing: {}\n",
		"topics:\n  orders:\n    families: {}\n",
		"topics:\n  Orders.>:\n    families:\n      billing: {}\n", // subject injection in a name
		"topics:\n  orders:\n    families:\n      \"bil ling\": {}\n",
		"topics: [1, 2]\n",
		"topics:\n  orders: 5\n",
		"topics:\n  orders:\n    families: [billing]\n",
		"topics:\n  orders:\n    families:\n      billing:\n        backoff: [1s, 2s, x]\n",
		"topics:\n  orders:\n    max_message_size: 99999999999999999999999\n    families:\n      billing: {}\n",
		"a: &a [*a]\n",                          // recursive alias
		"a: &x [1]\nb: [*x, *x, *x, *x]\n",      // aliases
		"? [complex, key]\n: value\n",           // non-string key
		"1: 2\ntrue: false\n",                   // non-string keys
		"gateway:\n  listen: \"\\0\\x00\"\n",    // NUL bytes
		"gateway:\r\n  listen: 127.0.0.1:1\r\n", // CRLF
		"\xff\xfe\x00g\x00a",                    // invalid UTF-8
		"gateway:\n\tlisten: x\n",               // a tab indent
		"auth:\n  mode: keys\n  tenants:\n    acme:\n      keys: [{id: k1, hash: \"sha256:00\"}]\n      publish: [\"*\"]\n",
	}
	if fl := flag.Lookup("test.fuzz"); fl == nil || fl.Value.String() == "" {
		seeds = append(seeds, heavy...)
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	file := filepath.Join(f.TempDir(), "sluice.yaml")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(file, nil, nil)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce != err {
				t.Fatalf("Load failed with %T, not a *config.Error: %v", err, err)
			}
			if ce.File != file {
				t.Fatalf("error names file %q, not %q", ce.File, file)
			}
			_ = err.Error()
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load accepted a configuration that does not validate: %v", err)
		}
	})
}
