package main

import (
	"math"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name             string
		in               []float64
		n                int
		min, median, max float64
	}{
		{"odd", []float64{3, 1, 2}, 3, 1, 2, 3},
		{"even", []float64{4, 1, 3, 2}, 4, 1, 2.5, 4},
		{"one", []float64{7}, 1, 7, 7, 7},
		{"skips NaN and Inf", []float64{nan, 5, math.Inf(1), 1}, 2, 1, 3, 5},
		{"empty", nil, 0, nan, nan, nan},
		{"all NaN", []float64{nan, nan}, 0, nan, nan, nan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spreadOf(tc.in)
			if s.N != tc.n || !same(s.Min, tc.min) || !same(s.Median, tc.median) || !same(s.Max, tc.max) {
				t.Errorf("spreadOf(%v) = n %d %v/%v/%v, want n %d %v/%v/%v", tc.in, s.N, s.Min, s.Median, s.Max, tc.n, tc.min, tc.median, tc.max)
			}
			if len(s.Values) != len(tc.in) {
				t.Errorf("Values has %d entries, want %d (one per round)", len(s.Values), len(tc.in))
			}
		})
	}
}

func TestRatio(t *testing.T) {
	if r := ratio(3, 2); r != 1.5 {
		t.Errorf("ratio(3, 2) = %v", r)
	}
	for _, c := range [][2]float64{{1, 0}, {math.NaN(), 1}, {1, math.NaN()}} {
		if r := ratio(c[0], c[1]); !math.IsNaN(r) {
			t.Errorf("ratio(%v, %v) = %v, want NaN", c[0], c[1], r)
		}
	}
}

// same compares floats, NaN equal to NaN.
func same(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }
