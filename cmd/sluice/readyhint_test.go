package main

import (
	"net"
	"strings"
	"testing"

	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/internal/tenant"
)

// TestReadyHint: the hint `sluice dev` prints when ready speaks the
// gateway's scheme, and names the CA, the client certificate and the key
// when the configuration asks for them.
func TestReadyHint(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	plain := config.DefaultConfig()
	h := readyHint(plain, addr)
	for _, w := range []string{"curl -i -X POST http://127.0.0.1:8080/v1/topics/orders/messages", "curl -s http://127.0.0.1:8080/v1/topics/orders"} {
		if !strings.Contains(h, w) {
			t.Errorf("plain hint does not say %q:\n%s", w, h)
		}
	}
	for _, bad := range []string{"https", "Authorization", "--cacert"} {
		if strings.Contains(h, bad) {
			t.Errorf("plain hint says %q:\n%s", bad, h)
		}
	}

	secured := config.DefaultConfig()
	secured.Gateway.TLS.CertFile, secured.Gateway.TLS.KeyFile = "certs/node.pem", "certs/node-key.pem"
	secured.Producer.TLS.CAFile = "certs/ca.pem"
	secured.Auth = tenant.Config{Mode: tenant.ModeKeys, Tenants: map[string]tenant.Tenant{"acme": {}}}
	h = readyHint(secured, &net.TCPAddr{IP: net.IPv4zero, Port: 8443})
	for _, w := range []string{
		"https://127.0.0.1:8443/v1/topics/orders/messages",
		"--cacert certs/ca.pem",
		`-H "Authorization: Bearer $SLUICE_API_KEY"`,
		"auth.mode is keys", "acme", "sluice keys new",
	} {
		if !strings.Contains(h, w) {
			t.Errorf("secured hint does not say %q:\n%s", w, h)
		}
	}
	if strings.Contains(h, "http://") {
		t.Errorf("secured hint speaks http:\n%s", h)
	}

	mtls := secured
	mtls.Gateway.TLS.CAFile, mtls.Gateway.TLS.VerifyClients = "certs/ca.pem", true
	mtls.Producer.TLS.CertFile, mtls.Producer.TLS.KeyFile = "certs/node.pem", "certs/node-key.pem"
	if h := readyHint(mtls, addr); !strings.Contains(h, "--cert certs/node.pem --key certs/node-key.pem") {
		t.Errorf("mutual-TLS hint names no client certificate:\n%s", h)
	}
}
