// Package test holds black-box tests of the built sluice binary and of the
// repository's promises (README quickstart, dependency direction).
package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// sluiceBin is the binary built once for every test here.
var sluiceBin string

// repoRoot is the repository's top directory.
var repoRoot string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	dir, err := os.MkdirTemp("", "sluice-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	sluiceBin = filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", sluiceBin, "./cmd/sluice")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sluice:", err)
		return 1
	}
	return m.Run()
}

// TestMain's helpers for tests that start the binary.
func command(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(sluiceBin, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "SLUICE_BROKER_DATA_DIR="+t.TempDir())
	return cmd
}
