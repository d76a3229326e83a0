package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/netns"
)

// netLab is three network namespaces made for one test — a client's, the
// node's and a peer's — joined by veth pairs, so that the kernel path's
// off-host redirect (with neighbour resolution) carries the packets, not
// loopback. Nothing leaves them; they are removed when the test ends.
//
//	client ns  c0 10.203.1.2/24 fd00:203:1::2/64
//	              |
//	node ns    sc 10.203.1.1/24 fd00:203:1::1/64   (the listeners)
//	           sp 10.203.2.1/24 fd00:203:2::1/64   (the relayed addresses)
//	              |
//	peer ns    p0 10.203.2.2/24 fd00:203:2::2/64
type netLab struct {
	t  *testing.T
	ns map[string]string // role (client, node, peer) -> namespace name
}

// needNetLab fails a test that needs namespaces where they cannot be made,
// unless SUPERNODE_OFFLOAD_OPTIONAL=1 (a machine without root or BPF).
func needNetLab(t *testing.T) {
	t.Helper()
	why := netns.Unavailable()
	if why == "" {
		return
	}
	if os.Getenv("SUPERNODE_OFFLOAD_OPTIONAL") == "1" {
		t.Skip("network namespaces unavailable: " + why)
	}
	t.Fatalf("network namespaces unavailable: %s (run as root, or set SUPERNODE_OFFLOAD_OPTIONAL=1)", why)
}

// newNetLab makes the namespaces. senderChecksums false turns off transmit
// checksum offload on the client's and the peer's veth, so their datagrams
// carry full checksums that the other end verifies; true leaves it on, so
// they arrive CHECKSUM_PARTIAL. The node's veths never offload: a partial
// checksum it sends on is completed in software, and the receiver checks it.
func newNetLab(t *testing.T, senderChecksums bool) *netLab {
	t.Helper()
	needNetLab(t)
	l := &netLab{t: t, ns: map[string]string{}}
	for _, role := range []string{"client", "node", "peer"} {
		name := fmt.Sprintf("sn-lab-%d-%s-%d", os.Getpid(), role[:1], time.Now().UnixNano()%1e6)
		l.run("ip", "netns", "add", name)
		l.ns[role] = name
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		l.run("ip", "-n", name, "link", "set", "lo", "up")
	}
	link := func(a, aDev, b, bDev, v4net, v6net string) {
		l.run("ip", "link", "add", aDev, "netns", l.ns[a], "type", "veth", "peer", "name", bDev, "netns", l.ns[b])
		for _, end := range []struct{ role, dev, host string }{{a, aDev, "2"}, {b, bDev, "1"}} {
			l.run("ip", "-n", l.ns[end.role], "addr", "add", v4net+end.host+"/24", "dev", end.dev)
			l.run("ip", "-n", l.ns[end.role], "addr", "add", v6net+end.host+"/64", "dev", end.dev, "nodad")
			l.run("ip", "-n", l.ns[end.role], "link", "set", end.dev, "up")
		}
		l.txChecksum(b, bDev, false)
		l.txChecksum(a, aDev, senderChecksums)
	}
	link("client", "c0", "node", "sc", "10.203.1.", "fd00:203:1::")
	link("peer", "p0", "node", "sp", "10.203.2.", "fd00:203:2::")
	return l
}

func (l *netLab) run(args ...string) {
	l.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// in runs fn on an OS thread moved into role's namespace: sockets made in
// fn belong to that namespace for good, whichever thread uses them later.
func (l *netLab) in(role string, fn func()) {
	l.t.Helper()
	if err := netns.Do(l.ns[role], fn); err != nil {
		l.t.Fatal(err)
	}
}

// listenUDP opens a UDP socket in role's namespace.
func (l *netLab) listenUDP(role, network, addr string) *net.UDPConn {
	l.t.Helper()
	var c *net.UDPConn
	l.in(role, func() { c = mustListenUDP(l.t, network, addr) })
	return c
}

// txChecksum turns transmit checksum offload of dev on or off (the ethtool
// ioctl, ETHTOOL_STXCSUM) and reads it back.
func (l *netLab) txChecksum(role, dev string, on bool) {
	l.t.Helper()
	const ethtoolGTXCSUM, ethtoolSTXCSUM = 0x16, 0x17
	l.in(role, func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			l.t.Fatal(err)
		}
		defer unix.Close(fd)
		call := func(cmd, data uint32) uint32 {
			v := struct{ cmd, data uint32 }{cmd, data}
			var ifr struct {
				name [unix.IFNAMSIZ]byte
				data uintptr
				_    [16]byte
			}
			copy(ifr.name[:], dev)
			ifr.data = uintptr(unsafe.Pointer(&v))
			_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
			runtime.KeepAlive(&v)
			if e != 0 {
				l.t.Fatalf("ethtool ioctl %#x on %s: %v", cmd, dev, e)
			}
			return v.data
		}
		want := uint32(0)
		if on {
			want = 1
		}
		call(ethtoolSTXCSUM, want)
		if got := call(ethtoolGTXCSUM, 0); got != want {
			l.t.Fatalf("%s: tx checksumming reads %d after setting %d", dev, got, want)
		}
	})
}

