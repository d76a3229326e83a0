package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newNamespace makes a namespace with loopback up, removed when t ends.
// Where namespaces cannot be made (not root, no iproute2) the test fails,
// or skips with SUPERNODE_OFFLOAD_OPTIONAL=1, as the kernel-path tests do.
func newNamespace(t *testing.T) string {
	t.Helper()
	if why := Unavailable(); why != "" {
		if os.Getenv("SUPERNODE_OFFLOAD_OPTIONAL") == "1" {
			t.Skip("network namespaces unavailable: " + why)
		}
		t.Fatalf("network namespaces unavailable: %s (run as root, or set SUPERNODE_OFFLOAD_OPTIONAL=1)", why)
	}
	name := fmt.Sprintf("sn-netns-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return name
}

// threadNamespace is the inode of the calling thread's namespace.
func threadNamespace(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestDo: a socket made in fn lives in the namespace (it binds a loopback
// port the host's namespace holds, and the host cannot reach it), fn sees
// the namespace's interfaces only, and the thread comes back home.
func TestDo(t *testing.T) {
	name := newNamespace(t)
	host, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	var inside *net.UDPConn
	var ifaces []net.Interface
	var nsIno uint64
	var lerr error
	err = Do(name, func() {
		nsIno = threadNamespace(t)
		ifaces, _ = net.Interfaces()
		inside, lerr = net.ListenUDP("udp4", host.LocalAddr().(*net.UDPAddr)) // the same port
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if lerr != nil {
		t.Fatalf("the host's port, inside the namespace: %v", lerr)
	}
	defer inside.Close()
	// Not a timing assertion: only how long a lost datagram is waited for.
	for _, c := range []*net.UDPConn{host, inside} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	if len(ifaces) != 1 || ifaces[0].Name != "lo" {
		t.Errorf("interfaces inside: %v, want only lo", ifaces)
	}
	if ino := threadNamespace(t); ino == nsIno {
		t.Error("the thread did not leave the namespace")
	}
	// A datagram from the host to that port reaches the host's socket,
	// never the namespace's.
	if _, err := host.WriteToUDP([]byte("x"), host.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, _, err := host.ReadFromUDP(buf); err != nil || n != 1 {
		t.Fatalf("host socket: %d, %v", n, err)
	}
	// And the namespace's socket works where it was made.
	if _, err := inside.WriteToUDP([]byte("y"), inside.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	if n, _, err := inside.ReadFromUDP(buf); err != nil || n != 1 || buf[0] != 'y' {
		t.Fatalf("namespace socket: %d %q, %v", n, buf[:n], err)
	}
}

func TestDoMissingNamespace(t *testing.T) {
	ran := false
	err := Do("sn-netns-test-no-such-namespace", func() { ran = true })
	if err == nil || ran {
		t.Errorf("Do in a missing namespace: ran %v, %v", ran, err)
	}
	if errors.Is(err, ErrStranded) {
		t.Errorf("a namespace never entered reported as stranded: %v", err)
	}
}
