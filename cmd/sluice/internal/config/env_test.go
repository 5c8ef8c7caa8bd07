package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const devYAML = "../../../../configs/dev.yaml"

// TestEnvOverridesWithAndWithoutFile: README's SLUICE_TOPICS_ORDERS_MAX_MESSAGES=500
// (and a family's key) work the same with the built-in defaults as with
// configs/dev.yaml, which holds the same values.
func TestEnvOverridesWithAndWithoutFile(t *testing.T) {
	t.Setenv("SLUICE_TOPICS_ORDERS_MAX_MESSAGES", "500")
	t.Setenv("SLUICE_TOPICS_ORDERS_FAMILIES_BILLING_CREDIT", "3")
	t.Setenv("SLUICE_TOPICS_ORDERS_FAMILIES_SHIPPING_BACKOFF", "2s,4s")
	t.Setenv("SLUICE_GATEWAY_LISTEN", "127.0.0.1:9999")
	for _, path := range []string{"", devYAML} {
		cfg, err := Load(path, nil, nil)
		if err != nil {
			t.Fatalf("config %q: %v", path, err)
		}
		orders := cfg.Topics["orders"]
		if orders.MaxMessages != 500 || cfg.Broker.Topics["orders"].MaxMessages != 500 {
			t.Errorf("config %q: topics.orders.max_messages = %d, want 500", path, orders.MaxMessages)
		}
		if c := orders.Families["billing"].Credit; c != 3 {
			t.Errorf("config %q: billing credit = %d, want 3", path, c)
		}
		if b := orders.Families["shipping"].Backoff; len(b) != 2 || b[0] != 2*time.Second || b[1] != 4*time.Second {
			t.Errorf("config %q: shipping backoff = %v", path, b)
		}
		if orders.Families["shipping"].Credit != 64 || orders.MaxMessageSize != 1<<20 {
			t.Errorf("config %q: keys not overridden lost their values: %+v", path, orders)
		}
		if cfg.Gateway.Listen != "127.0.0.1:9999" {
			t.Errorf("config %q: gateway.listen = %q", path, cfg.Gateway.Listen)
		}
	}
}

// TestFlagBeatsEnvironment: flags, then variables, then the file.
func TestFlagBeatsEnvironment(t *testing.T) {
	t.Setenv("SLUICE_DEMO_DELAY", "1s")
	t.Setenv("SLUICE_DEMO_FAILURE_RATE", "0.5")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Duration("demo-delay", 0, "")
	fs.Float64("demo-failure-rate", 0, "")
	if err := fs.Parse([]string{"--demo-delay=250ms"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load("", fs, map[string]string{"demo-delay": "demo.delay", "demo-failure-rate": "demo.failure_rate"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Demo.Delay != 250*time.Millisecond || cfg.Demo.FailureRate != 0.5 {
		t.Fatalf("demo = %+v: want the flag's delay and the variable's failure rate", cfg.Demo)
	}
}

// TestUnknownEnvRefused: a SLUICE_* variable that names no key is refused
// as an unknown key in the file is, naming the variable, with or without
// a file; variables other parts of Sluice read are left alone.
func TestUnknownEnvRefused(t *testing.T) {
	for _, tc := range []struct{ name, path string }{
		{"SLUICE_GATEWAY_LISTNE", ""},
		{"SLUICE_GATEWAY_LISTNE", devYAML},
		{"SLUICE_TOPICS_ORDER_MAX_MESSAGES", ""},         // topic misspelt
		{"SLUICE_TOPICS_PAYMENTS_MAX_MESSAGES", devYAML}, // not declared
		{"SLUICE_TOPICS_ORDERS_FAMILIES_AUDIT_CREDIT", ""},
		{"SLUICE_GATEWAY", ""}, // a section, not a key
		{"SLUICE_GATEWAY_TLS", devYAML},
	} {
		t.Run(tc.name+" "+tc.path, func(t *testing.T) {
			t.Setenv(tc.name, "1")
			_, err := Load(tc.path, nil, nil)
			if err == nil {
				t.Fatalf("%s=1 was accepted", tc.name)
			}
			var ee *EnvError
			if !errors.As(err, &ee) || ee.Var != tc.name || !errors.Is(err, errUnknownEnv) {
				t.Fatalf("error %q is not an unknown-variable error for %s", err, tc.name)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.name) || !strings.Contains(msg, "unknown variable") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %s", msg, tc.name)
			}
		})
	}
	t.Run("not configuration", func(t *testing.T) {
		for name := range notConfig {
			t.Setenv(name, "x")
		}
		if _, err := Load("", nil, nil); err != nil {
			t.Fatalf("variables that are not configuration refused: %v", err)
		}
	})
}

// TestEnvErrorsNameVariableAndKey: a value that does not fit its key, or
// fails validation, names the variable and the key, in one line.
func TestEnvErrorsNameVariableAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, value, key, want string
	}{
		{"SLUICE_TOPICS_ORDERS_MAX_MESSAGES", "lots", "topics.orders.max_messages", "whole number"},
		{"SLUICE_TOPICS_ORDERS_MAX_MESSAGES", "0", "topics.orders.max_messages", "at least 1"},
		{"SLUICE_TOPICS_ORDERS_FAMILIES_BILLING_ACK_WAIT", "soon", "topics.orders.families.billing.ack_wait", "invalid duration"},
		{"SLUICE_TOPICS_ORDERS_MAX_BYTES", "huge", "topics.orders.max_bytes", "huge"},
		{"SLUICE_DEMO_FAILURE_RATE", "7", "demo.failure_rate", "between 0 and 1"},
		{"SLUICE_DEMO_CREDIT", "1.5", "demo.credit", "whole number"},
		{"SLUICE_GATEWAY_PUBLISH_TIMEOUT", "30", "gateway.publish_timeout", "invalid duration"},
		{"SLUICE_DEMO_ENABLED", "yes please", "demo.enabled", "true or false"},
	} {
		for _, path := range []string{"", devYAML} {
			t.Run(tc.name+"="+tc.value+" "+path, func(t *testing.T) {
				t.Setenv(tc.name, tc.value)
				_, err := Load(path, nil, nil)
				if err == nil {
					t.Fatalf("%s=%s was accepted", tc.name, tc.value)
				}
				msg := err.Error()
				for _, w := range []string{tc.name, tc.key, tc.want} {
					if !strings.Contains(msg, w) {
						t.Errorf("error %q does not say %q", msg, w)
					}
				}
				if strings.Contains(msg, "\n") {
					t.Errorf("error %q is more than one line", msg)
				}
			})
		}
	}
}

// TestAmbiguousEnvRefused: topics "a-b" and "a_b" share their variables.
func TestAmbiguousEnvRefused(t *testing.T) {
	p := writeFile(t, "topics:\n  a-b:\n    families: {f: {}}\n  a_b:\n    families: {f: {}}\n")
	if _, err := Load(p, nil, nil); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_TOPICS_A_B_MAX_MESSAGES", "5")
	_, err := Load(p, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "topics.a-b.max_messages, topics.a_b.max_messages") {
		t.Fatalf("err = %v, want the two keys named", err)
	}
}

// TestEmptyEnvLeavesKey: an empty variable leaves its key as it is.
func TestEmptyEnvLeavesKey(t *testing.T) {
	t.Setenv("SLUICE_GATEWAY_LISTEN", "")
	cfg, err := Load("", nil, nil)
	if err != nil || cfg.Gateway.Listen != DefaultConfig().Gateway.Listen {
		t.Fatalf("gateway.listen = %q, %v", cfg.Gateway.Listen, err)
	}
}
