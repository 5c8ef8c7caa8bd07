package broker

import (
	"fmt"

	"go.uber.org/zap"
)

// natsLogger routes the embedded nats-server's log through zap.
type natsLogger struct{ log *zap.SugaredLogger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Infof(format, v...) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warnf(format, v...) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Errorf(format, v...) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debugf(format, v...) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debugf(format, v...) }

// Fatalf logs at error level: an embedded server must not exit the process;
// the server shuts itself down and Broker reports it as not ready.
func (l natsLogger) Fatalf(format string, v ...any) {
	l.log.Errorw("nats-server fatal", "msg", fmt.Sprintf(format, v...))
}
