package metrics

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// strs is a label list as the strings /metrics shows.
func strs[T ~string](l []T) []string {
	out := make([]string, len(l))
	for i, v := range l {
		out[i] = string(v)
	}
	return out
}

// labelLists is every label type of the package with its list of all
// values, by type name.
var labelLists = map[string][]string{
	"Transport":       strs(Transports),
	"Direction":       strs(Directions),
	"Path":            strs(Paths),
	"DropReason":      strs(DropReasons),
	"PassReason":      strs(PassReasons),
	"BindFailure":     strs(BindFailures),
	"Method":          strs(Methods),
	"Result":          strs(Results),
	"AuthReason":      strs(AuthReasons),
	"Quota":           strs(Quotas),
	"Limit":           strs(Limits),
	"Scope":           strs(Scopes),
	"CloseReason":     strs(CloseReasons),
	"MemberState":     strs(MemberStates),
	"PlacementResult": strs(PlacementResults),
}

// TestLabelConstants checks, from the package's source, that every label
// type has a list in labelLists, that its list holds each of its
// constants once and nothing else, and that no two of its constants share
// a value.
func TestLabelConstants(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	types := map[string]bool{}              // label types declared
	consts := map[string][]string{}         // type -> constant values, in order
	names := map[string]map[string]string{} // type -> value -> constant name
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, spec := range g.Specs {
				switch s := spec.(type) {
				case *ast.TypeSpec:
					if id, ok := s.Type.(*ast.Ident); ok && id.Name == "string" {
						types[s.Name.Name] = true
					}
				case *ast.ValueSpec:
					if g.Tok != token.CONST {
						continue
					}
					id, ok := s.Type.(*ast.Ident)
					if !ok {
						continue // untyped, or a type of another package
					}
					for i, n := range s.Names {
						lit, ok := s.Values[i].(*ast.BasicLit)
						if !ok || lit.Kind != token.STRING {
							t.Errorf("%s: constant %s is not a string literal", fset.Position(n.Pos()), n.Name)
							continue
						}
						v, _ := strconv.Unquote(lit.Value)
						if names[id.Name] == nil {
							names[id.Name] = map[string]string{}
						}
						if other, dup := names[id.Name][v]; dup {
							t.Errorf("%s %s and %s share the value %q", id.Name, other, n.Name, v)
						}
						names[id.Name][v] = n.Name
						consts[id.Name] = append(consts[id.Name], v)
					}
				}
			}
		}
	}
	if len(types) == 0 {
		t.Fatal("no label types found in the package source")
	}
	for typ := range types {
		list, ok := labelLists[typ]
		if !ok {
			t.Errorf("label type %s has no list in labelLists (and so no zeroing test)", typ)
			continue
		}
		got, want := slices.Sorted(slices.Values(list)), slices.Sorted(slices.Values(consts[typ]))
		if !slices.Equal(slices.Compact(slices.Clone(got)), got) {
			t.Errorf("the list of %s names a value twice: %q", typ, list)
		}
		if !slices.Equal(got, want) {
			t.Errorf("the list of %s is %q; its constants are %q", typ, got, want)
		}
	}
	for typ := range labelLists {
		if !types[typ] {
			t.Errorf("labelLists names %s, which is not a label type of the package", typ)
		}
	}
	for _, m := range PeerMethods {
		if !slices.Contains(Methods, m) {
			t.Errorf("peer method %q is not one of Methods", m)
		}
	}
}

// product is every combination of one value from each list, in order.
func product(lists ...[]string) [][]string {
	out := [][]string{nil}
	for _, l := range lists {
		var next [][]string
		for _, prefix := range out {
			for _, v := range l {
				next = append(next, append(slices.Clone(prefix), v))
			}
		}
		out = next
	}
	return out
}

// family is a labelled metric: its label names and the label values of
// each of its series.
type family struct {
	name   string
	labels []string
	series [][]string
}

