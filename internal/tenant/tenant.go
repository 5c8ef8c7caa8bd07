// Package tenant is who may use a gateway: tenants, their API keys (stored as
// SHA-256 hashes, compared in constant time, several valid at once for
// rotation) and their grants per topic, plus each tenant's quotas.
package tenant

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Modes of a gateway's authentication.
const (
	// ModeOpen checks no key: anyone who reaches the gateway may do
	// anything. For development only; the gateway says so loudly.
	ModeOpen = "open"
	// ModeKeys requires a tenant's API key on every API request.
	ModeKeys = "keys"
)

// KeyPrefix starts every key `sluice keys new` makes, so that a leaked key
// is easy to recognise (secret scanners, logs).
const KeyPrefix = "slk_"

// HashPrefix starts a stored key hash.
const HashPrefix = "sha256:"

// AnyTopic in a grant list grants every topic.
const AnyTopic = "*"

// Config is the `auth` section.
type Config struct {
	// Mode is "open" (development: no keys) or "keys".
	Mode string `mapstructure:"mode"`
	// Tenants by name.
	Tenants map[string]Tenant `mapstructure:"tenants"`
}

// Tenant is one customer of the gateway: its keys, grants and quotas.
type Tenant struct {
	// Name is the tenant's key in the tenants map.
	Name string `mapstructure:"-"`
	// Keys are the tenant's API keys; two at once let a key be rotated
	// without downtime (add the new one, move clients, remove the old).
	Keys []Key `mapstructure:"keys"`
	// Publish, Read and Redrive list the topics the tenant may publish to,
	// read the stats and dead letters of, and redrive, purge or delete dead
	// letters of. "*" is every topic.
	Publish []string `mapstructure:"publish"`
	Read    []string `mapstructure:"read"`
	Redrive []string `mapstructure:"redrive"`
	// Ops lets the tenant read /v1/status and /v1/alarms (every topic).
	Ops bool `mapstructure:"ops"`
	// Rate (messages/s over all its topics) and Burst bound the tenant at
	// each gateway; 0 is no limit.
	Rate  float64 `mapstructure:"rate"`
	Burst int     `mapstructure:"burst"`
	// AdmissionShare is the largest share (0..1) of a topic's admission
	// credit at a gateway the tenant may take in one refill, so one tenant
	// cannot fill a topic others publish to; 0 or 1 is no limit.
	AdmissionShare float64 `mapstructure:"admission_share"`
}

// Key is one API key, stored as its hash.
type Key struct {
	// ID names the key in logs and metrics (never the key itself).
	ID string `mapstructure:"id"`
	// Hash is "sha256:" and the hex SHA-256 of the key.
	Hash string `mapstructure:"hash"`
	// Expires, when set, is when the key stops being valid.
	Expires time.Time `mapstructure:"expires"`
}

// DefaultConfig is open: development.
func DefaultConfig() Config { return Config{Mode: ModeOpen, Tenants: map[string]Tenant{}} }

// Limited reports whether the tenant has an admission share below the
// whole credit.
func (t *Tenant) Limited() bool { return t.AdmissionShare > 0 && t.AdmissionShare < 1 }

// Open reports whether no key is checked.
func (c Config) Open() bool { return c.Mode != ModeKeys }

// Validate reports every problem, each under its dotted key; topics are the
// declared topics grants may name.
func (c Config) Validate(topics map[string]topology.Topic) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &topology.KeyError{Key: "auth." + key, Msg: fmt.Sprintf(format, args...)})
	}
	switch c.Mode {
	case ModeOpen:
	case ModeKeys:
		if len(c.Tenants) == 0 {
			bad("tenants", "mode keys needs at least one tenant")
		}
	default:
		bad("mode", "must be open or keys, got %q", c.Mode)
	}
	seen := map[string]string{}
	for _, name := range sortedNames(c.Tenants) {
		t := c.Tenants[name]
		p := "tenants." + name
		if err := sluice.ValidateName(name); err != nil {
			bad(p, "%v", err)
		}
		if len(t.Keys) == 0 {
			bad(p+".keys", "a tenant needs at least one key")
		}
		for i, k := range t.Keys {
			kp := fmt.Sprintf("%s.keys[%d]", p, i)
			if k.ID == "" {
				bad(kp+".id", "must not be empty")
			}
			if _, err := parseHash(k.Hash); err != nil {
				bad(kp+".hash", "%v", err)
			} else if other, dup := seen[k.Hash]; dup {
				bad(kp+".hash", "the same key is already %s's", other)
			} else {
				seen[k.Hash] = name
			}
		}
		for list, grants := range map[string][]string{"publish": t.Publish, "read": t.Read, "redrive": t.Redrive} {
			for _, g := range grants {
				if _, ok := topics[g]; !ok && g != AnyTopic {
					bad(p+"."+list, "topic %q is not declared (or use %q for every topic)", g, AnyTopic)
				}
			}
		}
		if t.Rate < 0 || (t.Rate > 0 && t.Burst < 1) {
			bad(p+".burst", "must be at least 1 when rate is set (rate 0 is no limit)")
		}
		if !(t.AdmissionShare >= 0 && t.AdmissionShare <= 1) {
			bad(p+".admission_share", "must be in [0, 1] (0 or 1: no limit), got %v", t.AdmissionShare)
		}
	}
	return errors.Join(errs...)
}

