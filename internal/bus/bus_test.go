package bus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestCheckSeedFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	user, _ := nkeys.CreateUser()
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()

	if err := CheckSeedFile(write("user.nk", append(seed, '\n'))); err != nil {
		t.Fatalf("user seed: %v", err)
	}
	for name, content := range map[string][]byte{
		"public.nk":  []byte(pub),
		"account.nk": accountSeed,
		"junk.nk":    []byte("not a key"),
	} {
		err := CheckSeedFile(write(name, content))
		if err == nil {
			t.Errorf("%s accepted", name)
			continue
		}
		if strings.Contains(err.Error(), string(accountSeed)) {
			t.Errorf("%s: error shows the seed: %v", name, err)
		}
	}
	if err := CheckSeedFile(filepath.Join(dir, "missing.nk")); err == nil {
		t.Error("missing file accepted")
	}
}
