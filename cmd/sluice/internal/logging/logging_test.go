package logging

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNoColourOffTerminal: a pipe or a file gets no colour codes; nor
// does a terminal with NO_COLOR set. (The CLI test reads `sluice dev`'s
// logs through a pipe for escape codes.)
func TestNoColourOffTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, file := range map[string]*os.File{"pipe": w, "file": f} {
		if Colour(file) {
			t.Errorf("%s: colour on", name)
		}
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		t.Setenv("NO_COLOR", "1")
		if Colour(tty) {
			t.Error("a terminal with NO_COLOR set: colour on")
		}
	}
}