// labNode is a supernode process in the node namespace.
type labNode struct {
	lab  *netLab
	http *http.Client
	logs *looptest.Log
}

func (l *netLab) startNode(bin string, args ...string) *labNode {
	l.t.Helper()
	n := &labNode{lab: l, logs: &looptest.Log{}}
	all := append([]string{"netns", "exec", l.ns["node"], bin,
		"--listen", "10.203.1.1:3478", "--listen", "[fd00:203:1::1]:3478",
		"--relay-ip", "10.203.2.1", "--relay-ip", "fd00:203:2::1",
		"--allow-peer", "10.203.2.0/24", "--allow-peer", "fd00:203:2::/64",
		"--http-listen", "127.0.0.1:9641", "--realm", "supernode.test", "--log-level", "info"}, args...)
	cmd := exec.Command("ip", all...)
	cmd.Stdout, cmd.Stderr = n.logs, n.logs
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	l.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if l.t.Failed() {
			l.t.Logf("supernode log:\n%s", n.logs.String())
		}
	})
	// /metrics and /readyz are on the node namespace's own loopback.
	n.http = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			l.in("node", func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) })
			return c, err
		},
	}}
	looptest.Eventually(l.t, "the node to be ready", func() bool {
		select {
		case err := <-exited:
			l.t.Fatalf("supernode exited: %v\n%s", err, n.logs.String())
		default:
		}
		resp, err := n.http.Get("http://127.0.0.1:9641/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return n
}

// metric reads one series from the node's /metrics.
func (n *labNode) metric(series string) float64 {
	n.lab.t.Helper()
	return scrapeWith(n.lab.t, n.http, "127.0.0.1:9641", series)
}

const (
	kernelC2P = `supernode_relay_packets_total{direction="client_to_peer",path="kernel",transport="udp"}`
	kernelP2C = `supernode_relay_packets_total{direction="peer_to_client",path="kernel",transport="udp"}`
	userC2P   = `supernode_relay_packets_total{direction="client_to_peer",path="user",transport="udp"}`
	userP2C   = `supernode_relay_packets_total{direction="peer_to_client",path="user",transport="udp"}`
	onePass   = `supernode_offload_one_pass_packets_total`
)

// TestOffloadAcrossNamespaces runs the real binary with --offload on in a
// namespace of its own, a pion client in another and the peer in a third:
// ChannelData crosses veths both ways, IPv4 and IPv6, redirected by the
// program out of the other interface with neighbour resolution, and the
// datagrams' checksums are checked by the receiving stacks. Two clients
// whose peers are each other's relayed addresses get one-pass relaying.
func TestOffloadAcrossNamespaces(t *testing.T) {
	needNetLab(t)
	bin := buildBinary(t)
	for _, mode := range []struct {
		name            string
		senderChecksums bool
	}{{"full-checksums", false}, {"partial-checksums", true}} {
		t.Run(mode.name, func(t *testing.T) {
			lab := newNetLab(t, mode.senderChecksums)
			node := lab.startNode(bin, "--user", "alice:secret1", "--offload", "on")
			if !strings.Contains(node.logs.String(), "kernel path on") {
				t.Fatalf("the kernel path is not on:\n%s", node.logs.String())
			}
			for _, fam := range []struct{ name, network, client, server, peer string }{
				{"ipv4", "udp4", "10.203.1.2:0", "10.203.1.1:3478", "10.203.2.2:0"},
				{"ipv6", "udp6", "[fd00:203:1::2]:0", "[fd00:203:1::1]:3478", "[fd00:203:2::2]:0"},
			} {
				t.Run(fam.name, func(t *testing.T) {
					peer := lab.listenUDP("peer", fam.network, fam.peer)
					looptest.Echo(peer)
					tap := &tapConn{PacketConn: lab.listenUDP("client", fam.network, fam.client)}
					c := newClient(t, tap, fam.server, "alice", "secret1")
					relayConn, err := c.Allocate()
					if err != nil {
						t.Fatalf("allocate: %v", err)
					}
					t.Cleanup(func() { _ = relayConn.Close() })
					k0, k1, u1 := node.metric(kernelC2P), node.metric(kernelP2C), node.metric(userP2C)
					if n := exchange(t, relayConn, peer.LocalAddr(), 40); n != 40 {
						t.Fatalf("%d of 40 messages came back", n)
					}
					out, in, userIn := node.metric(kernelC2P)-k0, node.metric(kernelP2C)-k1, node.metric(userP2C)-u1
					t.Logf("kernel relayed %v to the peer and %v to the client; the client sent %d ChannelData and got %d",
						out, in, tap.ChanOut.Load(), tap.ChanIn.Load())
					if out != float64(tap.ChanOut.Load()) || out < 30 {
						t.Errorf("kernel relayed %v packets to the peer, want every ChannelData the client sent (%d), at least 30", out, tap.ChanOut.Load())
					}
					if chanIn := float64(tap.ChanIn.Load()); in > chanIn || in < chanIn-userIn || in < 30 {
						t.Errorf("kernel relayed %v packets to the client, user space %v; want between %v and %v, at least 30", in, userIn, chanIn-userIn, chanIn)
					}
				})
			}
			t.Run("one-pass", func(t *testing.T) {
				a := &tapConn{PacketConn: lab.listenUDP("client", "udp4", "10.203.1.2:0")}
				b := &tapConn{PacketConn: lab.listenUDP("client", "udp4", "10.203.1.2:0")}
				relayA, err := newClient(t, a, "10.203.1.1:3478", "alice", "secret1").Allocate()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = relayA.Close() })
				relayB, err := newClient(t, b, "10.203.1.1:3478", "alice", "secret1").Allocate()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = relayB.Close() })
				// Each leg's permission for the other's relayed address
				// must exist before the other's first packet arrives.
				perms := node.metric("supernode_permissions_active")
				for _, leg := range [][2]net.PacketConn{{relayA, relayB}, {relayB, relayA}} {
					if _, err := leg[0].WriteTo([]byte("prime"), leg[1].LocalAddr()); err != nil {
						t.Fatal(err)
					}
				}
				looptest.Eventually(t, "both permissions", func() bool { return node.metric("supernode_permissions_active") >= perms+2 })
				// Then both legs bind their channels toward each other.
				for i := 0; a.ChanOut.Load() == 0 || b.ChanOut.Load() == 0; i++ {
					if i == 100 {
						t.Fatal("no ChannelData from both clients after 100 round trips")
					}
					legToLeg(t, relayA, relayB, i)
					legToLeg(t, relayB, relayA, i)
				}
				p0, k0, k1 := node.metric(onePass), node.metric(kernelC2P), node.metric(kernelP2C)
				u0, u1 := node.metric(userC2P), node.metric(userP2C)
				for i := range 20 {
					legToLeg(t, relayA, relayB, 1000+i)
					legToLeg(t, relayB, relayA, 1000+i)
				}
				if got := node.metric(onePass) - p0; got != 40 {
					t.Errorf("%v packets relayed in one pass, want all 40", got)
				}
				if got := node.metric(userC2P) + node.metric(userP2C) - u0 - u1; got != 0 {
					t.Errorf("user space relayed %v packets of the 40 that had both legs bound", got)
				}
				t.Logf("kernel counted %v client-to-peer and %v peer-to-client packets for the 40 one-pass packets",
					node.metric(kernelC2P)-k0, node.metric(kernelP2C)-k1)
			})
		})
	}
}

// legToLeg sends message i from one relayed address to the other and
// waits for it there, from the sender's relayed address.
func legToLeg(t *testing.T, from, to net.PacketConn, i int) {
	t.Helper()
	msg := fmt.Sprintf("leg message %d", i)
	if _, err := from.WriteTo([]byte(msg), to.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1600)
	_ = to.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, src, err := to.ReadFrom(buf)
		if err == nil && string(buf[:n]) == "prime" {
			continue // sent before both permissions existed; it may or may not arrive
		}
		if err != nil || string(buf[:n]) != msg || src.String() != from.LocalAddr().String() {
			t.Fatalf("got %q from %v (%v), want %q from %v", buf[:n], src, err, msg, from.LocalAddr())
		}
		return
	}
}
