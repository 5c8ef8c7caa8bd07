package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

// TestCertsAndNkeyCommands: `sluice certs` writes the dev CA and node
// certificate and keeps existing files unless --force; `sluice nkey --out`
// writes a seed (0600) and prints its public key.
func TestCertsAndNkeyCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if out, err := command(t, "certs", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("certs: %v\n%s", err, out)
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600, "node.pem": 0o644, "node-key.pem": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v", name, err, st.Mode().Perm())
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, "node.pem"))
	// A second make certs keeps the files and succeeds (issue 19).
	out, err := command(t, "certs", "--out", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kept") || !strings.Contains(string(out), "--force") {
		t.Fatalf("second certs: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "node.pem")); string(after) != string(before) {
		t.Fatal("certs without --force replaced a file")
	}
	if out, err := command(t, "certs", "--out", dir, "--force", "--hosts", "broker-9,10.1.2.3").CombinedOutput(); err != nil {
		t.Fatalf("certs --force: %v\n%s", err, out)
	}

	seedFile := filepath.Join(t.TempDir(), "gw.nk")
	out, err = command(t, "nkey", "--out", seedFile).Output()
	if err != nil {
		t.Fatalf("nkey: %v", err)
	}
	pub := strings.TrimSpace(string(out))
	seed, _ := os.ReadFile(seedFile)
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		t.Fatalf("seed file: %v", err)
	}
	if got, _ := kp.PublicKey(); got != pub || !nkeys.IsValidPublicUserKey(pub) {
		t.Fatalf("printed %q, seed's public key %q", pub, got)
	}
	if st, _ := os.Stat(seedFile); st.Mode().Perm() != 0o600 {
		t.Errorf("seed file mode %v", st.Mode().Perm())
	}
	if err := command(t, "nkey", "--out", seedFile).Run(); err == nil {
		t.Error("nkey replaced an existing seed file without --force")
	}
}

// TestSecureNodes: `sluice broker` with client TLS (verify_clients) and nkey
// users, a `sluice gateway` and a `sluice worker` signing in with their
// seeds over TLS: a posted message is handled.
func TestSecureNodes(t *testing.T) {
	dir := t.TempDir()
	if out, err := command(t, "certs", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("certs: %v\n%s", err, out)
	}
	nkey := func(name string) (pub, file string) {
		file = filepath.Join(dir, name+".nk")
		out, err := command(t, "nkey", "--out", file).Output()
		if err != nil {
			t.Fatalf("nkey: %v", err)
		}
		return strings.TrimSpace(string(out)), file
	}
	gwPub, gwSeed := nkey("gateway")
	wPub, wSeed := nkey("worker")
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	cfg := filepath.Join(dir, "sluice.yaml")
	yaml := `
bus:
  tls: {ca_file: ` + ca + `, cert_file: ` + cert + `, key_file: ` + key + `}
broker:
  listen: 127.0.0.1:-1
  tls: {cert_file: ` + cert + `, key_file: ` + key + `, ca_file: ` + ca + `, verify_clients: true}
  auth:
    users:
      - {name: gw, nkey: ` + gwPub + `, role: gateway}
      - {name: billing, nkey: ` + wPub + `, role: worker, families: [orders/billing]}
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	brokerProc, natsURL := startNode(t, nil, `"msg":"broker ready".*"client_url":"((?:nats|tls)://[0-9.:]+)"`, "broker", "--config", cfg)
	busEnv := []string{"SLUICE_BUS_URLS=" + natsURL}
	gw, addr := startNode(t, append(busEnv, "SLUICE_GATEWAY_LISTEN=127.0.0.1:0", "SLUICE_BUS_NKEY_SEED_FILE="+gwSeed),
		`"msg":"gateway listening".*"addr":"([0-9.:]+)"`, "gateway", "--config", cfg)
	w, _ := startNode(t, append(busEnv, "SLUICE_BUS_NKEY_SEED_FILE="+wSeed), `"msg":"(worker started)"`,
		"worker", "--config", cfg, "--topic", "orders", "--family", "billing", "--demo-delay", "1ms")

	resp, err := http.Post("http://"+addr+"/v1/topics/orders/messages", "application/json", strings.NewReader(`{"order":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post: %d\n%s", resp.StatusCode, gw.logs.String())
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(w.logs.String(), `"msg":"handled"`); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not handled; worker logs:\n%s", w.logs.String())
		}
	}
	for _, p := range []*proc{w, gw, brokerProc} {
		if s := strings.ToLower(p.logs.String()); strings.Contains(s, "permissions violation") {
			t.Errorf("%v hit a permission violation:\n%s", p.cmd.Args, p.logs.String())
		}
	}
	w.stop(t)
	gw.stop(t)
	brokerProc.stop(t)
}
