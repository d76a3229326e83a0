package fleet

import "errors"

// ErrFinalDrain refuses to cancel a drain that SIGTERM started: that one
// ends with the process exiting.
var ErrFinalDrain = errors.New("drain: started by SIGTERM, the node exits when it ends; it cannot be cancelled (send SIGINT to exit now)")

// Drain starts this node's drain (decision 6, "drain, don't drop"). The
// fleet hears first: the drain is gossiped (Announce, up to 2s) before the
// relay refuses new allocations, so that a member that had not heard of
// it does not send this node's late callers straight back. final marks
// the drain SIGTERM starts, which ends in the process exiting: Undrain
// refuses to cancel it. Call it after Start.
func (f *Fleet) Drain(final bool) {
	f.startDrain(final)
	// The mutex is not held while the news spreads: a signal's drain would
	// wait on an API call's.
	f.Announce()
	f.refuseNew()
}

// startDrain is Drain's first step: the drain is in the gossip.
func (f *Fleet) startDrain(final bool) {
	f.drainMu.Lock()
	defer f.drainMu.Unlock()
	f.final = f.final || final
	f.leaving.Store(true)
}

// refuseNew is Drain's last step, once the fleet was told: the relay
// refuses new allocations, unless the drain was cancelled meanwhile.
func (f *Fleet) refuseNew() {
	f.drainMu.Lock()
	defer f.drainMu.Unlock()
	if s := f.state.Load(); s != nil && f.leaving.Load() {
		s.relay.Drain()
	}
}

// Undrain cancels a drain the admin API started: the relay takes new
// allocations again, then the fleet hears. It returns ErrFinalDrain, and
// changes nothing, when SIGTERM started the drain.
func (f *Fleet) Undrain() error {
	f.drainMu.Lock()
	if f.final {
		f.drainMu.Unlock()
		return ErrFinalDrain
	}
	if s := f.state.Load(); s != nil {
		s.relay.Undrain()
	}
	f.leaving.Store(false)
	f.drainMu.Unlock()
	f.Announce()
	return nil
}

// Draining reports whether this node gossips that it drains: from the
// start of Drain until Undrain.
func (f *Fleet) Draining() bool { return f.leaving.Load() }
