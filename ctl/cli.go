package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// subcommand is one of the operator's commands: supernode <name> [flags].
type subcommand struct {
	name, summary string
	run           func(c *command, args []string) error
}

// subcommands are the operator's commands, in the order Usage lists them.
var subcommands = []subcommand{
	{"allocations", "list a node's allocations (filters: --user, --call, --transport)", (*command).allocations},
	{"kill", "end a user's or a call's allocations at once (--user U | --call C)", (*command).kill},
	{"drain", "start a node's drain, or cancel it with --cancel", (*command).drain},
	{"fleet", "list the fleet's members as a node sees them", (*command).fleet},
	{"credentials", "mint TURN REST credentials offline (--secret S --user U [--ttl D])", (*command).credentials},
}

// lookup is the command called name.
func lookup(name string) (subcommand, bool) {
	for _, sc := range subcommands {
		if sc.name == name {
			return sc, true
		}
	}
	return subcommand{}, false
}

// IsCommand reports whether name, the first argument given to supernode,
// names one of the operator's commands rather than starting the daemon's
// flags.
func IsCommand(name string) bool {
	_, ok := lookup(name)
	return ok
}

// Commands returns the names of the operator's commands, in the order
// Usage lists them.
func Commands() []string {
	names := make([]string, len(subcommands))
	for i, sc := range subcommands {
		names[i] = sc.name
	}
	return names
}

// Usage lists the operator's commands, one indented line each with its
// summary, for supernode --help.
func Usage() string {
	var b strings.Builder
	for _, sc := range subcommands {
		fmt.Fprintf(&b, "  %-12s %s\n", sc.name, sc.summary)
	}
	return b.String()
}

// Run runs supernode name args. getenv supplies the flags' defaults
// (SUPERNODE_API, SUPERNODE_HTTP_LISTEN, SUPERNODE_API_TOKEN,
// SUPERNODE_AUTH_SECRET); what the command prints goes to stdout, its usage
// to stderr. An error is returned, not printed, for the caller to print
// last; after --help it is flag.ErrHelp.
func Run(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	sc, ok := lookup(name)
	if !ok {
		return fmt.Errorf("unknown command %q (want one of %s)", name, strings.Join(Commands(), ", "))
	}
	c := &command{name: name, getenv: getenv, client: Client{Out: stdout}}
	c.fs = flag.NewFlagSet("supernode "+name, flag.ContinueOnError)
	// As for the daemon's flags: the parse error is returned, for the
	// caller to print last, rather than printed here too.
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "supernode %s: %s.\n\nUsage: supernode %s [flags]\n\nFlags:\n", name, sc.summary, name)
		c.fs.SetOutput(stderr)
		c.fs.PrintDefaults()
		c.fs.SetOutput(io.Discard)
	}
	return sc.run(c, args)
}

// command is one run of a subcommand: its flags, and the admin API client
// they configure.
type command struct {
	name   string
	getenv func(string) string
	fs     *flag.FlagSet
	client Client
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
	if c.client.Token == "" {
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
