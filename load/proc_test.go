package load

import (
	"errors"
	"os"
	"testing"
)

func TestReadProcSelf(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.rss <= 0 || s.cpu < 0 {
		t.Fatalf("self: %+v", s)
	}
	if _, err := readProc(1 << 30); !errors.Is(err, ErrNoProcess) {
		t.Errorf("missing pid: %v", err)
	}
}
