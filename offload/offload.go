// Package offload is supernode's data plane in the kernel: an eBPF program
// (bpf/relay.c, compiled by bpf2go into the committed relay_bpfel.*)
// attached with TCX to the ingress of the interfaces that carry the
// listener and relay addresses. It relays ChannelData over UDP in three
// ways (bpf/relay.c says how, step by step):
//
//   - client to peer: a ChannelData to a listener on a channel its
//     allocation has bound, with a live permission for the peer, loses its
//     4-byte header and padding and goes to the peer from the relayed
//     address;
//   - peer to client: a datagram to a relayed address from a peer with a
//     bound channel and a live permission gets a ChannelData header and goes
//     to the client from the listener address;
//   - one pass: when the peer is another allocation's relayed address on
//     this node with a channel bound back, the ChannelData goes straight to
//     the other client.
//
// The program decides nothing: pion/turn (through the relay package) owns
// allocations, permissions and channels, and relay (kernel.go) mirrors them
// into the program's maps through Bind and Unbind as pion's events report
// them. A channel is in the maps exactly while it is bound and its peer's
// permission is live. Whatever is not in the maps, and every packet the
// program cannot handle, goes on to the user-space path untouched.
package offload

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ErrUnsupported wraps every reason the kernel path cannot run here: no
// privileges, a kernel without TCX, an interface it cannot attach to.
var ErrUnsupported = errors.New("offload: kernel path unavailable")

// DefaultMaxChannels is the default size of the channel maps: channels
// (with a live permission) the kernel relays at once, node-wide.
const DefaultMaxChannels = 65536

// Config configures New.
type Config struct {
	// Addrs are the listener and relay addresses. The program is attached
	// to every interface carrying one; an unspecified address (0.0.0.0,
	// ::) stands for every interface that is up. Required.
	Addrs []netip.Addr
	// MaxChannels bounds the channels the kernel relays at once; more stay
	// in user space (counted). Zero is DefaultMaxChannels.
	MaxChannels int
	// Logger; nil discards.
	Logger *slog.Logger
}

// Offload is the loaded and attached program with its maps.
type Offload struct {
	log    *slog.Logger
	objs   relayObjects
	links  []link.Link
	ifaces []string

	mu     sync.Mutex
	closed bool                 // Close has run: the maps' descriptors are gone
	binds  map[Binding]struct{} // installed channel pairs
	alloc  map[uint32]int       // allocation id -> installed bindings
	stats  statsState
}

// New loads the program and attaches it. Any error wraps ErrUnsupported
// and says what is missing.
func New(cfg Config) (*Offload, error) {
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("%w: no addresses to attach for", ErrUnsupported)
	}
	if cfg.MaxChannels == 0 {
		cfg.MaxChannels = DefaultMaxChannels
	}
	if cfg.MaxChannels < 0 {
		return nil, fmt.Errorf("offload: MaxChannels %d is negative", cfg.MaxChannels)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ifaces, err := interfacesFor(cfg.Addrs)
	if err != nil {
		return nil, err
	}
	spec, err := loadRelay()
	if err != nil {
		return nil, fmt.Errorf("%w: parse program: %v", ErrUnsupported, err)
	}
	n := uint32(cfg.MaxChannels)
	spec.Maps["channels"].MaxEntries = n
	spec.Maps["peers"].MaxEntries = n
	spec.Maps["allocations"].MaxEntries = n
	spec.Maps["alloc_counters"].MaxEntries = n
	o := &Offload{log: cfg.Logger, binds: map[Binding]struct{}{}, alloc: map[uint32]int{}}
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		return nil, fmt.Errorf("%w: load program: %s", ErrUnsupported, loadReason(err))
	}
	for _, ifc := range ifaces {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: o.objs.Relay, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			_ = o.Close()
			return nil, fmt.Errorf("%w: attach to %s: %s", ErrUnsupported, ifc.Name, attachReason(err))
		}
		o.links = append(o.links, l)
		o.ifaces = append(o.ifaces, ifc.Name)
	}
	return o, nil
}

// Interfaces names the interfaces the program is attached to.
func (o *Offload) Interfaces() []string { return o.ifaces }

// Close detaches the program and frees its maps. Nothing stays behind:
// the links are not pinned, so a killed process detaches too.
func (o *Offload) Close() error {
	// Every method that touches a map holds mu and checks closed, so none
	// uses a descriptor that is being closed (an allocation's socket may
	// still be closing on another goroutine when the node shuts down).
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	o.links = nil
	errs = append(errs, o.objs.Close())
	return errors.Join(errs...)
}

// loadReason names what is missing when the program does not load.
func loadReason(err error) string {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		// The verifier's last lines say why; the whole log is long.
		return fmt.Sprintf("the kernel's verifier refused it (kernel too old?): %v", ve)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return "not permitted: needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
	case errors.Is(err, ebpf.ErrNotSupported):
		return "kernel lacks a feature the program needs: " + err.Error()
	}
	return err.Error()
}

// attachReason names what is missing when TCX attach fails.
func attachReason(err error) string {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return "not permitted: needs CAP_NET_ADMIN"
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.EINVAL):
		return "kernel lacks TCX (needs Linux 6.6 or later): " + err.Error()
	}
	return err.Error()
}

// interfacesFor returns the interfaces that carry addrs (every interface
// that is up, for an unspecified address), refusing ones the program
// cannot parse: it expects an Ethernet header, which loopback has too.
func interfacesFor(addrs []netip.Addr) ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("%w: list interfaces: %v", ErrUnsupported, err)
	}
	want := map[int]bool{}  // interfaces to attach to
	named := map[int]bool{} // ... that carry a specific address
	for _, a := range addrs {
		a = a.Unmap()
		found := false
		for _, ifc := range all {
			if ifc.Flags&net.FlagUp == 0 {
				continue
			}
			if a.IsUnspecified() {
				want[ifc.Index], found = true, true
				continue
			}
			ias, err := ifc.Addrs()
			if err != nil {
				continue
			}
			for _, ia := range ias {
				if p, ok := ia.(*net.IPNet); ok {
					if x, ok := netip.AddrFromSlice(p.IP); ok && x.Unmap() == a {
						want[ifc.Index], named[ifc.Index], found = true, true, true
					}
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: no interface that is up carries %s", ErrUnsupported, a)
		}
	}
	var out []net.Interface
	for _, ifc := range all {
		if !want[ifc.Index] {
			continue
		}
		if ifc.Flags&net.FlagLoopback == 0 && len(ifc.HardwareAddr) != 6 {
			if named[ifc.Index] {
				return nil, fmt.Errorf("%w: interface %s is not Ethernet or loopback", ErrUnsupported, ifc.Name)
			}
			continue // reached only through the wildcard: its packets take the user-space path
		}
		out = append(out, ifc)
	}
	return out, nil
}
