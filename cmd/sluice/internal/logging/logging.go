// Package logging builds Sluice's zap loggers: JSON in production,
// human-readable console output for `sluice dev`.
package logging

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger at level ("debug", "info", "warn", "error") in format
// "json" or "console"; "auto" picks console when dev is true, json otherwise.
// With sampling, JSON logs keep the first 100 lines per second of each
// message and every 100th after that. Console levels are coloured only when
// stderr, where logs go, is a terminal and NO_COLOR is not set: a file or
// a pipe gets no escape codes.
func New(level, format string, sampling, dev bool) (*zap.Logger, error) {
	return build(level, format, sampling, dev, Colour(os.Stderr))
}

// Colour reports whether output to f may carry colour codes: f is a
// terminal and NO_COLOR (no-color.org) is unset or empty.
func Colour(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func build(level, format string, sampling, dev, colour bool) (*zap.Logger, error) {
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
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		if colour {
			cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
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
