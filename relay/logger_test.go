package relay

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/logging"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/supernode/supernode/looptest"
)

// newTestPionLogger returns a pion logger writing at level lv and above,
// what it writes, and the counter of suppressed lines.
func newTestPionLogger(lv slog.Level) (logging.LeveledLogger, *looptest.Log, prometheus.Counter, *logLimiter) {
	out := &looptest.Log{}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "suppressed_total"})
	lim := newLogLimiter(c)
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: lv}))
	return loggerFactory{log: log, lim: lim}.NewLogger("turn"), out, c, lim
}

const unknownAttrFormat = "%v-%v with unknown comprehension-required attributes from %v: %v"

// floodUnknownAttr logs n lines the way pion does for a request with an
// unknown comprehension-required attribute, each from another address.
func floodUnknownAttr(l logging.LeveledLogger, n int) {
	for i := range n {
		src := &net.UDPAddr{IP: net.IPv4(198, 51, 100, byte(i)), Port: 1000 + i}
		l.Errorf(unknownAttrFormat, "Binding", "request", src, "[0x23]")
	}
}

// TestLogLimiterWindow checks that a flood of one message writes logBurst
// lines, then one line with the count of the rest once the window ends,
// and that the next window writes again.
func TestLogLimiterWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, out, c, _ := newTestPionLogger(slog.LevelInfo)
		const n = 1000
		floodUnknownAttr(l, n)
		if got := len(out.Lines("unknown comprehension-required")); got != logBurst {
			t.Fatalf("%d lines written during the flood, want %d", got, logBurst)
		}
		if got := testutil.ToFloat64(c); got != n-logBurst {
			t.Fatalf("counter %v, want %d", got, n-logBurst)
		}
		if got := out.Lines("suppressed="); len(got) != 0 {
			t.Fatalf("summary before the window ended: %q", got)
		}

		time.Sleep(logWindow)
		synctest.Wait()
		sum := out.Lines("suppressed=")
		if len(sum) != 1 {
			t.Fatalf("got %d summary lines, want 1: %q", len(sum), sum)
		}
		want := fmt.Sprintf("level=ERROR msg=%q component=pion/turn suppressed=%d", unknownAttrFormat, n-logBurst)
		if !strings.Contains(sum[0], want) {
			t.Fatalf("summary %q, want it to contain %q", sum[0], want)
		}

		// A new window writes logBurst lines again, and reports only its own
		// suppressed lines.
		floodUnknownAttr(l, logBurst+3)
		if got := len(out.Lines("from 198.51.100.")); got != 2*logBurst {
			t.Fatalf("%d lines written after two windows, want %d", got, 2*logBurst)
		}
		time.Sleep(logWindow)
		synctest.Wait()
		if sum := out.Lines("suppressed="); len(sum) != 2 || !strings.HasSuffix(sum[1], "suppressed=3") {
			t.Fatalf("second window's summary: %q", sum)
		}
		if got := testutil.ToFloat64(c); got != n-logBurst+3 {
			t.Fatalf("counter %v, want %d", got, n-logBurst+3)
		}

		// A window without suppressed lines ends silently.
		floodUnknownAttr(l, 1)
		time.Sleep(logWindow)
		synctest.Wait()
		if sum := out.Lines("suppressed="); len(sum) != 2 {
			t.Fatalf("a quiet window wrote a summary: %q", sum)
		}
	})
}

// TestLogLimiterKeys checks that messages are limited independently: each
// format string and each plain message has its own budget, a line lowered by
// clientGone is kept apart, and lines below the level are not counted.
func TestLogLimiterKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, out, c, _ := newTestPionLogger(slog.LevelInfo)
		for i := range 2 * logBurst {
			l.Errorf("first %d", i)
			l.Errorf("second %d", i)
			l.Error("plain one")
			l.Error("plain two")
			l.Warnf("third %v", i)
			l.Warn("plain three")
			// Below Info: not written and not counted.
			l.Infof("per request %d", i)
			l.Debugf("per packet %d", i)
			l.Tracef("per packet %d", i)
			// Lowered to Debug by clientGone, so not written either.
			l.Errorf("Failed to close conn: %s", fmt.Errorf("write: %w", syscall.EPIPE))
		}
		for _, msg := range []string{"first ", "second ", "plain one", "plain two", "third ", "plain three"} {
			if got := len(out.Lines("msg=\"" + msg)); got != logBurst {
				t.Errorf("%q: %d lines, want %d", msg, got, logBurst)
			}
		}
		for _, msg := range []string{"per request", "per packet", "Failed to close"} {
			if got := out.Lines(msg); len(got) != 0 {
				t.Errorf("%q below the level was written: %q", msg, got)
			}
		}
		if got := testutil.ToFloat64(c); got != 6*logBurst {
			t.Errorf("counter %v, want %d", got, 6*logBurst)
		}
		time.Sleep(logWindow)
		synctest.Wait()
		sum := out.Lines("suppressed=")
		if len(sum) != 6 {
			t.Fatalf("got %d summary lines, want 6: %q", len(sum), sum)
		}
		for _, want := range []string{
			`level=ERROR msg="first %d"`, `level=ERROR msg="second %d"`, `level=ERROR msg="plain one"`,
			`level=ERROR msg="plain two"`, `level=WARN msg="third %v"`, `level=WARN msg="plain three"`,
		} {
			found := 0
			for _, line := range sum {
				if strings.Contains(line, want+" component=pion/turn suppressed=") {
					found++
					if !strings.HasSuffix(line, fmt.Sprintf("suppressed=%d", logBurst)) {
						t.Errorf("summary %q, want suppressed=%d", line, logBurst)
					}
				}
			}
			if found != 1 {
				t.Errorf("%d summaries %q in %q, want 1", found, want, sum)
			}
		}
	})
}

