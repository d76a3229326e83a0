package relay

// TEMPORARY until the guard helper's budget.go and throttle.go merge.

import (
	"net/netip"
	"time"
)

type sourceBudget struct{}

func newSourceBudget(float64, func() time.Time) *sourceBudget { return nil }
func (b *sourceBudget) allow(netip.Addr) bool                 { return true }

type authThrottle struct{}

func newAuthThrottle(int, time.Duration, time.Duration, time.Duration, func() time.Time) *authThrottle {
	return nil
}
func (t *authThrottle) blocked(netip.Addr, string) (bool, bool) { return false, false }
func (t *authThrottle) failed(netip.Addr, string) []string      { return nil }
