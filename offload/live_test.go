package offload

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestLoopbackLive attaches the program with New (TCX on loopback) in a
// test namespace and sends real datagrams between real sockets: what
// PROG_TEST_RUN cannot show, that a packet rewritten on loopback's ingress
// and passed on reaches the socket it is now addressed to, with a
// checksum the stack accepts, from the address pion would send from. The
// counters prove the kernel path carried them (user space is not running:
// nothing else would answer).
func TestLoopbackLive(t *testing.T) {
	loadProgram(t) // a verifier error fails here, whatever optionalEnv says
	for _, fam := range []struct{ name, addr, relay string }{{"v4", "127.0.0.1", "127.0.0.2"}, {"v6", "::1", "::1"}} {
		t.Run(fam.name, func(t *testing.T) {
			ns := newTestNetns(t)
			var o *Offload
			var err error
			ns.do(t, func() { o, err = New(Config{Addrs: []netip.Addr{netip.MustParseAddr(fam.addr)}, MaxChannels: 16}) })
			if err != nil {
				unavailable(t, "New: %v", err)
			}
			t.Cleanup(func() { o.Close() })
			if got := o.Interfaces(); len(got) != 1 || got[0] != "lo" {
				t.Fatalf("attached to %q, want [lo]", got)
			}

			listen := func(addr string) *net.UDPConn {
				var c *net.UDPConn
				ns.do(t, func() {
					c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 0)))
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			client, server, relay, peer := listen(fam.addr), listen(fam.addr), listen(fam.relay), listen(fam.addr)
			addr := func(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }
			b := Binding{Alloc: 1, Client: addr(client), Server: addr(server), Relay: addr(relay), Peer: addr(peer), Channel: 0x4001}
			if err := o.AddAllocation(1, 0, 1600); err != nil {
				t.Fatal(err)
			}
			var installed bool
			ns.do(t, func() { installed, err = o.Bind(b) })
			if err != nil || !installed {
				t.Fatalf("Bind: %v, %v", installed, err)
			}
			recv := func(c *net.UDPConn) ([]byte, netip.AddrPort) {
				t.Helper()
				buf := make([]byte, 2048)
				// Not a timing assertion: only how long a lost datagram
				// is waited for before the test fails.
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("%s: %v", c.LocalAddr(), err)
				}
				return buf[:n], from
			}
			sizes := []int{0, 1, 5, 100, 1200, 1592}
			for _, n := range sizes {
				data := testData(n, byte(n))
				if _, err := client.WriteToUDPAddrPort(rawChannelData(b.Channel, n, data, (4-n%4)%4), b.Server); err != nil {
					t.Fatal(err)
				}
				got, from := recv(peer)
				if !bytes.Equal(got, data) || from != b.Relay {
					t.Errorf("peer got %d bytes from %s, want %d from %s", len(got), from, n, b.Relay)
				}
				if _, err := peer.WriteToUDPAddrPort(data, b.Relay); err != nil {
					t.Fatal(err)
				}
				got, from = recv(client)
				if !bytes.Equal(got, channelData(b.Channel, data)) || from != b.Server {
					t.Errorf("client got %x from %s, want %x from %s", got, from, channelData(b.Channel, data), b.Server)
				}
			}
			c := o.Counters()
			if c.ToPeerPackets != uint64(len(sizes)) || c.ToClientPackets != uint64(len(sizes)) {
				t.Errorf("counters %+v, want %d packets each way", c, len(sizes))
			}
		})
	}
}
