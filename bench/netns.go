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

// The namespace mode's fixed names and addresses. The /30 and the ULA /64
// are private to this machine; nothing outside the veth pair routes them.
const (
	netnsName   = "sn-bench-srv"
	hostDev     = "snb-host" // the loader's end, in the root namespace
	srvDev      = "snb-srv"  // the server's end, in netnsName
	hostIP      = "10.201.0.1"
	srvIP       = "10.201.0.2"
	vethPrefix  = 30
	vethSubnet  = "10.201.0.0/30"
	hostIP6     = "fd00:201::1"
	srvIP6      = "fd00:201::2"
	vethPrefix6 = 64
)

// Net is where the server under test and the loader run: both on
// loopback in the root namespace (the old mode), or the server in a network
// namespace of its own behind a veth pair, on its own core, with each side's
// receive processing steered to its own core by RPS.
type Net struct {
	Mode      string // "netns" or "loopback"
	ServerIP  string // the server listens and relays here
	LoaderIP  string // the loader's source address ("" = the kernel's choice)
	ServerCPU int    // core the server is pinned to; -1 = not pinned
	LoaderCPU int    // core turnload and the harness are pinned to; -1 = not pinned
	Netns     string // the server's namespace; "" in loopback mode
	HostDev   string // the loader's veth (its counters count the packets); "" in loopback mode
	IPv6      bool   // the veth pair also has hostIP6/srvIP6
	RPS       []string
	Why       string // in loopback mode: why not the namespace mode
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

// loaderPrefix is what runs the loader pinned to its core.
func (n *Net) loaderPrefix() []string {
	if n == nil || n.LoaderCPU < 0 {
		return nil
	}
	return []string{"taskset", "-c", strconv.Itoa(n.LoaderCPU)}
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
func cleanStaleNetns(ctx context.Context, log io.Writer) {
	if _, err := os.Stat(filepath.Join("/run/netns", netnsName)); err == nil {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", netnsName).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					fmt.Fprintf(log, "bench: killing pid %d left in namespace %s by an earlier run\n", pid, netnsName)
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
		fmt.Fprintf(log, "bench: removing namespace %s left by an earlier run\n", netnsName)
		_ = ipCmd(ctx, "netns", "del", netnsName)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", hostDev)); err == nil {
		fmt.Fprintf(log, "bench: removing veth %s left by an earlier run\n", hostDev)
		_ = ipCmd(ctx, "link", "del", hostDev)
	}
}

// setupNetns builds the namespace mode: the namespace, the veth pair with
// its addresses, RPS on both ends. On error everything made so far is
// removed again. Close undoes it all.
func setupNetns(ctx context.Context, log io.Writer, serverCPU, loaderCPU int) (n *Net, err error) {
	cleanStaleNetns(ctx, log)
	n = &Net{Mode: "netns", ServerIP: srvIP, LoaderIP: hostIP, ServerCPU: serverCPU, LoaderCPU: loaderCPU, Netns: netnsName, HostDev: hostDev}
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	steps := [][]string{
		{"netns", "add", netnsName},
		{"link", "add", hostDev, "type", "veth", "peer", "name", srvDev, "netns", netnsName},
		{"addr", "add", hostIP + "/" + strconv.Itoa(vethPrefix), "dev", hostDev},
		{"-n", netnsName, "addr", "add", srvIP + "/" + strconv.Itoa(vethPrefix), "dev", srvDev},
		{"link", "set", hostDev, "up"},
		{"-n", netnsName, "link", "set", srvDev, "up"},
		{"-n", netnsName, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			return n, err
		}
	}
	// IPv6 is a nicety: the runs use IPv4. nodad: usable at once.
	e1 := ipCmd(ctx, "addr", "add", hostIP6+"/"+strconv.Itoa(vethPrefix6), "dev", hostDev, "nodad")
	e2 := ipCmd(ctx, "-n", netnsName, "addr", "add", srvIP6+"/"+strconv.Itoa(vethPrefix6), "dev", srvDev, "nodad")
	n.IPv6 = e1 == nil && e2 == nil
	// RPS: a veth has no NAPI unless GRO or XDP is enabled on it (neither
	// is by default), so veth_xmit hands each packet to netif_rx on the
	// receiving end, and RPS on that end's rx queue picks the CPU whose
	// backlog (NET_RX softirq) processes it. The server's end processes on
	// the server's core, the loader's end on the loader's.
	mask := func(cpu int) string { return strconv.FormatUint(1<<uint(cpu), 16) }
	if err := writeRPS(ctx, "", hostDev, mask(loaderCPU)); err != nil {
		return n, err
	}
	if err := writeRPS(ctx, netnsName, srvDev, mask(serverCPU)); err != nil {
		return n, err
	}
	for _, d := range []struct{ ns, dev string }{{"", hostDev}, {netnsName, srvDev}} {
		got, err := readRPS(ctx, d.ns, d.dev)
		if err != nil {
			return n, err
		}
		n.RPS = append(n.RPS, d.dev+" "+got)
	}
	return n, nil
}

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
	if _, err := os.Stat(filepath.Join("/sys/class/net", hostDev)); err == nil {
		errs = append(errs, ipCmd(ctx, "link", "del", hostDev))
	}
	if _, err := os.Stat(filepath.Join("/run/netns", n.Netns)); err == nil {
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
