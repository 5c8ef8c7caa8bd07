package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Identity is a bus user nkey with its seed in a file, as `sluice nkey
// --out` makes.
type Identity struct {
	Pub, SeedFile string
}

// NewIdentity makes a user nkey and writes its seed under t's temporary
// directory.
func NewIdentity(t testing.TB) Identity {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	file := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(file, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return Identity{Pub: pub, SeedFile: file}
}

// Violations collects a connection's asynchronous errors: give Handler to
// nats.ErrorHandler, then Wait for the broker's permission violation.
type Violations chan error

// NewViolations holds up to 64 errors (more are dropped).
func NewViolations() Violations { return make(Violations, 64) }

// Handler is the connection's error handler.
func (v Violations) Handler() nats.ErrHandler {
	return func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case v <- err:
		default:
		}
	}
}

// Wait flushes nc and waits for its next asynchronous error, which must be
// a permissions violation; what says what was tried.
func (v Violations) Wait(t testing.TB, nc *nats.Conn, what string) {
	t.Helper()
	_ = nc.Flush()
	select {
	case err := <-v:
		if !strings.Contains(err.Error(), "Permissions Violation") {
			t.Fatalf("%s: want a permissions violation, got %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s without a permissions violation", what)
	}
}
