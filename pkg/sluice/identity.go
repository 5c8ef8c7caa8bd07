package sluice

import (
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// InboxPrefix is the inbox prefix of the bus identity whose public user
// nkey is pub. Brokers with client authentication let each identity
// subscribe to its own inboxes only (_INBOX.<pub>.>): replies, publish
// acks and pulled messages meant for one identity reach no other. A
// connection must use it (nats.CustomInboxPrefix), or its requests get no
// answer.
func InboxPrefix(pub string) string { return "_INBOX." + pub }

// Identity is how a client signs in to a bus whose brokers authenticate
// clients: the user nkey whose seed is in seedFile (from `sluice nkey`),
// and that identity's own inbox prefix. Pass the options to nats.Connect
// for a connection that NewWorker or a producer of your own uses.
func Identity(seedFile string) ([]nats.Option, error) {
	b, err := os.ReadFile(seedFile)
	if err != nil {
		return nil, fmt.Errorf("reading the nkey seed: %w", err)
	}
	defer clear(b)
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s holds no nkey seed", seedFile)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("%s: not a user nkey seed (want \"SU...\", from `sluice nkey`)", seedFile)
	}
	if _, err := kp.Seed(); err != nil {
		return nil, fmt.Errorf("%s holds a public key, not a seed", seedFile)
	}
	nkey, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		return nil, fmt.Errorf("nkey seed file %s: %w", seedFile, err)
	}
	return []nats.Option{nkey, nats.CustomInboxPrefix(InboxPrefix(pub))}, nil
}
