package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/sluicebus/sluice/internal/devcerts"
)

// TestSecurityKeys: bus and broker TLS, route credentials and client users
// load from the file and the environment, and bad values name their key.
func TestSecurityKeys(t *testing.T) {
	certs, err := devcerts.Generate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_BROKER_CLUSTER_PASSWORD", "s3cret")
	p := writeFile(t, `
bus:
  tls: {ca_file: `+certs.CA+`, cert_file: `+certs.Cert+`, key_file: `+certs.Key+`}
  nkey_seed_file: `+seedFile+`
broker:
  tls: {cert_file: `+certs.Cert+`, key_file: `+certs.Key+`, ca_file: `+certs.CA+`, verify_clients: true}
  cluster:
    name: c
    listen: 127.0.0.1:6222
    routes: [nats-route://127.0.0.1:6223]
    tls: {cert_file: `+certs.Cert+`, key_file: `+certs.Key+`, ca_file: `+certs.CA+`}
    user: route
  auth:
    users:
      - {name: w1, nkey: `+pub+`, role: worker, families: [orders/billing]}
`)
	cfg, err := Load(p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bus.TLS.CAFile != certs.CA || cfg.Bus.NkeySeedFile != seedFile || !cfg.Broker.TLS.VerifyClients ||
		cfg.Broker.Cluster.TLS.CAFile != certs.CA || cfg.Broker.Cluster.User != "route" || cfg.Broker.Cluster.Password != "s3cret" {
		t.Fatalf("not loaded: bus %+v broker tls %+v cluster %+v", cfg.Bus, cfg.Broker.TLS, cfg.Broker.Cluster.TLS)
	}
	if u := cfg.Broker.Auth.Users; len(u) != 1 || u[0].Nkey != pub || u[0].Families[0] != "orders/billing" {
		t.Fatalf("users %+v", u)
	}

	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"bus ca missing", "bus:\n  tls: {ca_file: " + missing + "}\n", []string{"bus.tls.ca_file"}},
		{"bus seed is a public key", "bus:\n  nkey_seed_file: " + writeFile(t, pub) + "\n", []string{"bus.nkey_seed_file"}},
		{"bus tls unknown key", "bus:\n  tls: {cafile: x}\n", []string{"bus.tls.cafile", "unknown key"}},
		{"broker tls without key", "broker:\n  tls: {cert_file: " + certs.Cert + "}\n", []string{"broker.tls.key_file"}},
		{"broker tls CA only", "broker:\n  tls: {ca_file: " + certs.CA + "}\n", []string{"broker.tls.cert_file"}},
		{"route tls without CA", "broker:\n  cluster: {name: c, listen: 127.0.0.1:1, routes: [nats-route://h:2], tls: {cert_file: " + certs.Cert + ", key_file: " + certs.Key + "}}\n",
			[]string{"broker.cluster.tls.ca_file"}},
		{"route password without user", "broker:\n  cluster: {name: c, listen: 127.0.0.1:1, routes: [nats-route://h:2], password: pw}\n", []string{"broker.cluster.user"}},
		{"route credentials in URL", "broker:\n  cluster: {name: c, listen: 127.0.0.1:1, routes: [nats-route://u:pw@h:2], user: u, password: pw}\n",
			[]string{"broker.cluster.routes[0]"}},
		{"user unknown key", "broker:\n  auth:\n    users: [{name: a, nkey: " + pub + ", role: admin, colour: red}]\n", []string{"colour"}},
		{"user bad nkey", "broker:\n  auth:\n    users: [{name: a, nkey: " + string(seed) + ", role: admin}]\n", []string{"broker.auth.users[0].nkey"}},
		{"user bad role", "broker:\n  auth:\n    users: [{name: a, nkey: " + pub + ", role: root}]\n", []string{"broker.auth.users[0].role"}},
		{"worker undeclared family", "broker:\n  auth:\n    users: [{name: a, nkey: " + pub + ", role: worker, families: [orders/nope]}]\n", []string{"broker.auth.users[0].families[0]"}},
		{"worker without families", "broker:\n  auth:\n    users: [{name: a, nkey: " + pub + ", role: worker}]\n", []string{"broker.auth.users[0].families"}},
		{"gateway with families", "broker:\n  auth:\n    users: [{name: a, nkey: " + pub + ", role: gateway, families: [orders/billing]}]\n", []string{"broker.auth.users[0].families"}},
		{"same nkey twice", "broker:\n  auth:\n    users: [{name: a, nkey: " + pub + ", role: admin}, {name: b, nkey: " + pub + ", role: admin}]\n", []string{"broker.auth.users[1].nkey"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFile(t, tc.yaml), nil, nil)
			if err == nil {
				t.Fatal("loaded a bad config")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), string(seed)) || strings.Contains(err.Error(), "pw@") {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
}
