// Package netns runs code inside a Linux network namespace made by
// `ip netns add`. The kernel-path tests (offload, cmd/supernode) and the
// bench harness's tests use it to open sockets, look up routes and run BPF
// programs in namespaces of their own, apart from the host's network.
//
// A namespace belongs to an OS thread, not to a goroutine, so Do locks the
// calling goroutine to its thread for the time fn runs. A socket made in
// fn stays in the namespace for good, whichever thread uses it later.
package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Dir is where `ip netns add NAME` binds a namespace: Dir/NAME.
const Dir = "/run/netns"

// Unavailable says why namespaces cannot be made here (`ip netns add`
// needs root and iproute2), "" when they can.
func Unavailable() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no ip command (iproute2)"
	}
	return ""
}

// ErrStranded reports that the thread that ran fn could not be moved back
// to its own namespace. The thread is left locked to the calling goroutine
// so the runtime discards it when that goroutine exits instead of reusing
// it in the wrong namespace: the caller must end the goroutine (a test's
// t.Fatal does).
var ErrStranded = errors.New("netns: cannot return to the thread's own namespace")

// Do runs fn on the calling goroutine with its OS thread moved into the
// namespace name (a name under Dir, or a path). fn may end the goroutine
// (t.Fatal): the thread, still locked, then goes with it.
func Do(name string, fn func()) error {
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(Dir, name)
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: open %s: %w", path, err)
	}
	defer unix.Close(target)
	runtime.LockOSThread()
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: open this thread's namespace: %w", err)
	}
	defer unix.Close(home)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter %s: %w", name, err)
	}
	fn()
	if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("%w: leaving %s: %v", ErrStranded, name, err)
	}
	runtime.UnlockOSThread()
	return nil
}
