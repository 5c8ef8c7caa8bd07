package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluicebus/sluice/internal/alarm"
)

// ruleFile is the part of a Prometheus rule file the checks read; decoding
// is strict, so a misspelt key fails.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Limit    int    `yaml:"limit"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert         string            `yaml:"alert"`
	Record        string            `yaml:"record"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

var (
	// metricRe finds metric names in PromQL once quoted strings are removed.
	metricRe   = regexp.MustCompile(`sluice_[a-z0-9_]+`)
	quotedRe   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	literalRe  = regexp.MustCompile("[\"`](sluice_[a-z0-9_]+)[\"`]")
	alarmSelRe = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_])name\s*=\s*"([^"]*)"`)
)

// TestMonitoringFiles keeps the compose monitoring profile in step with the
// code: one alert rule per alarm of alarm.Catalog at its severity, only
// metric names the Go sources define in the alerts and the dashboard, and
// the files wired into Prometheus and Grafana. With promtool on the PATH it
// also checks the rules, the config and the dashboard's PromQL.
func TestMonitoringFiles(t *testing.T) {
	deploy := filepath.Join(repoRoot, "deploy")
	metrics := metricLiterals(t)

	t.Run("alerts", func(t *testing.T) {
		var rf ruleFile
		decodeYAML(t, filepath.Join(deploy, "prometheus", "alerts.yml"), &rf, true)
		severities := map[string]bool{}
		for _, c := range alarm.Catalog {
			severities[string(c.Severity)] = true
		}
		byAlarm := map[string][]rule{}
		seen := map[string]bool{}
		n := 0
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				n++
				if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
					t.Errorf("group %s: rule %q needs alert, expr, annotations.summary and labels.severity", g.Name, r.Alert)
				}
				if !severities[r.Labels["severity"]] {
					t.Errorf("%s: severity %q is not an alarm severity", r.Alert, r.Labels["severity"])
				}
				if seen[r.Alert] {
					t.Errorf("%s: alert name used twice", r.Alert)
				}
				seen[r.Alert] = true
				for _, m := range alarmSelRe.FindAllStringSubmatch(r.Expr, -1) {
					byAlarm[m[1]] = append(byAlarm[m[1]], r)
				}
				checkMetrics(t, "alerts.yml "+r.Alert, r.Expr, metrics)
			}
		}
		if n == 0 {
			t.Fatal("alerts.yml has no rules")
		}
		for _, c := range alarm.Catalog {
			rs := byAlarm[string(c.Name)]
			if len(rs) != 1 {
				t.Errorf("alarm %s: %d rules select name=%q, want 1", c.Name, len(rs), c.Name)
				continue
			}
			if got := rs[0].Labels["severity"]; got != string(c.Severity) {
				t.Errorf("alarm %s: rule %s has severity %q, the catalog says %q", c.Name, rs[0].Alert, got, c.Severity)
			}
			if !strings.Contains(rs[0].Expr, "sluice_alarm_active") {
				t.Errorf("alarm %s: rule %s does not read sluice_alarm_active", c.Name, rs[0].Alert)
			}
			delete(byAlarm, string(c.Name))
		}
		for name, rs := range byAlarm {
			t.Errorf("rule %s selects name=%q, which is not in alarm.Catalog", rs[0].Alert, name)
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(deploy, "grafana", "sluice.json"))
		if err != nil {
			t.Fatal(err)
		}
		var dash map[string]any
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatalf("sluice.json: %v", err)
		}
		if _, ok := dash["panels"].([]any); !ok {
			t.Fatal("sluice.json has no panels")
		}
		var ds struct {
			Datasources []struct {
				Name string `yaml:"name"`
				UID  string `yaml:"uid"`
			} `yaml:"datasources"`
		}
		decodeYAML(t, filepath.Join(deploy, "grafana", "provisioning", "datasources", "prometheus.yml"), &ds, false)
		if len(ds.Datasources) != 1 || ds.Datasources[0].UID == "" {
			t.Fatalf("the provisioned datasources want one with a uid, got %+v", ds.Datasources)
		}
		uid := ds.Datasources[0].UID
		exprs, uids := dashboardExprs(dash)
		if len(exprs) < 10 {
			t.Fatalf("sluice.json: %d exprs found, expected a full dashboard", len(exprs))
		}
		for _, e := range exprs {
			checkMetrics(t, "sluice.json", e, metrics)
		}
		for _, u := range uids {
			if u != uid {
				t.Errorf("sluice.json: datasource uid %q, the provisioned one is %q", u, uid)
			}
		}
	})

	t.Run("wiring", func(t *testing.T) {
		var prom struct {
			RuleFiles []string `yaml:"rule_files"`
		}
		decodeYAML(t, filepath.Join(deploy, "prometheus", "prometheus.yml"), &prom, false)
		var compose struct {
			Services map[string]struct {
				Volumes []string `yaml:"volumes"`
			} `yaml:"services"`
		}
		decodeYAML(t, filepath.Join(deploy, "docker-compose.yml"), &compose, false)
		mounted := func(service, src, dstDir, dst string) bool {
			for _, v := range compose.Services[service].Volumes {
				p := strings.Split(v, ":")
				if len(p) >= 2 && p[0] == src && (p[1] == dst || dst == "" && path.Dir(p[1]) == dstDir) {
					return true
				}
			}
			return false
		}

		i := slices.IndexFunc(prom.RuleFiles, func(f string) bool { return path.Base(f) == "alerts.yml" })
		if i < 0 {
			t.Errorf("prometheus.yml: rule_files %q does not list alerts.yml", prom.RuleFiles)
		} else {
			in := prom.RuleFiles[i]
			if !path.IsAbs(in) {
				in = path.Join("/etc/prometheus", in) // relative to the config file
			}
			if !mounted("prometheus", "./prometheus/alerts.yml", "", in) {
				t.Errorf("docker-compose.yml: prometheus does not mount ./prometheus/alerts.yml at %s", in)
			}
		}

		provDir := filepath.Join(deploy, "grafana", "provisioning", "dashboards")
		files, _ := filepath.Glob(filepath.Join(provDir, "*.y*ml"))
		if len(files) == 0 {
			t.Fatalf("no dashboard provider in %s", provDir)
		}
		found := false
		for _, f := range files {
			var prov struct {
				Providers []struct {
					Options struct {
						Path string `yaml:"path"`
					} `yaml:"options"`
				} `yaml:"providers"`
			}
			decodeYAML(t, f, &prov, false)
			for _, p := range prov.Providers {
				found = found || p.Options.Path != "" && mounted("grafana", "./grafana/sluice.json", path.Clean(p.Options.Path), "")
			}
		}
		if !found {
			t.Error("docker-compose.yml: grafana does not mount ./grafana/sluice.json in a dashboard provider's path")
		}
	})

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Log("promtool not on PATH: rules, config and dashboard PromQL not checked by it")
			return
		}
		// The dashboard's queries as recording rules, with Grafana's
		// variables given values, so promtool parses their PromQL too.
		raw, err := os.ReadFile(filepath.Join(deploy, "grafana", "sluice.json"))
		if err != nil {
			t.Fatal(err)
		}
		var dash map[string]any
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatal(err)
		}
		exprs, _ := dashboardExprs(dash)
		vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$topic", ".*")
		var rules bytes.Buffer
		rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
		for i, e := range exprs {
			if strings.HasPrefix(e, "label_values(") { // Grafana's, not PromQL
				continue
			}
			q, _ := json.Marshal(vars.Replace(e)) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: dashboard:expr%d\n        expr: %s\n", i, q)
		}
		dashRules := filepath.Join(t.TempDir(), "dashboard-rules.yml")
		if err := os.WriteFile(dashRules, rules.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"check", "rules", filepath.Join(deploy, "prometheus", "alerts.yml")},
			{"check", "config", filepath.Join(deploy, "prometheus", "prometheus.yml")},
			{"check", "rules", dashRules},
		} {
			out, err := exec.Command(promtool, args...).CombinedOutput()
			if err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})
}

