package load

import (
	"encoding/binary"
	"time"
)

// The media payload every leg sends. Fields are big-endian:
//
//	0..3   magic "TLD1"
//	4..7   call number
//	8      sending leg (0 or 1)
//	9..15  zero
//	16..23 sequence number, from 0, per sending leg
//	24..31 send time in nanoseconds since the run started (one clock for both legs)
//	32..   zero padding up to --size
const (
	payloadMagic = 0x544c4431 // "TLD1"
	// MinSize is the smallest payload that carries the header above.
	MinSize = 32
	// MaxSize keeps one payload inside a 1500-byte MTU with TURN framing.
	MaxSize = 1400
)

type media struct {
	call uint32
	leg  uint8
	seq  uint64
	sent time.Duration
}

func putMedia(b []byte, m media) {
	binary.BigEndian.PutUint32(b[0:4], payloadMagic)
	binary.BigEndian.PutUint32(b[4:8], m.call)
	b[8] = m.leg
	binary.BigEndian.PutUint64(b[16:24], m.seq)
	binary.BigEndian.PutUint64(b[24:32], uint64(m.sent))
}

func parseMedia(b []byte) (media, bool) {
	if len(b) < MinSize || binary.BigEndian.Uint32(b[0:4]) != payloadMagic {
		return media{}, false
	}
	return media{
		call: binary.BigEndian.Uint32(b[4:8]),
		leg:  b[8],
		seq:  binary.BigEndian.Uint64(b[16:24]),
		sent: time.Duration(binary.BigEndian.Uint64(b[24:32])),
	}, true
}
