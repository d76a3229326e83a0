package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
)

// Spec constants shared by both servers, so they run with equivalent settings.
const (
	benchUser     = "bench"
	benchPassword = "bench"
	benchRealm    = "bench.test"
	benchIP       = "127.0.0.1"
	// Relay ports sit below the kernel's ephemeral range (32768-60999 by
	// default), so the loader's client sockets never take a relay port.
	relayMinPort = 20000
	relayMaxPort = 31999
	// Listen and HTTP ports are drawn from below the relay range.
	listenPortLow  = 10000
	listenPortHigh = 19999
	// benchAPIToken protects supernode's /v1/* (and /debug/pprof/) when
	// its HTTP listener is not on loopback, as supernode requires (with
	// at least 16 bytes).
	benchAPIToken = "bench-api-token-not-secret"
)

// Kind names a server under test.
type Kind string

// The two servers compared.
const (
	Supernode Kind = "supernode"
	Coturn    Kind = "coturn"
)

// Server is one running server process, fresh for every turnload run.
type Server struct {
	Kind    Kind
	Addr    string // UDP listen address host:port
	HTTP    string // supernode's --http-listen host:port; empty for coturn
	Args    []string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// noLimits lifts supernode's abuse limits for the benchmark: one static user
// makes every leg of the load from one address, and coturn runs without
// limits too. The hostile run keeps the defaults: they are what it measures.
var noLimits = []string{"--user-quota", "0", "--user-alloc-rate", "0", "--unauth-rate", "0", "--max-bps", "0"}

// serverArgs is the command line (without the program) for kind listening
// on ip:port, with HTTP (supernode only) on httpPort and logs under dir.
// pprof adds supernode's profiling endpoint. Peers on ip are allowed (both
// legs of a call are on the server, so every peer is its own relayed
// address), and in the namespace mode the whole veth subnet too.
func serverArgs(kind Kind, where *Net, port, httpPort int, dir string, pprof bool) []string {
	ip := where.ServerIP
	listen := net.JoinHostPort(ip, strconv.Itoa(port))
	switch kind {
	case Supernode:
		a := []string{
			"--listen", listen, "--relay-ip", ip,
			"--min-port", strconv.Itoa(relayMinPort), "--max-port", strconv.Itoa(relayMaxPort),
			"--user", benchUser + ":" + benchPassword, "--realm", benchRealm,
			"--allow-peer", ip,
		}
		if where.Subnet != "" {
			a = append(a, "--allow-peer", where.Subnet)
		}
		a = append(a, "--http-listen", net.JoinHostPort(ip, strconv.Itoa(httpPort)))
		if ip != benchIP {
			// Off loopback, supernode wants its /v1/* API protected.
			a = append(a, "--api-token", benchAPIToken)
		}
		a = append(a, "--log-level", "warn")
		if pprof {
			a = append(a, "--pprof")
		}
		return a
	case Coturn:
		a := []string{
			"-n", "--listening-ip", ip, "--listening-port", strconv.Itoa(port),
			"--relay-ip", ip,
			"--min-port", strconv.Itoa(relayMinPort), "--max-port", strconv.Itoa(relayMaxPort),
			"--lt-cred-mech", "--user", benchUser + ":" + benchPassword, "--realm", benchRealm,
			"--no-tls", "--no-dtls", "--allow-loopback-peers", "--no-cli",
		}
		if where.PeerRange != "" {
			a = append(a, "--allowed-peer-ip", where.PeerRange)
		}
		return append(a, "--simple-log", "--no-stdout-log",
			"--log-file", filepath.Join(dir, "coturn.log"),
			"--pidfile", filepath.Join(dir, "coturn.pid"))
	}
	return nil
}

// startServer starts kind from bin on a free port of where's server
// address (nil = loopback), in its namespace and on its core, logging under
// dir, and returns once it answers a STUN Binding (and, for supernode,
// /readyz). extra goes at the end of the server's command line.
func startServer(ctx context.Context, kind Kind, bin, dir string, pprof bool, readyTimeout time.Duration, where *Net, extra ...string) (*Server, error) {
	if where == nil {
		where = loopbackNet("")
	}
	// The server runs in dir, so every path on its command line is absolute.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("bench: server dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: server dir: %w", err)
	}
	// The namespace holds nothing but the one server under test, so any
	// port there is free; on loopback, look for one.
	pick := func(udp bool) (int, error) {
		if where.Mode == "netns" {
			return listenPortLow + rand.IntN(listenPortHigh-listenPortLow+1), nil
		}
		return freePort(udp)
	}
	port, err := pick(true)
	if err != nil {
		return nil, err
	}
	httpPort := 0
	if kind == Supernode {
		for httpPort == 0 || httpPort == port {
			if httpPort, err = pick(false); err != nil {
				return nil, err
			}
		}
	}
	s := &Server{
		Kind:    kind,
		Addr:    net.JoinHostPort(where.ServerIP, strconv.Itoa(port)),
		Args:    append(serverArgs(kind, where, port, httpPort, dir, pprof), extra...),
		LogPath: filepath.Join(dir, string(kind)+".out"),
		done:    make(chan struct{}),
	}
	if kind == Supernode {
		s.HTTP = net.JoinHostPort(where.ServerIP, strconv.Itoa(httpPort))
	}
	out, err := os.Create(s.LogPath)
	if err != nil {
		return nil, fmt.Errorf("bench: server log: %w", err)
	}
	// ip netns exec and taskset exec the server in place: its PID is
	// the command's.
	prog, args := withPrefix(where.serverPrefix(), bin, s.Args)
	s.cmd = exec.Command(prog, args...)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.Dir = dir
	if err := s.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("bench: start %s: %w", kind, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		out.Close()
		close(s.done)
	}()
	if err := s.waitReady(ctx, readyTimeout); err != nil {
		s.Stop(2 * time.Second)
		return nil, fmt.Errorf("%w\n%s", err, tail(s.logFiles(), 15))
	}
	return s, nil
}

