package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicebus/sluice/internal/tlsconf"
)

// healthURLEnv names the probe's URL in a container, so one HEALTHCHECK
// line serves brokers and gateways alike.
const healthURLEnv = "SLUICE_HEALTH_URL"

func newHealthCmd() *cobra.Command {
	var url, caFile string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Probe a node's /readyz and exit 0 when it answers 200 (container HEALTHCHECK; no shell needed)",
		Long: `Probe a node's readiness endpoint: a gateway's /readyz, or a broker's
broker.ops_listen /readyz. Exits 0 on 200, 1 otherwise, printing the answer.
The URL comes from --url, else $` + healthURLEnv + `, else the gateway on 127.0.0.1:8080.
An https URL is verified with --ca-file (e.g. certs/ca.pem from make certs),
else with the system's roots.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				url = os.Getenv(healthURLEnv)
			}
			if url == "" {
				url = "http://127.0.0.1:8080/readyz"
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			hc, err := tlsHTTPClient(tlsconf.Config{CAFile: caFile}, timeout, 0)
			if err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("not healthy: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not healthy: %s: %s", resp.Status, answerText(body))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "healthy: %s\n", body)
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "readiness URL (default $"+healthURLEnv+", else http://127.0.0.1:8080/readyz)")
	cmd.Flags().StringVar(&caFile, "ca-file", "", "CA certificate of an HTTPS node (default: the system's roots)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "bound on the probe")
	return cmd
}
