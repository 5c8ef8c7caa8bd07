package devstack

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/internal/testkit/harness"
)

// freeAddr is a loopback address nothing listens on (it did a moment ago).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// taken is a loopback address held by a listener until the test ends.
func taken(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestStartFailsCleanly: each way `sluice dev` can fail to start returns
// an error naming its cause (no panic), and leaves nothing behind: the
// listeners it opened can be bound again and its goroutines have ended.
func TestStartFailsCleanly(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup returns the broker's data dir, the broker's and the
		// gateway's listen addresses, and what the error must say.
		setup func(t *testing.T) (dataDir, brokerAddr, gatewayAddr string, want []string)
	}{
		{"broker port in use", func(t *testing.T) (string, string, string, []string) {
			busy := taken(t)
			return t.TempDir(), busy, freeAddr(t), []string{"broker.listen", busy, "address already in use"}
		}},
		{"gateway port in use", func(t *testing.T) (string, string, string, []string) {
			busy := taken(t)
			return t.TempDir(), freeAddr(t), busy, []string{"gateway.listen", busy, "address already in use"}
		}},
		{"data dir under a regular file", func(t *testing.T) (string, string, string, []string) {
			file := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(file, "store")
			return dir, freeAddr(t), freeAddr(t), []string{"broker.data_dir", dir, "not a directory"}
		}},
		{"read-only data dir", func(t *testing.T) (string, string, string, []string) {
			ro := filepath.Join(t.TempDir(), "ro")
			if err := os.Mkdir(ro, 0o555); err != nil {
				t.Fatal(err)
			}
			if f, err := os.CreateTemp(ro, "probe"); err == nil {
				f.Close()
				t.Skip("this user writes in a read-only directory (root); the CLI test runs this case as another user")
			}
			return ro, freeAddr(t), freeAddr(t), []string{"broker.data_dir", ro, "permission denied"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir, brokerAddr, gatewayAddr, want := tc.setup(t)
			cfg := testConfig(dataDir, 0)
			cfg.Broker.Listen, cfg.Gateway.Listen = brokerAddr, gatewayAddr
			cfg.Broker.ReadyTimeout = 10 * time.Second
			before := runtime.NumGoroutine()
			s, err := Start(cfg, harness.Logger(t), prometheus.NewRegistry())
			if err == nil {
				s.close()
				t.Fatal("started")
			}
			if s != nil {
				t.Errorf("a failed Start returned a stack")
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
			for _, addr := range []string{brokerAddr, gatewayAddr} {
				if !strings.Contains(err.Error(), addr) { // not the busy one: ours to check
					ln, err := net.Listen("tcp", addr)
					if err != nil {
						t.Errorf("%s still bound after the failed start: %v", addr, err)
						continue
					}
					ln.Close()
				}
			}
			noGoroutinesLeft(t, before)
		})
	}
}

// noGoroutinesLeft waits until no more goroutines run than before, and
// fails the test with their stacks if they do not end.
func noGoroutinesLeft(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the failed start, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