// TestLogLimiterClientGoneDebug checks that at debug level a line lowered
// by clientGone is written at DEBUG and limited under its own key.
func TestLogLimiterClientGoneDebug(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, out, _, _ := newTestPionLogger(slog.LevelDebug)
		gone := fmt.Errorf("write: %w", syscall.ECONNRESET)
		for range 2 * logBurst {
			l.Errorf("Failed to close conn: %s", gone)
			l.Errorf("Failed to close conn: %s", net.ErrClosed) // not a client going away
		}
		if got := len(out.Lines("level=DEBUG msg=\"Failed to close conn")); got != logBurst {
			t.Errorf("%d DEBUG lines, want %d", got, logBurst)
		}
		if got := len(out.Lines("level=ERROR msg=\"Failed to close conn")); got != logBurst {
			t.Errorf("%d ERROR lines, want %d", got, logBurst)
		}
	})
}

// TestLogLimiterKeyLimit checks that the limiter tracks at most logMaxKeys
// messages: the lines of any further message share one key.
func TestLogLimiterKeyLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, out, c, lim := newTestPionLogger(slog.LevelInfo)
		for i := range logMaxKeys {
			l.Error(fmt.Sprintf("message %d", i)) // each once: all written
		}
		for i := range 3 * logBurst {
			l.Error(fmt.Sprintf("late message %d", i))
		}
		if got := len(out.Lines("late message")); got != logBurst {
			t.Errorf("%d late messages written, want %d (they share one key)", got, logBurst)
		}
		if got := testutil.ToFloat64(c); got != 2*logBurst {
			t.Errorf("counter %v, want %d", got, 2*logBurst)
		}
		lim.mu.Lock()
		n := len(lim.keys)
		lim.mu.Unlock()
		if n != logMaxKeys+1 {
			t.Errorf("%d keys tracked, want %d", n, logMaxKeys+1)
		}
		time.Sleep(logWindow)
		synctest.Wait()
		if got := out.Lines(logOverflowMsg); len(got) != 1 || !strings.HasSuffix(got[0], fmt.Sprintf("suppressed=%d", 2*logBurst)) {
			t.Errorf("overflow summary: %q", got)
		}
		lim.mu.Lock()
		n = len(lim.keys)
		lim.mu.Unlock()
		if n != 0 {
			t.Errorf("%d keys still tracked after every window ended", n)
		}
	})
}

// TestLogLimiterFlush checks that Close-time flushing reports the open
// windows' suppressed lines at once, and only once.
func TestLogLimiterFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, out, _, lim := newTestPionLogger(slog.LevelInfo)
		floodUnknownAttr(l, logBurst+7)
		l.Warn("quiet")
		lim.flush()
		if sum := out.Lines("suppressed="); len(sum) != 1 || !strings.HasSuffix(sum[0], "suppressed=7") {
			t.Fatalf("after flush: %q", sum)
		}
		time.Sleep(logWindow)
		synctest.Wait()
		if sum := out.Lines("suppressed="); len(sum) != 1 {
			t.Fatalf("reported twice: %q", sum)
		}
	})
}

// TestLogSuppressedAllocatesNothing asserts that a suppressed line, pion's
// and the node's own, allocates nothing and formats nothing.
func TestLogSuppressedAllocatesNothing(t *testing.T) {
	l, out, c, lim := newTestPionLogger(slog.LevelInfo)
	defer lim.flush()
	pl := l.(pionLogger)
	var src, attrs any = &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 1}, "[0x23]"
	var method, class any = "Binding", "request"
	floodUnknownAttr(l, logBurst)
	if n := testing.AllocsPerRun(1000, func() { pl.Errorf(unknownAttrFormat, method, class, src, attrs) }); n != 0 {
		t.Errorf("suppressed pion Errorf: %v allocations", n)
	}
	for range logBurst {
		pl.Error("plain")
	}
	if n := testing.AllocsPerRun(1000, func() { pl.Error("plain") }); n != 0 {
		t.Errorf("suppressed pion Error: %v allocations", n)
	}

	ln := newInspectListener(t, false)
	ln.srv.log = slog.New(slog.NewTextHandler(out, nil))
	ln.srv.logs = lim
	for range logBurst {
		ln.notePanic("inspect", "boom")
	}
	var r any = "boom"
	if n := testing.AllocsPerRun(1000, func() { ln.notePanic("inspect", r) }); n != 0 {
		t.Errorf("suppressed notePanic: %v allocations", n)
	}
	if got := len(out.Lines("recovered panic")); got != logBurst {
		t.Errorf("%d recovered panic lines, want %d", got, logBurst)
	}
	if got := testutil.ToFloat64(c); got < 3000 {
		t.Errorf("counter %v, want at least 3000", got)
	}
}