// metricLiterals is every "sluice_..." string literal in the module's
// non-test Go sources: the metric names the code can export.
func metricLiterals(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != repoRoot && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" ||
				filepath.Dir(p) == repoRoot && (d.Name() == "data" || d.Name() == "run")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range literalRe.FindAllSubmatch(src, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !names["sluice_alarm_active"] || len(names) < 10 {
		t.Fatalf("found %d metric names under %s: is the repository root right?", len(names), repoRoot)
	}
	return names
}

// checkMetrics fails t for each sluice_ metric in the PromQL expr that the
// Go sources do not define (a histogram's series count as its name).
func checkMetrics(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	for _, m := range metricRe.FindAllString(quotedRe.ReplaceAllString(expr, `""`), -1) {
		ok := known[m]
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			ok = ok || strings.HasSuffix(m, s) && known[strings.TrimSuffix(m, s)]
		}
		if !ok {
			t.Errorf("%s: metric %s is not defined in the Go sources (expr %s)", where, m, expr)
		}
	}
}

// dashboardExprs returns every query of a dashboard (panel targets, rows'
// nested panels, templating variables) and every datasource uid it names.
func dashboardExprs(v any) (exprs, uids []string) {
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok {
					switch {
					case k == "expr", k == "definition", key == "query" && k == "query":
						exprs = append(exprs, s)
					case key == "datasource" && k == "uid":
						uids = append(uids, s)
					}
					continue
				}
				walk(k, c)
			}
		case []any:
			for _, c := range v {
				walk(key, c)
			}
		}
	}
	walk("", v)
	return exprs, uids
}

// decodeYAML decodes the YAML file at p into v, rejecting unknown keys if
// strict.
func decodeYAML(t *testing.T, p string, v any, strict bool) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(strict)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}
