// Package logging builds Sluice's zap loggers: JSON in production,
// human-readable console output for `sluice dev`.
package logging

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger at level ("debug", "info", "warn", "error") in format
// "json" or "console"; "auto" picks console when dev is true, json otherwise.
// With sampling, JSON logs keep the first 100 lines per second of each
// message and every 100th after that.
func New(level, format string, sampling, dev bool) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	if format == "auto" {
		format = "json"
		if dev {
			format = "console"
		}
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	default:
		return nil, fmt.Errorf("log.format: %q is not json, console or auto", format)
	}
	if !sampling {
		cfg.Sampling = nil
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Development = false
	return cfg.Build()
}
