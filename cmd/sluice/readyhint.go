package main

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/sluicebus/sluice/cmd/sluice/internal/config"
	"github.com/sluicebus/sluice/internal/topology"
)

// gatewayURL is the base URL clients reach the gateway on at addr: https
// when gateway.tls serves it, and a loopback host for a wildcard address.
func gatewayURL(cfg config.Config, addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		host, port = addr.String(), ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http"
	if cfg.Gateway.TLS.CertFile != "" {
		scheme = "https"
	}
	if port == "" {
		return scheme + "://" + host
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// readyHint is what `sluice dev` prints once it serves: requests a
// newcomer can paste, with the scheme, CA and key the configuration asks
// for, and a line saying where each comes from.
func readyHint(cfg config.Config, addr net.Addr) string {
	base := gatewayURL(cfg, addr)
	topic := "orders"
	if names := topology.Names(cfg.Topics); len(names) > 0 {
		topic = names[0]
	}
	var opts, notes []string
	if tc := cfg.Gateway.TLS; tc.CertFile != "" {
		ca := cfg.Producer.TLS.CAFile
		if ca == "" {
			ca = tc.CAFile
		}
		if ca == "" {
			ca = "<CA of gateway.tls.cert_file>"
		}
		opts = append(opts, "--cacert "+ca)
		notes = append(notes, fmt.Sprintf("the gateway serves HTTPS: --cacert is the CA that signed %s (sluice health --ca-file, sluice produce with producer.tls.ca_file)", tc.CertFile))
		if tc.VerifyClients {
			cert, key := cfg.Producer.TLS.CertFile, cfg.Producer.TLS.KeyFile
			if cert == "" {
				cert, key = "<client certificate>", "<its key>"
			}
			opts = append(opts, "--cert "+cert, "--key "+key)
			notes = append(notes, "gateway.tls.verify_clients: a client certificate signed by "+tc.CAFile+" is needed")
		}
	}
	if !cfg.Auth.Open() {
		opts = append(opts, `-H "Authorization: Bearer $SLUICE_API_KEY"`)
		notes = append(notes, fmt.Sprintf("auth.mode is keys: set SLUICE_API_KEY to a key of a tenant of auth.tenants (%s) with publish and read on %s; `sluice keys new` makes one",
			strings.Join(slices.Sorted(maps.Keys(cfg.Auth.Tenants)), ", "), topic))
	}
	o := ""
	if len(opts) > 0 {
		o = " " + strings.Join(opts, " ")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nSluice is ready. Try:\n")
	fmt.Fprintf(&b, "  curl -i -X POST%s %s/v1/topics/%s/messages -d '{\"id\":42}'\n", o, base, topic)
	fmt.Fprintf(&b, "  curl -s%s %s/v1/topics/%s\n", o, base, topic)
	for _, n := range notes {
		fmt.Fprintf(&b, "  (%s)\n", n)
	}
	b.WriteString("\n")
	return b.String()
}
