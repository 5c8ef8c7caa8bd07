package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/sluicebus/sluice/internal/tlsconf"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Roles a client user may have.
const (
	// RoleGateway publishes to topics and redrives, reads topic and family
	// state, and lists, redrives and purges dead letters; it consumes nothing.
	RoleGateway = "gateway"
	// RoleWorker consumes its families and writes their dead letters only.
	RoleWorker = "worker"
	// RoleAdmin may do anything (operators, `sluice dlq`, status tools).
	RoleAdmin = "admin"
)

// Auth is client authentication: nkey users, each with a role from which
// its subject permissions are derived. Brokers hold public keys only; each
// client signs the broker's challenge with its seed (bus.nkey_seed_file).
type Auth struct {
	// Users who may connect; none: authentication off, anyone may do
	// anything.
	Users []User `mapstructure:"users"`
	// SystemUser, when set, signs in to the server's system account ($SYS)
	// for NATS operator tools (`nats server ls`, `nats server report
	// jetstream`): it sees every broker's server requests and events, and
	// no topic. Needs Users (without them no client authenticates).
	SystemUser SystemUser `mapstructure:"system_user"`
}

// SystemUser is the system account's user: a name and a public nkey.
type SystemUser struct {
	// Name identifies the user in logs and errors; unique among the users.
	Name string `mapstructure:"name"`
	// Nkey is its public nkey ("U...", from `sluice nkey`).
	Nkey string `mapstructure:"nkey"`
}

// Enabled reports whether a system user is configured.
func (s SystemUser) Enabled() bool { return s.Name != "" || s.Nkey != "" }

// Enabled reports whether clients must authenticate.
func (a Auth) Enabled() bool { return len(a.Users) > 0 }

// User is one client identity.
type User struct {
	// Name identifies the user in logs and errors.
	Name string `mapstructure:"name"`
	// Nkey is the user's public nkey ("U...", from `sluice nkey`).
	Nkey string `mapstructure:"nkey"`
	// Role is gateway, worker or admin.
	Role string `mapstructure:"role"`
	// Families a worker consumes, as "topic/family"; workers only.
	Families []string `mapstructure:"families"`
}

func (a Auth) validate(topics map[string]topology.Topic) error {
	var errs []error
	names, keys := map[string]bool{}, map[string]bool{}
	for i, u := range a.Users {
		key := fmt.Sprintf("broker.auth.users[%d]", i)
		bad := func(k, format string, args ...any) {
			errs = append(errs, &topology.KeyError{Key: key + "." + k, Msg: fmt.Sprintf(format, args...)})
		}
		switch {
		case u.Name == "":
			bad("name", "must not be empty")
		case names[u.Name]:
			bad("name", "%q is given to another user", u.Name)
		}
		names[u.Name] = true
		switch {
		case !nkeys.IsValidPublicUserKey(u.Nkey):
			bad("nkey", "must be a public user nkey (\"U...\", from `sluice nkey`), got %q", truncate(u.Nkey))
		case keys[u.Nkey]:
			bad("nkey", "is given to another user")
		}
		keys[u.Nkey] = true
		switch u.Role {
		case RoleGateway, RoleAdmin:
			if len(u.Families) > 0 {
				bad("families", "only for role worker")
			}
		case RoleWorker:
			if len(u.Families) == 0 {
				bad("families", "a worker needs the families it consumes, as topic/family")
			}
			for j, tf := range u.Families {
				topic, family, ok := strings.Cut(tf, "/")
				if !ok {
					bad(fmt.Sprintf("families[%d]", j), "want topic/family, got %q", tf)
					continue
				}
				if t, ok := topics[topic]; !ok {
					bad(fmt.Sprintf("families[%d]", j), "%q: no topic %s is declared", tf, topic)
				} else if _, ok := t.Families[family]; !ok {
					bad(fmt.Sprintf("families[%d]", j), "%q: topic %s declares no family %s", tf, topic, family)
				}
			}
		default:
			bad("role", "must be gateway, worker or admin, got %q", u.Role)
		}
	}
	if err := a.SystemUser.validate(len(a.Users) > 0, names, keys); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validate checks the system user against the other users' names and keys.
func (s SystemUser) validate(users bool, names, keys map[string]bool) error {
	if !s.Enabled() {
		return nil
	}
	const key = "broker.auth.system_user"
	var errs []error
	bad := func(k, format string, args ...any) {
		errs = append(errs, &topology.KeyError{Key: key + "." + k, Msg: fmt.Sprintf(format, args...)})
	}
	if !users {
		errs = append(errs, &topology.KeyError{Key: key, Msg: "needs broker.auth.users: without users no client authenticates"})
	}
	switch {
	case s.Name == "":
		bad("name", "must not be empty")
	case names[s.Name]:
		bad("name", "%q is given to a user", s.Name)
	}
	switch {
	case !nkeys.IsValidPublicUserKey(s.Nkey):
		bad("nkey", "must be a public user nkey (\"U...\", from `sluice nkey`), got %q", truncate(s.Nkey))
	case keys[s.Nkey]:
		bad("nkey", "is given to a user")
	}
	return errors.Join(errs...)
}

// truncate shortens what may be a secret pasted by mistake (a seed).
func truncate(s string) string {
	if len(s) > 8 {
		return s[:4] + "..."
	}
	return s
}

// JetStream API subjects (see nats.go's jetstream package and the server's
// jetstream_api.go).
const (
	apiStreamInfo   = "$JS.API.STREAM.INFO."
	apiDirectGet    = "$JS.API.DIRECT.GET."
	apiMsgGet       = "$JS.API.STREAM.MSG.GET."
	apiMsgDelete    = "$JS.API.STREAM.MSG.DELETE."
	apiStreamPurge  = "$JS.API.STREAM.PURGE."
	apiConsumerInfo = "$JS.API.CONSUMER.INFO."
	apiConsumerNext = "$JS.API.CONSUMER.MSG.NEXT."
	// jsAck prefixes a delivered message's reply subject, on which the
	// worker acks, naks, terms or extends it (v1 format:
	// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>).
	jsAck = "$JS.ACK."
	// The gateways' admission heartbeats (gateway/admission.go).
	gatewayHeartbeat = "sluice.gateway.heartbeat"
	gatewayHello     = "sluice.gateway.hello"
	// inProcess is the connection type of in-process clients
	// (jwt.ConnectionTypeInProcess).
	inProcess = "IN_PROCESS"
)

// permissions are what u may publish and subscribe to, derived from its
// role and the topology; nil is everything (admin).
func permissions(u User, topics map[string]topology.Topic) *server.Permissions {
	switch u.Role {
	case RoleGateway:
		return gatewayPermissions(topics, inboxes(u))
	case RoleWorker:
		return workerPermissions(u.Families, inboxes(u))
	case RoleAdmin:
		return nil
	}
	// Validate refuses any other role; should one get here, it may do nothing.
	return &server.Permissions{Publish: &server.SubjectPermission{Deny: []string{">"}},
		Subscribe: &server.SubjectPermission{Deny: []string{">"}}}
}

// inboxes are u's own inboxes, where it receives request replies, publish
// acks and pulled messages: no identity may subscribe to another's
// (sluice.InboxPrefix; bus.WithNkeySeedFile connects with it).
func inboxes(u User) string { return sluice.InboxPrefix(u.Nkey) + ".>" }

// gatewayPermissions: publish messages and redrives (singly and as atomic
// batches: the same subjects), read the topics' and families' state (each
// commit is proven against the families' consumers), list, delete and
// purge dead letters, and exchange admission heartbeats. A duplicate proves
// itself (its id holds a digest); its original's store time is read only
// when a family's consumer is younger than the duplicate window.
// No consumer is created and nothing is pulled or acknowledged.
func gatewayPermissions(topics map[string]topology.Topic, inboxes string) *server.Permissions {
	pub := []string{gatewayHeartbeat, gatewayHello}
	for _, name := range topology.Names(topics) {
		t := topics[name]
		stream := sluice.StreamName(name)
		pub = append(pub,
			sluice.Subject(name), // publish (single and atomic batch)
			apiStreamInfo+stream, // admission, topic state, alarms
			apiMsgGet+stream,     // when a duplicate's original was stored (from the leader)
		)
		for _, fam := range t.FamilyNames() {
			dlq := sluice.DeadLetterStream(name, fam)
			pub = append(pub,
				sluice.RedriveSubject(name, fam), // redrive, and a repair copy
				apiConsumerInfo+stream+"."+fam,   // family state; proof of each commit
				apiStreamInfo+dlq,                // dead-letter count, listing
				apiDirectGet+dlq,                 // list and read dead letters
				apiMsgDelete+dlq,                 // delete one, or after its redrive
				apiStreamPurge+dlq,               // purge all
			)
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{inboxes, gatewayHeartbeat, gatewayHello}},
	}
}

// workerPermissions: the subjects of its families' imports
// (familyImports), in its own account (busAccounts); nothing else.
func workerPermissions(families []string, inboxes string) *server.Permissions {
	var pub []string
	for _, tf := range families {
		topic, family, _ := strings.Cut(tf, "/")
		for _, imp := range familyImports(topic, family) {
			pub = append(pub, imp.subject)
		}
	}
	slices.Sort(pub)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: slices.Compact(pub)},
		Subscribe: &server.SubjectPermission{Allow: []string{inboxes}},
	}
}

// nkeyUsers are the server's nkey users: the configured ones, each worker
// in its account (busAccounts' byUser; the others in the global account),
// the system user in the system account, and the broker's own in-process
// user (full permissions, in-process connections only, its key pair made
// at start and never written anywhere).
func nkeyUsers(a Auth, topics map[string]topology.Topic, internal string, byUser map[string]*server.Account) []*server.NkeyUser {
	users := make([]*server.NkeyUser, 0, len(a.Users)+2)
	for _, u := range a.Users {
		users = append(users, &server.NkeyUser{Nkey: u.Nkey, Permissions: permissions(u, topics), Account: byUser[u.Name]})
	}
	if s := a.SystemUser; s.Enabled() {
		users = append(users, &server.NkeyUser{Nkey: s.Nkey, Account: byUser[s.Name]})
	}
	return append(users, &server.NkeyUser{Nkey: internal,
		AllowedConnectionTypes: map[string]struct{}{inProcess: {}}})
}

// routeTLS is the routes' TLS: the same certificate for accepting and
// dialing routes, the peer's verified against the CA both ways.
func routeTLS(c tlsconf.Config) (*tls.Config, error) {
	c.VerifyClients = true
	tc, err := c.Server()
	if err != nil {
		return nil, err
	}
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	tc.RootCAs = cl.RootCAs
	return tc, nil
}
