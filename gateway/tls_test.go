package gateway_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/devcerts"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/tlsconf"
)

// runGateway runs g with Run (its own listener and server settings) until
// the test ends, and returns its address.
func runGateway(t *testing.T, g *gateway.Gateway) string {
	t.Helper()
	addr, err := g.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway run: %v", err)
		}
	})
	return addr.String()
}

// TestHTTPSEdge: with a certificate the gateway serves TLS 1.2+ only, with
// HTTP/2; clients verify it against the dev CA of `make certs`.
func TestHTTPSEdge(t *testing.T) {
	files, err := devcerts.Generate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(topics)
	cfg.TLS = tlsconf.Config{CertFile: files.Cert, KeyFile: files.Key}
	g, err := gateway.New(cfg, nc, harness.Logger(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := runGateway(t, g)
	clientTLS, err := tlsconf.Config{CAFile: files.CA}.Client()
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}}
	url := "https://" + addr
	harness.Eventually(t, 10*time.Second, func() bool {
		resp, err := client.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "HTTPS gateway not ready")

	resp, err := client.Post(url+"/v1/topics/orders/messages", "text/plain", strings.NewReader("over TLS"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || resp.ProtoMajor != 2 {
		t.Fatalf("status %d, TLS %v, proto %s; want 202 over TLS 1.2+ with HTTP/2", resp.StatusCode, resp.TLS != nil, resp.Proto)
	}
	t.Logf("HTTPS publish: %s, TLS version %#x, %s", resp.Status, resp.TLS.Version, resp.Proto)

	t.Run("TLS 1.1 refused", func(t *testing.T) {
		old := clientTLS.Clone()
		old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: old}}
		_, err := c.Get(url + "/healthz")
		if err == nil {
			t.Fatal("a TLS 1.1 client got in")
		}
		t.Logf("TLS 1.1 client: %v", err)
	})
	t.Run("unknown CA refused", func(t *testing.T) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}}
		_, err := c.Get(url + "/healthz")
		var verr *tls.CertificateVerificationError
		if !errors.As(err, &verr) {
			t.Fatalf("err = %v, want a certificate verification error", err)
		}
	})
	t.Run("plain HTTP to the TLS port", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP: %d %s", resp.StatusCode, b)
		}
	})
}

// TestGatewayTLSConfigChecked: a half-given certificate stops the start
// with the key named.
func TestGatewayTLSConfigChecked(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	cfg := harness.GatewayConfig(topics)
	cfg.TLS = tlsconf.Config{CertFile: "/nonexistent/node.pem"}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "gateway.tls.key_file") {
		t.Fatalf("Validate = %v, want gateway.tls.key_file named", err)
	}
}
