package load

import (
	"math"
	"testing"
	"time"
)

func TestHistogramExactBelow256ns(t *testing.T) {
	var h Histogram
	for v := range 256 {
		h.Record(time.Duration(v))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 127}, {0.25, 63}, {1, 255}, {1.0 / 256, 0}} {
		if got := h.Quantile(tc.q); got != tc.want {
			t.Errorf("Quantile(%g) = %d, want %d", tc.q, got, tc.want)
		}
	}
}

func TestHistogramKnownQuantiles(t *testing.T) {
	var h Histogram
	// 1..10000 microseconds, shuffled order must not matter.
	for i := 10000; i >= 1; i-- {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration // nearest rank
	}{
		{0.50, 5000 * time.Microsecond},
		{0.90, 9000 * time.Microsecond},
		{0.99, 9900 * time.Microsecond},
		{0.001, 10 * time.Microsecond},
	} {
		got := h.Quantile(tc.q)
		if rel := math.Abs(float64(got-tc.want)) / float64(tc.want); rel > 1.0/subCount {
			t.Errorf("Quantile(%g) = %v, want %v within %.2f%%", tc.q, got, tc.want, 100.0/subCount)
		}
	}
	if h.Max() != 10*time.Millisecond || h.Quantile(1) != 10*time.Millisecond {
		t.Errorf("max %v / q1 %v, want 10ms exactly", h.Max(), h.Quantile(1))
	}
	if h.Count() != 10000 {
		t.Errorf("count %d", h.Count())
	}
}

func TestHistogramEdges(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 {
		t.Fatal("empty histogram should report zero")
	}
	h.Record(-time.Second) // clock step: counts as zero
	h.Record(100 * time.Hour)
	if got := h.Quantile(0.5); got != 0 {
		t.Errorf("p50 = %v, want 0", got)
	}
	if got := h.Max(); got != 100*time.Hour {
		t.Errorf("max = %v", got)
	}
	// A huge value lands in the top bucket; the quantile never exceeds the max.
	if got := h.Quantile(0.99); got <= 0 || got > 100*time.Hour {
		t.Errorf("p99 = %v", got)
	}
	// One sample: every quantile is that sample (within bucket precision,
	// never above it).
	var one Histogram
	one.Record(1234567)
	for _, q := range []float64{0.01, 0.5, 0.99} {
		if got := one.Quantile(q); got > 1234567 || float64(1234567-got) > 1234567.0/subCount {
			t.Errorf("single sample: Quantile(%g) = %d", q, got)
		}
	}
}

func TestBucketRoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 255, 256, 257, 1000, 1 << 20, 1<<20 + 12345, 1<<43 + 5} {
		i := bucketOf(v)
		mid := bucketValue(i)
		if math.Abs(float64(mid-v)) > float64(v)/subCount {
			t.Errorf("value %d: bucket %d midpoint %d, off by more than 1/%d", v, i, mid, subCount)
		}
		if i >= histBuckets {
			t.Errorf("value %d: bucket %d out of range", v, i)
		}
	}
}

func TestJitterRFC3550(t *testing.T) {
	ms := time.Millisecond
	// Constant transit time: no jitter.
	var j Jitter
	for i := range 100 {
		j.Observe(time.Duration(i)*20*ms, time.Duration(i)*20*ms+5*ms)
	}
	if j.Value() != 0 {
		t.Errorf("constant transit: jitter %v, want 0", j.Value())
	}
	// Transit alternating 5 ms and 7 ms: |D| = 2 ms every packet after the
	// first, so J_n = 2ms * (1 - (15/16)^n).
	var a Jitter
	n := 0
	for i := range 101 {
		transit := 5 * ms
		if i%2 == 1 {
			transit = 7 * ms
		}
		sent := time.Duration(i) * 20 * ms
		a.Observe(sent, sent+transit)
		if i > 0 {
			n++
		}
		want := 2 * float64(ms) * (1 - math.Pow(15.0/16, float64(n)))
		if got := float64(a.Value()); math.Abs(got-want) > 1 {
			t.Fatalf("after %d differences: jitter %.0f ns, want %.0f", n, got, want)
		}
	}
	// A worked example: transits 10, 12, 9 ms -> D = 2, 3 ->
	// J = 2/16 = 0.125 ms, then 0.125 + (3 - 0.125)/16 = 0.3046875 ms.
	var w Jitter
	for i, tr := range []time.Duration{10 * ms, 12 * ms, 9 * ms} {
		w.Observe(time.Duration(i)*20*ms, time.Duration(i)*20*ms+tr)
	}
	if got, want := w.Value(), time.Duration(0.3046875*float64(ms)); got != want {
		t.Errorf("worked example: %v, want %v", got, want)
	}
}

func TestDuplicateWindow(t *testing.T) {
	l := &leg{}
	steps := []struct {
		seq uint64
		dup bool
	}{
		{0, false}, {1, false}, {1, true}, {3, false}, {2, false}, {2, true}, {0, true},
		{2000, false}, {3, false}, // 3 is now older than the window: counted as new
		{1999, false}, {1999, true}, {2000, true},
	}
	for i, s := range steps {
		if got := l.duplicate(s.seq); got != s.dup {
			t.Errorf("step %d seq %d: duplicate=%v, want %v", i, s.seq, got, s.dup)
		}
	}
}
