//go:build !linux

package relay

// batchLen is how many datagrams the last receive call took; ok is false
// where a receive call takes one.
func batchLen(*batchReader) (n int, ok bool) { return 1, false }
