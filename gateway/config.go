package gateway

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/bytesize"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/tlsconf"
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
	// MaxHeaderBytes and MaxHeaderCount bound request header fields (431).
	MaxHeaderBytes bytesize.Size `mapstructure:"max_header_bytes"`
	MaxHeaderCount int           `mapstructure:"max_header_count"`
	// PublishTimeout bounds the wait for the bus's durable ack; past it the
	// outcome is unknown and the client is told to retry with the same key.
	PublishTimeout time.Duration `mapstructure:"publish_timeout"`
	// LameDuck is how long a stopping gateway keeps serving with /readyz
	// answering 503, so that load balancers stop sending before it closes.
	LameDuck time.Duration `mapstructure:"lame_duck"`
	// ShutdownTimeout bounds how long in-flight requests may finish on stop.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// RetryAfterMin and RetryAfterMax clamp the computed Retry-After of 429
	// and 503 answers (computed from the topic's drain rate, jittered).
	RetryAfterMin time.Duration `mapstructure:"retry_after_min"`
	RetryAfterMax time.Duration `mapstructure:"retry_after_max"`
	// MaxInFlight bounds requests being served; beyond it: 503 at once.
	MaxInFlight int `mapstructure:"max_in_flight"`
	// MaxBodyBytesInFlight bounds request bodies held at once; beyond: 503.
	MaxBodyBytesInFlight bytesize.Size `mapstructure:"max_body_bytes_in_flight"`
	// PublishWindow bounds publishes awaiting the bus's ack; a full window
	// is waited on for at most PublishWindowWait, then 503.
	PublishWindow     int           `mapstructure:"publish_window"`
	PublishWindowWait time.Duration `mapstructure:"publish_window_wait"`
	// ClientRate (messages/s) and ClientBurst bound each client (by API key,
	// else by address); 0 turns the per-client limit off. MaxClients bounds
	// how many clients are tracked.
	ClientRate  float64 `mapstructure:"client_rate"`
	ClientBurst int     `mapstructure:"client_burst"`
	MaxClients  int     `mapstructure:"max_clients"`
	// ReadRate (requests/s) and ReadBurst bound the read endpoints (topic
	// views, dead-letter lists and peeks, status, alarms) per tenant, or per
	// client address when auth is open: reads cost the bus a round trip or
	// more, and must not be free to repeat without end.
	ReadRate  float64 `mapstructure:"read_rate"`
	ReadBurst int     `mapstructure:"read_burst"`
	// AdmissionRefresh is how often the gateway re-reads each topic's free
	// capacity and refills its share of admission credit.
	AdmissionRefresh time.Duration `mapstructure:"admission_refresh"`
	// HeartbeatInterval is how often gateways tell each other they are alive
	// (credit is shared among the gateways heard from in 3 intervals).
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"`
	// RedriveRate bounds how fast dead letters are redriven (messages/s,
	// per gateway), on top of the topic's admission.
	RedriveRate float64 `mapstructure:"redrive_rate"`
	// MaxBatchBytes and MaxBatchLines bound one NDJSON batch request.
	MaxBatchBytes bytesize.Size `mapstructure:"max_batch_bytes"`
	MaxBatchLines int           `mapstructure:"max_batch_lines"`
	// MaxLineBytes bounds one NDJSON line (a longer line gets its own 413)
	// and MaxJSONDepth the nesting of its JSON (400).
	MaxLineBytes bytesize.Size `mapstructure:"max_line_bytes"`
	MaxJSONDepth int           `mapstructure:"max_json_depth"`
	// Group commit: messages of concurrent requests to a topic are stored
	// together, as one JetStream atomic batch of at most CommitBatchMax
	// messages and CommitBatchBytes payload bytes, with at most
	// CommitsInFlight such writes per topic in flight. CommitBatchMax 1
	// stores every message with its own write.
	CommitBatchMax   int           `mapstructure:"commit_batch_max"`
	CommitBatchBytes bytesize.Size `mapstructure:"commit_batch_bytes"`
	CommitsInFlight  int           `mapstructure:"commits_in_flight"`
	// CommitAtomicReplicated lets group commits to replicated topics use
	// atomic batches too. Off by default: in a rolling restart under load,
	// two acked messages of one R3 atomic batch stayed in the stream while
	// both families' consumers moved past them (issue 6's note). Replicated
	// topics then publish each commit's messages pipelined, and Raft
	// batches them.
	CommitAtomicReplicated bool `mapstructure:"commit_atomic_replicated"`

	// Name identifies this gateway in alarms and logs; empty: the host
	// name and the listen port.
	Name string `mapstructure:"name"`

	// TLS serves the API over HTTPS (TLS 1.2 or later, HTTP/2 offered) with
	// this certificate; with verify_clients, clients need a certificate
	// signed by ca_file. All empty: plain HTTP (TLS left to a proxy).
	TLS tlsconf.Config `mapstructure:"tls"`

	// Topics the gateway accepts; filled from the top-level `topics` key.
	Topics map[string]topology.Topic `mapstructure:"-"`
	// Alarms are the thresholds; filled from the top-level `alarms` key.
	Alarms alarm.Config `mapstructure:"-"`
	// Auth is who may call the API; filled from the top-level `auth` key.
	Auth tenant.Config `mapstructure:"-"`
}

// MaxCommitBatch is nats-server's default bound on the messages of one
// atomic batch; MaxCommitsInFlight keeps a gateway well inside its bound of
// 50 atomic batches in flight per stream.
const (
	MaxCommitBatch     = 1000
	MaxCommitsInFlight = 16
)

