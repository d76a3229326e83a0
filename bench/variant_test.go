package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseVariants(t *testing.T) {
	vs, err := parseVariants(" supernode-kernel, coturn,supernode-kernel ,supernode-user")
	if err != nil {
		t.Fatal(err)
	}
	if got := variantsOf(vs); !slices.Equal(got, []string{"supernode-kernel", "coturn", "supernode-user"}) {
		t.Errorf("variants = %v", got)
	}
	if !slices.Equal(vs[0].Args, []string{"--offload", "on"}) || !slices.Equal(vs[2].Args, []string{"--offload", "off"}) || vs[1].Kind != Coturn {
		t.Errorf("variant definitions: %+v", vs)
	}
	for _, bad := range []string{"", ",", "nginx", "coturn,nginx"} {
		if _, err := parseVariants(bad); err == nil {
			t.Errorf("parseVariants(%q) accepted", bad)
		}
	}
}

func TestAutoVariants(t *testing.T) {
	for _, tc := range []struct {
		offload bool
		mode    string
		want    string
		why     bool
	}{
		{true, "netns", "supernode-kernel,supernode-user,coturn", false},
		{true, "loopback", "supernode-user,coturn", true},
		{false, "netns", "supernode,coturn", true},
		{false, "loopback", "supernode,coturn", true},
	} {
		vs, why := autoVariants(tc.offload, tc.mode)
		if got := strings.Join(variantsOf(vs), ","); got != tc.want || (why != "") != tc.why {
			t.Errorf("autoVariants(%v, %s) = %s, %q; want %s", tc.offload, tc.mode, got, why, tc.want)
		}
	}
}

func TestRoundOrder(t *testing.T) {
	vs, _ := parseVariants("supernode-kernel,supernode-user,coturn")
	for r, want := range []string{
		"supernode-kernel supernode-user coturn",
		"supernode-user coturn supernode-kernel",
		"coturn supernode-kernel supernode-user",
		"supernode-kernel supernode-user coturn",
	} {
		if got := strings.Join(variantsOf(roundOrder(vs, r)), " "); got != want {
			t.Errorf("round %d: %s, want %s", r, got, want)
		}
	}
	if roundOrder(nil, 3) != nil {
		t.Error("no variants, some order")
	}
}

func TestHasOffloadFlag(t *testing.T) {
	dir := t.TempDir()
	write := func(name, help string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\ncat >&2 <<'EOF'\n"+help+"EOF\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	with := write("with", "Flags:\n  -offload mode\n    \tkernel data path: auto, on or off (default auto)\n  -listen host:port\n")
	without := write("without", "Flags:\n  -listen host:port\n    \tno offload here, only a mention of -offload in a description\n")
	if !hasOffloadFlag(context.Background(), with) {
		t.Error("did not find -offload")
	}
	if hasOffloadFlag(context.Background(), without) {
		t.Error("found -offload in a description")
	}
	if hasOffloadFlag(context.Background(), filepath.Join(dir, "missing")) {
		t.Error("a missing binary has --offload")
	}
}
