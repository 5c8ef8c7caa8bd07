package broker_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// pingServers asks $SYS.REQ.SERVER.PING<suffix> on nc, as `nats server ls`
// (no suffix) and `nats server report jetstream` (".JSZ") do, and returns
// the names of the servers that answered within wait, sorted; err is the
// request's own failure (no responders).
func pingServers(nc *nats.Conn, suffix string, want int, wait time.Duration) ([]string, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$SYS.REQ.SERVER.PING"+suffix, inbox, nil); err != nil {
		return nil, err
	}
	var names []string
	deadline := time.Now().Add(wait)
	for len(names) < want {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		var answer struct {
			Server struct{ Name string } `json:"server"`
		}
		if err := json.Unmarshal(m.Data, &answer); err != nil {
			return nil, err
		}
		names = append(names, answer.Server.Name)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// unanswered: a ping no server answered (the global account has no
// responder for it; a gateway's is refused by its permissions).
func unanswered(names []string, err error) bool {
	return len(names) == 0 && (err == nil || errors.Is(err, nats.ErrNoResponders))
}

// TestSystemUserSeesEveryBroker: with broker.auth.system_user, a client
// signed in as it gets every broker's answer to the server pings that
// `nats server ls` and `nats server report jetstream` send; the admin, in
// the streams' account, gets none as on a broker without a system user.
func TestSystemUserSeesEveryBroker(t *testing.T) {
	sys, admin := newIdentity(t), newIdentity(t)
	tr := newTrio(t, harness.Topics(harness.Topic("orders", "billing")), harness.Logger(t), func(_ int, c *broker.Config) {
		c.Cluster.User, c.Cluster.Password = "route", "route-pass-5d2e"
		c.Auth.Users = []broker.User{{Name: "ops", Nkey: admin.Pub, Role: broker.RoleAdmin}}
		c.Auth.SystemUser = broker.SystemUser{Name: "sys", Nkey: sys.Pub}
	})
	bs := mustStart(t, tr, 0, 1, 2)
	connect := func(id identity) *nats.Conn {
		opts, err := sluice.Identity(id.SeedFile)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(bs[0].ClientURL(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	snc := connect(sys)
	all := []string{"b1", "b2", "b3"}
	for _, suffix := range []string{"", ".JSZ"} {
		var got []string
		harness.Eventually(t, 20*time.Second, func() bool {
			names, err := pingServers(snc, suffix, len(all), 2*time.Second)
			got = names
			return err == nil && slices.Equal(names, all)
		}, "$SYS.REQ.SERVER.PING%s: answers from %v, want %v", suffix, &got, all)
	}

	anc := connect(admin)
	for _, suffix := range []string{"", ".JSZ"} {
		if names, err := pingServers(anc, suffix, 1, 2*time.Second); !unanswered(names, err) {
			t.Errorf("admin's $SYS.REQ.SERVER.PING%s: answers %v, err %v; want none", suffix, names, err)
		}
	}
}

// TestNoSystemUserNoServerPings: without a system user, no user (the admin
// included) gets an answer to the server pings.
func TestNoSystemUserNoServerPings(t *testing.T) {
	a := startAuthed(t)
	for name, id := range map[string]identity{"admin": a.admin, "gateway": a.gateway} {
		nc, _ := a.connectRaw(t, id)
		if names, err := pingServers(nc, "", 1, 2*time.Second); !unanswered(names, err) {
			t.Errorf("%s's $SYS.REQ.SERVER.PING: answers %v, err %v; want none", name, names, err)
		}
	}
}

// TestSystemUserValidated: the system user is checked like the others,
// each problem naming its key.
func TestSystemUserValidated(t *testing.T) {
	admin, other := newIdentity(t), newIdentity(t)
	users := []broker.User{{Name: "ops", Nkey: admin.Pub, Role: broker.RoleAdmin}}
	for _, tc := range []struct {
		name  string
		users []broker.User
		sys   broker.SystemUser
		key   string
	}{
		{"without users", nil, broker.SystemUser{Name: "sys", Nkey: other.Pub}, "broker.auth.system_user:"},
		{"no name", users, broker.SystemUser{Nkey: other.Pub}, "broker.auth.system_user.name"},
		{"a user's name", users, broker.SystemUser{Name: "ops", Nkey: other.Pub}, "broker.auth.system_user.name"},
		{"a seed", users, broker.SystemUser{Name: "sys", Nkey: "SUAM..."}, "broker.auth.system_user.nkey"},
		{"a user's nkey", users, broker.SystemUser{Name: "sys", Nkey: admin.Pub}, "broker.auth.system_user.nkey"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
			cfg.Auth = broker.Auth{Users: tc.users, SystemUser: tc.sys}
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("Validate: %v, want an error naming %s", err, tc.key)
			}
		})
	}
	cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
	cfg.Auth = broker.Auth{Users: users, SystemUser: broker.SystemUser{Name: "sys", Nkey: other.Pub}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a good system user: %v", err)
	}
}
