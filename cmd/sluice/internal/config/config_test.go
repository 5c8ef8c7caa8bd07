package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDevYAMLEqualsDefaults(t *testing.T) {
	got, err := Load("../../../../configs/dev.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	if err := want.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("configs/dev.yaml differs from DefaultConfig():\n got %+v\nwant %+v", got, want)
	}
}

func TestNoFileGivesDefaults(t *testing.T) {
	got, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	_ = want.Validate()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
}

func TestEnvAndFlagsOverride(t *testing.T) {
	t.Setenv("SLUICE_GATEWAY_LISTEN", "127.0.0.1:9999")
	t.Setenv("SLUICE_GATEWAY_PUBLISH_TIMEOUT", "750ms")
	t.Setenv("SLUICE_BUS_URLS", "nats://a:4222,nats://b:4222")
	t.Setenv("SLUICE_TOPICS_ORDERS_MAX_MESSAGES", "42")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Duration("demo-delay", 0, "")
	fs.Float64("demo-failure-rate", 0, "")
	if err := fs.Parse([]string{"--demo-delay=250ms"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load("../../../../configs/dev.yaml", fs, map[string]string{
		"demo-delay": "demo.delay", "demo-failure-rate": "demo.failure_rate",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.Listen != "127.0.0.1:9999" || cfg.Gateway.PublishTimeout != 750*time.Millisecond {
		t.Errorf("env not applied: %+v", cfg.Gateway)
	}
	if !reflect.DeepEqual(cfg.Bus.URLs, []string{"nats://a:4222", "nats://b:4222"}) {
		t.Errorf("bus urls = %v", cfg.Bus.URLs)
	}
	if cfg.Topics["orders"].MaxMessages != 42 {
		t.Errorf("topic env override not applied: %d", cfg.Topics["orders"].MaxMessages)
	}
	if cfg.Demo.Delay != 250*time.Millisecond {
		t.Errorf("changed flag not applied: %v", cfg.Demo.Delay)
	}
	if cfg.Demo.FailureRate != 0 {
		t.Errorf("unchanged flag overrode the file: %v", cfg.Demo.FailureRate)
	}
	if cfg.Broker.Topics["orders"].MaxMessages != 42 || cfg.Gateway.Topics["orders"].MaxMessages != 42 {
		t.Errorf("topology not shared with node configs")
	}
}

func TestPartialTopicGetsDefaults(t *testing.T) {
	p := writeFile(t, `
topics:
  payments:
    max_messages: 10
    families:
      audit:
        backoff: [2s]
`)
	cfg, err := Load(p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Topics["orders"]; ok {
		t.Error("file topics must replace the default topology, not merge into it")
	}
	tp := cfg.Topics["payments"]
	if tp.MaxMessages != 10 || tp.MaxMessageSize != 1<<20 || tp.Name != "payments" {
		t.Errorf("topic defaults not applied: %+v", tp)
	}
	f := tp.Families["audit"]
	if f.Name != "audit" || f.MaxAttempts != 5 || !reflect.DeepEqual(f.Backoff, []time.Duration{2 * time.Second}) {
		t.Errorf("family: %+v (a shorter list must replace the default list)", f)
	}
}

func TestConfigErrorsNameKeyAndFile(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown top key", "gatewya:\n  listen: x\n", []string{"gatewya", "unknown key"}},
		{"unknown nested key", "gateway:\n  listne: 127.0.0.1:1\n", []string{"gateway.listne", "unknown key"}},
		{"unknown topic key", "topics:\n  t1:\n    max_mesages: 3\n    families: {f: {}}\n", []string{"topics.t1.max_mesages", "unknown key"}},
		{"unknown family key", "topics:\n  t1:\n    families:\n      f:\n        credits: 3\n", []string{"topics.t1.families.f.credits", "unknown key"}},
		{"bad duration", "gateway:\n  read_timeout: soon\n", []string{"read_timeout", "soon"}},
		{"duration without unit", "topics:\n  t1:\n    families:\n      f:\n        ack_wait: 30\n", []string{"ack_wait", "needs a unit"}},
		{"bad size", "topics:\n  t1:\n    max_bytes: lots\n    families: {f: {}}\n", []string{"max_bytes", "lots"}},
		{"bad topic name", "topics:\n  Bad.Name:\n    families: {f: {}}\n", []string{"topics.Bad.Name"}},
		{"uppercase names are not lowercased", "topics:\n  Orders:\n    families: {Billing: {}}\n", []string{"topics.Orders", "lowercase"}},
		{"uppercase family", "topics:\n  orders:\n    families: {Billing: {}}\n", []string{"topics.orders.families.Billing"}},
		{"unknown key without value", "gateway:\n  bogus:\n", []string{"gateway.bogus", "unknown key"}},
		{"unknown topic key without value", "topics:\n  t:\n    bogus:\n    families: {f: {}}\n", []string{"topics.t.bogus", "unknown key"}},
		{"fraction for an integer", "topics:\n  t:\n    families:\n      f:\n        credit: 1.9\n", []string{"credit", "1.9", "whole number"}},
		{"boolean for an integer", "topics:\n  t:\n    replicas: true\n    families: {f: {}}\n", []string{"replicas", "not a number"}},
		{"number for a boolean", "demo:\n  enabled: 1\n", []string{"demo.enabled", "true or false"}},
		{"short duplicate window", "topics:\n  t:\n    duplicate_window: 50ms\n    families: {f: {}}\n", []string{"topics.t.duplicate_window", "100ms"}},
		{"dead letters shorter than the window", "topics:\n  t:\n    duplicate_window: 10m\n    families:\n      f:\n        dead_letter_max_age: 1m\n", []string{"topics.t.families.f.dead_letter_max_age"}},
		{"replicas on a lone broker", "topics:\n  t:\n    replicas: 3\n    families: {f: {}}\n", []string{"topics.t.replicas", "cluster"}},
		{"topic without family", "topics:\n  t1:\n    max_messages: 3\n", []string{"topics.t1.families", "at least one family"}},
		{"bad family value", "topics:\n  t1:\n    families:\n      f:\n        max_attempts: 0\n", []string{"topics.t1.families.f.max_attempts"}},
		{"failure rate", "demo:\n  failure_rate: 2\n", []string{"demo.failure_rate"}},
		{"bad yaml", "topics: [\n", []string{"sluice.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.yaml)
			_, err := Load(p, nil, nil)
			if err == nil {
				t.Fatal("loaded a bad config")
			}
			msg := err.Error()
			for _, w := range append(tc.want, p) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

func TestStrictEnvironmentValues(t *testing.T) {
	for env, want := range map[string]string{
		"SLUICE_DEMO_CREDIT":             "whole number",
		"SLUICE_DEMO_ENABLED":            "true or false",
		"SLUICE_DEMO_FAILURE_RATE":       "not a number",
		"SLUICE_GATEWAY_RETRY_AFTER_MIN": "invalid duration",
	} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, "lots")
			_, err := Load("../../../../configs/dev.yaml", nil, nil)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s=lots: %v", env, err)
			}
		})
	}
	t.Setenv("SLUICE_DEMO_CREDIT", "7")
	t.Setenv("SLUICE_DEMO_ENABLED", "false")
	t.Setenv("SLUICE_DEMO_FAILURE_RATE", "0.25")
	cfg, err := Load("../../../../configs/dev.yaml", nil, nil)
	if err != nil || cfg.Demo.Credit != 7 || cfg.Demo.Enabled || cfg.Demo.FailureRate != 0.25 {
		t.Fatalf("valid environment values: %+v %v", cfg.Demo, err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func TestEmptyFamilyIsKept(t *testing.T) {
	p := writeFile(t, "topics:\n  t1:\n    families:\n      audit: {}\n      ledger:\n")
	cfg, err := Load(p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fams := cfg.Topics["t1"].Families
	if len(fams) != 2 || fams["audit"].MaxAttempts != 5 || fams["ledger"].Name != "ledger" {
		t.Fatalf("families = %+v", fams)
	}
}

func TestTenantsLoad(t *testing.T) {
	p := writeFile(t, `
auth:
  mode: keys
  tenants:
    acme:
      keys:
        - {id: old, hash: "sha256:`+strings.Repeat("ab", 32)+`", expires: 2027-01-01T00:00:00Z}
        - {id: new, hash: "sha256:`+strings.Repeat("cd", 32)+`"}
      publish: [orders]
      read: ["*"]
      rate: 100
      burst: 200
      admission_share: 0.5
`)
	cfg, err := Load(p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Gateway.Auth.Tenants["acme"]
	if cfg.Gateway.Auth.Open() || len(a.Keys) != 2 || a.Keys[0].ID != "old" || a.Rate != 100 || a.Burst != 200 ||
		a.AdmissionShare != 0.5 || len(a.Publish) != 1 || a.Read[0] != "*" ||
		!a.Keys[0].Expires.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || !a.Keys[1].Expires.IsZero() {
		t.Fatalf("tenant acme loaded as %+v", a)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"auth:\n  mode: keys\n  tenants:\n    acme:\n      keys: [{id: k, hash: \"sha256:" + strings.Repeat("ab", 32) + "\", colour: red}]\n", "colour"},
		{"auth:\n  mode: keys\n  tenants:\n    Acme.Corp:\n      keys: [{id: k, hash: \"sha256:" + strings.Repeat("ab", 32) + "\"}]\n", "auth.tenants.Acme.Corp"},
		{"auth:\n  mode: keys\n  tenants:\n    acme:\n      keys: [{id: k, hash: plain-key}]\n", "auth.tenants.acme.keys[0].hash"},
		{"auth:\n  mode: keys\n", "at least one tenant"},
		{"auth:\n  mode: keys\n  tenants:\n    acme:\n      keys: [{id: k, hash: \"sha256:" + strings.Repeat("ab", 32) + "\"}]\n      publish: [nope]\n", "auth.tenants.acme.publish"},
	} {
		_, err := Load(writeFile(t, tc.yaml), nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
