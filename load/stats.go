package load

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram counts durations in log-linear buckets: values below 2^subBits
// nanoseconds are exact, larger ones fall in one of 2^subBits buckets per
// power of two, so a reported percentile is within 1/2^subBits (0.8%) of the
// true sample. Record is safe from many goroutines and allocates nothing.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

const (
	subBits     = 7
	subCount    = 1 << subBits
	maxExponent = 44 // 2^44 ns is about 4.9 hours; larger values are clamped
	histBuckets = (maxExponent - subBits + 2) * subCount
)

// bucketOf maps a non-negative value to its bucket index.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	if v >= 1<<maxExponent {
		v = 1<<maxExponent - 1
	}
	exp := bits.Len64(uint64(v)) - 1 // v in [2^exp, 2^(exp+1))
	shift := exp - subBits
	sub := int(v>>shift) - subCount // 0..subCount-1
	return (shift+1)*subCount + sub
}

// bucketValue is the midpoint of bucket i, the value reported for samples in it.
func bucketValue(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := i/subCount - 1
	sub := int64(i%subCount + subCount)
	low := sub << shift
	return low + (int64(1)<<shift)/2
}

// Record adds one sample; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count is the number of samples recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max is the largest sample recorded (exact), zero when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Quantile returns the sample at quantile q (0 < q <= 1) by the nearest-rank
// rule, zero when empty. q = 1 returns the exact maximum.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	if q >= 1 {
		return h.Max()
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := bucketValue(i)
			if m := h.max.Load(); v > m {
				v = m // the top bucket's midpoint can exceed the real maximum
			}
			return time.Duration(v)
		}
	}
	return h.Max()
}

// Jitter is the interarrival jitter estimate of RFC 3550 section 6.4.1 for one
// stream: J += (|D| - J)/16, where D is the difference between the transit
// times (arrival minus send timestamp) of two packets received in a row.
// The zero value is ready; it is not safe for concurrent use.
type Jitter struct {
	j           float64 // nanoseconds
	lastTransit int64
	started     bool
}

// Observe folds in one packet given its send and arrival times (any common clock).
func (j *Jitter) Observe(sent, arrived time.Duration) {
	transit := int64(arrived - sent)
	if !j.started {
		j.lastTransit, j.started = transit, true
		return
	}
	d := transit - j.lastTransit
	j.lastTransit = transit
	if d < 0 {
		d = -d
	}
	j.j += (float64(d) - j.j) / 16
}

// Value is the current estimate.
func (j *Jitter) Value() time.Duration { return time.Duration(j.j) }
