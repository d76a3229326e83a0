package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// runbookBase is where every alert's runbook_url points: a section of
// deploy/README.md.
const runbookBase = "https://github.com/supernode/supernode/blob/main/deploy/README.md#"

// ruleFile is the part of a Prometheus rule file these tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile("prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatalf("prometheus/rules.yml: %v", err)
	}
	return rf
}

// readmeAnchors returns the anchors GitHub gives the headings of
// deploy/README.md (lower case, spaces to dashes, punctuation dropped).
func readmeAnchors(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	anchors := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return anchors
}

// TestAlertsRunbooksAndJob checks what promtool does not: every alert has a
// severity, a summary, a description and a runbook_url naming a section of
// deploy/README.md that exists; no rule selects on the job label, so the
// rules work whatever the scrape job is called; and every alert has a unit
// test in rules_test.yml.
func TestAlertsRunbooksAndJob(t *testing.T) {
	rf := readRules(t)
	anchors := readmeAnchors(t)
	tests, err := os.ReadFile("prometheus/rules_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	jobMatcher := regexp.MustCompile(`\bjob\s*(=|!=|=~|!~)`)
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			if jobMatcher.MatchString(r.Expr) {
				t.Errorf("%s: selects on the job label: %s", name, r.Expr)
			}
			if r.Alert == "" {
				continue
			}
			alerts++
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity label", name)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", name, a)
				}
			}
			url := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(url, runbookBase)
			if !ok {
				t.Errorf("%s: runbook_url %q is not under %s", name, url, runbookBase)
			} else if !anchors[anchor] {
				t.Errorf("%s: runbook_url %q: deploy/README.md has no heading with anchor #%s", name, url, anchor)
			}
			if !regexp.MustCompile(`alertname:\s*` + regexp.QuoteMeta(r.Alert) + `\s`).Match(tests) {
				t.Errorf("%s: no unit test in prometheus/rules_test.yml", name)
			}
		}
	}
	if alerts == 0 {
		t.Fatal("prometheus/rules.yml has no alerts")
	}
}

// needPromtool returns promtool's path. Without it the test is skipped,
// unless CI=true or SUPERNODE_REQUIRE_MONITORING is set, where it fails.
func needPromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	msg := "promtool not found (Debian: apt-get install prometheus)"
	if os.Getenv("CI") == "true" || os.Getenv("SUPERNODE_REQUIRE_MONITORING") != "" {
		t.Fatal(msg + " (CI or SUPERNODE_REQUIRE_MONITORING is set)")
	}
	t.Skip(msg)
	return ""
}

// TestPromtoolRules runs promtool check rules on rules.yml and promtool
// test rules on its unit tests.
func TestPromtoolRules(t *testing.T) {
	promtool := needPromtool(t)
	for _, args := range [][]string{
		{"check", "rules", "prometheus/rules.yml"},
		{"test", "rules", "prometheus/rules_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
