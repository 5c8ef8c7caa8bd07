package test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevStartFailures: `sluice dev` that cannot start exits 1 with one
// line naming the cause (the address in use, the data directory), never a
// panic, and never says it is ready.
func TestDevStartFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A read-only data directory, owned by another user when this one
	// is root (root writes anywhere): the binary then runs as nobody.
	ro := filepath.Join(world(t), "ro")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		asUser bool
		want   []string
	}{
		{"broker port in use", []string{"--nats-listen", addr, "--listen", "127.0.0.1:0"}, false, []string{"broker.listen", addr, "address already in use"}},
		{"gateway port in use", []string{"--nats-listen", "127.0.0.1:-1", "--listen", addr}, false, []string{"gateway.listen", addr, "address already in use"}},
		{"data dir under a regular file", []string{"--data-dir", filepath.Join(file, "store"), "--nats-listen", "127.0.0.1:-1", "--listen", "127.0.0.1:0"}, false,
			[]string{"broker.data_dir", filepath.Join(file, "store"), "not a directory"}},
		{"read-only data dir", []string{"--data-dir", ro, "--nats-listen", "127.0.0.1:-1", "--listen", "127.0.0.1:0"}, true,
			[]string{"broker.data_dir", ro, "permission denied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			bin, attr := sluiceBin, (*syscall.SysProcAttr)(nil)
			if tc.asUser && os.Geteuid() == 0 {
				bin, attr = nobodysCopy(t), &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			}
			cmd := exec.CommandContext(ctx, bin, append([]string{"dev"}, tc.args...)...)
			cmd.Dir, cmd.SysProcAttr = repoRoot, attr
			cmd.Env = append(os.Environ(), "SLUICE_BROKER_DATA_DIR="+t.TempDir())
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("want exit 1, got %v\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "sluice: ") {
				t.Errorf("last line %q is not the error\n%s", last, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(last, w) {
					t.Errorf("error line %q does not say %q", last, w)
				}
			}
			for _, bad := range []string{"panic", "goroutine ", "Sluice is ready", "sluice dev ready"} {
				if strings.Contains(string(out), bad) {
					t.Errorf("output says %q:\n%s", bad, out)
				}
			}
		})
	}
}

// world is a temporary directory any user may enter.
func world(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sluice-devfail-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chmod(p, 0o755) })
		os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nobodysCopy is the binary copied where nobody may run it (the built one
// is in a directory private to this user).
func nobodysCopy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(world(t), "sluice")
	src, err := os.Open(sluiceBin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}
