package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// ErrFull is returned by Bind when a map has no room: the channel stays in
// user space.
var ErrFull = errors.New("offload: kernel maps full")

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("offload: closed")

// ErrUnoffloadable is returned by Bind for a channel the program does not
// handle (mixed address families); it stays in user space.
var ErrUnoffloadable = errors.New("offload: channel not offloadable")

// ErrNoRoute is returned by Bind when the host has no route it would send
// on to the peer or the client (unreachable, blackhole, prohibited, or a
// broadcast address): the channel stays in user space. It is also an
// ErrUnoffloadable.
var ErrNoRoute = fmt.Errorf("%w: no usable route", ErrUnoffloadable)

// Binding is one channel with a live permission, as the kernel relays it.
type Binding struct {
	// Alloc is the allocation's id, as given to AddAllocation.
	Alloc uint32
	// Client is the client's address, Server the listener's (its IP
	// unspecified for a wildcard listener).
	Client, Server netip.AddrPort
	// Relay is the relayed address as bound on this host (not the
	// advertised one), Peer the channel's peer.
	Relay, Peer netip.AddrPort
	// Channel is the channel number (0x4000-0x7FFF).
	Channel uint16
	// Fleet marks a peer on another fleet member, not on this node (members
	// may share a relay IP): its bytes are counted as cross-host traffic.
	Fleet bool
}

// AddAllocation makes the kernel state of allocation id, limited to
// bitsPerSecond per direction (0: unlimited) with the user-space bucket's
// depth: half a second of traffic, at least two messages of maxMessage
// bytes.
func (o *Offload) AddAllocation(id uint32, bitsPerSecond int64, maxMessage int) error {
	var a relayAlloc
	if bitsPerSecond > 0 {
		rate := uint64(bitsPerSecond) / 8
		if rate == 0 {
			rate = 1
		}
		burst := max(rate/2, 2*uint64(maxMessage))
		a.Rate = rate
		a.Burst = burst * uint64(time.Second)
		a.FillNs = burst * uint64(time.Second) / rate
		a.Tokens = [2]uint64{a.Burst, a.Burst}
		now := monotonicNow()
		a.LastNs = [2]uint64{now, now}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	if err := o.objs.Allocations.Update(id, &a, ebpf.UpdateNoExist); err != nil {
		if errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("offload: allocation %d exists", id)
		}
		return fmt.Errorf("%w: allocations: %v", ErrFull, err)
	}
	zero := make([]relayAllocStats, o.cpus())
	if err := o.objs.AllocCounters.Update(id, zero, ebpf.UpdateNoExist); err != nil {
		_ = o.objs.Allocations.Delete(id)
		return fmt.Errorf("%w: alloc_counters: %v", ErrFull, err)
	}
	o.alloc[id] = 0
	return nil
}

// AllocationStats is what the kernel relayed for one allocation.
type AllocationStats struct {
	PacketsToPeer, BytesToPeer     uint64
	PacketsToClient, BytesToClient uint64
}

// AllocationStats sums allocation id's per-CPU counters.
func (o *Offload) AllocationStats(id uint32) (AllocationStats, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return AllocationStats{}, ErrClosed
	}
	var per []relayAllocStats
	if err := o.objs.AllocCounters.Lookup(id, &per); err != nil {
		return AllocationStats{}, fmt.Errorf("offload: allocation %d: %w", id, err)
	}
	var s AllocationStats
	for _, c := range per {
		s.PacketsToPeer += c.Packets[0]
		s.BytesToPeer += c.Bytes[0]
		s.PacketsToClient += c.Packets[1]
		s.BytesToClient += c.Bytes[1]
	}
	return s, nil
}

// RemoveAllocation removes allocation id and every binding it still has,
// returning how many bindings that was.
func (o *Offload) RemoveAllocation(id uint32) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0
	}
	n := 0
	for b := range o.binds {
		if b.Alloc == id && o.unbindLocked(b) {
			n++
		}
	}
	delete(o.alloc, id)
	_ = o.objs.Allocations.Delete(id)
	_ = o.objs.AllocCounters.Delete(id)
	return n
}

// Bind installs b in both directions, or in neither, reporting whether it
// was not installed before. A map without room returns ErrFull, and the
// channel stays in user space.
func (o *Offload) Bind(b Binding) (bool, error) {
	ck, cp, pk, cc, err := b.entries()
	if err != nil {
		return false, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false, ErrClosed
	}
	if _, ok := o.alloc[b.Alloc]; !ok {
		return false, fmt.Errorf("offload: allocation %d not added", b.Alloc)
	}
	key := b.key()
	if _, ok := o.binds[key]; ok {
		return false, nil
	}
	toPeer, err := lookupRoute(b.Relay.Addr(), b.Peer.Addr())
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrNoRoute, err)
	}
	toClient, err := lookupRoute(b.Server.Addr(), b.Client.Addr())
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrNoRoute, err)
	}
	cp.Ifindex, cp.Mtu = toPeer.ifindex, toPeer.mtu
	cc.Ifindex, cc.Mtu = toClient.ifindex, toClient.mtu
	if err := o.objs.Channels.Update(&ck, &cp, ebpf.UpdateAny); err != nil {
		return false, fmt.Errorf("%w: channels: %v", ErrFull, err)
	}
	if err := o.objs.Peers.Update(&pk, &cc, ebpf.UpdateAny); err != nil {
		_ = o.objs.Channels.Delete(&ck)
		return false, fmt.Errorf("%w: peers: %v", ErrFull, err)
	}
	o.binds[key] = struct{}{}
	o.alloc[b.Alloc]++
	return true, nil
}

