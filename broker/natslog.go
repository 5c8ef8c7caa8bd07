package broker

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
)

// natsLogger routes the embedded nats-server's log through zap. Fatal
// messages are also kept in fatal (the first one), for the broker to fail
// its start instead of waiting for what will not come.
type natsLogger struct {
	log   *zap.SugaredLogger
	fatal *atomic.Pointer[error]
	// storeErr is set by the server's report of a store write that failed
	// (disk full, EIO): a file store that had one refuses every later
	// write until the server restarts, and a clustered server stops
	// JetStream. The log line is the only word the server gives of it.
	storeErr *atomic.Bool
}

func (l natsLogger) Noticef(format string, v ...any) { l.log.Infof(format, v...) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warnf(format, v...) }
func (l natsLogger) Errorf(format string, v ...any) {
	if storeFailure(format) {
		l.storeErr.Store(true)
	}
	l.log.Errorf(format, v...)
}

// storeFailure: format is one of nats-server's (v2.15) reports of a store
// that can no longer write: "Filestore [%s] Critical write error: %v",
// "JetStream stream '%s > %s' critical write error: %v" (and the consumer's,
// the meta group's and a Raft log's), "JetStream out of %s resources, will
// be DISABLED" and "JetStream out of space, will be DISABLED".
func storeFailure(format string) bool {
	lower := strings.ToLower(format)
	return strings.Contains(lower, "critical write error") || strings.Contains(lower, "will be disabled")
}
func (l natsLogger) Debugf(format string, v ...any) { l.log.Debugf(format, v...) }
func (l natsLogger) Tracef(format string, v ...any) { l.log.Debugf(format, v...) }

// Fatalf logs at error level (an embedded server must not exit the
// process) and records the error: a listener that could not bind, say,
// leaves the server running without routes, and the broker must not start.
func (l natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Errorw("nats-server fatal", "msg", msg)
	err := errors.New(msg)
	l.fatal.CompareAndSwap(nil, &err)
}
