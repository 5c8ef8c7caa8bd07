package main

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/tlsconf"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Make API keys for tenants and the hashes the gateway config stores",
		Long: `Gateways with auth.mode: keys take "Authorization: Bearer <key>" and store
only each key's SHA-256 hash (auth.tenants.<name>.keys[].hash). Rotation: add
the new key's hash next to the old one, move the clients, remove the old one.`,
	}
	var tenantName, id string
	newKey := &cobra.Command{
		Use:   "new",
		Short: "Print a new random API key and the config entry holding its hash",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, hash, err := tenant.NewKey()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "# API key for %s (give it to the client; it is not stored anywhere):\n# %s\n", tenantName, key)
			fmt.Fprintf(out, "# config entry, under auth.tenants.%s.keys:\n- id: %s\n  hash: %s\n", tenantName, id, hash)
			return nil
		},
	}
	newKey.Flags().StringVar(&tenantName, "tenant", "my-tenant", "tenant the key is for (only printed)")
	newKey.Flags().StringVar(&id, "id", "key-1", "key id, named in logs instead of the key")
	hash := &cobra.Command{
		Use:   "hash",
		Short: "Print the hash of a key read from standard input",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			key := strings.TrimSpace(line)
			if key == "" {
				if err != nil {
					return fmt.Errorf("keys hash: no key on standard input: %w", err)
				}
				return errors.New("keys hash: no key on standard input")
			}
			fmt.Fprintln(cmd.OutOrStdout(), tenant.Hash(key))
			return nil
		},
	}
	cmd.AddCommand(newKey, hash)
	return cmd
}

// clientFlags are how a command reaches a gateway that checks keys or
// serves HTTPS.
type clientFlags struct {
	apiKey, caFile string
}

// add adds --api-key (default $SLUICE_API_KEY) and --ca-file.
func (c *clientFlags) add(cmd *cobra.Command, persistent bool) {
	f := cmd.Flags()
	if persistent {
		f = cmd.PersistentFlags()
	}
	// No default from the environment: a default is printed in --help.
	f.StringVar(&c.apiKey, "api-key", "", "API key for gateways with auth.mode keys (default $SLUICE_API_KEY)")
	f.StringVar(&c.caFile, "ca-file", "", "CA certificate of an HTTPS gateway (default: the system's roots)")
}

// key is --api-key, else $SLUICE_API_KEY.
func (c *clientFlags) key() string {
	if c.apiKey != "" {
		return c.apiKey
	}
	return os.Getenv("SLUICE_API_KEY")
}

// httpClient is a client with timeout that trusts --ca-file.
func (c *clientFlags) httpClient(timeout time.Duration) (*http.Client, error) {
	hc, err := tlsHTTPClient(tlsconf.Config{CAFile: c.caFile}, timeout, 0)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	return hc, nil
}

// tlsHTTPClient is an HTTP client for gateways over HTTPS with tc, keeping
// up to conns idle connections per gateway (0: net/http's default).
func tlsHTTPClient(tc tlsconf.Config, timeout time.Duration, conns int) (*http.Client, error) {
	cfg, err := tc.Client()
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: conns}}, nil
}
