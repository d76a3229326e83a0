//go:build linux

package relay

// batchLen is how many datagrams the last receive call took; ok is false
// where a receive call takes one.
func batchLen(r *batchReader) (n int, ok bool) { return r.got, true }
