package gateway

import (
	"log"
	"strings"

	"go.uber.org/zap"
)

// serverLog is the HTTP server's ErrorLog. net/http writes one line per
// event there, with no level: what a client did wrong (a bad HTTP/2
// preface or frame, a TLS handshake that failed, a connection torn down)
// comes at the rate clients make it, so it is logged at debug and counted
// (sluice_gateway_protocol_errors_total{kind}); a panic is an error; any
// other line (the server's own misuse, e.g. a superfluous WriteHeader) is
// a warning.
func serverLog(l *zap.Logger, count func(kind string)) *log.Logger {
	return log.New(serverLogWriter{log: l, count: count}, "", 0)
}

type serverLogWriter struct {
	log   *zap.Logger
	count func(kind string)
}

func (w serverLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch kind := protocolErrorKind(line); {
	case strings.Contains(line, "panic serving"):
		w.log.Error(line)
	case kind != "":
		w.count(kind)
		w.log.Debug(line, zap.String("kind", kind))
	default:
		w.log.Warn(line)
	}
	return len(p), nil
}

// protocolErrorKind classifies a server log line caused by a client:
// "http2" (a preface, frame or stream the HTTP/2 server refused, a
// client's GOAWAY or a missed SETTINGS or PING), "tls" (a failed
// handshake); "" for any other line.
func protocolErrorKind(line string) string {
	switch {
	case strings.HasPrefix(line, "http2: server"), strings.HasPrefix(line, "http2: received GOAWAY"),
		strings.HasPrefix(line, "timeout waiting for SETTINGS"), strings.HasPrefix(line, "timeout waiting for PING"):
		return "http2"
	case strings.HasPrefix(line, "http: TLS handshake error"):
		return "tls"
	}
	return ""
}