// Unbind removes b from both directions, reporting whether it was
// installed.
func (o *Offload) Unbind(b Binding) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	return o.unbindLocked(b)
}

func (o *Offload) unbindLocked(b Binding) bool {
	key := b.key()
	if _, ok := o.binds[key]; !ok {
		return false
	}
	ck, _, pk, _, _ := b.entries()
	_ = o.objs.Channels.Delete(&ck)
	_ = o.objs.Peers.Delete(&pk)
	delete(o.binds, key)
	o.alloc[b.Alloc]--
	return true
}

// Bindings is the number of channels installed.
func (o *Offload) Bindings() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.binds)
}

// MapEntries counts the entries in each of the program's maps as the
// kernel holds them (for tests and debugging: it walks every map).
func (o *Offload) MapEntries() (map[string]int, error) {
	out := map[string]int{}
	for name, m := range map[string]*ebpf.Map{"channels": o.objs.Channels, "peers": o.objs.Peers,
		"allocations": o.objs.Allocations, "alloc_counters": o.objs.AllocCounters} {
		n := 0
		key := make([]byte, m.KeySize())
		var prev any // nil: the first key
		for {
			err := m.NextKey(prev, key)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("offload: walk %s: %w", name, err)
			}
			n++
			prev = append([]byte(nil), key...)
		}
		out[name] = n
	}
	return out, nil
}

// key is b as the installed set holds it: the fleet mark is an attribute
// (membership may change between Bind and Unbind), not part of its
// identity.
func (b Binding) key() Binding {
	b.Fleet = false
	return b
}

// entries builds b's map keys and values.
func (b Binding) entries() (ck relayChanKey, cp relayChanPeer, pk relayPeerKey, cc relayChanClient, err error) {
	fam, ok := family(b.Client.Addr(), b.Server.Addr(), b.Relay.Addr(), b.Peer.Addr())
	if !ok {
		return ck, cp, pk, cc, fmt.Errorf("%w: client %s, listener %s, relay %s and peer %s are not of one family",
			ErrUnoffloadable, b.Client, b.Server, b.Relay, b.Peer)
	}
	var flags uint32
	if b.Fleet {
		flags = flagFleet
	}
	ck = relayChanKey{Family: fam, Channel: htons(b.Channel), ClientPort: htons(b.Client.Port()), ServerPort: htons(b.Server.Port()),
		ClientIp: ip16(b.Client.Addr()), ServerIp: ip16(b.Server.Addr())}
	cp = relayChanPeer{Alloc: b.Alloc, RelayPort: htons(b.Relay.Port()), PeerPort: htons(b.Peer.Port()),
		RelayIp: ip16(b.Relay.Addr()), PeerIp: ip16(b.Peer.Addr()), Flags: flags}
	pk = relayPeerKey{Family: fam, RelayPort: htons(b.Relay.Port()), PeerPort: htons(b.Peer.Port()),
		RelayIp: ip16(b.Relay.Addr()), PeerIp: ip16(b.Peer.Addr())}
	cc = relayChanClient{Alloc: b.Alloc, Channel: htons(b.Channel), ClientPort: htons(b.Client.Port()), ServerPort: htons(b.Server.Port()),
		ClientIp: ip16(b.Client.Addr()), ServerIp: ip16(b.Server.Addr()), Flags: flags}
	return ck, cp, pk, cc, nil
}

// Values of relay.h's defines.
const (
	familyV4  = 4
	familyV6  = 6
	flagFleet = 1
)

// family is the address family all of addrs share (an unspecified
// address, a wildcard listener, fits either).
func family(addrs ...netip.Addr) (uint8, bool) {
	var f uint8
	for _, a := range addrs {
		if !a.IsValid() {
			return 0, false
		}
		a = a.Unmap()
		if a.IsUnspecified() {
			continue
		}
		g := uint8(familyV6)
		if a.Is4() {
			g = familyV4
		}
		if f != 0 && f != g {
			return 0, false
		}
		f = g
	}
	return f, f != 0
}

// ip16 lays a out as the program does: IPv4 in the first four bytes, and
// an unspecified address as all zeros.
func ip16(a netip.Addr) (out [16]uint8) {
	a = a.Unmap()
	if a.IsUnspecified() {
		return out
	}
	if a.Is4() {
		v := a.As4()
		copy(out[:], v[:])
		return out
	}
	return a.As16()
}

// htons stores v so that its bytes in memory are in network order, as the
// program reads them.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
