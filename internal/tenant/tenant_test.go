package tenant

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/topology"
)

func testConfig(t *testing.T) (Config, map[string]string) {
	t.Helper()
	keys := map[string]string{}
	mk := func(name string) string {
		k, h, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k, KeyPrefix) || h != Hash(k) {
			t.Fatalf("NewKey: %q %q", k, h)
		}
		keys[name] = k
		return h
	}
	exp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return Config{Mode: ModeKeys, Tenants: map[string]Tenant{
		"acme": {Keys: []Key{{ID: "old", Hash: mk("acme-old"), Expires: exp}, {ID: "new", Hash: mk("acme-new")}},
			Publish: []string{"orders"}, Read: []string{"orders", "audit"}},
		"globex": {Keys: []Key{{ID: "k", Hash: mk("globex")}}, Publish: []string{AnyTopic}, Redrive: []string{"audit"}, Ops: true},
	}}, keys
}

var topics = map[string]topology.Topic{"orders": {}, "audit": {}}

func TestAuthenticate(t *testing.T) {
	cfg, keys := testConfig(t)
	if err := cfg.Validate(topics); err != nil {
		t.Fatal(err)
	}
	k, err := NewKeys(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)
	after := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, header string
		now          time.Time
		tenant, key  string
		err          error
	}{
		{"missing", "", before, "", "", ErrNoKey},
		{"not bearer", "Basic " + keys["globex"], before, "", "", ErrBadKey},
		{"no key", "Bearer ", before, "", "", ErrBadKey},
		{"unknown", "Bearer slk_nope", before, "", "", ErrBadKey},
		{"almost", "Bearer " + keys["globex"][:len(keys["globex"])-1], before, "", "", ErrBadKey},
		{"globex", "Bearer " + keys["globex"], before, "globex", "k", nil},
		{"scheme case", "bearer " + keys["globex"], before, "globex", "k", nil},
		{"rotation old", "Bearer " + keys["acme-old"], before, "acme", "old", nil},
		{"rotation new", "Bearer " + keys["acme-new"], before, "acme", "new", nil},
		{"expired", "Bearer " + keys["acme-old"], after, "", "", ErrExpired},
		{"new after expiry", "Bearer " + keys["acme-new"], after, "acme", "new", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := k.Authenticate(tc.header, tc.now)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				if c.Tenant != nil {
					t.Fatalf("tenant %v on error", c.Tenant.Name)
				}
				return
			}
			if c.Tenant.Name != tc.tenant || c.KeyID != tc.key {
				t.Fatalf("got %s/%s, want %s/%s", c.Tenant.Name, c.KeyID, tc.tenant, tc.key)
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	cfg, _ := testConfig(t)
	k, err := NewKeys(cfg)
	if err != nil {
		t.Fatal(err)
	}
	acme, globex := k.Tenants()["acme"], k.Tenants()["globex"]
	for _, tc := range []struct {
		t     *Tenant
		act   Action
		topic string
		ok    bool
	}{
		{acme, Publish, "orders", true},
		{acme, Publish, "audit", false},
		{acme, Read, "audit", true},
		{acme, Redrive, "orders", false},
		{acme, Ops, "", false},
		{acme, Any, "", true},
		{acme, Publish, "orders.>", false},
		{globex, Publish, "audit", true},
		{globex, Publish, "anything", true},
		{globex, Read, "orders", false},
		{globex, Redrive, "audit", true},
		{globex, Ops, "", true},
	} {
		err := tc.t.Allowed(tc.act, tc.topic)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrForbidden)) {
			t.Errorf("%s %s %q: err = %v, want ok %v", tc.t.Name, tc.act, tc.topic, err, tc.ok)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(topics); err != nil || !DefaultConfig().Open() {
		t.Fatalf("default: %v", err)
	}
	cfg, _ := testConfig(t)
	h := cfg.Tenants["globex"].Keys[0].Hash
	cfg.Mode = "closed"
	cfg.Tenants["bad"] = Tenant{Keys: []Key{{ID: "", Hash: "md5:abc"}, {ID: "dup", Hash: h}},
		Publish: []string{"nope"}, Rate: 5, AdmissionShare: 1.5}
	cfg.Tenants["Bad.Name"] = Tenant{}
	err := cfg.Validate(topics)
	for _, want := range []string{"auth.mode", "auth.tenants.bad.keys[0].id", "auth.tenants.bad.keys[0].hash", "auth.tenants.globex.keys[0].hash",
		"already bad's", "auth.tenants.bad.publish", "auth.tenants.bad.burst", "auth.tenants.bad.admission_share",
		"auth.tenants.Bad.Name", "auth.tenants.Bad.Name.keys"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: want %q in %v", want, err)
		}
	}
	if err := (Config{Mode: ModeKeys}).Validate(topics); err == nil || !strings.Contains(err.Error(), "at least one tenant") {
		t.Errorf("keys without tenants: %v", err)
	}
}
