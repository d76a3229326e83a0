// Package deploy holds the tests of the deployment files under deploy/: the
// Grafana dashboard against Grafana's own types, the Prometheus rules with
// promtool, and the runbook each alert points at.
package deploy

//lint:file-ignore SA1019 deploy/ ships the classic dashboard JSON (schema v1), which every Grafana imports; the SDK deprecates its type for dashboardv2, a schema older Grafanas cannot import.

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// TestDashboardSchema decodes deploy/grafana/supernode.json strictly into
// the Grafana dashboard types of grafana-foundation-sdk: a field Grafana does
// not know, or a value of the wrong type, anywhere in the dashboard, its
// panels' options and field config, or its Prometheus queries, fails.
func TestDashboardSchema(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	raw, err := os.ReadFile("grafana/supernode.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeStrict(raw)
	if err != nil {
		t.Fatalf("grafana/supernode.json does not match Grafana's dashboard schema:\n%v", err)
	}
	if len(d.Panels) == 0 {
		t.Fatal("grafana/supernode.json has no panels")
	}
	// The decoder is strict: the same dashboard with one field Grafana does
	// not know, deep in a panel's options, is refused.
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	last := tree["panels"].([]any)[len(tree["panels"].([]any))-1].(map[string]any)
	last["options"].(map[string]any)["legendd"] = map[string]any{}
	bad, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(bad); err == nil || !strings.Contains(err.Error(), "legendd") {
		t.Fatalf("an unknown panel option was accepted (err %v)", err)
	}
	// The strict decoder accepts a query of a datasource type it does not
	// know as an untyped bag: every query here must be Prometheus'.
	var generic struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Datasource struct {
					Type string `json:"type"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	for _, p := range generic.Panels {
		for i, tg := range p.Targets {
			if tg.Datasource.Type != "prometheus" {
				t.Errorf("panel %q target %d: datasource type %q, want prometheus", p.Title, i, tg.Datasource.Type)
			}
		}
	}
}

// decodeStrict decodes a dashboard with the SDK's strict decoder. The SDK
// returns its error list typed even when the list is empty (a nil
// cog.BuildErrors in a non-nil error): an empty list is success.
func decodeStrict(raw []byte) (*dashboard.Dashboard, error) {
	var d dashboard.Dashboard
	err := d.UnmarshalJSONStrict(raw)
	var list cog.BuildErrors
	if errors.As(err, &list) && len(list) == 0 {
		err = nil
	}
	return &d, err
}