// DefaultConfig returns the development gateway.
func DefaultConfig() Config {
	return Config{
		Listen:               "127.0.0.1:8080",
		ReadHeaderTimeout:    5 * time.Second,
		ReadTimeout:          30 * time.Second,
		WriteTimeout:         30 * time.Second,
		IdleTimeout:          2 * time.Minute,
		MaxHeaderBytes:       64 << 10,
		MaxHeaderCount:       100,
		PublishTimeout:       5 * time.Second,
		LameDuck:             0,
		ShutdownTimeout:      10 * time.Second,
		RetryAfterMin:        time.Second,
		RetryAfterMax:        time.Minute,
		MaxInFlight:          1024,
		MaxBodyBytesInFlight: 64 << 20,
		PublishWindow:        1024,
		PublishWindowWait:    50 * time.Millisecond,
		ClientRate:           0,
		ClientBurst:          0,
		MaxClients:           10000,
		ReadRate:             100,
		ReadBurst:            200,
		AdmissionRefresh:     250 * time.Millisecond,
		HeartbeatInterval:    time.Second,
		MaxBatchBytes:        16 << 20,
		MaxBatchLines:        1000,
		MaxLineBytes:         4 << 20,
		MaxJSONDepth:         32,
		CommitBatchMax:       500,
		CommitBatchBytes:     4 << 20,
		CommitsInFlight:      4,
		RedriveRate:          100,
		Alarms:               alarm.DefaultConfig(),
		Auth:                 tenant.DefaultConfig(),
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
		"retry_after_min": c.RetryAfterMin, "retry_after_max": c.RetryAfterMax,
		"publish_window_wait": c.PublishWindowWait, "admission_refresh": c.AdmissionRefresh,
		"heartbeat_interval": c.HeartbeatInterval,
	} {
		if d <= 0 {
			bad(key, "must be positive, got %v", d)
		}
	}
	if c.MaxHeaderBytes < 1<<10 {
		bad("max_header_bytes", "must be at least 1KiB, got %v", c.MaxHeaderBytes)
	}
	if c.MaxHeaderCount < 10 {
		bad("max_header_count", "must be at least 10, got %d", c.MaxHeaderCount)
	}
	if c.MaxJSONDepth < 2 {
		bad("max_json_depth", "must be at least 2 (a batch line is an object holding metadata), got %d", c.MaxJSONDepth)
	}
	if c.MaxLineBytes < 1<<10 {
		bad("max_line_bytes", "must be at least 1KiB, got %v", c.MaxLineBytes)
	}
	if c.LameDuck < 0 {
		bad("lame_duck", "must not be negative")
	}
	if c.RetryAfterMin < time.Second || c.RetryAfterMax < c.RetryAfterMin {
		bad("retry_after_min", "must be at least 1s (Retry-After counts whole seconds) and at most retry_after_max")
	}
	if c.MaxInFlight < 1 {
		bad("max_in_flight", "must be at least 1, got %d", c.MaxInFlight)
	}
	if m := topology.MaxMessageSize(c.Topics); c.MaxBodyBytesInFlight < m {
		bad("max_body_bytes_in_flight", "must be at least the largest max_message_size (%v), got %v", m, c.MaxBodyBytesInFlight)
	}
	if c.MaxBodyBytesInFlight < c.MaxBatchBytes {
		bad("max_body_bytes_in_flight", "must be at least max_batch_bytes (%v), got %v: a large batch could never be read", c.MaxBatchBytes, c.MaxBodyBytesInFlight)
	}
	if c.PublishWindow < 1 {
		bad("publish_window", "must be at least 1, got %d", c.PublishWindow)
	}
	if c.ClientRate < 0 || (c.ClientRate > 0 && c.ClientBurst < 1) {
		bad("client_burst", "must be at least 1 when client_rate is set (client_rate 0 turns the limit off)")
	}
	if !(c.ReadRate > 0) {
		bad("read_rate", "must be positive (requests/s per tenant, or per client address when auth is open), got %v", c.ReadRate)
	}
	if c.ReadBurst < 1 {
		bad("read_burst", "must be at least 1, got %d", c.ReadBurst)
	}
	if c.MaxClients < 1 {
		bad("max_clients", "must be at least 1, got %d", c.MaxClients)
	}
	if !(c.RedriveRate > 0) {
		bad("redrive_rate", "must be positive, got %v", c.RedriveRate)
	}
	if c.MaxBatchLines < 1 {
		bad("max_batch_lines", "must be at least 1, got %d", c.MaxBatchLines)
	}
	if c.CommitBatchMax < 1 || c.CommitBatchMax > MaxCommitBatch {
		bad("commit_batch_max", "must be 1..%d (JetStream's atomic batch limit), got %d", MaxCommitBatch, c.CommitBatchMax)
	}
	if c.CommitBatchBytes < 1 {
		bad("commit_batch_bytes", "must be positive, got %v", c.CommitBatchBytes)
	}
	if c.CommitsInFlight < 1 || c.CommitsInFlight > MaxCommitsInFlight {
		bad("commits_in_flight", "must be 1..%d, got %d", MaxCommitsInFlight, c.CommitsInFlight)
	}
	if m := topology.MaxMessageSize(c.Topics); c.MaxBatchBytes < m {
		bad("max_batch_bytes", "must be at least the largest max_message_size (%v), got %v", m, c.MaxBatchBytes)
	}
	if err := c.TLS.ValidateServer("gateway.tls"); err != nil {
		errs = append(errs, err)
	}
	if err := c.Auth.Validate(c.Topics); err != nil {
		errs = append(errs, err)
	}
	if len(c.Topics) == 0 {
		errs = append(errs, &topology.KeyError{Key: "topics", Msg: "at least one topic is needed"})
	}
	return errors.Join(errs...)
}