// TestEveryLabelValueZeroed gathers a fresh registry and checks that each
// labelled metric has exactly the series its lists make, every one at
// zero: a value a call site can name already shows on /metrics.
func TestEveryLabelValueZeroed(t *testing.T) {
	m := New("test")
	var relay [][]string
	for _, d := range Directions {
		for _, tr := range Transports {
			for _, p := range Paths {
				if HasPath(tr, p) {
					relay = append(relay, []string{string(d), string(tr), string(p)})
				}
			}
		}
	}
	families := []family{
		{"supernode_allocations_active", []string{"transport"}, product(labelLists["Transport"])},
		{"supernode_allocations_created_total", []string{"transport"}, product(labelLists["Transport"])},
		{"supernode_allocations_deleted_total", []string{"transport"}, product(labelLists["Transport"])},
		{"supernode_client_messages_received_total", []string{"transport"}, product(labelLists["Transport"])},
		{"supernode_relay_bytes_total", []string{"direction", "transport", "path"}, relay},
		{"supernode_relay_packets_total", []string{"direction", "transport", "path"}, relay},
		{"supernode_connections_closed_total", []string{"transport", "reason"}, product(labelLists["Transport"], labelLists["CloseReason"])},
		{"supernode_packets_dropped_total", []string{"reason"}, product(labelLists["DropReason"])},
		{"supernode_requests_total", []string{"method", "result"}, product(labelLists["Method"], labelLists["Result"])},
		{"supernode_auth_failures_total", []string{"reason"}, product(labelLists["AuthReason"])},
		{"supernode_quota_rejections_total", []string{"quota"}, product(labelLists["Quota"])},
		{"supernode_limit_rejections_total", []string{"limit"}, product(labelLists["Limit"])},
		{"supernode_auth_backoffs_total", []string{"scope"}, product(labelLists["Scope"])},
		{"supernode_peer_denials_total", []string{"method"}, product(strs(PeerMethods))},
		{"supernode_fleet_members", []string{"state"}, product(labelLists["MemberState"])},
		{"supernode_fleet_placements_total", []string{"result"}, product(labelLists["PlacementResult"])},
		{"supernode_fleet_cross_host_bytes_total", []string{"direction"}, product(labelLists["Direction"])},
		{"supernode_offload_passed_total", []string{"reason"}, product(labelLists["PassReason"])},
		{"supernode_offload_bind_failures_total", []string{"reason"}, product(labelLists["BindFailure"])},
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{} // family -> series key -> value
	for _, mf := range mfs {
		got[mf.GetName()] = map[string]float64{}
		for _, s := range mf.GetMetric() {
			var key []string
			for _, l := range s.GetLabel() {
				key = append(key, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(key)
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue()
			got[mf.GetName()][strings.Join(key, ",")] = v
		}
	}
	checked := 0
	for _, f := range families {
		series, ok := got[f.name]
		if !ok {
			t.Errorf("%s has no series at start (not registered, or none created)", f.name)
			continue
		}
		want := map[string]bool{}
		for _, values := range f.series {
			var key []string
			for i, l := range f.labels {
				key = append(key, l+"="+values[i])
			}
			slices.Sort(key)
			want[strings.Join(key, ",")] = true
		}
		for k := range want {
			if v, ok := series[k]; !ok {
				t.Errorf("%s{%s} is not created at start", f.name, k)
			} else if v != 0 {
				t.Errorf("%s{%s} starts at %v", f.name, k, v)
			}
		}
		for k := range series {
			if !want[k] {
				t.Errorf("%s{%s} exists at start but is no combination of the lists", f.name, k)
			}
		}
		checked++
	}
	// Every labelled supernode metric is in the table above, apart from
	// build_info, whose labels carry versions rather than a fixed set.
	for name, series := range got {
		if !strings.HasPrefix(name, "supernode_") || name == "supernode_build_info" {
			continue
		}
		labelled := false
		for k := range series {
			labelled = labelled || k != ""
		}
		if labelled && !slices.ContainsFunc(families, func(f family) bool { return f.name == name }) {
			t.Errorf("%s has labels but no row in this test", name)
		}
	}
	if checked != len(families) {
		t.Fatalf("checked %d of %d families", checked, len(families))
	}
}

// pickers is the names of the methods that pick a series of a metric of
// Metrics by label values: every parameter is a label type of this
// package.
func pickers() map[string]bool {
	pkg := reflect.TypeOf(TransportUDP).PkgPath()
	out := map[string]bool{}
	st := reflect.TypeOf(Metrics{})
	for i := range st.NumField() {
		ft := st.Field(i).Type
		for j := range ft.NumMethod() {
			f := ft.Method(j).Type // the receiver is In(0)
			all := f.NumIn() > 1
			for k := 1; k < f.NumIn(); k++ {
				in := f.In(k)
				all = all && in.PkgPath() == pkg && in.Kind() == reflect.String
			}
			if all {
				out[ft.Method(j).Name] = true
			}
		}
	}
	return out
}

// TestLabelValuesNamedByConstants reads the module's Go files (tests too)
// and fails on a string literal given to a method that picks a series
// (m.PacketsDropped.For("malformd") compiles: an untyped constant converts) and
// on a conversion to a label type (metrics.DropReason(s)): a label value
// is always one of the constants, so New has created its series.
func TestLabelValuesNamedByConstants(t *testing.T) {
	root := ".."
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	modPath, _, _ := strings.Cut(strings.TrimPrefix(string(mod), "module "), "\n")
	self := strings.TrimSpace(modPath) + "/metrics"
	if self != reflect.TypeOf(TransportUDP).PkgPath() {
		t.Fatalf("module root %s holds %s, not this package", root, self)
	}
	picks := pickers()
	if !picks["For"] {
		t.Fatalf("the series-picking methods found are %v, not For", picks)
	}
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		inside := filepath.Dir(path) == "." // this package names its types bare
		local := ""                         // what the file calls this package
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == self {
				local = "metrics"
				if imp.Name != nil {
					local = imp.Name.Name
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			switch fn := call.Fun.(type) {
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok && local != "" && x.Name == local && labelLists[fn.Sel.Name] != nil {
					t.Errorf("%s: conversion to %s.%s: name the value by its constant", fset.Position(call.Pos()), local, fn.Sel.Name)
				}
				if picks[fn.Sel.Name] {
					for _, a := range call.Args {
						if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							t.Errorf("%s: %s(%s): name the label value by its constant", fset.Position(a.Pos()), fn.Sel.Name, lit.Value)
						}
					}
				}
			case *ast.Ident:
				if inside && labelLists[fn.Name] != nil {
					t.Errorf("%s: conversion to %s: name the value by its constant", fset.Position(call.Pos()), fn.Name)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("only %d Go files read under %s", files, root)
	}
}

func TestTransportOf(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Transport
		ok   bool
	}{
		{"udp", TransportUDP, true},
		{"tcp", TransportTCP, true},
		{"tls", TransportTLS, true},
		{"dtls", TransportDTLS, true},
		{"UDP", "", false}, // listeners are named in lower case only
		{"sctp", "", false},
		{"", "", false},
	} {
		if got, ok := TransportOf(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("TransportOf(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
