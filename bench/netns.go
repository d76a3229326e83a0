package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netnsSpec names the namespace mode's pieces: the namespace, the veth
// pair's ends and their addresses. The /30 and the ULA /64 are private to
// this machine; nothing outside the veth pair routes them.
type netnsSpec struct {
	Netns     string // the server's namespace
	HostDev   string // the loader's end, in the root namespace
	SrvDev    string // the server's end, in Netns
	HostIP    string // HostDev's address, in Subnet
	SrvIP     string // SrvDev's address, in Subnet
	Subnet    string // IPv4 CIDR of the pair
	PeerRange string // Subnet in coturn's allowed-peer-ip form (first-last)
	HostIP6   string // HostDev's IPv6 address, /64
	SrvIP6    string // SrvDev's IPv6 address, /64
	ServerCPU int    // the server's core
	LoaderCPU int    // the loader's core
	NoRPS     bool   // leave rps_cpus alone (to see what RPS changes)
}

// benchSpec is what make bench uses.
var benchSpec = netnsSpec{
	Netns: "sn-bench-srv", HostDev: "snb-host", SrvDev: "snb-srv",
	HostIP: "10.201.0.1", SrvIP: "10.201.0.2", Subnet: "10.201.0.0/30", PeerRange: "10.201.0.0-10.201.0.3",
	HostIP6: "fd00:201::1", SrvIP6: "fd00:201::2", ServerCPU: 1, LoaderCPU: 0,
}

// Net is where the server under test and the loader run: both on
// loopback in the root namespace (the old mode), or the server in a network
// namespace of its own behind a veth pair, on its own core, with each side's
// receive processing steered to its own core by RPS.
type Net struct {
	Mode      string   // "netns" or "loopback"
	ServerIP  string   // the server listens and relays here
	LoaderIP  string   // the loader's source address ("" = the kernel's choice)
	Subnet    string   // CIDR the server must accept peers in besides ServerIP; "" on loopback
	PeerRange string   // Subnet as coturn's allowed-peer-ip range
	ServerCPU int      // core the server is pinned to; -1 = not pinned
	LoaderCPU int      // core turnload and the harness are pinned to; -1 = not pinned
	Netns     string   // the server's namespace; "" in loopback mode
	HostDev   string   // the loader's veth (its counters count the packets); "" in loopback mode
	SrvDev    string   // the server's veth
	IPv6      bool     // the veth pair also has IPv6 addresses
	RPS       []string // rps_cpus as read back, "dev rx-0=2"
	Why       string   // in loopback mode: why not the namespace mode
	spec      netnsSpec
}

// loopbackNet is the old mode: everything on 127.0.0.1, nothing pinned.
func loopbackNet(why string) *Net {
	return &Net{Mode: "loopback", ServerIP: benchIP, ServerCPU: -1, LoaderCPU: -1, Why: why}
}

// serverPrefix is what runs the server in its namespace, pinned to its
// core: nothing in loopback mode.
func (n *Net) serverPrefix() []string {
	if n == nil || n.Mode != "netns" {
		return nil
	}
	p := []string{"ip", "netns", "exec", n.Netns}
	if n.ServerCPU >= 0 {
		p = append(p, "taskset", "-c", strconv.Itoa(n.ServerCPU))
	}
	return p
}

// loaderProcs is the loader's GOMAXPROCS on its one core. Pinned to one
// CPU, Go would run it with one P, and a datagram that arrives while a
// sending goroutine holds that P waits for the next scheduling point
// (up to the 10 ms preemption tick) before its receiver runs: that was
// most of the kernel path's p99 latency, a measurement of the loader. With
// several Ps the threads share the core through the OS scheduler, which
// wakes a receiver as its packet arrives.
const loaderProcs = 4

// loaderPrefix is what runs the loader pinned to its core.
func (n *Net) loaderPrefix() []string {
	if n == nil || n.LoaderCPU < 0 {
		return nil
	}
	return []string{"env", "GOMAXPROCS=" + strconv.Itoa(loaderProcs), "taskset", "-c", strconv.Itoa(n.LoaderCPU)}
}

// withPrefix is the program and arguments that run bin args under prefix.
func withPrefix(prefix []string, bin string, args []string) (string, []string) {
	if len(prefix) == 0 {
		return bin, args
	}
	return prefix[0], append(append(append([]string(nil), prefix[1:]...), bin), args...)
}

// netnsUsable says why the namespace mode cannot run here, "" if it can.
func netnsUsable(serverCPU, loaderCPU int) string {
	switch {
	case os.Geteuid() != 0:
		return "not running as root (network namespaces and RPS need it)"
	case runtime.NumCPU() < 2:
		return "fewer than 2 CPUs"
	case serverCPU == loaderCPU || serverCPU < 0 || loaderCPU < 0 || serverCPU >= runtime.NumCPU() || loaderCPU >= runtime.NumCPU():
		return fmt.Sprintf("-server-cpu %d and -loader-cpu %d must be two different CPUs below %d", serverCPU, loaderCPU, runtime.NumCPU())
	}
	for _, tool := range []string{"ip", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed"
		}
	}
	return ""
}

