package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/netns"
)

// testSpec is a namespace of the test's own, apart from make bench's, so a
// test never touches a running bench's namespace.
var testSpec = netnsSpec{
	Netns: "sn-bench-test", HostDev: "snbt-host", SrvDev: "snbt-srv",
	HostIP: "10.202.0.1", SrvIP: "10.202.0.2", Subnet: "10.202.0.0/30", PeerRange: "10.202.0.0-10.202.0.3",
	HostIP6: "fd00:202::1", SrvIP6: "fd00:202::2", ServerCPU: 1, LoaderCPU: 0,
}

// listenIn opens a UDP socket inside namespace ns: the socket belongs to
// the namespace it was made in, whatever thread uses it later.
func listenIn(t *testing.T, ns, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	var err error
	if nerr := netns.Do(ns, func() { c, err = net.ListenPacket("udp", addr) }); nerr != nil {
		t.Fatal(nerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// needNetns skips a test that creates a network namespace where one
// cannot be made (not root, no ip, -short).
func needNetns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("creates a network namespace")
	}
	if why := netnsUsable(testSpec.ServerCPU, testSpec.LoaderCPU); why != "" {
		t.Skip(why)
	}
}

// TestNetns builds the namespace mode under its own names, checks the veth
// pair, its addresses and RPS masks, echoes bounded UDP traffic across it
// (only inside the pair) while sampling, and checks Close leaves nothing.
func TestNetns(t *testing.T) {
	needNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := setupNetns(ctx, io.Discard, testSpec)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			n.Close()
		}
	}()
	if n.Mode != "netns" || n.ServerIP != "10.202.0.2" || strings.Join(n.RPS, ",") != "snbt-host rx-0=1,snbt-srv rx-0=2" {
		t.Errorf("net = %+v", n)
	}
	if got := strings.Join(n.serverPrefix(), " "); got != "ip netns exec sn-bench-test taskset -c 1" {
		t.Errorf("server prefix %q", got)
	}

	srv := listenIn(t, n.Netns, net.JoinHostPort(n.ServerIP, "0"))
	defer srv.Close()
	looptest.Echo(srv)
	cl, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(n.LoaderIP)}, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	before, err := readCPUSample(n.HostDev)
	if err != nil {
		t.Fatal(err)
	}
	const packets = 500
	got := 0
	buf := make([]byte, 1500)
	for range packets {
		if _, err := cl.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		_ = cl.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := cl.Read(buf); err == nil {
			got++
		}
	}
	after, err := readCPUSample(n.HostDev)
	if err != nil {
		t.Fatal(err)
	}
	if got < packets*9/10 {
		t.Errorf("%d of %d echoes came back", got, packets)
	}
	c, err := coreCost(before, after, n.ServerCPU)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sent < packets || c.Delivered < uint64(got) {
		t.Errorf("veth counters: sent %d delivered %d, want at least %d and %d", c.Sent, c.Delivered, packets, got)
	}
	t.Logf("NET_RX per CPU while echoing %d packets: %v (RPS: %v)", packets, c.NetRX, n.RPS)

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if _, err := os.Stat("/run/netns/" + testSpec.Netns); err == nil {
		t.Error("namespace still there after Close")
	}
	if _, err := os.Stat("/sys/class/net/" + testSpec.HostDev); err == nil {
		t.Error("veth still there after Close")
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCleanStale: a namespace and veth left by a crashed run are removed
// at start, with what was running in the namespace.
func TestCleanStale(t *testing.T) {
	needNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sp := testSpec
	sp.Netns, sp.HostDev, sp.SrvDev = "sn-bench-stale", "snbs-host", "snbs-srv"
	n, err := setupNetns(ctx, io.Discard, sp)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	// A "server" left running in the namespace.
	prog, args := withPrefix(n.serverPrefix(), "sleep", []string{"60"})
	cmd := newCmd(prog, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// `ip netns exec` enters the namespace after it starts: wait for that,
	// or the cleanup may look before anything is there to find.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, _ := exec.Command("ip", "netns", "pids", sp.Netns).Output()
		if slices.Contains(strings.Fields(string(out)), strconv.Itoa(cmd.Process.Pid)) {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the process never showed in namespace %s", sp.Netns)
		}
	}
	var log strings.Builder
	cleanStaleNetns(ctx, &log, sp)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Error("the process in the stale namespace was not ended")
	}
	if _, err := os.Stat("/run/netns/" + sp.Netns); err == nil {
		t.Error("stale namespace still there")
	}
	if _, err := os.Stat("/sys/class/net/" + sp.HostDev); err == nil {
		t.Error("stale veth still there")
	}
	if !strings.Contains(log.String(), "killing pid") || !strings.Contains(log.String(), "removing namespace sn-bench-stale") {
		t.Errorf("log: %s", log.String())
	}
}

func newCmd(prog string, args ...string) *exec.Cmd { return exec.Command(prog, args...) }
