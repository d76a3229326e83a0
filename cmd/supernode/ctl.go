package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/config"
)

// subcommand is one of the operator's commands: supernode <name> [flags].
type subcommand struct {
	summary string
	run     func(c *ctl, args []string) error
}

// subcommands are dispatched by run before the daemon's flags are parsed.
var subcommands = map[string]subcommand{
	"allocations": {"list a node's allocations (filters: --user, --call, --transport)", (*ctl).allocations},
	"kill":        {"end a user's or a call's allocations at once (--user U | --call C)", (*ctl).kill},
	"drain":       {"start a node's drain, or cancel it with --cancel", (*ctl).drain},
	"fleet":       {"list the fleet's members as a node sees them", (*ctl).fleet},
	"credentials": {"mint TURN REST credentials offline (--secret S --user U [--ttl D])", (*ctl).credentials},
}

// subcommandNames in the order --help lists them.
var subcommandNames = []string{"allocations", "kill", "drain", "fleet", "credentials"}

// ctl is one run of a subcommand.
type ctl struct {
	name   string
	getenv func(string) string
	out    io.Writer
	errOut io.Writer
	fs     *flag.FlagSet
	// API client flags (not used by credentials).
	api, token string
	json       bool
	timeout    time.Duration
}

// runSubcommand runs supernode <name> args.
func runSubcommand(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	sc := subcommands[name]
	c := &ctl{name: name, getenv: getenv, out: stdout, errOut: stderr}
	c.fs = flag.NewFlagSet("supernode "+name, flag.ContinueOnError)
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "supernode %s: %s.\n\nUsage: supernode %s [flags]\n\nFlags:\n", name, sc.summary, name)
		c.fs.PrintDefaults()
	}
	return sc.run(c, args)
}

// apiFlags adds the flags of the commands that call a node's admin API.
func (c *ctl) apiFlags() {
	// Inside the node's own environment (kubectl exec into its pod) the
	// node's --http-listen is the API.
	def := c.getenv("SUPERNODE_API")
	if l := c.getenv("SUPERNODE_HTTP_LISTEN"); def == "" && l != "" {
		def = "http://" + l
	}
	if def == "" {
		def = "http://127.0.0.1:9641"
	}
	c.fs.StringVar(&c.api, "api", def, "the node's admin API: the base `URL` of its --http-listen (env SUPERNODE_API, else http:// and SUPERNODE_HTTP_LISTEN)")
	c.fs.StringVar(&c.token, "api-token", "", "the node's --api-token (default: env SUPERNODE_API_TOKEN)")
	c.fs.BoolVar(&c.json, "json", false, "print the node's JSON answer instead of a table")
	c.fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for the node")
}

// parse parses args, which take no positional arguments.
func (c *ctl) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (flags start with --)", c.name, c.fs.Arg(0))
	}
	if c.token == "" && c.getenv != nil {
		c.token = c.getenv("SUPERNODE_API_TOKEN")
	}
	return nil
}

// call sends method path?q to the node and decodes its JSON answer into v;
// raw receives the body as it came.
func (c *ctl) call(method, path string, q url.Values, v any) (raw []byte, err error) {
	base, err := url.Parse(c.api)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("--api %q: want http://host:port or https://host:port", c.api)
	}
	u := base.JoinPath(path)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("--api %s: %w", c.api, err)
	}
	defer resp.Body.Close()
	raw, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("--api %s: %w", c.api, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s %s: %s: %s", method, u.Path, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s %s: %s (is --api a supernode's --http-listen?)", method, u.Path, resp.Status)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("%s %s: unreadable answer: %w", method, u.Path, err)
	}
	return raw, nil
}

func (c *ctl) allocations(args []string) error {
	c.apiFlags()
	var user, call, transport string
	c.fs.StringVar(&user, "user", "", "only this user id's allocations")
	c.fs.StringVar(&call, "call", "", "only this call's allocations")
	c.fs.StringVar(&transport, "transport", "", "only allocations of clients on this transport: udp, tcp, tls or dtls")
	if err := c.parse(args); err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"user": user, "call": call, "transport": transport} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var resp api.AllocationsResponse
	raw, err := c.call(http.MethodGet, "/v1/allocations", q, &resp)
	if err != nil {
		return err
	}
	if c.json {
		_, err := c.out.Write(raw)
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tCALL\tTRANSPORT\tCLIENT\tRELAY\tAGE\tEXPIRES IN\tPERMS\tCHANS\tTO PEER\tTO CLIENT")
	now := time.Now()
	for _, a := range resp.Allocations {
		call := a.Call
		if call == "" {
			call = "-"
		}
		relay := a.Relay
		if a.RelayProtocol == "tcp" {
			relay += "/tcp"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", a.User, call, a.Transport, a.Client, relay,
			roundDuration(time.Duration(a.AgeSeconds*float64(time.Second))), roundDuration(a.Expires.Sub(now)),
			a.Permissions, a.Channels, traffic(a.BytesToPeer, a.PacketsToPeer), traffic(a.BytesToClient, a.PacketsToClient))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%d allocations\n", len(resp.Allocations))
	return nil
}

func (c *ctl) kill(args []string) error {
	c.apiFlags()
	var user, call string
	c.fs.StringVar(&user, "user", "", "end this user id's allocations")
	c.fs.StringVar(&call, "call", "", "end this call's allocations")
	if err := c.parse(args); err != nil {
		return err
	}
	if (user == "") == (call == "") {
		return errors.New("kill: give one of --user or --call")
	}
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	} else {
		q.Set("call", call)
	}
	var resp api.KillResponse
	raw, err := c.call(http.MethodDelete, "/v1/allocations", q, &resp)
	if err != nil {
		return err
	}
	if c.json {
		_, err := c.out.Write(raw)
		return err
	}
	fmt.Fprintf(c.out, "ended %d allocations\n", resp.Killed)
	return nil
}

