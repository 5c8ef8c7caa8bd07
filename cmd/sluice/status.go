package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicebus/sluice/internal/status"
)

func newStatusCmd() *cobra.Command {
	var url, output string
	var client clientFlags
	var watch bool
	var interval, timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status [--url http://gateway:8080 | http://broker:8222]",
		Short: "Show the cluster: members and health, topics with depth, credits, lag per family, dead letters, active alarms",
		Long: `Show the cluster as one node sees it, from its GET /v1/status: a gateway
(its API address) or a broker (its broker.ops_listen address). Members are the
brokers with their health and the topics they lead; topics show depth against
their bound, the Raft leader and this gateway's admission; families show lag
(pending + in flight), credit in use, waiting pull requests, redeliveries and
dead letters; then the node's active alarms.

--watch refreshes in place every --interval until interrupted; -o json prints
the status as JSON (one object per refresh).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output: text or json, got %q", output)
			}
			if watch && interval <= 0 {
				return fmt.Errorf("--interval must be positive, got %v", interval)
			}
			base := strings.TrimRight(url, "/")
			out := cmd.OutOrStdout()
			for {
				st, raw, err := fetchStatus(cmd.Context(), base, timeout, &client)
				if watch && output == "text" {
					fmt.Fprint(out, "\033[H\033[2J") // home and clear: refresh in place
				}
				switch {
				case err != nil && !watch:
					return err
				case err != nil:
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", time.Now().Format(time.TimeOnly), err)
				case output == "json":
					var b bytes.Buffer
					if err := json.Compact(&b, raw); err != nil {
						return err
					}
					fmt.Fprintln(out, b.String())
				default:
					if err := status.Render(out, st); err != nil {
						return err
					}
				}
				if !watch {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:8080", "a gateway's API URL or a broker's ops URL")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	f.BoolVarP(&watch, "watch", "w", false, "refresh in place until interrupted")
	f.DurationVar(&interval, "interval", 2*time.Second, "refresh interval with --watch")
	f.DurationVar(&timeout, "timeout", 5*time.Second, "bound on each request")
	client.add(cmd, false)
	return cmd
}

// fetchStatus gets base/v1/status.
func fetchStatus(ctx context.Context, base string, timeout time.Duration, client *clientFlags) (status.Status, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/status", nil)
	if err != nil {
		return status.Status{}, nil, err
	}
	if key := client.key(); key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	hc, err := client.httpClient(timeout)
	if err != nil {
		return status.Status{}, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return status.Status{}, nil, fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return status.Status{}, nil, fmt.Errorf("status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return status.Status{}, nil, fmt.Errorf("status: %s: %s", resp.Status, answerText(raw))
	}
	var st status.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return status.Status{}, nil, fmt.Errorf("status: %s/v1/status is not a Sluice status: %w", base, err)
	}
	return st, raw, nil
}
