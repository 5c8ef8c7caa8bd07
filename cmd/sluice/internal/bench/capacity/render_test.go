package capacity

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/plan.golden")

// TestGolden pins the text output of one blueprint: go test -run Golden -update.
func TestGolden(t *testing.T) {
	b, err := Build(devInput(50_000, 1024, 20*time.Millisecond, 3), Default())
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := b.WriteText(&got); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "plan.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("text output differs from %s (rerun with -update if intended):\n%s", path, got.String())
	}
}