func (c *ctl) drain(args []string) error {
	c.apiFlags()
	var cancelDrain, status bool
	c.fs.BoolVar(&cancelDrain, "cancel", false, "cancel the drain: the node takes new allocations again")
	c.fs.BoolVar(&status, "status", false, "only say whether the node is draining")
	if err := c.parse(args); err != nil {
		return err
	}
	method := http.MethodPost
	switch {
	case cancelDrain && status:
		return errors.New("drain: give at most one of --cancel and --status")
	case cancelDrain:
		method = http.MethodDelete
	case status:
		method = http.MethodGet
	}
	var resp api.DrainResponse
	raw, err := c.call(method, "/v1/drain", nil, &resp)
	if err != nil {
		return err
	}
	if c.json {
		_, err := c.out.Write(raw)
		return err
	}
	state := "not draining: taking new allocations"
	if resp.Draining {
		state = "draining: refusing new allocations"
	}
	fmt.Fprintf(c.out, "%s (%d allocations left)\n", state, resp.Allocations)
	return nil
}

func (c *ctl) fleet(args []string) error {
	c.apiFlags()
	if err := c.parse(args); err != nil {
		return err
	}
	var resp api.FleetResponse
	raw, err := c.call(http.MethodGet, "/v1/fleet", nil, &resp)
	if err != nil {
		return err
	}
	if c.json {
		_, err := c.out.Write(raw)
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tZONE\tHOST\tALLOCATIONS\tSHARE\tCAPACITY\tMBIT/S\tVERSION")
	for _, m := range resp.Members {
		id := m.ID
		if m.Self {
			id += " (this node)"
		}
		zone := m.Zone
		if zone == "" {
			zone = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.0f%%\t%g\t%.1f\t%s\n", id, m.State, zone, m.Host, m.Allocations,
			100*m.LoadShare, m.Capacity, float64(m.BitsPerSecond)/1e6, m.Version)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%d members\n", len(resp.Members))
	return nil
}

func (c *ctl) credentials(args []string) error {
	var secret, user, call string
	var urls config.List
	var ttl time.Duration
	c.fs.StringVar(&secret, "secret", "", "the nodes' TURN REST `secret` (their first --auth-secret; default: env SUPERNODE_AUTH_SECRET, its first entry)")
	c.fs.StringVar(&user, "user", "", "the user id the credentials are for")
	c.fs.StringVar(&call, "call", "", "mint for this call, as /v1/ice-servers?call= does (the fleet then places it by call id)")
	c.fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the credentials are valid (nodes refuse more than their --max-credential-ttl, 168h by default)")
	c.fs.Var(&urls, "url", "a turn:/turns:/stun: `URL` to put in the RTCIceServer JSON, repeatable; without one the uclient -u/-w pair is printed")
	c.fs.BoolVar(&c.json, "json", false, "print RTCIceServer JSON (needs --url)")
	if err := c.parse(args); err != nil {
		return err
	}
	if secret == "" {
		secret, _, _ = strings.Cut(c.getenv("SUPERNODE_AUTH_SECRET"), ",")
	}
	id := user
	switch {
	case secret == "":
		return errors.New("credentials: --secret is required (or SUPERNODE_AUTH_SECRET)")
	case user == "":
		return errors.New("credentials: --user is required")
	case len(user) > 128 || strings.ContainsAny(user, "\x00\r\n"):
		return errors.New("credentials: --user: at most 128 bytes, no control characters")
	case cluster.ReservedID(user):
		return errors.New("credentials: --user may not start with c= (reserved for placed calls; pass --call)")
	case ttl <= 0:
		return fmt.Errorf("credentials: --ttl %s: want a positive duration", ttl)
	case c.json && len(urls) == 0:
		return errors.New("credentials: --json needs at least one --url")
	}
	if call != "" {
		var err error
		if id, err = cluster.CallUser(call, "", "", user); err != nil {
			return fmt.Errorf("credentials: --call %q: 1-64 of A-Z a-z 0-9 . - _", call)
		}
	}
	store := allocation.NewStore("", allocation.Credentials{Secrets: []string{secret}}, nil)
	username, password, expiry, err := store.Mint(id, ttl)
	if err != nil {
		return err
	}
	if len(urls) == 0 {
		fmt.Fprintf(c.out, "-u %s -w %s\n", username, password)
		return nil
	}
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(api.IceServersResponse{
		IceServers: []api.IceServer{{URLs: urls, Username: username, Credential: password}},
		TTL:        int64(ttl / time.Second),
		ExpiresAt:  expiry.UTC(),
	})
}

// roundDuration prints d to the second (negative: "-").
func roundDuration(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return d.Round(time.Second).String()
}

// traffic prints a byte and packet count compactly.
func traffic(bytes, packets uint64) string {
	const unit = 1024
	b := float64(bytes)
	s := fmt.Sprintf("%dB", bytes)
	for _, suffix := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if b < unit {
			break
		}
		b /= unit
		s = fmt.Sprintf("%.1f%s", b, suffix)
	}
	return fmt.Sprintf("%s/%dp", s, packets)
}

// subcommandUsage lists the subcommands for supernode --help.
func subcommandUsage() string {
	var b strings.Builder
	for _, n := range subcommandNames {
		fmt.Fprintf(&b, "  %-12s %s\n", n, subcommands[n].summary)
	}
	return b.String()
}
