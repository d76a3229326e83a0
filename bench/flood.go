package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/net/ipv4"

	"github.com/supernode/supernode/procfs"
)

// Flood limits: every flood stops by itself at the first of them.
const (
	maxFloodDuration = time.Minute
	maxFloodPackets  = 100_000_000
	floodBatch       = 64 // datagrams per sendmmsg
	floodRing        = 1024
)

// The kinds of hostile datagram in a flood, in equal shares.
var floodKinds = []string{
	"garbage",                  // random bytes of random length
	"truncated_stun",           // the first 4-19 bytes of a Binding request
	"bad_length",               // a STUN header whose length disagrees with the datagram
	"channeldata_unbound",      // ChannelData on a channel nobody bound
	"binding",                  // a well-formed Binding request
	"allocate_noauth",          // Allocate without MESSAGE-INTEGRITY
	"allocate_many_attrs",      // Allocate carrying 60 extra attributes
	"binding_unknown_required", // Binding with comprehension-required attributes nobody knows
}

// Flood is one bounded flood of hostile datagrams at a UDP server, sent
// from several loopback source addresses at the highest rate they can.
type Flood struct {
	Target   netip.AddrPort
	Sources  []netip.Addr  // one socket bound on each
	Duration time.Duration // stops after this long (at most maxFloodDuration)
	Packets  int64         // and after this many datagrams (at most maxFloodPackets)
}

// FloodResult is what a flood sent.
type FloodResult struct {
	Sent    int64            `json:"sent"`
	Bytes   int64            `json:"bytes"`
	ByKind  map[string]int64 `json:"by_kind"`
	Errors  int64            `json:"send_errors"`
	Seconds float64          `json:"seconds"`
	PPS     float64          `json:"pps"`
	// CPUSeconds is the flooding process's CPU (user+system) over the
	// flood: sendmmsg on loopback also runs the receiver's side of the
	// kernel's UDP path, up to dropping at a full socket.
	CPUSeconds float64 `json:"cpu_seconds"`
	FirstError string  `json:"first_error,omitempty"`
}

// errFloodBounds is a flood without both of its limits.
var errFloodBounds = errors.New("bench: a flood needs a duration up to 1m and a packet count up to 100,000,000")

