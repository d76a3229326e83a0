package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"

	"github.com/pion/logging"
)

// loggerFactory adapts one *slog.Logger to pion's LoggerFactory. Pion's Info
// lines are per-request details, so they go to slog's Debug level; pion's
// Debug and Trace lines (per packet) are dropped unless debug is enabled.
type loggerFactory struct{ log *slog.Logger }

func (f loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("component", "pion/"+scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) enabled(lv slog.Level) bool { return l.log.Enabled(context.Background(), lv) }

func (l pionLogger) logf(lv slog.Level, format string, args ...any) {
	if l.enabled(lv) {
		l.log.Log(context.Background(), lv, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(msg string)                  { l.logf(slog.LevelDebug-4, "%s", msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.logf(slog.LevelDebug-4, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.logf(slog.LevelDebug-4, "%s", msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug-4, format, args...) }
func (l pionLogger) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any) {
	l.logf(clientGone(slog.LevelWarn, args), format, args...)
}
func (l pionLogger) Error(msg string) { l.logf(slog.LevelError, "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) {
	l.logf(clientGone(slog.LevelError, args), format, args...)
}

// clientGone lowers lv to Debug when one of args is an error that only says
// the client went away first: pion reports the TLS close_notify it could not
// write to a client that had already closed its TCP connection ("broken
// pipe", "connection reset") as an error, but clients do that all the time.
func clientGone(lv slog.Level, args []any) slog.Level {
	for _, a := range args {
		if err, ok := a.(error); ok &&
			(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
			return slog.LevelDebug
		}
	}
	return lv
}
