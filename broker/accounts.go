package broker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// Accounts keep workers off the streams' account. Within one account a
// subject permission cannot stop a client from naming any reply subject on
// its own pull request, and the server delivers the pulled messages there
// from its own client: into another family's dead letters, or back into a
// topic. So each worker identity has an account of its own, holding
// nothing but service imports of its families' JetStream APIs, which the
// streams' account exports to it alone (the way NATS shares a consumer
// across accounts). A reply subject crossing an import is rewritten to a
// private response subject that leads back into the worker's account: a
// worker can reach no subject of the streams' account but the ones it
// imports, whatever it names.
//
// The streams stay in the server's global account ($G), where they have
// always been: a store keeps its account's name in its path and in the
// cluster's meta state, so moving them would strand every existing topic.
// Gateways, admins and the broker's own in-process user stay there too.

// workerAccount names u's account.
func workerAccount(u User) string { return "sluice-worker-" + u.Name }

// familyImport is one subject of a family's JetStream API that a worker
// imports, and whether its answer is a stream of messages (a pull) rather
// than one reply.
type familyImport struct {
	subject  string
	streamed bool
}

// familyImports are what a worker of topic/family needs: find and pull
// from its consumer and settle the messages delivered, read its dead-letter
// stream and look up whether a message is already in it, and write dead
// letters. They are also the worker's publish permissions.
func familyImports(topic, family string) []familyImport {
	stream := sluice.StreamName(topic)
	dlq := sluice.DeadLetterStream(topic, family)
	return []familyImport{
		{subject: apiConsumerInfo + stream + "." + family},                             // Worker.Run: the family and its policy
		{subject: apiConsumerNext + stream + "." + family, streamed: true},             // pull
		{subject: jsAck + stream + "." + family + ".>"},                                // ack, nak, term, in progress
		{subject: apiStreamInfo + dlq},                                                 // Worker.Run: the dead-letter stream
		{subject: apiDirectGet + dlq + "." + sluice.DeadLetterSubjects(topic, family)}, // already dead-lettered?
		{subject: sluice.DeadLetterSubjects(topic, family)},                            // dead-letter a message
	}
}

// A worker's account imports the JetStream account-info request to a
// subject no one answers. nats-server gives an account without JetStream
// an import of the whole JetStream API ($JS.API.>) from the system
// account, unless an import already covers the account-info request; that
// import would answer every family request too ("JetStream not enabled
// for account"), racing the streams' account's answer. Importing the
// streams' account's own account info instead would show a worker the
// sizes of every topic.
const (
	apiAccountInfo = "$JS.API.INFO"
	noAnswer       = "sluice.internal.no-answer"
)

// jsAccountConfig declares an account with JetStream enabled: nats-server
// sets an account's JetStream limits only from configuration text.
const jsAccountConfig = `accounts: { SLUICE: { jetstream: enabled } }`

// streamsAccount is the global account with JetStream enabled, ready to
// export. Once any other account exists the server enables JetStream only
// in accounts whose configuration says so, and the global account cannot
// be named in configuration text: it is declared under another name and
// renamed (the server binds accounts of its options by name).
func streamsAccount() (*server.Account, error) {
	var o server.Options
	if err := o.ProcessConfigString(jsAccountConfig); err != nil {
		return nil, fmt.Errorf("broker: the streams' account: %w", err)
	}
	if len(o.Accounts) != 1 {
		return nil, fmt.Errorf("broker: the streams' account: %d accounts declared", len(o.Accounts))
	}
	acc := o.Accounts[0]
	acc.Name = server.DEFAULT_GLOBAL_ACCOUNT
	return acc, nil
}

// busAccounts are the server's accounts when clients authenticate: those
// of workerAccounts, and the system account ($SYS) when a system user is
// configured. byUser maps each worker's name, and the system user's, to
// its account.
func busAccounts(a Auth) (accounts []*server.Account, byUser map[string]*server.Account, err error) {
	accounts, byUser, err = workerAccounts(a)
	if err != nil || !a.SystemUser.Enabled() {
		return accounts, byUser, err
	}
	// Declared by its default name, the server takes it as its system
	// account (it would otherwise make one with no users).
	sys := server.NewAccount(server.DEFAULT_SYSTEM_ACCOUNT)
	if byUser == nil {
		byUser = map[string]*server.Account{}
	}
	byUser[a.SystemUser.Name] = sys
	return append(accounts, sys), byUser, nil
}

// workerAccounts are the streams' (global) account exporting each
// family's API to the accounts of the workers granted it, and one account
// per worker user importing its families. byUser maps each worker's name
// to its account; none without workers (then every user is in the global
// account, as before).
func workerAccounts(a Auth) (accounts []*server.Account, byUser map[string]*server.Account, err error) {
	importers := map[string][]*server.Account{}
	streamed := map[string]bool{}
	byUser = map[string]*server.Account{}
	var order []*server.Account
	for _, u := range a.Users {
		if u.Role != RoleWorker {
			continue
		}
		acc := server.NewAccount(workerAccount(u))
		byUser[u.Name] = acc
		order = append(order, acc)
		for _, imp := range userImports(u) {
			importers[imp.subject] = append(importers[imp.subject], acc)
			streamed[imp.subject] = imp.streamed
		}
	}
	if len(order) == 0 {
		return nil, nil, nil
	}
	streams, err := streamsAccount()
	if err != nil {
		return nil, nil, err
	}
	if err := streams.AddServiceExport(noAnswer, order); err != nil {
		return nil, nil, fmt.Errorf("broker: exporting %s: %w", noAnswer, err)
	}
	for _, acc := range order {
		if err := acc.AddServiceImport(streams, apiAccountInfo, noAnswer); err != nil {
			return nil, nil, fmt.Errorf("broker: %s importing %s: %w", acc.Name, apiAccountInfo, err)
		}
	}
	subjects := make([]string, 0, len(importers))
	for s := range importers {
		subjects = append(subjects, s)
	}
	slices.Sort(subjects)
	for _, s := range subjects {
		rt := server.Singleton
		if streamed[s] {
			rt = server.Streamed
		}
		if err := streams.AddServiceExportWithResponse(s, rt, importers[s]); err != nil {
			return nil, nil, fmt.Errorf("broker: exporting %s: %w", s, err)
		}
		for _, acc := range importers[s] {
			if err := acc.AddServiceImport(streams, s, ""); err != nil {
				return nil, nil, fmt.Errorf("broker: %s importing %s: %w", acc.Name, s, err)
			}
		}
	}
	return append([]*server.Account{streams}, order...), byUser, nil
}

// userImports are the imports of worker u's families, each subject once.
func userImports(u User) []familyImport {
	var out []familyImport
	seen := map[string]bool{}
	for _, tf := range u.Families {
		topic, family, _ := strings.Cut(tf, "/")
		for _, imp := range familyImports(topic, family) {
			if !seen[imp.subject] {
				seen[imp.subject] = true
				out = append(out, imp)
			}
		}
	}
	return out
}