// ipCmd runs ip with args and returns its combined output on error.
func ipCmd(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("bench: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// cleanStaleNetns removes what a crashed earlier run left: processes still
// in the namespace (servers the harness started: nothing else runs there),
// the namespace and the veth pair. It reports what it removed.
func cleanStaleNetns(ctx context.Context, log io.Writer, sp netnsSpec) {
	if _, err := os.Stat(filepath.Join("/run/netns", sp.Netns)); err == nil {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", sp.Netns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					fmt.Fprintf(log, "bench: killing pid %d left in namespace %s by an earlier run\n", pid, sp.Netns)
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
		fmt.Fprintf(log, "bench: removing namespace %s left by an earlier run\n", sp.Netns)
		_ = ipCmd(ctx, "netns", "del", sp.Netns)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", sp.HostDev)); err == nil {
		fmt.Fprintf(log, "bench: removing veth %s left by an earlier run\n", sp.HostDev)
		_ = ipCmd(ctx, "link", "del", sp.HostDev)
	}
}

// setupNetns builds the namespace mode: the namespace, the veth pair with
// its addresses, RPS on both ends. On error everything made so far is
// removed again. Close undoes it all.
func setupNetns(ctx context.Context, log io.Writer, sp netnsSpec) (n *Net, err error) {
	cleanStaleNetns(ctx, log, sp)
	n = &Net{Mode: "netns", ServerIP: sp.SrvIP, LoaderIP: sp.HostIP, Subnet: sp.Subnet, PeerRange: sp.PeerRange,
		ServerCPU: sp.ServerCPU, LoaderCPU: sp.LoaderCPU, Netns: sp.Netns, HostDev: sp.HostDev, SrvDev: sp.SrvDev, spec: sp}
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	bits := "/" + strings.SplitN(sp.Subnet, "/", 2)[1]
	steps := [][]string{
		{"netns", "add", sp.Netns},
		{"link", "add", sp.HostDev, "type", "veth", "peer", "name", sp.SrvDev, "netns", sp.Netns},
		{"addr", "add", sp.HostIP + bits, "dev", sp.HostDev},
		{"-n", sp.Netns, "addr", "add", sp.SrvIP + bits, "dev", sp.SrvDev},
		{"link", "set", sp.HostDev, "up"},
		{"-n", sp.Netns, "link", "set", sp.SrvDev, "up"},
		{"-n", sp.Netns, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			return n, err
		}
	}
	// IPv6 is a nicety: the runs use IPv4. nodad: usable at once.
	if sp.HostIP6 != "" && sp.SrvIP6 != "" {
		e1 := ipCmd(ctx, "addr", "add", sp.HostIP6+"/64", "dev", sp.HostDev, "nodad")
		e2 := ipCmd(ctx, "-n", sp.Netns, "addr", "add", sp.SrvIP6+"/64", "dev", sp.SrvDev, "nodad")
		n.IPv6 = e1 == nil && e2 == nil
	}
	// RPS: a veth has no NAPI unless GRO or XDP is enabled on it (neither
	// is by default), so veth_xmit hands each packet to netif_rx on the
	// receiving end, and RPS on that end's rx queue picks the CPU whose
	// backlog (NET_RX softirq) processes it. The server's end processes on
	// the server's core, the loader's end on the loader's.
	if !sp.NoRPS {
		if err := writeRPS(ctx, "", sp.HostDev, cpuMask(sp.LoaderCPU)); err != nil {
			return n, err
		}
		if err := writeRPS(ctx, sp.Netns, sp.SrvDev, cpuMask(sp.ServerCPU)); err != nil {
			return n, err
		}
	}
	for _, d := range []struct{ ns, dev string }{{"", sp.HostDev}, {sp.Netns, sp.SrvDev}} {
		got, err := readRPS(ctx, d.ns, d.dev)
		if err != nil {
			return n, err
		}
		n.RPS = append(n.RPS, d.dev+" "+got)
	}
	return n, nil
}

// cpuMask is the hex CPU mask of rps_cpus with only cpu set.
func cpuMask(cpu int) string { return strconv.FormatUint(1<<uint(cpu), 16) }

// rpsShell is a shell loop running body with $q set to each rx queue
// directory of dev.
func rpsShell(dev, body string) string {
	return "for q in /sys/class/net/" + dev + "/queues/rx-*; do " + body + "; done"
}

// writeRPS writes mask to every rx queue of dev in namespace ns ("" = the
// root namespace). `ip netns exec` mounts the namespace's own /sys.
func writeRPS(ctx context.Context, ns, dev, mask string) error {
	return nsShell(ctx, ns, rpsShell(dev, "echo "+mask+" > $q/rps_cpus"), nil)
}

// readRPS reads back every rx queue's rps_cpus of dev in ns.
func readRPS(ctx context.Context, ns, dev string) (string, error) {
	var out strings.Builder
	err := nsShell(ctx, ns, rpsShell(dev, `echo "${q##*/}=$(cat $q/rps_cpus)"`), &out)
	return strings.Join(strings.Fields(out.String()), " "), err
}

// nsShell runs script under sh in namespace ns ("" = here).
func nsShell(ctx context.Context, ns, script string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	args := []string{"sh", "-c", script}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench: %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Close removes the veth pair and the namespace (the RPS settings go with
// the devices; no sysctl was changed). It is safe to call more than once
// and on a half-built Net.
func (n *Net) Close() error {
	if n == nil || n.Mode != "netns" {
		return nil
	}
	// Not the run's context: this runs after Ctrl-C too.
	ctx := context.Background()
	var errs []error
	if _, err := os.Stat(filepath.Join("/sys/class/net", n.HostDev)); err == nil && n.HostDev != "" {
		errs = append(errs, ipCmd(ctx, "link", "del", n.HostDev))
	}
	if _, err := os.Stat(filepath.Join("/run/netns", n.Netns)); err == nil && n.Netns != "" {
		errs = append(errs, ipCmd(ctx, "netns", "del", n.Netns))
	}
	return errors.Join(errs...)
}

// pinSelf pins every thread of this process to cpu, so the harness's own
// sampling and HTTP polling run on the loader's core, not the server's.
// Threads started later inherit the mask from the thread that starts them.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("bench: pin thread %d to CPU %d: %w", tid, cpu, err))
		}
	}
	return errors.Join(errs...)
}
