package alarm

import (
	"errors"
	"time"

	"github.com/sluicebus/sluice/internal/topology"
)

// Config is the top-level `alarms` section: hold time, evaluation interval
// and thresholds, shared by every node.
type Config struct {
	// Hold: a condition must stay clear this long before its alarm clears.
	Hold time.Duration `mapstructure:"hold"`
	// Interval: how often each node evaluates its conditions.
	Interval time.Duration `mapstructure:"interval"`
	// StarvedAfter: a family with messages waiting and no delivery for this
	// long is starved (no credit offered, or all of it held).
	StarvedAfter time.Duration `mapstructure:"starved_after"`
	// LagMax: a family's backlog (pending + in flight) over this share of
	// its topic's max_messages raises consumer_lag.
	LagMax float64 `mapstructure:"lag_max"`
	// ReplicaLagMax: a replica this many operations behind its leader lags.
	ReplicaLagMax int64 `mapstructure:"replica_lag_max"`
	// DiskUseMax: a broker's data directory file system fuller than this share.
	DiskUseMax float64 `mapstructure:"disk_use_max"`
	// RetryBudget: redeliveries over this share of a family's deliveries.
	RetryBudget float64 `mapstructure:"retry_budget"`
	// PlannedRate: the messages/s the cluster was planned for (`sluice
	// plan`); ingest above it raises blueprint_exceeded. 0 = off.
	PlannedRate float64 `mapstructure:"planned_rate"`
}

// DefaultConfig is the built-in alarms section (configs/dev.yaml).
func DefaultConfig() Config {
	return Config{Hold: 10 * time.Second, Interval: time.Second, StarvedAfter: 10 * time.Second, LagMax: 0.5,
		ReplicaLagMax: 1000, DiskUseMax: 0.85, RetryBudget: 0.2, PlannedRate: 0}
}

// Validate checks every threshold, naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, msg string) { errs = append(errs, &topology.KeyError{Key: "alarms." + key, Msg: msg}) }
	if c.Hold < 0 {
		bad("hold", "must not be negative")
	}
	if c.Interval <= 0 {
		bad("interval", "must be positive")
	} else if c.Hold < c.Interval {
		bad("hold", "must be at least alarms.interval (a shorter hold clears between evaluations: flapping)")
	}
	if c.StarvedAfter <= 0 {
		bad("starved_after", "must be positive")
	}
	if c.LagMax <= 0 || c.LagMax > 1 {
		bad("lag_max", "must be in (0, 1]")
	}
	if c.ReplicaLagMax < 1 {
		bad("replica_lag_max", "must be at least 1")
	}
	if c.DiskUseMax <= 0 || c.DiskUseMax > 1 {
		bad("disk_use_max", "must be in (0, 1]")
	}
	if c.RetryBudget <= 0 || c.RetryBudget > 1 {
		bad("retry_budget", "must be in (0, 1]")
	}
	if c.PlannedRate < 0 {
		bad("planned_rate", "must not be negative")
	}
	return errors.Join(errs...)
}
