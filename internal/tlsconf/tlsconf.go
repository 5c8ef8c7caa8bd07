// Package tlsconf is the TLS configuration shared by Sluice's listeners and
// clients (brokers, routes, gateways, bus clients): PEM files named in the
// config file, turned into a crypto/tls configuration of TLS 1.2 or later.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/sluicebus/sluice/internal/topology"
)

// MinVersion is the oldest TLS version Sluice speaks or accepts.
const MinVersion = tls.VersionTLS12

// Config names the PEM files of one TLS endpoint. The zero value is TLS off.
type Config struct {
	// CertFile and KeyFile are this side's certificate (chain) and private
	// key: a server's certificate, or a client's certificate when the
	// server verifies clients. Both or neither.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// CAFile holds the CA certificates that sign the other side: a client
	// verifies servers with it (empty: the system's roots), a server with
	// VerifyClients verifies client certificates with it.
	CAFile string `mapstructure:"ca_file"`
	// VerifyClients makes a server require a client certificate signed by
	// a CA of CAFile (mutual TLS).
	VerifyClients bool `mapstructure:"verify_clients"`
}

// Enabled reports whether TLS is on: any file named.
func (c Config) Enabled() bool {
	return c.CertFile != "" || c.KeyFile != "" || c.CAFile != ""
}

// Validate checks that the named files exist and load, that the certificate
// and its key come together and match, and that VerifyClients has a CA to
// verify with; errors name the key under prefix (e.g. "broker.tls"). A zero
// Config is valid (TLS off). A server also needs ValidateServer.
func (c Config) Validate(prefix string) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &topology.KeyError{Key: prefix + "." + key, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case c.CertFile != "" && c.KeyFile == "":
		bad("key_file", "needed with cert_file")
	case c.CertFile == "" && c.KeyFile != "":
		bad("cert_file", "needed with key_file")
	case c.CertFile != "":
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			bad("cert_file", "loading the certificate and key_file: %v", err)
		}
	}
	if c.CAFile != "" {
		if _, err := loadPool(c.CAFile); err != nil {
			bad("ca_file", "%v", err)
		}
	}
	if c.VerifyClients && c.CAFile == "" {
		bad("verify_clients", "needs ca_file, the CA that signs the client certificates")
	}
	if c.VerifyClients && c.CertFile == "" && c.KeyFile == "" {
		bad("cert_file", "needed with verify_clients")
	}
	return errors.Join(errs...)
}

// ValidateServer is Validate for a listening side, which needs its
// certificate: when TLS is on, cert_file and key_file are required.
func (c Config) ValidateServer(prefix string) error {
	err := c.Validate(prefix)
	if c.Enabled() && c.CertFile == "" && c.KeyFile == "" {
		err = errors.Join(err, &topology.KeyError{Key: prefix + ".cert_file",
			Msg: "a TLS server needs cert_file and key_file"})
	}
	return err
}

// Server is the configuration of a TLS listener: the certificate, TLS 1.2 or
// later, and with VerifyClients a client certificate required and verified
// against CAFile. It fails without a certificate.
func (c Config) Server() (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("tls: a server needs cert_file and key_file")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: loading %s and %s: %w", c.CertFile, c.KeyFile, err)
	}
	cfg := &tls.Config{MinVersion: MinVersion, Certificates: []tls.Certificate{cert}}
	if c.VerifyClients {
		if c.CAFile == "" {
			return nil, errors.New("tls: verify_clients needs ca_file")
		}
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Client is the configuration of a TLS client: servers verified against
// CAFile (empty: the system's roots), the client certificate when one is
// named, TLS 1.2 or later.
func (c Config) Client() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: MinVersion}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: loading %s and %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// loadPool reads a PEM file of CA certificates.
func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", file)
	}
	return pool, nil
}
