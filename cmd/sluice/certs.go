package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/sluicebus/sluice/internal/devcerts"
)

func newCertsCmd() *cobra.Command {
	var out string
	var hosts []string
	var force bool
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Write a development CA and a node certificate for TLS (make certs)",
		Long: `Write a development CA and one certificate it signs, valid as a server and
as a client certificate, for the hosts given (DNS names or IP addresses),
with ECDSA P-256 keys:

  ca.pem        the CA: every side's ca_file
  ca-key.pem    its key (mode 0600)
  node.pem      the node certificate: cert_file of brokers, routes, gateways, bus clients
  node-key.pem  its key (mode 0600): key_file

For development and tests only: every node shares one key. Existing files are
kept unless --force: when all four are there, nothing is written and the
command succeeds (make certs can run again); when only some are, or --hosts
is given, it fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				kept, err := allExist(devcerts.PathsIn(out))
				if err != nil {
					return err
				}
				if kept && cmd.Flags().Changed("hosts") {
					return fmt.Errorf("certificate files exist in %s: --hosts needs --force to replace them", out)
				}
				if kept {
					fmt.Fprintf(cmd.OutOrStdout(), "kept the existing files in %s (sluice certs --force replaces them)\n", out)
					return nil
				}
			}
			gen := devcerts.Generate
			if force {
				gen = devcerts.Regenerate
			}
			files, err := gen(out, hosts)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "CA:          %s (key %s)\n", files.CA, files.CAKey)
			fmt.Fprintf(w, "certificate: %s (key %s), for %v\n", files.Cert, files.Key, hostsOr(hosts))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "certs", "directory to write into (created if missing)")
	cmd.Flags().StringSliceVar(&hosts, "hosts", devcerts.DefaultHosts, "host names and IP addresses the certificate is valid for")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing files")
	return cmd
}

// allExist reports whether every file of files is there.
func allExist(files devcerts.Files) (bool, error) {
	for _, p := range []string{files.CA, files.CAKey, files.Cert, files.Key} {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			return false, nil
		} else if err != nil {
			return false, err
		}
	}
	return true, nil
}

func hostsOr(hosts []string) []string {
	if len(hosts) == 0 {
		return devcerts.DefaultHosts
	}
	return hosts
}

func newNkeyCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "nkey",
		Short: "Make a user nkey: the seed for a client's bus.nkey_seed_file, the public key for broker.auth.users",
		Long: `Make a new NATS user nkey. The public key ("U...", printed) goes into the
brokers' broker.auth.users with a role; the seed ("SU...", secret) stays with
the client, whose bus.nkey_seed_file names the file it is in. Brokers hold no
secrets: a client proves it has the seed by signing the broker's challenge.

With --out the seed is written to that file (mode 0600) and only the public
key is printed; without it both are printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kp, err := nkeys.CreateUser()
			if err != nil {
				return err
			}
			defer kp.Wipe()
			seed, err := kp.Seed()
			if err != nil {
				return err
			}
			pub, err := kp.PublicKey()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if out == "" {
				fmt.Fprintf(w, "seed:   %s\npublic: %s\n", seed, pub)
				return nil
			}
			flag := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flag = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(out, flag, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s exists (use --force to replace it)", out)
			} else if err != nil {
				return err
			}
			if err := f.Chmod(0o600); err != nil {
				f.Close()
				return err
			}
			if _, err := fmt.Fprintf(f, "%s\n", seed); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(w, "%s\n", pub)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the seed to this file (mode 0600) instead of printing it")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing --out file")
	return cmd
}
