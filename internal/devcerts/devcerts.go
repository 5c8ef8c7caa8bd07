// Package devcerts makes development certificates with crypto/x509 alone: a
// CA and one node certificate it signs, good as a server and as a client
// certificate (brokers, routes, gateways, bus clients), for the host names
// and addresses given. Not for production: one key pair for every node.
package devcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DefaultHosts are the names a development certificate is valid for: the
// loopback host and addresses, and the compose demo's host names.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1",
	"broker-1", "broker-2", "broker-3", "gateway-1", "gateway-2"}

// File names in the output directory.
const (
	CAName      = "ca.pem"
	CAKeyName   = "ca-key.pem"
	NodeName    = "node.pem"
	NodeKeyName = "node-key.pem"
)

// Validity of the certificates.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	nodeValidity = 2 * 365 * 24 * time.Hour
)

// Files are the paths of what Generate wrote.
type Files struct {
	CA    string // the CA certificate: every side's ca_file
	CAKey string // the CA's private key (to sign more certificates)
	Cert  string // the node certificate: cert_file
	Key   string // the node's private key: key_file
}

// ErrExist means a file Generate would write is already there.
var ErrExist = errors.New("certificate files exist")

// PathsIn are the file paths in dir.
func PathsIn(dir string) Files {
	return Files{
		CA:    filepath.Join(dir, CAName),
		CAKey: filepath.Join(dir, CAKeyName),
		Cert:  filepath.Join(dir, NodeName),
		Key:   filepath.Join(dir, NodeKeyName),
	}
}

// Generate creates dir if needed and writes a new CA and a node certificate
// for hosts (DNS names or IP addresses; none: DefaultHosts) into it. It
// refuses (ErrExist) when any of the files exists; see Regenerate.
func Generate(dir string, hosts []string) (Files, error) { return generate(dir, hosts, false) }

// Regenerate is Generate replacing existing files.
func Regenerate(dir string, hosts []string) (Files, error) { return generate(dir, hosts, true) }

func generate(dir string, hosts []string, force bool) (Files, error) {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	files := PathsIn(dir)
	if !force {
		for _, p := range []string{files.CA, files.CAKey, files.Cert, files.Key} {
			if _, err := os.Stat(p); err == nil {
				return Files{}, fmt.Errorf("%w: %s (sluice certs --force replaces it)", ErrExist, p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return Files{}, err
			}
		}
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"Sluice development"}, CommonName: "Sluice development CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Files{}, fmt.Errorf("creating the CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Files{}, err
	}
	nodeKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, err
	}
	nodeTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"Sluice development"}, CommonName: "sluice node"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(nodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			nodeTmpl.IPAddresses = append(nodeTmpl.IPAddresses, ip)
		} else {
			nodeTmpl.DNSNames = append(nodeTmpl.DNSNames, h)
		}
	}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeTmpl, ca, &nodeKey.PublicKey, caKey)
	if err != nil {
		return Files{}, fmt.Errorf("creating the node certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, err
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return Files{}, err
	}
	nodeKeyDER, err := x509.MarshalPKCS8PrivateKey(nodeKey)
	if err != nil {
		return Files{}, err
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{files.CA, "CERTIFICATE", caDER, 0o644},
		{files.CAKey, "PRIVATE KEY", caKeyDER, 0o600},
		{files.Cert, "CERTIFICATE", nodeDER, 0o644},
		{files.Key, "PRIVATE KEY", nodeKeyDER, 0o600},
	} {
		if err := writePEM(f.path, f.typ, f.der, f.mode, force); err != nil {
			return Files{}, err
		}
	}
	return files, nil
}

// writePEM writes one PEM block; without force it never replaces a file.
func writePEM(path, typ string, der []byte, mode os.FileMode, force bool) error {
	flag := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flag = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flag, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExist, path)
		}
		return err
	}
	// An existing file keeps its mode on O_TRUNC: a key must not stay readable.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// serial is a random 128-bit certificate serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}
