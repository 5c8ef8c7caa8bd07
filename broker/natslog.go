package broker

import (
	"errors"
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"
)

// natsLogger routes the embedded nats-server's log through zap. Fatal
// messages are also kept in fatal (the first one), for the broker to fail
// its start instead of waiting for what will not come.
type natsLogger struct {
	log   *zap.SugaredLogger
	fatal *atomic.Pointer[error]
}

func (l natsLogger) Noticef(format string, v ...any) { l.log.Infof(format, v...) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warnf(format, v...) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Errorf(format, v...) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debugf(format, v...) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debugf(format, v...) }

// Fatalf logs at error level (an embedded server must not exit the
// process) and records the error: a listener that could not bind, say,
// leaves the server running without routes, and the broker must not start.
func (l natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Errorw("nats-server fatal", "msg", msg)
	err := errors.New(msg)
	l.fatal.CompareAndSwap(nil, &err)
}
