package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/load"
	"github.com/supernode/supernode/load/loadtest"
	"github.com/supernode/supernode/looptest"
)

// The monitoring of deploy/ proven on the real tools: promtool checks a
// live node's /metrics, and a real Prometheus scrapes a fleet under
// turnload traffic and evaluates every query of the Grafana dashboard and
// every rule, each of which must return data.

// needMonitoringTool returns the path of prometheus or promtool. Without
// it the test is skipped, unless CI=true or SUPERNODE_REQUIRE_MONITORING is
// set (.ci/run), where it fails.
func needMonitoringTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := name + " not found (Debian: apt-get install prometheus)"
	if os.Getenv("CI") == "true" || os.Getenv("SUPERNODE_REQUIRE_MONITORING") != "" {
		t.Fatal(msg + " (CI or SUPERNODE_REQUIRE_MONITORING is set)")
	}
	t.Skip(msg)
	return ""
}

// TestPromtoolCheckMetrics lints a live node's /metrics, after traffic,
// with promtool check metrics.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := needMonitoringTool(t, "promtool")
	tn := startNode(t, "--user", "alice:pw")
	loadtest.Run(t, loadtest.SmallLoad(tn.udp))
	resp, err := http.Get("http://" + tn.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %v %d", err, resp.StatusCode)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// promServer is a Prometheus process run by a test.
type promServer struct {
	t    *testing.T
	base string // http://127.0.0.1:port
}

// startPrometheus runs prometheus on a free loopback port with its data in
// a temporary directory, scraping targets every second and evaluating
// rules (deploy/prometheus/rules.yml) every second. It is killed when the
// test ends.
func startPrometheus(t *testing.T, rules string, targets ...string) *promServer {
	t.Helper()
	bin := needMonitoringTool(t, "prometheus")
	dir := t.TempDir()
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	// The job is not called "supernode": nothing may depend on its name.
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: turn-test
    static_configs:
      - targets: [%s]
`, rules, strings.Join(quoted, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := looptest.FreeAddr(t, "127.0.0.1")
	logs := &looptest.Log{}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs)
		}
	})
	p := &promServer{t: t, base: "http://" + listen}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited at start:\n%s", logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready in 30s:\n%s", logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promSample is one element of an instant query's vector result.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query evaluates expr now through /api/v1/query. A query Prometheus
// refuses fails the test; the result is the vector (a scalar comes back as
// one sample).
func (p *promServer) query(expr string) []promSample {
	p.t.Helper()
	resp, err := http.PostForm(p.base+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		p.t.Fatalf("query %s: %v", expr, err)
	}
	if r.Status != "success" {
		p.t.Fatalf("Prometheus refused %s: %s", expr, r.Error)
	}
	var out []promSample
	switch r.Data.ResultType {
	case "vector":
		if err := json.Unmarshal(r.Data.Result, &out); err != nil {
			p.t.Fatal(err)
		}
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			p.t.Fatal(err)
		}
		out = []promSample{{Value: v}}
	default:
		p.t.Fatalf("query %s: result type %s", expr, r.Data.ResultType)
	}
	return out
}

// hasNumber reports whether some sample has a value that is a number (not
// NaN): data, not just a series.
func hasNumber(s []promSample) bool {
	for _, x := range s {
		if str, ok := x.Value[1].(string); ok {
			if v, err := strconv.ParseFloat(str, 64); err == nil && !math.IsNaN(v) {
				return true
			}
		}
	}
	return false
}

// dashboardQueries returns every PromQL expression of the dashboard (panel
// targets and annotations) by where it is, with Grafana's variables replaced
// as Grafana would for "All" nodes and a 1 s scrape interval; and its
// template variables' label_values() queries.
func dashboardQueries(t *testing.T, path string) (exprs map[string]string, labelValues []string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer(`$job`, `.*`, `$instance`, `.*`, `$__rate_interval`, `30s`)
	exprs = map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %q %s", p.Title, tg.RefID)] = vars.Replace(tg.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			exprs[fmt.Sprintf("annotation %q", a.Name)] = vars.Replace(a.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		labelValues = append(labelValues, vars.Replace(s))
	}
	if len(exprs) < 40 || len(labelValues) == 0 {
		t.Fatalf("%s: only %d queries and %d variables found", path, len(exprs), len(labelValues))
	}
	for where, e := range exprs {
		if strings.Contains(e, "$") {
			t.Fatalf("%s: a variable the test does not replace: %s", where, e)
		}
	}
	return exprs, labelValues
}

// ruleQueries returns every rule of the rule file: recording rules by the
// name they record, and alerts with their thresholds relaxed (each
// comparison with a number becomes "> -Inf"), so that an alert that is
// quiet, as it should be on a healthy fleet, still proves that every
// series it reads exists and its arithmetic gives numbers. Whether each
// alert fires when it should is promtool test rules' job
// (deploy/prometheus/rules_test.yml).
func ruleQueries(t *testing.T, path string) (records []string, exprs map[string]string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatal(err)
	}
	threshold := regexp.MustCompile(`(==|!=|>=|<=|>|<)\s*-?[0-9][0-9.e]*`)
	exprs = map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records = append(records, r.Record)
				exprs["record "+r.Record] = r.Expr
				continue
			}
			relaxed := threshold.ReplaceAllString(r.Expr, "> -Inf")
			if relaxed == r.Expr {
				t.Fatalf("alert %s: no threshold to relax in %s", r.Alert, r.Expr)
			}
			exprs["alert "+r.Alert+" (thresholds relaxed)"] = relaxed
		}
	}
	return records, exprs
}

// TestMonitoringLive runs a fleet of two nodes, a Prometheus scraping both
// and evaluating deploy/prometheus/rules.yml, a call with a leg on each
// node, and turnload calls placed through /v1/ice-servers; one node then
// drains with an allocation held.
// Every query of deploy/grafana/supernode.json, every recording rule (and
// the series it records) and every alert expression (thresholds relaxed)
// must return a number through Prometheus' HTTP API.
func TestMonitoringLive(t *testing.T) {
	needMonitoringTool(t, "promtool")
	rules, err := filepath.Abs("../../deploy/prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	exprs, labelValues := dashboardQueries(t, "../../deploy/grafana/supernode.json")
	records, ruleExprs := ruleQueries(t, rules)
	for k, v := range ruleExprs {
		exprs[k] = v
	}

	// Node 1 on its own loopback address, so that traffic between the two
	// nodes' relays counts as cross-host.
	nodes := startFleetNodesEach(t, 2, func(i int) []string {
		if i == 1 {
			return []string{"--listen", "127.0.0.2:0", "--relay-ip", "127.0.0.2"}
		}
		return nil
	})
	prom := startPrometheus(t, rules, nodes[0].http, nodes[1].http)
	// Prometheus' view trails by a scrape or two, more on a busy machine.
	waitForProm := func(what string, cond func() bool) {
		t.Helper()
		looptest.EventuallyWithin(t, what, 60*time.Second, 250*time.Millisecond, cond)
	}
	waitForProm("Prometheus to scrape both nodes", func() bool {
		return len(prom.query(`up == 1 and on (instance) supernode_build_info`)) == 2
	})

	// A call whose two legs sit on the two nodes (cross-host bytes); the
	// leg on node 1 is held, so that its drain lasts.
	user := fmt.Sprintf("%d:holder", time.Now().Add(time.Hour).Unix())
	pass := allocation.RESTPassword("fleet-secret", user)
	_, ra := crossHostCall(t, nodes[0], nodes[1], user, pass)
	if err := ra.Close(); err != nil {
		t.Fatal(err)
	}

	// Calls placed by the fleet, relayed while Prometheus scrapes.
	cfg := loadtest.SmallLoad("")
	cfg.Username, cfg.Password = "", ""
	cfg.ICEServers = "http://" + nodes[0].http + "/v1/ice-servers?ttl=600"
	cfg.Calls, cfg.Duration = 8, 4*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := load.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls.Established != cfg.Calls {
		t.Fatalf("calls %+v; errors %v %v", rep.Calls, rep.Errors, rep.ErrorSamples)
	}

	nodes[1].sigs <- syscall.SIGTERM
	waitForProm("Prometheus to see node 1 draining", func() bool {
		return len(prom.query(`supernode_draining == 1`)) == 1 &&
			len(prom.query(`supernode_fleet_members{state="draining"} == 1`)) == 2
	})

	// Panels that show only what moved in the last 30 s need something
	// moving while they are queried: a client connects over TCP every
	// 200 ms, asks a Binding and hangs up (requests, closed connections).
	stop := make(chan struct{})
	pulsed := make(chan error, 1)
	go func() { pulsed <- tcpPulse(nodes[0].udp, stop) }()
	defer func() {
		close(stop)
		if err := <-pulsed; err != nil {
			t.Errorf("TCP client: %v", err)
		}
	}()

	// Every query must come back with a number; a Prometheus still behind
	// (rules evaluated every second, rates needing two scrapes) gets until
	// the deadline. What is still empty then is reported, all of it.
	names := make([]string, 0, len(exprs))
	for k := range exprs {
		names = append(names, k)
	}
	sort.Strings(names)
	var empty []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		empty = empty[:0]
		for _, k := range names {
			if !hasNumber(prom.query(exprs[k])) {
				empty = append(empty, k+": "+exprs[k])
			}
		}
		for _, r := range records {
			if !hasNumber(prom.query(r)) {
				empty = append(empty, "recorded series "+r)
			}
		}
		if len(empty) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(empty) > 0 {
		t.Fatalf("%d of %d queries returned no data:\n%s", len(empty), len(names)+len(records), strings.Join(empty, "\n"))
	}

	// The events the panels are about reached Prometheus as more than the
	// zeros every series starts at.
	for _, e := range []string{
		`sum(supernode_relay_bytes_total) > 0`,
		`sum(supernode_fleet_placements_total{result=~"local|remote"}) > 0`,
		`sum(supernode_allocation_lifetime_seconds_count) > 0`,
		`sum(supernode_fleet_members{state="alive"}) > 0`,
		`sum(supernode_fleet_cross_host_bytes_total) > 0`,
		`sum(supernode_connections_closed_total{transport="tcp"}) > 0`,
	} {
		if !hasNumber(prom.query(e)) {
			t.Errorf("no data for %s", e)
		}
	}

	// Prometheus itself evaluated every rule without an error (a
	// many-to-many match, say, shows only at evaluation).
	resp, err := http.Get(prom.base + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	var rr struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	evaluated := 0
	for _, g := range rr.Data.Groups {
		for _, r := range g.Rules {
			evaluated++
			if r.Health != "ok" {
				t.Errorf("Prometheus: rule %s health %q: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if want := len(ruleExprs); evaluated != want {
		t.Errorf("Prometheus loaded %d rules, rules.yml has %d", evaluated, want)
	}

	// The template variables: label_values(selector, label).
	lv := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	for _, q := range labelValues {
		m := lv.FindStringSubmatch(q)
		if m == nil {
			t.Fatalf("variable query %q is not label_values(selector, label)", q)
		}
		resp, err := http.Get(prom.base + "/api/v1/label/" + m[2] + "/values?" + url.Values{"match[]": {m[1]}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Status string   `json:"status"`
			Data   []string `json:"data"`
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil || r.Status != "success" || len(r.Data) == 0 {
			t.Fatalf("variable %s: %v %+v", q, err, r)
		}
	}
	t.Logf("%d dashboard and rule queries, %d recorded series and %d variables returned data", len(names), len(records), len(labelValues))
}

// tcpPulse connects to server over TCP every 200 ms until stop closes,
// sends a Binding request, reads the answer and hangs up.
func tcpPulse(server string, stop <-chan struct{}) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		c, err := net.DialTimeout("tcp", server, 5*time.Second)
		if err != nil {
			return err
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
		if err == nil {
			_, err = c.Read(make([]byte, 1500))
		}
		_ = c.Close()
		if err != nil {
			return err
		}
	}
}
