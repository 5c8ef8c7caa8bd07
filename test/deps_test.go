package test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the layering of STYLE.md: the SDK never
// compiles a server, node packages never import each other.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/sluicebus/sluice/"
	for pkg, forbidden := range map[string][]string{
		"./pkg/sluice": {"github.com/nats-io/nats-server", mod + "broker", mod + "gateway", mod + "internal"},
		"./pkg/credit": {"github.com/nats-io", mod},
		"./gateway":    {"github.com/nats-io/nats-server", mod + "broker"},
		"./broker":     {mod + "gateway"},
	} {
		cmd := exec.Command("go", "list", "-deps", pkg)
		cmd.Dir = repoRoot
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		self := mod + strings.TrimPrefix(pkg, "./")
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if dep != self && strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
