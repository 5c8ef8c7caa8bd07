package devcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no certificate PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	f, err := Generate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f != PathsIn(dir) {
		t.Fatalf("files %+v", f)
	}
	for path, mode := range map[string]os.FileMode{f.CA: 0o644, f.CAKey: 0o600, f.Cert: 0o644, f.Key: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	ca := readCert(t, f.CA)
	node := readCert(t, f.Cert)
	if !ca.IsCA {
		t.Fatal("CA is not a CA")
	}
	pub, ok := node.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("node key is %T, want ECDSA P-256", node.PublicKey)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, host := range DefaultHosts {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := node.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("host %s, usage %v: %v", host, usage, err)
			}
		}
	}
	if err := node.VerifyHostname("broker-4"); err == nil {
		t.Error("valid for a host not asked for")
	}
	if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
		t.Fatalf("node pair: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(f.CA, f.CAKey); err != nil {
		t.Fatalf("CA pair: %v", err)
	}

	// No overwriting without force.
	before, _ := os.ReadFile(f.Cert)
	if _, err := Generate(dir, nil); !errors.Is(err, ErrExist) {
		t.Fatalf("second Generate: %v, want ErrExist", err)
	}
	after, _ := os.ReadFile(f.Cert)
	if string(before) != string(after) {
		t.Fatal("Generate replaced an existing certificate")
	}
	if err := os.Chmod(f.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Regenerate(dir, []string{"example.internal", "10.0.0.7"}); err != nil {
		t.Fatal(err)
	}
	node = readCert(t, f.Cert)
	if err := node.VerifyHostname("example.internal"); err != nil {
		t.Error(err)
	}
	if err := node.VerifyHostname("10.0.0.7"); err != nil {
		t.Error(err)
	}
	if err := node.VerifyHostname("localhost"); err == nil {
		t.Error("regenerated certificate still valid for localhost")
	}
	if st, _ := os.Stat(f.Key); st.Mode().Perm() != 0o600 {
		t.Errorf("regenerated key mode %v", st.Mode().Perm())
	}
}
