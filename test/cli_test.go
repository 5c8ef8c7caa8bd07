package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		args       []string
		env        []string
		want       []string
	}{
		{"unknown key", "gateway:\n  listne: 127.0.0.1:1\n", nil, nil, []string{"gateway.listne", "unknown key"}},
		{"bad duration", "gateway:\n  publish_timeout: 5 seconds\n", nil, nil, []string{"gateway.publish_timeout", "5 seconds"}},
		{"bad size", "topics:\n  t:\n    max_bytes: huge\n    families: {f: {}}\n", nil, nil, []string{"topics.t", "huge"}},
		{"unknown topic name", "topics:\n  Orders!:\n    families: {f: {}}\n", nil, nil, []string{"topics.Orders!"}},
		{"bad env override", "", nil, []string{"SLUICE_DEMO_FAILURE_RATE=7"}, []string{"demo.failure_rate"}},
		{"bad flag", "", []string{"--demo-failure-rate", "-1"}, nil, []string{"demo.failure_rate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := command(t, append([]string{"dev", "--config", path}, tc.args...)...)
			cmd.Env = append(cmd.Env, tc.env...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("want exit 1, got %v\n%s", err, out)
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not mention %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), "ready") {
				t.Errorf("started half-configured:\n%s", out)
			}
		})
	}
}

func TestWorkerRefusesUndeclaredTopicOrFamily(t *testing.T) {
	for _, tc := range []struct{ topic, family, want string }{
		{"nope", "billing", `--topic "nope": not a topic declared`},
		{"orders", "nope", `--family "nope": not a family of topic orders`},
	} {
		out, err := command(t, "worker", "--topic", tc.topic, "--family", tc.family).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(out), tc.want) {
			t.Errorf("worker %s/%s: %v\n%s", tc.topic, tc.family, err, out)
		}
	}
}

func TestHelpExplainsEveryCommand(t *testing.T) {
	for _, c := range []string{"dev", "broker", "gateway", "worker", "produce", "version"} {
		out, err := command(t, c, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", c, err, out)
		}
		if c != "version" && !strings.Contains(string(out), "Config keys used") {
			t.Errorf("%s --help does not list its config keys:\n%s", c, out)
		}
	}
	out, err := command(t, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nats-server v2.") {
		t.Fatalf("version: %v %s", err, out)
	}
}
