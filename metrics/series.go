package metrics

import "github.com/prometheus/client_golang/prometheus"

// A labelled metric is one of the types below: its For method picks a
// series by label values of the types of labels.go, never by a plain
// string, and New creates every series For can name from the lists there.
// For is a map lookup: on a per-packet path, pick the series once and keep
// it.

// CounterBy is a counter with one label whose values are of type A.
type CounterBy[A ~string] struct{ vec *prometheus.CounterVec }

// For is the series with label value a.
func (c CounterBy[A]) For(a A) prometheus.Counter { return c.vec.WithLabelValues(string(a)) }

// CounterBy2 is a counter with two labels whose values are of types A and
// B, in that order.
type CounterBy2[A, B ~string] struct{ vec *prometheus.CounterVec }

// For is the series with label values a and b.
func (c CounterBy2[A, B]) For(a A, b B) prometheus.Counter {
	return c.vec.WithLabelValues(string(a), string(b))
}

// CounterBy3 is a counter with three labels whose values are of types A,
// B and C, in that order.
type CounterBy3[A, B, C ~string] struct{ vec *prometheus.CounterVec }

// For is the series with label values a, b and c.
func (c CounterBy3[A, B, C]) For(a A, b B, cv C) prometheus.Counter {
	return c.vec.WithLabelValues(string(a), string(b), string(cv))
}

// GaugeBy is a gauge with one label whose values are of type A.
type GaugeBy[A ~string] struct{ vec *prometheus.GaugeVec }

// For is the series with label value a.
func (g GaugeBy[A]) For(a A) prometheus.Gauge { return g.vec.WithLabelValues(string(a)) }

// HasPath reports whether traffic of transport t can take path p: the
// kernel path relays UDP only, so only UDP has kernel series.
func HasPath(t Transport, p Path) bool { return p != PathKernel || t == TransportUDP }
