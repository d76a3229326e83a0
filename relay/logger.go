package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pion/logging"
	"github.com/prometheus/client_golang/prometheus"
)

// Log rate limits (tuning knobs, not from any spec). One spoofable datagram
// can make pion log one line (a Binding request with an unknown
// comprehension-required attribute is an ERROR), so every line a client can
// trigger goes through a logLimiter: per message, at most logBurst lines per
// logWindow are written, then one line with the count of the rest.
const (
	// logBurst is how many lines of one message are written per window.
	logBurst = 5
	// logWindow is how long a window lasts, from the first line of a
	// message; when it ends the message's suppressed lines are reported.
	logWindow = 10 * time.Second
	// logMaxKeys bounds how many messages are tracked at once (pion's set
	// of format strings is finite, but its plain messages need not be).
	// Lines of any further message share one key per level.
	logMaxKeys = 1024
	// logOverflowMsg is the message of that shared key's summary line.
	logOverflowMsg = "log lines of messages beyond the limiter's key limit"
)

// logKey identifies one rate-limited message: a format string for pion's
// f-variants, the message otherwise. The scope keeps pion's messages apart
// from the node's own; the level keeps a line that clientGone lowered apart
// from the same message at its usual level.
type logKey struct {
	scope string
	level slog.Level
	msg   string
}

// logWindowState is one message's current window. It exists from the
// message's first line until its timer ends the window, so the map holds
// only messages logged in the last logWindow.
type logWindowState struct {
	log        *slog.Logger // writes the summary line, with the line's attributes
	msg        string       // the summary line's message
	written    int          // lines written this window
	suppressed int          // lines not written this window
	timer      *time.Timer
}

// logLimiter rate-limits log lines per message. The zero value is not
// usable; a nil *logLimiter limits nothing.
type logLimiter struct {
	counter prometheus.Counter // counts every suppressed line; may be nil

	mu   sync.Mutex
	keys map[logKey]*logWindowState
}

func newLogLimiter(suppressed prometheus.Counter) *logLimiter {
	return &logLimiter{counter: suppressed, keys: map[logKey]*logWindowState{}}
}

// allow reports whether a line of msg at level should be written to log.
// A line below log's level is neither written nor counted. It allocates
// only when it opens a window (the first line of a message per window,
// which is written anyway), so a suppressed line costs a map lookup.
func (lim *logLimiter) allow(log *slog.Logger, scope string, level slog.Level, msg string) bool {
	if !log.Enabled(context.Background(), level) {
		return false
	}
	if lim == nil {
		return true
	}
	k := logKey{scope: scope, level: level, msg: msg}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	w := lim.keys[k]
	if w == nil && len(lim.keys) >= logMaxKeys {
		k = logKey{level: level, msg: logOverflowMsg}
		w = lim.keys[k]
		msg = logOverflowMsg
	}
	if w == nil {
		// The overflow keys (one per level) may take the map a few
		// entries past logMaxKeys; that is still a bound.
		w = &logWindowState{log: log, msg: msg}
		w.timer = time.AfterFunc(logWindow, func() { lim.end(k, w) })
		lim.keys[k] = w
	}
	if w.written < logBurst {
		w.written++
		return true
	}
	w.suppressed++
	if lim.counter != nil {
		lim.counter.Inc()
	}
	return false
}

// end closes the window w of k and reports what it suppressed.
func (lim *logLimiter) end(k logKey, w *logWindowState) {
	lim.mu.Lock()
	n := w.suppressed
	if lim.keys[k] == w {
		delete(lim.keys, k)
	}
	lim.mu.Unlock()
	w.report(k.level, n)
}

func (w *logWindowState) report(level slog.Level, n int) {
	if n > 0 {
		w.log.Log(context.Background(), level, w.msg, "suppressed", n)
	}
}

// flush ends every open window now, so a node that stops reports the
// lines it suppressed instead of dropping the count with its timers.
func (lim *logLimiter) flush() {
	if lim == nil {
		return
	}
	type pending struct {
		level slog.Level
		w     *logWindowState
		n     int
	}
	var out []pending
	lim.mu.Lock()
	for k, w := range lim.keys {
		// A timer that already fired ends its window itself.
		if w.timer.Stop() {
			delete(lim.keys, k)
			out = append(out, pending{k.level, w, w.suppressed})
		}
	}
	lim.mu.Unlock()
	for _, p := range out {
		p.w.report(p.level, p.n)
	}
}

// loggerFactory adapts one *slog.Logger to pion's LoggerFactory. Pion's Info
// lines are per-request details, so they go to slog's Debug level; pion's
// Debug and Trace lines (per packet) go below it, where no --log-level
// reaches, save the request failures of pionDebugLevel, which go to Debug.
// Every line goes through lim, because most of pion's lines are written on
// behalf of a remote host that need not even be authenticated.
type loggerFactory struct {
	log *slog.Logger
	lim *logLimiter
}

// NewLogger returns the logger pion uses for scope. Loggers of the same
// scope (pion makes one per listener) share their limits, as one flood
// reaches every socket of a listen address.
func (f loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	scope = "pion/" + scope
	return pionLogger{log: f.log.With("component", scope), scope: scope, lim: f.lim}
}

type pionLogger struct {
	log   *slog.Logger
	scope string
	lim   *logLimiter
}

// logf formats and writes a line only when it will be written: a
// suppressed line costs no fmt.Sprintf.
func (l pionLogger) logf(lv slog.Level, format string, args ...any) {
	if l.lim.allow(l.log, l.scope, lv, format) {
		l.log.Log(context.Background(), lv, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) logMsg(lv slog.Level, msg string) {
	if l.lim.allow(l.log, l.scope, lv, msg) {
		l.log.Log(context.Background(), lv, msg)
	}
}

func (l pionLogger) Trace(msg string)                  { l.logMsg(slog.LevelDebug-4, msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.logf(slog.LevelDebug-4, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.logMsg(slog.LevelDebug-4, msg) }
func (l pionLogger) Debugf(format string, args ...any) {
	l.logf(pionDebugLevel(format), format, args...)
}
func (l pionLogger) Info(msg string)                  { l.logMsg(slog.LevelDebug, msg) }
func (l pionLogger) Infof(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                  { l.logMsg(slog.LevelWarn, msg) }
func (l pionLogger) Warnf(format string, args ...any) {
	l.logf(clientGone(slog.LevelWarn, args), format, args...)
}
func (l pionLogger) Error(msg string) { l.logMsg(slog.LevelError, msg) }
func (l pionLogger) Errorf(format string, args ...any) {
	l.logf(clientGone(slog.LevelError, args), format, args...)
}

// pionDebugLevel is the level of a pion Debugf line. Pion writes why it
// could not handle a request (an Allocate it answered with an error among
// them) at its debug level; that is what an operator running with
// --log-level debug is looking for, so it goes to slog's Debug, not below.
func pionDebugLevel(format string) slog.Level {
	if strings.HasPrefix(format, "Failed to handle datagram") {
		return slog.LevelDebug
	}
	return slog.LevelDebug - 4
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
