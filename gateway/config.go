package gateway

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sluicebus/sluice/internal/bytesize"
	"github.com/sluicebus/sluice/internal/topology"
)

// Config is a gateway node's configuration.
type Config struct {
	// Listen is the HTTP address (host:port; port 0 picks a free port).
	Listen            string        `mapstructure:"listen"`
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
	ReadTimeout       time.Duration `mapstructure:"read_timeout"`
	WriteTimeout      time.Duration `mapstructure:"write_timeout"`
	IdleTimeout       time.Duration `mapstructure:"idle_timeout"`
	// MaxHeaderBytes bounds request headers.
	MaxHeaderBytes bytesize.Size `mapstructure:"max_header_bytes"`
	// PublishTimeout bounds the wait for the bus's durable ack; past it the
	// outcome is unknown and the client is told to retry with the same key.
	PublishTimeout time.Duration `mapstructure:"publish_timeout"`
	// ShutdownTimeout bounds how long in-flight requests may finish on stop.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// RetryAfter is advertised on 503 and 429 answers.
	RetryAfter time.Duration `mapstructure:"retry_after"`
	// MaxBatchBytes and MaxBatchLines bound one NDJSON batch request.
	MaxBatchBytes bytesize.Size `mapstructure:"max_batch_bytes"`
	MaxBatchLines int           `mapstructure:"max_batch_lines"`

	// Topics the gateway accepts; filled from the top-level `topics` key.
	Topics map[string]topology.Topic `mapstructure:"-"`
}

// DefaultConfig returns the development gateway.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:8080",
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		PublishTimeout:    5 * time.Second,
		ShutdownTimeout:   10 * time.Second,
		RetryAfter:        time.Second,
		MaxBatchBytes:     16 << 20,
		MaxBatchLines:     1000,
	}
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &topology.KeyError{Key: "gateway." + key, Msg: fmt.Sprintf(format, args...)})
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "want host:port, got %q", c.Listen)
	}
	for key, d := range map[string]time.Duration{
		"read_header_timeout": c.ReadHeaderTimeout, "read_timeout": c.ReadTimeout,
		"write_timeout": c.WriteTimeout, "idle_timeout": c.IdleTimeout,
		"publish_timeout": c.PublishTimeout, "shutdown_timeout": c.ShutdownTimeout,
		"retry_after": c.RetryAfter,
	} {
		if d <= 0 {
			bad(key, "must be positive, got %v", d)
		}
	}
	if c.MaxHeaderBytes < 1<<10 {
		bad("max_header_bytes", "must be at least 1KiB, got %v", c.MaxHeaderBytes)
	}
	if c.MaxBatchLines < 1 {
		bad("max_batch_lines", "must be at least 1, got %d", c.MaxBatchLines)
	}
	if m := topology.MaxMessageSize(c.Topics); c.MaxBatchBytes < m {
		bad("max_batch_bytes", "must be at least the largest max_message_size (%v), got %v", m, c.MaxBatchBytes)
	}
	if len(c.Topics) == 0 {
		errs = append(errs, &topology.KeyError{Key: "topics", Msg: "at least one topic is needed"})
	}
	return errors.Join(errs...)
}
