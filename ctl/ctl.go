// Package ctl is the operator's command line, `supernode allocations`,
// `kill`, `drain`, `fleet` and `credentials`, and the admin API client it
// drives. Run runs a command: it parses the command's flags, takes their
// defaults from the environment Run is handed (SUPERNODE_API, else
// SUPERNODE_HTTP_LISTEN; SUPERNODE_API_TOKEN; SUPERNODE_AUTH_SECRET),
// checks its arguments, and
// calls Client, which calls a node's admin API (package api serves it) and
// prints the answer as a table or as the JSON it came in; `credentials`
// needs no node and mints TURN REST credentials offline with the node's own
// code.
//
// The relay's components never parse flags (the house style keeps that in
// the commands). This package parses its own because it is a command-line
// client, not a component of the relay: its flags, their defaults and its usage text are what it is, and
// they can be tested here, without a daemon around them. cmd/supernode only
// hands it the arguments after a command's name (IsCommand, Run) and puts
// Usage into its --help; the daemon's own flags stay in cmd/supernode.
package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/supernode/supernode/api"
)

// Client calls one node's admin API and prints its answers.
type Client struct {
	// API (--api) is the base URL of the node's --http-listen.
	API string
	// Token (--api-token) is sent as a bearer token when not empty.
	Token string
	// Timeout (--timeout) bounds each call; zero fails every call at once.
	Timeout time.Duration
	// JSON (--json) prints the node's JSON answer as it came.
	JSON bool
	// Out receives what is printed.
	Out io.Writer
}

// call sends method path?q to the node and decodes its JSON answer into v;
// raw is the body as it came.
func (c *Client) call(method, path string, q url.Values, v any) (raw []byte, err error) {
	base, err := url.Parse(c.API)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("--api %q: want http://host:port or https://host:port", c.API)
	}
	u := base.JoinPath(path)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("--api %s: %w", c.API, err)
	}
	defer resp.Body.Close()
	raw, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("--api %s: %w", c.API, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s %s: %s (is --api a supernode's --http-listen?)", method, path, resp.Status)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("%s %s: unreadable answer: %w", method, path, err)
	}
	return raw, nil
}

// show calls the node and prints its answer: the JSON as it came with
// --json, else what table prints from the decoded v.
func (c *Client) show(method, path string, q url.Values, v any, table func() error) error {
	raw, err := c.call(method, path, q, v)
	if err != nil {
		return err
	}
	if c.JSON {
		_, err := c.Out.Write(raw)
		return err
	}
	return table()
}

// Allocations lists the node's allocations that the non-empty filters
// select (GET /v1/allocations).
func (c *Client) Allocations(user, call, transport string) error {
	q := url.Values{}
	for k, v := range map[string]string{"user": user, "call": call, "transport": transport} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var resp api.AllocationsResponse
	return c.show(http.MethodGet, "/v1/allocations", q, &resp, func() error { return c.allocationsTable(resp) })
}

func (c *Client) allocationsTable(resp api.AllocationsResponse) error {
	tw := tabwriter.NewWriter(c.Out, 0, 4, 2, ' ', 0)
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
	fmt.Fprintf(c.Out, "%d allocations\n", len(resp.Allocations))
	return nil
}

// Kill ends the allocations of user, or of call, at once (DELETE
// /v1/allocations); exactly one of them is set.
func (c *Client) Kill(user, call string) error {
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	} else {
		q.Set("call", call)
	}
	var resp api.KillResponse
	return c.show(http.MethodDelete, "/v1/allocations", q, &resp, func() error {
		fmt.Fprintf(c.Out, "ended %d allocations\n", resp.Killed)
		return nil
	})
}

// Drain starts the node's drain (POST /v1/drain), cancels it (DELETE),
// or, with method GET, only asks whether it drains.
func (c *Client) Drain(method string) error {
	var resp api.DrainResponse
	return c.show(method, "/v1/drain", nil, &resp, func() error {
		state := "not draining: taking new allocations"
		if resp.Draining {
			state = "draining: refusing new allocations"
		}
		fmt.Fprintf(c.Out, "%s (%d allocations left)\n", state, resp.Allocations)
		return nil
	})
}

// Fleet lists the fleet's members as the node sees them (GET /v1/fleet).
func (c *Client) Fleet() error {
	var resp api.FleetResponse
	return c.show(http.MethodGet, "/v1/fleet", nil, &resp, func() error { return c.fleetTable(resp) })
}

func (c *Client) fleetTable(resp api.FleetResponse) error {
	tw := tabwriter.NewWriter(c.Out, 0, 4, 2, ' ', 0)
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
	fmt.Fprintf(c.Out, "%d members\n", len(resp.Members))
	return nil
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