// waitReady polls until the server answers or timeout passes.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		select {
		case <-s.done:
			return fmt.Errorf("bench: %s exited before it was ready: %v", s.Kind, s.err)
		default:
		}
		err := stunBinding(s.Addr, 200*time.Millisecond)
		if err == nil && s.HTTP != "" {
			err = httpOK(ctx, "http://"+s.HTTP+"/readyz")
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: %s on %s not ready after %s: %w", s.Kind, s.Addr, timeout, err)
		case <-s.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends the server: SIGINT for supernode (it exits at once; SIGTERM
// would start a drain), SIGTERM for coturn, then SIGKILL after grace.
func (s *Server) Stop(grace time.Duration) error {
	sig := syscall.SIGTERM
	if s.Kind == Supernode {
		sig = syscall.SIGINT
	}
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
		return nil
	case <-time.After(grace):
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	return fmt.Errorf("bench: %s (pid %d) ignored %s for %s and was killed", s.Kind, s.PID(), sig, grace)
}

// Exited reports whether the process has ended (it should not, mid-run).
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// logFiles are the files the server writes its messages to.
func (s *Server) logFiles() []string {
	files := []string{s.LogPath}
	if s.Kind == Coturn {
		files = append(files, filepath.Join(filepath.Dir(s.LogPath), "coturn.log"))
	}
	return files
}

// stunBinding sends one STUN Binding request to addr and waits for a
// success response.
func stunBinding(addr string, timeout time.Duration) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		return err
	}
	if _, err := c.Write(req.Raw); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if res.Decode() != nil || res.TransactionID != req.TransactionID {
			continue
		}
		if res.Type != stun.BindingSuccess {
			return fmt.Errorf("STUN Binding answered with %s", res.Type)
		}
		return nil
	}
}

// httpOK GETs url and wants 200.
func httpOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return nil
}

// errNoPort means no free port was found in the listen range.
var errNoPort = errors.New("bench: no free port in 10000-19999 on 127.0.0.1")

// freePort finds a port in the listen range free for TCP and, if udp, for
// UDP too (the TURN listeners take both).
func freePort(udp bool) (int, error) {
	for range 200 {
		p := listenPortLow + rand.IntN(listenPortHigh-listenPortLow+1)
		if looptest.PortFree(net.JoinHostPort(benchIP, strconv.Itoa(p)), udp) {
			return p, nil
		}
	}
	return 0, errNoPort
}

// tail returns the last n lines of each file, for error messages.
func tail(files []string, n int) string {
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", f, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}
