package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/supernode/supernode/allocation"
)

// k8sDir holds the Kubernetes manifests of deploy/README.md.
const k8sDir = "../../deploy/kubernetes"

// loadManifests decodes every document of every YAML file in k8sDir into
// generic maps, by kind, the last Service of several (a duplicate key or a tab in the indentation is an
// error, as it is for kubectl).
func loadManifests(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir, err)
	}
	byKind := map[string]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kind, _ := doc["kind"].(string)
			if kind == "" || doc["apiVersion"] == nil {
				t.Fatalf("%s: a document without kind or apiVersion", f)
			}
			if byKind[kind] == nil || kind == "Service" { // two headless Services
				byKind[kind] = doc
			} else {
				t.Fatalf("%s: a second %s: extend the test", f, kind)
			}
		}
	}
	return byKind
}

// dig walks maps by key and lists by index ("0").
func dig(t *testing.T, v any, path ...string) any {
	t.Helper()
	for i, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n >= len(x) {
				t.Fatalf("%s: no element %s", strings.Join(path[:i], "."), p)
			}
			v = x[n]
		default:
			t.Fatalf("%s: not a map or list", strings.Join(path[:i], "."))
		}
		if v == nil {
			t.Fatalf("%s: missing", strings.Join(path[:i+1], "."))
		}
	}
	return v
}

// TestKubernetesManifests: the manifests parse and carry what a node needs
// to run right: the Pod Security label hostNetwork needs, an image pinned by
// version, GOMEMLIMIT below the memory limit, settings the node knows, and
// placeholder secrets the node refuses.
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	for _, kind := range []string{"Namespace", "DaemonSet", "ConfigMap", "Secret", "Kustomization"} {
		if m[kind] == nil {
			t.Fatalf("no %s in %s", kind, k8sDir)
		}
	}

	if dig(t, m["DaemonSet"], "spec", "template", "spec", "hostNetwork") != true {
		t.Error("the DaemonSet no longer uses hostNetwork: revisit the namespace's Pod Security level")
	}
	if got := dig(t, m["Namespace"], "metadata", "labels", "pod-security.kubernetes.io/enforce"); got != "privileged" {
		t.Errorf("namespace pod-security.kubernetes.io/enforce = %v: hostNetwork and added capabilities need privileged", got)
	}

	version := regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$`)
	img := dig(t, m["Kustomization"], "images", "0").(map[string]any)
	tag, _ := img["newTag"].(string)
	if !version.MatchString(tag) {
		t.Errorf("kustomization.yaml images newTag %q: want a version such as 1.2.3, not latest", tag)
	}
	c := dig(t, m["DaemonSet"], "spec", "template", "spec", "containers", "0").(map[string]any)
	image, _ := c["image"].(string)
	if name, tg, ok := strings.Cut(image, ":"); !ok || name != img["name"] || tg != tag {
		t.Errorf("daemonset image %q: want %v:%s, pinned like kustomization.yaml", image, img["name"], tag)
	}

	// GOMEMLIMIT as the kubelet resolves it.
	env := map[string]map[string]any{}
	var order []string
	for _, e := range dig(t, c, "env").([]any) {
		e := e.(map[string]any)
		env[e["name"].(string)] = e
		order = append(order, e["name"].(string))
	}
	gml := env["GOMEMLIMIT"]
	if gml == nil {
		t.Fatal("daemonset: no GOMEMLIMIT")
	}
	ref := regexp.MustCompile(`^\$\(([A-Z_]+)\)(.*)$`).FindStringSubmatch(gml["value"].(string))
	if ref == nil || env[ref[1]] == nil || indexOf(order, ref[1]) > indexOf(order, "GOMEMLIMIT") {
		t.Fatalf("GOMEMLIMIT %q: want $(VAR)suffix, VAR defined before it", gml["value"])
	}
	rf := dig(t, env[ref[1]], "valueFrom", "resourceFieldRef").(map[string]any)
	if rf["resource"] != "limits.memory" || rf["divisor"] != "1Mi" || rf["containerName"] != c["name"] {
		t.Fatalf("%s: %v, want limits.memory of this container in Mi", ref[1], rf)
	}
	limit := dig(t, c, "resources", "limits", "memory").(string)
	mib, err := strconv.ParseInt(strings.TrimSuffix(limit, "Gi"), 10, 64)
	if err != nil || !strings.HasSuffix(limit, "Gi") {
		t.Fatalf("memory limit %q: the test reads whole Gi", limit)
	}
	mib <<= 10
	resolved := strconv.FormatInt(mib, 10) + ref[2]
	goBytes, err := strconv.ParseInt(strings.TrimSuffix(resolved, "B"), 10, 64)
	if err != nil || !strings.HasSuffix(resolved, "B") {
		t.Fatalf("GOMEMLIMIT resolves to %q: want a byte count", resolved)
	}
	if share := float64(goBytes) / float64(mib<<20); share < 0.85 || share > 0.97 {
		t.Errorf("GOMEMLIMIT %s is %.1f%% of the %s limit: want 85-97%%, headroom for socket buffers and BPF maps", resolved, 100*share, limit)
	}
	// The Go runtime refuses to start with a GOMEMLIMIT it cannot parse.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+resolved)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("a Go program with GOMEMLIMIT=%s: %v\n%s", resolved, err, out)
	}

	// Every SUPERNODE_* setting of the ConfigMap and the DaemonSet is known.
	var environ []string
	for k := range dig(t, m["ConfigMap"], "data").(map[string]any) {
		environ = append(environ, k+"=x")
	}
	for _, k := range order {
		environ = append(environ, k+"=x")
	}
	for _, msg := range unknownEnv(environ) {
		t.Errorf("manifests: %s", msg)
	}

	// The Secret's placeholders are refused by a node off loopback.
	for k, v := range dig(t, m["Secret"], "stringData").(map[string]any) {
		for _, line := range strings.Split(strings.TrimSpace(v.(string)), "\n") {
			if allocation.WeakSecret(line, true) == "" {
				t.Errorf("secret.yaml %s: %q would be accepted as a secret", k, line)
			}
		}
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return len(list)
}
