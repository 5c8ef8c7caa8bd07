package tlsconf

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/devcerts"
	"github.com/sluicebus/sluice/internal/topology"
)

func certs(t *testing.T) devcerts.Files {
	t.Helper()
	f, err := devcerts.Generate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// keys lists the keys named by the KeyErrors in err.
func keys(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var ke *topology.KeyError
		if errors.As(e, &ke) {
			out = append(out, ke.Key)
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

func TestZeroIsOff(t *testing.T) {
	var c Config
	if c.Enabled() {
		t.Fatal("zero config enabled")
	}
	if err := c.Validate("x"); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateServer("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Server(); err == nil {
		t.Fatal("Server without a certificate succeeded")
	}
}

func TestValidate(t *testing.T) {
	f := certs(t)
	other := certs(t)
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name   string
		c      Config
		server bool
		want   []string
	}{
		{"complete", Config{CertFile: f.Cert, KeyFile: f.Key, CAFile: f.CA, VerifyClients: true}, true, nil},
		{"client CA only", Config{CAFile: f.CA}, false, nil},
		{"server CA only", Config{CAFile: f.CA}, true, []string{"p.cert_file"}},
		{"cert without key", Config{CertFile: f.Cert}, false, []string{"p.key_file"}},
		{"key without cert", Config{KeyFile: f.Key}, false, []string{"p.cert_file"}},
		{"key of another cert", Config{CertFile: f.Cert, KeyFile: other.Key}, false, []string{"p.cert_file"}},
		{"missing cert", Config{CertFile: missing, KeyFile: f.Key}, false, []string{"p.cert_file"}},
		{"missing CA", Config{CAFile: missing}, false, []string{"p.ca_file"}},
		{"junk CA", Config{CAFile: junk}, false, []string{"p.ca_file"}},
		{"verify without CA", Config{CertFile: f.Cert, KeyFile: f.Key, VerifyClients: true}, true, []string{"p.verify_clients"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.server {
				err = tc.c.ValidateServer("p")
			} else {
				err = tc.c.Validate("p")
			}
			got := keys(err)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("keys %v, want %v (err: %v)", got, tc.want, err)
			}
		})
	}
}

// handshake runs one TLS handshake between srv and cli over a loopback
// connection and returns the client's and the server's errors.
func handshake(t *testing.T, srv, cli *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, srv)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3: the server learns of a refused client certificate
			// only when it reads.
			_, err = tc.Read(make([]byte, 1))
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cli = cli.Clone()
	cli.ServerName = "127.0.0.1"
	tc := tls.Client(c, cli)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = tc.Write([]byte("x"))
		if clientErr == nil {
			_, clientErr = tc.Read(make([]byte, 1)) // the server's verdict on our certificate
			if isEOF(clientErr) {
				clientErr = nil
			}
		}
	}
	tc.Close()
	serverErr = <-done
	if serverErr != nil && isEOF(serverErr) {
		serverErr = nil
	}
	return clientErr, serverErr
}

func isEOF(err error) bool {
	return err != nil && (err.Error() == "EOF" || strings.Contains(err.Error(), "use of closed"))
}

func TestHandshakes(t *testing.T) {
	f := certs(t)
	other := certs(t)
	mustServer := func(c Config) *tls.Config {
		s, err := c.Server()
		if err != nil {
			t.Fatal(err)
		}
		if s.MinVersion != tls.VersionTLS12 {
			t.Fatalf("server MinVersion %x", s.MinVersion)
		}
		return s
	}
	mustClient := func(c Config) *tls.Config {
		cl, err := c.Client()
		if err != nil {
			t.Fatal(err)
		}
		if cl.MinVersion != tls.VersionTLS12 {
			t.Fatalf("client MinVersion %x", cl.MinVersion)
		}
		return cl
	}
	plain := mustServer(Config{CertFile: f.Cert, KeyFile: f.Key})
	mutual := mustServer(Config{CertFile: f.Cert, KeyFile: f.Key, CAFile: f.CA, VerifyClients: true})
	withCA := mustClient(Config{CAFile: f.CA})
	withCert := mustClient(Config{CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key})
	foreignCert := mustClient(Config{CAFile: f.CA, CertFile: other.Cert, KeyFile: other.Key})
	wrongCA := mustClient(Config{CAFile: other.CA})
	old := withCA.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11

	for _, tc := range []struct {
		name   string
		srv    *tls.Config
		cli    *tls.Config
		wantOK bool
	}{
		{"server auth", plain, withCA, true},
		{"mutual", mutual, withCert, true},
		{"client lacks a certificate", mutual, withCA, false},
		{"client certificate of another CA", mutual, foreignCert, false},
		{"client does not trust the server", plain, wrongCA, false},
		{"TLS 1.1 client", plain, old, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cerr, serr := handshake(t, tc.srv, tc.cli)
			t.Logf("client: %v; server: %v", cerr, serr)
			ok := cerr == nil && serr == nil
			if ok != tc.wantOK {
				t.Fatalf("handshake ok=%v, want %v (client: %v, server: %v)", ok, tc.wantOK, cerr, serr)
			}
		})
	}
}
