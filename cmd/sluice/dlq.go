package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// dlqFlags are what every dead-letter command takes.
type dlqFlags struct {
	client                         clientFlags
	gateway, topic, family, output string
	timeout                        time.Duration
}

func newDLQCmd() *cobra.Command {
	f := &dlqFlags{}
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, peek, redrive and purge a family's dead letters (through a gateway)",
		Long: `Dead letters are the messages a family gave up on (handler said permanent,
attempts or the retry deadline exhausted), with why and the last error. These
commands call a gateway's dead-letter API:

  GET    /v1/topics/{topic}/families/{family}/dead-letters?after=&limit=
  GET    /v1/topics/{topic}/families/{family}/dead-letters/{seq}
  POST   /v1/topics/{topic}/families/{family}/dead-letters/redrive?limit=
  POST   /v1/topics/{topic}/families/{family}/dead-letters/{seq}/redrive
  DELETE /v1/topics/{topic}/families/{family}/dead-letters[/{seq}]

A redrive sends dead letters back to their family only (other families do
not see them again), through the same admission as new messages and at most
gateway.redrive_rate per second; each keeps its original id.`,
	}
	cmd.PersistentFlags().StringVar(&f.gateway, "gateway", "http://127.0.0.1:8080", "gateway URL")
	cmd.PersistentFlags().StringVar(&f.topic, "topic", "", "topic (required)")
	cmd.PersistentFlags().StringVar(&f.family, "family", "", "family (required)")
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "text", "text or json")
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", time.Minute, "bound on the whole command")
	f.client.add(cmd, true)
	_ = cmd.MarkPersistentFlagRequired("topic")
	_ = cmd.MarkPersistentFlagRequired("family")

	var after uint64
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, func(a *sluice.Admin, out io.Writer) error {
				page, err := a.ListDeadLetters(cmd.Context(), f.topic, f.family, after, limit)
				if err != nil || f.output == "json" {
					return f.print(out, page, err)
				}
				fmt.Fprintf(out, "%s/%s: %d dead letters, %d bytes\n", page.Topic, page.Family, page.Total, page.Bytes)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tID\tREASON\tATTEMPTS\tDEAD AT\tSIZE\tERROR")
				for _, d := range page.DeadLetters {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%d\t%s\n", d.Seq, d.ID, d.Reason, d.Attempts,
						d.DeadAt.Format(time.RFC3339), d.Size, oneLine(d.Error, 60))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if page.Next != 0 {
					fmt.Fprintf(out, "more: --after %d\n", page.Next)
				}
				return nil
			})
		},
	}
	list.Flags().Uint64Var(&after, "after", 0, "list after this dead-letter seq")
	list.Flags().IntVar(&limit, "limit", 50, "at most this many (1..500)")

	var seq uint64
	peek := &cobra.Command{
		Use:   "peek",
		Short: "Show one dead letter with its payload and metadata",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, func(a *sluice.Admin, out io.Writer) error {
				d, err := a.PeekDeadLetter(cmd.Context(), f.topic, f.family, seq)
				return f.print(out, d, err)
			})
		},
	}
	peek.Flags().Uint64Var(&seq, "seq", 0, "dead-letter seq (required)")
	_ = peek.MarkFlagRequired("seq")

	var redriveSeq uint64
	var redriveLimit int
	redrive := &cobra.Command{
		Use:   "redrive",
		Short: "Send dead letters back to their family (oldest first, or one with --seq)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, func(a *sluice.Admin, out io.Writer) error {
				res, err := a.Redrive(cmd.Context(), f.topic, f.family, redriveSeq, redriveLimit)
				if err != nil || f.output == "json" {
					return f.print(out, res, err)
				}
				fmt.Fprintf(out, "redriven %d, %d left", res.Redriven, res.Remaining)
				if res.Stopped != "" {
					fmt.Fprintf(out, " (stopped: %s; go on in %d s)", res.Stopped, res.RetryAfter)
				}
				fmt.Fprintln(out)
				return nil
			})
		},
	}
	redrive.Flags().Uint64Var(&redriveSeq, "seq", 0, "redrive this dead letter only")
	redrive.Flags().IntVar(&redriveLimit, "limit", 100, "redrive at most this many (1..10000)")

	var purgeSeq uint64
	var all bool
	purge := &cobra.Command{
		Use:   "purge",
		Short: "Delete dead letters for good: --all, or one with --seq",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all == (purgeSeq != 0) {
				return fmt.Errorf("purge needs exactly one of --all and --seq")
			}
			return f.run(cmd, func(a *sluice.Admin, out io.Writer) error {
				res, err := a.Purge(cmd.Context(), f.topic, f.family, purgeSeq)
				if err != nil || f.output == "json" {
					return f.print(out, res, err)
				}
				fmt.Fprintf(out, "purged %d\n", res.Purged)
				return nil
			})
		},
	}
	purge.Flags().Uint64Var(&purgeSeq, "seq", 0, "purge this dead letter only")
	purge.Flags().BoolVar(&all, "all", false, "purge all of the family's dead letters")

	cmd.AddCommand(list, peek, redrive, purge)
	return cmd
}

// run checks the output flag, bounds the command and calls do.
func (f *dlqFlags) run(cmd *cobra.Command, do func(*sluice.Admin, io.Writer) error) error {
	if f.output != "text" && f.output != "json" {
		return fmt.Errorf("--output must be text or json, got %q", f.output)
	}
	hc, err := f.client.httpClient(2 * time.Minute)
	if err != nil {
		return err
	}
	a, err := sluice.NewAdmin(f.gateway, hc)
	if err != nil {
		return err
	}
	a.SetAPIKey(f.client.key())
	if f.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, got %v", f.timeout)
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	cmd.SetContext(ctx)
	return do(a, cmd.OutOrStdout())
}

// print writes v as indented JSON, or returns err.
func (f *dlqFlags) print(out io.Writer, v any, err error) error {
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // a dead letter's error reads "<key>", not "\u003ckey\u003e"
	return enc.Encode(v)
}

// oneLine shortens s to n runes on one line.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
