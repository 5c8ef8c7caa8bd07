package test

import (
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/sluicebus/sluice/"

// depRule is one rule of the layout (STYLE.md, README's Layout): the
// packages under prefix (but except) may not depend, directly or through
// others, on anything under a forbidden prefix; stdOnly packages depend on
// the standard library only.
type depRule struct {
	why     string
	prefix  string
	except  []string
	forbid  []string
	stdOnly bool
}

// layout is the three floors: commands and their tools (cmd/), the nodes
// (broker/, gateway/), leaf libraries (internal/, and the public SDK in
// pkg/sluice); pure cores under their driver.
var layout = []depRule{
	{why: "the SDK never compiles a server, a node, a leaf library or a command", prefix: mod + "pkg/",
		forbid: []string{"github.com/nats-io/nats-server", mod + "broker", mod + "gateway", mod + "internal/", mod + "cmd/"}},
	{why: "pkg/ holds the public SDK only", prefix: mod + "pkg/", except: []string{mod + "pkg/sluice"}, forbid: []string{""}},
	{why: "the gateway never imports the broker, a server or a command", prefix: mod + "gateway",
		forbid: []string{"github.com/nats-io/nats-server", mod + "broker", mod + "cmd/"}},
	{why: "the broker never imports the gateway or a command", prefix: mod + "broker",
		forbid: []string{mod + "gateway", mod + "cmd/"}},
	{why: "leaf libraries never import a node or a command (the test kit alone starts nodes)", prefix: mod + "internal/",
		except: []string{mod + "internal/testkit/harness"}, forbid: []string{mod + "broker", mod + "gateway", mod + "cmd/"}},
	{why: "the pull window is a pure core", prefix: mod + "pkg/sluice/internal/credit", stdOnly: true},
	{why: "the admission arithmetic is a pure core", prefix: mod + "gateway/internal/admit", stdOnly: true},
}

// layoutViolations checks deps (each package's transitive dependencies)
// against rules; std tells the standard library's packages.
func layoutViolations(rules []depRule, deps map[string][]string, std map[string]bool) []string {
	var out []string
	for _, pkg := range slices.Sorted(maps.Keys(deps)) {
		for _, r := range rules {
			if !under(pkg, r.prefix) || slices.ContainsFunc(r.except, func(e string) bool { return under(pkg, e) }) {
				continue
			}
			if r.stdOnly {
				for _, d := range deps[pkg] {
					if !std[d] {
						out = append(out, pkg+" depends on "+d+": "+r.why)
					}
				}
			}
			for _, f := range r.forbid {
				if f == "" {
					out = append(out, pkg+" exists: "+r.why)
					continue
				}
				for _, d := range deps[pkg] {
					if strings.HasPrefix(d, f) {
						out = append(out, pkg+" depends on "+d+": "+r.why)
					}
				}
			}
		}
	}
	return out
}

// under: pkg is prefix or inside it (a prefix ending in "/" matches only inside).
func under(pkg, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(pkg, prefix)
	}
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

// TestDependencyDirection keeps the layering of STYLE.md on the real tree.
func TestDependencyDirection(t *testing.T) {
	deps := map[string][]string{}
	for _, line := range goList(t, "-f", "{{.ImportPath}}:{{join .Deps \" \"}}", "./...") {
		pkg, ds, _ := strings.Cut(line, ":")
		deps[pkg] = strings.Fields(ds)
	}
	std := map[string]bool{}
	for _, line := range goList(t, "-deps", "-f", "{{.ImportPath}} {{.Standard}}", "./...") {
		pkg, s, _ := strings.Cut(line, " ")
		std[pkg] = s == "true"
	}
	for _, want := range []string{mod + "pkg/sluice/internal/credit", mod + "gateway/internal/admit", mod + "internal/testkit/harness"} {
		if _, ok := deps[want]; !ok {
			t.Errorf("package %s is missing: the rules name it", want)
		}
	}
	for _, v := range layoutViolations(layout, deps, std) {
		t.Error(v)
	}
}

// TestLayoutRulesCatchViolations: each rule reports a deliberate
// violation, so a rule that cannot fail is seen.
func TestLayoutRulesCatchViolations(t *testing.T) {
	std := map[string]bool{"fmt": true, "time": true}
	for _, tc := range []struct {
		pkg, dep string
		want     bool
	}{
		{mod + "internal/alarm", mod + "gateway", true},
		{mod + "internal/alarm", mod + "broker", true},
		{mod + "internal/topology", mod + "cmd/sluice/internal/config", true},
		{mod + "internal/testkit/history", mod + "broker", true},
		{mod + "internal/testkit/harness", mod + "broker", false},
		{mod + "pkg/sluice", mod + "internal/topology", true},
		{mod + "pkg/sluice", "github.com/nats-io/nats-server/v2/server", true},
		{mod + "pkg/sluice", mod + "pkg/sluice/internal/credit", false},
		{mod + "pkg/credit", "fmt", true},
		{mod + "gateway", mod + "broker", true},
		{mod + "gateway", mod + "internal/topology", false},
		{mod + "broker", mod + "gateway", true},
		{mod + "broker", mod + "cmd/sluice/internal/config", true},
		{mod + "gateway/internal/admit", "github.com/nats-io/nats.go", true},
		{mod + "gateway/internal/admit", "time", false},
		{mod + "pkg/sluice/internal/credit", mod + "internal/topology", true},
		{mod + "cmd/sluice/internal/devstack", mod + "broker", false},
	} {
		got := layoutViolations(layout, map[string][]string{tc.pkg: {"fmt", tc.dep}}, std)
		if (len(got) > 0) != tc.want {
			t.Errorf("%s -> %s: violations %q, want any: %v", tc.pkg, tc.dep, got, tc.want)
		}
	}
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}