// Run floods until Duration passes, Packets are sent or ctx ends.
func (f Flood) Run(ctx context.Context) (*FloodResult, error) {
	if f.Duration <= 0 || f.Duration > maxFloodDuration || f.Packets <= 0 || f.Packets > maxFloodPackets {
		return nil, errFloodBounds
	}
	if !f.Target.Addr().IsLoopback() {
		return nil, fmt.Errorf("bench: flood target %s is not a loopback address", f.Target)
	}
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for _, src := range f.Sources {
		if !src.IsLoopback() {
			return nil, fmt.Errorf("bench: flood source %s is not a loopback address", src)
		}
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		if err != nil {
			return nil, fmt.Errorf("bench: flood source %s: %w", src, err)
		}
		// The server's answers are never read: keep what piles up small.
		_ = c.SetReadBuffer(4096)
		conns = append(conns, c)
	}
	ctx, cancel := context.WithTimeout(ctx, f.Duration)
	defer cancel()
	deadline, _ := ctx.Deadline()
	stopWrites := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			_ = c.SetWriteDeadline(time.Now()) // unblock a sender waiting on a full socket
		}
	})
	defer stopWrites()

	res := &FloodResult{ByKind: map[string]int64{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0 := procfs.SelfCPU().Seconds()
	start := time.Now()
	to := net.UDPAddrFromAddrPort(f.Target)
	for i, c := range conns {
		// Each source gets its share of the datagrams, the first ones one
		// more when they do not divide evenly.
		share := f.Packets / int64(len(conns))
		if int64(i) < f.Packets%int64(len(conns)) {
			share++
		}
		wg.Go(func() {
			s := newFloodSender(uint64(i), to)
			s.run(ctx, ipv4.NewPacketConn(c), deadline, share)
			mu.Lock()
			defer mu.Unlock()
			res.Sent += s.sent
			res.Bytes += s.bytes
			res.Errors += s.errors
			for k, n := range s.byKind {
				res.ByKind[floodKinds[k]] += n
			}
			if res.FirstError == "" && s.firstErr != nil {
				res.FirstError = s.firstErr.Error()
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.CPUSeconds = procfs.SelfCPU().Seconds() - cpu0
	if res.Seconds > 0 {
		res.PPS = float64(res.Sent) / res.Seconds
	}
	return res, nil
}

// floodSender sends from one socket: a ring of prepared datagrams, sent
// floodBatch at a time, with fresh transaction ids on the STUN ones.
type floodSender struct {
	rng      *rand.Rand
	ring     [][]byte
	kind     []int  // index into floodKinds, per ring slot
	txid     []bool // the slot is a STUN message with a transaction id to vary
	msgs     []ipv4.Message
	seq      uint64
	sent     int64
	bytes    int64
	errors   int64
	byKind   [8]int64
	firstErr error
}

func newFloodSender(seed uint64, to net.Addr) *floodSender {
	s := &floodSender{rng: rand.New(rand.NewPCG(seed, 0x5eed)), seq: seed << 40}
	for i := range floodRing {
		k := i % len(floodKinds)
		b, vary := floodDatagram(floodKinds[k], s.rng)
		s.ring = append(s.ring, b)
		s.kind = append(s.kind, k)
		s.txid = append(s.txid, vary)
	}
	s.rng.Shuffle(floodRing, func(i, j int) {
		s.ring[i], s.ring[j] = s.ring[j], s.ring[i]
		s.kind[i], s.kind[j] = s.kind[j], s.kind[i]
		s.txid[i], s.txid[j] = s.txid[j], s.txid[i]
	})
	s.msgs = make([]ipv4.Message, floodBatch)
	for i := range s.msgs {
		s.msgs[i].Buffers = make([][]byte, 1)
		s.msgs[i].Addr = to
	}
	return s
}

// run sends until ctx ends (its deadline is also every write's) or it has
// sent count datagrams.
func (s *floodSender) run(ctx context.Context, pc *ipv4.PacketConn, deadline time.Time, count int64) {
	_ = pc.SetWriteDeadline(deadline)
	pos := 0
	for ctx.Err() == nil && s.sent < count {
		batch := s.msgs[:min(int64(floodBatch), count-s.sent)]
		for i := range batch {
			slot := (pos + i) % floodRing
			if s.txid[slot] {
				s.seq++
				binary.BigEndian.PutUint64(s.ring[slot][12:20], s.seq)
			}
			batch[i].Buffers[0] = s.ring[slot]
		}
		for len(batch) > 0 && ctx.Err() == nil {
			k, err := pc.WriteBatch(batch, 0)
			for i := range k {
				slot := (pos + i) % floodRing
				s.byKind[s.kind[slot]]++
				s.bytes += int64(len(s.ring[slot]))
			}
			s.sent += int64(k)
			pos = (pos + k) % floodRing
			batch = batch[k:]
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
					return // the end of the flood
				}
				s.errors++
				if s.firstErr == nil {
					s.firstErr = err
				}
				if k == 0 {
					// Skip the datagram that failed rather than retry it forever.
					pos = (pos + 1) % floodRing
					batch = batch[1:]
				}
			}
		}
	}
}

// floodDatagram builds one datagram of kind; vary says whether bytes 12..19
// are a STUN transaction id the sender may overwrite per send.
func floodDatagram(kind string, rng *rand.Rand) (b []byte, vary bool) {
	binding := func(setters ...stun.Setter) []byte {
		m := stun.MustBuild(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, setters...)...)
		return m.Raw
	}
	allocate := func(setters ...stun.Setter) []byte {
		base := []stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}}
		return stun.MustBuild(append(base, setters...)...).Raw
	}
	switch kind {
	case "garbage":
		b = make([]byte, 1+rng.IntN(200))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b, false
	case "truncated_stun":
		full := binding()
		return full[:4+rng.IntN(stunHeaderLen-4)], false
	case "bad_length":
		b = binding(stun.NewSoftware("flood"))
		// The header claims 64 more bytes than follow it.
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)-stunHeaderLen+64))
		return b, true
	case "channeldata_unbound":
		b = make([]byte, 4+100)
		binary.BigEndian.PutUint16(b[0:2], uint16(0x4000+rng.IntN(0x4000)))
		binary.BigEndian.PutUint16(b[2:4], 100)
		return b, false
	case "binding":
		return binding(), true
	case "allocate_noauth":
		return allocate(), true
	case "allocate_many_attrs":
		var extra []stun.Setter
		for i := range 60 {
			// Comprehension-optional types (0x8000-0xFFFF) a server must skip.
			extra = append(extra, stun.RawAttribute{Type: stun.AttrType(0xC000 + i), Value: make([]byte, 16)})
		}
		extra = append(extra, stun.NewUsername("flood"), stun.NewRealm("flood"), stun.NewNonce("flood"), stun.NewSoftware("flood"))
		return allocate(extra...), true
	case "binding_unknown_required":
		var extra []stun.Setter
		for i := range 4 {
			// Comprehension-required (0x0000-0x7FFF) and assigned to nothing.
			extra = append(extra, stun.RawAttribute{Type: stun.AttrType(0x7F00 + i), Value: make([]byte, 8)})
		}
		return binding(extra...), true
	}
	panic("bench: unknown flood kind " + kind)
}

// stunHeaderLen is RFC 8489's fixed header.
const stunHeaderLen = 20
