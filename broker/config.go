package broker

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/sluicebus/sluice/internal/topology"
)

// Config is a broker node's configuration.
type Config struct {
	// Name is the server name (unique within a cluster).
	Name string `mapstructure:"name"`
	// DataDir holds the JetStream file store.
	DataDir string `mapstructure:"data_dir"`
	// Listen is host:port for NATS clients (port -1 picks a free port; empty
	// means in-process clients only).
	Listen string `mapstructure:"listen"`
	// ReadyTimeout bounds how long New waits for the server and JetStream.
	ReadyTimeout time.Duration `mapstructure:"ready_timeout"`
	// OpsListen serves /healthz, /readyz and /metrics for a standalone broker
	// (`sluice broker`); empty disables it.
	OpsListen string `mapstructure:"ops_listen"`

	// Topics is the topology to provision; filled from the top-level
	// `topics` key by the config loader.
	Topics map[string]topology.Topic `mapstructure:"-"`
}

// DefaultConfig returns the single-node development broker.
func DefaultConfig() Config {
	return Config{
		Name:         "sluice-dev",
		DataDir:      "data/broker",
		Listen:       "127.0.0.1:4222",
		ReadyTimeout: 30 * time.Second,
		OpsListen:    "",
	}
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, &topology.KeyError{Key: "broker.name", Msg: "must not be empty"})
	}
	if c.DataDir == "" {
		errs = append(errs, &topology.KeyError{Key: "broker.data_dir", Msg: "must not be empty"})
	}
	if c.Listen != "" {
		if _, _, err := splitHostPort(c.Listen); err != nil {
			errs = append(errs, &topology.KeyError{Key: "broker.listen", Msg: err.Error()})
		}
	}
	if c.ReadyTimeout <= 0 {
		errs = append(errs, &topology.KeyError{Key: "broker.ready_timeout", Msg: "must be positive"})
	}
	for _, name := range topology.Names(c.Topics) {
		t := c.Topics[name]
		if err := t.Validate("topics." + name); err != nil {
			errs = append(errs, err)
		}
		if t.Replicas > 1 {
			errs = append(errs, &topology.KeyError{Key: "topics." + name + ".replicas",
				Msg: fmt.Sprintf("%d replicas need a cluster of at least %d brokers; this broker runs alone", t.Replicas, t.Replicas)})
		}
	}
	return errors.Join(errs...)
}

// splitHostPort accepts host:port where port may be -1 (random).
func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("want host:port, got %q", hp)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", hp)
	}
	return host, port, nil
}
