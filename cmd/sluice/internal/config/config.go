// Package config is Sluice's configuration: one file (YAML) describing the
// nodes and the topology, overridden by SLUICE_* environment variables and
// command-line flags, validated as a whole before anything starts.
package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/bus"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/tlsconf"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Config is the whole configuration file.
type Config struct {
	Log      Log                       `mapstructure:"log"`
	Bus      Bus                       `mapstructure:"bus"`
	Broker   broker.Config             `mapstructure:"broker"`
	Gateway  gateway.Config            `mapstructure:"gateway"`
	Demo     Demo                      `mapstructure:"demo"`
	Producer Producer                  `mapstructure:"producer"`
	Alarms   alarm.Config              `mapstructure:"alarms"`
	Auth     tenant.Config             `mapstructure:"auth"`
	Topics   map[string]topology.Topic `mapstructure:"-"`
}

// Producer is how Sluice's own HTTP clients (`sluice produce`, the compose
// demo's loadgen) publish: which gateways, and the retry strategy.
type Producer struct {
	// Gateways are the gateway URLs; the producer fails over between them.
	Gateways []string `mapstructure:"gateways"`
	// Retry is the retry strategy: attempts, backoff, deadline and budget.
	Retry sluice.RetryPolicy `mapstructure:"retry"`
	// APIKey is sent as "Authorization: Bearer <key>" to gateways with
	// auth.mode keys; best given as SLUICE_PRODUCER_API_KEY.
	APIKey string `mapstructure:"api_key"`
	// TLS is how producers trust HTTPS gateways: ca_file (empty: the
	// system's roots), and a client certificate for gateways that verify
	// clients.
	TLS tlsconf.Config `mapstructure:"tls"`
}

// Log configures zap.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is console, json, or auto (console for `sluice dev`, json otherwise).
	Format string `mapstructure:"format"`
	// Sampling thins JSON logs under load: per second, the first 100 lines
	// of each message, then every 100th. Off, every line is kept (the
	// demo's per-message lines, which the demo test reads).
	Sampling bool `mapstructure:"sampling"`
}

// Bus is how gateways and workers reach the brokers.
type Bus struct {
	// URLs of every broker; clients fail over between them.
	URLs []string `mapstructure:"urls"`
	// ConnectTimeout bounds the first connection.
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	// TLS: the CA that signs the brokers' certificates (ca_file) and, for
	// brokers with verify_clients, this client's certificate. Off when empty.
	TLS tlsconf.Config `mapstructure:"tls"`
	// NkeySeedFile holds this client's user nkey seed (`sluice nkey`), for
	// brokers with broker.auth.users; empty: no identity.
	NkeySeedFile string `mapstructure:"nkey_seed_file"`
}

// Demo is the built-in demo worker that serves families in `sluice dev` and
// `sluice worker`: it sleeps Delay per message and fails FailureRate of them.
type Demo struct {
	// Enabled starts a demo worker for every family in `sluice dev`.
	Enabled     bool          `mapstructure:"enabled"`
	Delay       time.Duration `mapstructure:"delay"`
	FailureRate float64       `mapstructure:"failure_rate"`
	// Credit is how many messages one demo worker holds and handles at once.
	Credit int `mapstructure:"credit"`
}

// DefaultConfig is the complete single-node development setup; configs/dev.yaml
// holds the same values (a test keeps them equal).
func DefaultConfig() Config {
	orders := topology.DevOrders()
	return Config{
		Log:     Log{Level: "info", Format: "auto", Sampling: true},
		Bus:     Bus{URLs: []string{"nats://127.0.0.1:4222"}, ConnectTimeout: 5 * time.Second, TLS: tlsconf.Config{}, NkeySeedFile: ""},
		Broker:  broker.DefaultConfig(),
		Gateway: gateway.DefaultConfig(),
		Demo:    Demo{Enabled: true, Delay: 10 * time.Millisecond, FailureRate: 0, Credit: 16},
		Producer: Producer{Gateways: []string{"http://127.0.0.1:8080"},
			Retry: sluice.RetryPolicy{MaxAttempts: 10, Initial: 100 * time.Millisecond, Max: 5 * time.Second, Deadline: 30 * time.Second, Budget: 0.2}},
		Alarms: alarm.DefaultConfig(),
		Auth:   tenant.DefaultConfig(),
		Topics: map[string]topology.Topic{"orders": orders},
	}
}

// share copies the topology into the node configs that need it.
func (c *Config) share() {
	c.Broker.Topics = c.Topics
	c.Gateway.Topics = c.Topics
	c.Broker.Alarms = c.Alarms
	c.Gateway.Alarms = c.Alarms
	c.Gateway.Auth = c.Auth
}

// Role is a node a process runs; a configuration is validated for the
// roles its process runs (a gateway does not need a broker's cluster).
type Role int

// Roles.
const (
	RoleBroker Role = 1 << iota
	RoleGateway
	RoleWorker
	// RoleProducer is `sluice produce`: the producer section.
	RoleProducer
	// RoleAll is every node: `sluice dev`, and the default.
	RoleAll = RoleBroker | RoleGateway | RoleWorker | RoleProducer
)

// Validate reports every problem for all roles, each naming its key.
func (c *Config) Validate() error { return c.ValidateFor(RoleAll) }

// ValidateFor checks the common sections, the topology, and the node
// sections of roles.
func (c *Config) ValidateFor(roles Role) error {
	c.share()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &topology.KeyError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "console", "json":
	default:
		bad("log.format", "must be auto, console or json, got %q", c.Log.Format)
	}
	if len(c.Bus.URLs) == 0 {
		bad("bus.urls", "at least one broker URL is needed")
	}
	if c.Bus.ConnectTimeout <= 0 {
		bad("bus.connect_timeout", "must be positive")
	}
	if roles&(RoleGateway|RoleWorker) != 0 { // their files are where they run
		if err := c.Bus.TLS.Validate("bus.tls"); err != nil {
			errs = append(errs, err)
		}
		if c.Bus.NkeySeedFile != "" {
			if err := bus.CheckSeedFile(c.Bus.NkeySeedFile); err != nil {
				bad("bus.nkey_seed_file", "%v", err)
			}
		}
	}
	if c.Demo.Delay < 0 {
		bad("demo.delay", "must not be negative")
	}
	if c.Demo.FailureRate < 0 || c.Demo.FailureRate > 1 {
		bad("demo.failure_rate", "must be between 0 and 1, got %v", c.Demo.FailureRate)
	}
	if c.Demo.Credit < 1 {
		bad("demo.credit", "must be at least 1, got %d", c.Demo.Credit)
	}
	if err := c.Alarms.Validate(); err != nil {
		errs = append(errs, err)
	}
	if roles&RoleProducer != 0 {
		if len(c.Producer.Gateways) == 0 {
			bad("producer.gateways", "at least one gateway URL is needed")
		}
		if err := c.Producer.Retry.Validate(); err != nil {
			bad("producer.retry", "%v", err)
		}
		if err := c.Producer.TLS.Validate("producer.tls"); err != nil {
			errs = append(errs, err)
		}
	}
	if roles&RoleBroker != 0 {
		if err := c.Broker.Validate(); err != nil { // the topology included
			errs = append(errs, err)
		}
	} else {
		for _, name := range topology.Names(c.Topics) {
			if err := c.Topics[name].Validate("topics." + name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if roles&RoleGateway != 0 {
		if err := c.Gateway.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
