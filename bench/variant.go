package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Variant is one server under test: a server program and the flags that
// set it apart from the other variants of the same program.
type Variant struct {
	Name string   // row and column name in the report, e.g. "supernode-kernel"
	Kind Kind     // which program
	Args []string // appended to the server's command line
}

// The variants the harness knows. supernode's kernel data path is switched
// by --offload; "supernode" is for a binary without that flag.
var knownVariants = []Variant{
	{Name: "supernode-kernel", Kind: Supernode, Args: []string{"--offload", "on"}},
	{Name: "supernode-user", Kind: Supernode, Args: []string{"--offload", "off"}},
	{Name: "supernode", Kind: Supernode},
	{Name: "coturn", Kind: Coturn},
}

// variantNames lists knownVariants' names.
func variantNames() []string {
	var n []string
	for _, v := range knownVariants {
		n = append(n, v.Name)
	}
	return n
}

// parseVariants turns a comma-separated list of known variant names into
// Variants, in the order given, without duplicates.
func parseVariants(list string) ([]Variant, error) {
	var out []Variant
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		i := slices.IndexFunc(knownVariants, func(v Variant) bool { return v.Name == f })
		if i < 0 {
			return nil, fmt.Errorf("-variants: unknown variant %q (have %s)", f, strings.Join(variantNames(), ", "))
		}
		if !slices.ContainsFunc(out, func(v Variant) bool { return v.Name == f }) {
			out = append(out, knownVariants[i])
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-variants: nothing to run")
	}
	return out, nil
}

// autoVariants picks the variants for -variants auto: supernode with its
// kernel path on and off when the binary has --offload and the server has a
// namespace of its own (on loopback the kernel path has nothing to attach
// to that the bench could charge), else plain supernode; coturn always. why
// says what was left out and why ("" when nothing was).
func autoVariants(hasOffload bool, mode string) (vs []Variant, why string) {
	names := "supernode,coturn"
	switch {
	case hasOffload && mode == "netns":
		names = "supernode-kernel,supernode-user,coturn"
	case hasOffload:
		names = "supernode-user,coturn"
		why = "supernode-kernel was not run: the loopback mode cannot charge softirq work to the server"
	default:
		why = "supernode-kernel and supernode-user were not run: bin/supernode has no --offload flag yet, so supernode ran with its default data path"
	}
	vs, _ = parseVariants(names)
	return vs, why
}

// hasOffloadFlag reports whether supernode's -h lists --offload.
func hasOffloadFlag(ctx context.Context, bin string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "-offload" || f[0] == "--offload") {
			return true
		}
	}
	return false
}

// roundOrder is the order variants run in round r: rotated by r, so no
// variant always runs first (after a fresh namespace) or last.
func roundOrder(vs []Variant, r int) []Variant {
	if len(vs) == 0 {
		return nil
	}
	k := r % len(vs)
	return append(append([]Variant(nil), vs[k:]...), vs[:k]...)
}

// variantsOf returns the names of vs.
func variantsOf(vs []Variant) []string {
	n := make([]string, len(vs))
	for i, v := range vs {
		n[i] = v.Name
	}
	return n
}
