package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/config"
	"github.com/supernode/supernode/ctl"
)

// subcommand is one of the operator's commands: supernode <name> [flags].
type subcommand struct {
	summary string
	run     func(c *command, args []string) error
}

// subcommands are dispatched by run before the daemon's flags are parsed.
var subcommands = map[string]subcommand{
	"allocations": {"list a node's allocations (filters: --user, --call, --transport)", (*command).allocations},
	"kill":        {"end a user's or a call's allocations at once (--user U | --call C)", (*command).kill},
	"drain":       {"start a node's drain, or cancel it with --cancel", (*command).drain},
	"fleet":       {"list the fleet's members as a node sees them", (*command).fleet},
	"credentials": {"mint TURN REST credentials offline (--secret S --user U [--ttl D])", (*command).credentials},
}

// subcommandNames in the order --help lists them.
var subcommandNames = []string{"allocations", "kill", "drain", "fleet", "credentials"}

// command is one run of a subcommand: its flags, and the admin API client
// (package ctl) they configure.
type command struct {
	name   string
	getenv func(string) string
	fs     *flag.FlagSet
	client ctl.Client
}

// runSubcommand runs supernode <name> args.
func runSubcommand(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	sc := subcommands[name]
	c := &command{name: name, getenv: getenv, client: ctl.Client{Out: stdout}}
	c.fs = flag.NewFlagSet("supernode "+name, flag.ContinueOnError)
	// As for the daemon's flags: the parse error is returned, for main to
	// print last, rather than printed here too.
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "supernode %s: %s.\n\nUsage: supernode %s [flags]\n\nFlags:\n", name, sc.summary, name)
		c.fs.SetOutput(stderr)
		c.fs.PrintDefaults()
		c.fs.SetOutput(io.Discard)
	}
	return sc.run(c, args)
}

// apiFlags adds the flags of the commands that call a node's admin API.
func (c *command) apiFlags() {
	// Inside the node's own environment (kubectl exec into its pod) the
	// node's --http-listen is the API.
	def := c.getenv("SUPERNODE_API")
	if l := c.getenv("SUPERNODE_HTTP_LISTEN"); def == "" && l != "" {
		def = "http://" + l
	}
	if def == "" {
		def = "http://127.0.0.1:9641"
	}
	c.fs.StringVar(&c.client.API, "api", def, "the node's admin API: the base `URL` of its --http-listen (env SUPERNODE_API, else http:// and SUPERNODE_HTTP_LISTEN)")
	c.fs.StringVar(&c.client.Token, "api-token", "", "the node's --api-token (default: env SUPERNODE_API_TOKEN)")
	c.fs.BoolVar(&c.client.JSON, "json", false, "print the node's JSON answer instead of a table")
	c.fs.DurationVar(&c.client.Timeout, "timeout", 10*time.Second, "how long to wait for the node")
}

// parse parses args, which take no positional arguments.
func (c *command) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (flags start with --)", c.name, c.fs.Arg(0))
	}
	if c.client.Token == "" && c.getenv != nil {
		c.client.Token = c.getenv("SUPERNODE_API_TOKEN")
	}
	return nil
}

func (c *command) allocations(args []string) error {
	c.apiFlags()
	var user, call, transport string
	c.fs.StringVar(&user, "user", "", "only this user id's allocations")
	c.fs.StringVar(&call, "call", "", "only this call's allocations")
	c.fs.StringVar(&transport, "transport", "", "only allocations of clients on this transport: udp, tcp, tls or dtls")
	if err := c.parse(args); err != nil {
		return err
	}
	return c.client.Allocations(user, call, transport)
}

func (c *command) kill(args []string) error {
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
	return c.client.Kill(user, call)
}

func (c *command) drain(args []string) error {
	c.apiFlags()
	var cancelDrain, status bool
	c.fs.BoolVar(&cancelDrain, "cancel", false, "cancel the drain: the node takes new allocations again")
	c.fs.BoolVar(&status, "status", false, "only say whether the node is draining")
	if err := c.parse(args); err != nil {
		return err
	}
	switch {
	case cancelDrain && status:
		return errors.New("drain: give at most one of --cancel and --status")
	case cancelDrain:
		return c.client.Drain(http.MethodDelete)
	case status:
		return c.client.Drain(http.MethodGet)
	}
	return c.client.Drain(http.MethodPost)
}

func (c *command) fleet(args []string) error {
	c.apiFlags()
	if err := c.parse(args); err != nil {
		return err
	}
	return c.client.Fleet()
}

func (c *command) credentials(args []string) error {
	var secret, user, call string
	var urls config.List
	var ttl time.Duration
	c.fs.StringVar(&secret, "secret", "", "the nodes' TURN REST `secret` (their first --auth-secret; default: env SUPERNODE_AUTH_SECRET, its first entry)")
	c.fs.StringVar(&user, "user", "", "the user id the credentials are for")
	c.fs.StringVar(&call, "call", "", "mint for this call, as /v1/ice-servers?call= does (the fleet then places it by call id)")
	c.fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the credentials are valid (nodes refuse more than their --max-credential-ttl, 168h by default)")
	c.fs.Var(&urls, "url", "a turn:/turns:/stun: `URL` to put in the RTCIceServer JSON, repeatable; without one the uclient -u/-w pair is printed")
	c.fs.BoolVar(&c.client.JSON, "json", false, "print RTCIceServer JSON (needs --url)")
	if err := c.parse(args); err != nil {
		return err
	}
	if secret == "" {
		// The first entry, split as the node splits the variable.
		if s := config.SplitList(c.getenv("SUPERNODE_AUTH_SECRET")); len(s) > 0 {
			secret = s[0]
		}
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
	case ttl < time.Second:
		return fmt.Errorf("credentials: --ttl %s: want at least 1s (credentials expire on a whole second)", ttl)
	case c.client.JSON && len(urls) == 0:
		return errors.New("credentials: --json needs at least one --url")
	}
	if call != "" {
		var err error
		if id, err = cluster.CallUser(call, "", "", user); err != nil {
			return fmt.Errorf("credentials: --call %q: 1-64 of A-Z a-z 0-9 . - _", call)
		}
	}
	return ctl.Credentials(c.client.Out, secret, id, ttl, urls)
}

// subcommandUsage lists the subcommands for supernode --help.
func subcommandUsage() string {
	var b strings.Builder
	for _, n := range subcommandNames {
		fmt.Fprintf(&b, "  %-12s %s\n", n, subcommands[n].summary)
	}
	return b.String()
}