func sortedNames(m map[string]Tenant) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func parseHash(h string) ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	hexSum, ok := strings.CutPrefix(h, HashPrefix)
	if !ok {
		return out, fmt.Errorf("want %q and 64 hex digits (`sluice keys hash`), got %q", HashPrefix, clip(h))
	}
	b, err := hex.DecodeString(hexSum)
	if err != nil || len(b) != sha256.Size {
		return out, fmt.Errorf("want %q and 64 hex digits, got %q", HashPrefix, clip(h))
	}
	copy(out[:], b)
	return out, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Hash is the stored form of key.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return HashPrefix + hex.EncodeToString(sum[:])
}

// NewKey returns a new random API key (256 bits) and its hash.
func NewKey() (key, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("new key: %w", err)
	}
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return key, Hash(key), nil
}

// Action is what a request does, for the grant check.
type Action int

// Actions.
const (
	// Public needs no key: health, readiness.
	Public Action = iota
	// Any needs a valid key, whatever its grants (listing the topics one
	// may read).
	Any
	Publish
	Read
	Redrive
	// Ops reads the whole cluster's status and alarms.
	Ops
)

func (a Action) String() string {
	return [...]string{"public", "any", "publish", "read", "redrive", "ops"}[a]
}

// Errors of Authenticate; each is a 401. ErrForbidden (403) is Allowed's.
var (
	ErrNoKey     = errors.New("no API key")
	ErrBadKey    = errors.New("invalid API key")
	ErrExpired   = errors.New("API key expired")
	ErrForbidden = errors.New("not granted")
)

// Keys checks API keys. Its zero value is unusable; build it with NewKeys.
type Keys struct {
	open    bool
	entries []entry
	tenants map[string]*Tenant
}

type entry struct {
	hash    [sha256.Size]byte
	tenant  *Tenant
	keyID   string
	expires time.Time
}

// NewKeys builds the key table of a validated config.
func NewKeys(c Config) (*Keys, error) {
	k := &Keys{open: c.Open(), tenants: map[string]*Tenant{}}
	for _, name := range sortedNames(c.Tenants) {
		t := c.Tenants[name]
		t.Name = name
		tp := &t
		k.tenants[name] = tp
		for _, key := range t.Keys {
			h, err := parseHash(key.Hash)
			if err != nil {
				return nil, fmt.Errorf("auth.tenants.%s: %w", name, err)
			}
			k.entries = append(k.entries, entry{hash: h, tenant: tp, keyID: key.ID, expires: key.Expires})
		}
	}
	return k, nil
}

// Open reports whether keys are not checked.
func (k *Keys) Open() bool { return k.open }

// Tenants lists the tenants by name.
func (k *Keys) Tenants() map[string]*Tenant { return k.tenants }

// Caller is an authenticated request's tenant and key.
type Caller struct {
	Tenant *Tenant
	KeyID  string
}

// Authenticate finds the tenant of an Authorization header value
// ("Bearer <key>"). Every stored hash is compared, in constant time, so the
// time taken tells nothing about which key came close.
func (k *Keys) Authenticate(authorization string, now time.Time) (Caller, error) {
	scheme, key, ok := strings.Cut(authorization, " ")
	if authorization == "" {
		return Caller{}, ErrNoKey
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return Caller{}, fmt.Errorf("%w: want \"Authorization: Bearer <key>\"", ErrBadKey)
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(key)))
	found := -1
	for i := range k.entries {
		if subtle.ConstantTimeCompare(sum[:], k.entries[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Caller{}, ErrBadKey
	}
	e := k.entries[found]
	if !e.expires.IsZero() && !now.Before(e.expires) {
		// Said to an unauthenticated caller: no tenant or key id in it.
		return Caller{}, fmt.Errorf("%w at %s", ErrExpired, e.expires.UTC().Format(time.RFC3339))
	}
	return Caller{Tenant: e.tenant, KeyID: e.keyID}, nil
}

// Allowed reports whether t may do act on topic (topic "" for actions
// that name none).
func (t *Tenant) Allowed(act Action, topic string) error {
	var list []string
	switch act {
	case Public, Any:
		return nil
	case Publish:
		list = t.Publish
	case Read:
		list = t.Read
	case Redrive:
		list = t.Redrive
	case Ops:
		if t.Ops {
			return nil
		}
		return fmt.Errorf("%w: tenant %s may not read the cluster's status and alarms (ops: false)", ErrForbidden, t.Name)
	}
	if slices.Contains(list, AnyTopic) || slices.Contains(list, topic) {
		return nil
	}
	return fmt.Errorf("%w: tenant %s may not %s topic %q", ErrForbidden, t.Name, act, topic)
}
