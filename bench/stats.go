package main

import (
	"math"
	"sort"
)

// Spread is what the report says about one metric on one server: the
// measured rounds' values and their minimum, median and maximum. Run-to-run
// noise on a shared machine is 5-10%, so the spread is reported, never judged.
type Spread struct {
	Values []float64 // one per measured round, in round order; NaN = no value
	N      int       // how many values are not NaN
	Min    float64   // NaN when N == 0
	Median float64   // NaN when N == 0
	Max    float64   // NaN when N == 0
}

// spreadOf summarises values, skipping NaNs (a round whose run failed).
func spreadOf(values []float64) Spread {
	s := Spread{Values: append([]float64(nil), values...), Min: math.NaN(), Median: math.NaN(), Max: math.NaN()}
	var ok []float64
	for _, v := range values {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			ok = append(ok, v)
		}
	}
	s.N = len(ok)
	if s.N == 0 {
		return s
	}
	sort.Float64s(ok)
	s.Min, s.Max = ok[0], ok[len(ok)-1]
	if len(ok)%2 == 1 {
		s.Median = ok[len(ok)/2]
	} else {
		s.Median = (ok[len(ok)/2-1] + ok[len(ok)/2]) / 2
	}
	return s
}

// ratio is a/b, or NaN when either is missing or b is zero.
func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return math.NaN()
	}
	return a / b
}
