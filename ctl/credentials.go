package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/config"
)

// credentialsFlags are the values of supernode credentials' flags.
type credentialsFlags struct {
	secret, user, call string
	ttl                time.Duration
	urls               config.List
	json               bool
}

func (c *command) credentials(args []string) error {
	var f credentialsFlags
	c.fs.StringVar(&f.secret, "secret", "", "the nodes' TURN REST `secret` (their first --auth-secret; default: env SUPERNODE_AUTH_SECRET, its first entry)")
	c.fs.StringVar(&f.user, "user", "", "the user id the credentials are for")
	c.fs.StringVar(&f.call, "call", "", "mint for this call, as /v1/ice-servers?call= does (the fleet then places it by call id)")
	c.fs.DurationVar(&f.ttl, "ttl", 24*time.Hour, "how long the credentials are valid (nodes refuse more than their --max-credential-ttl, 168h by default)")
	c.fs.Var(&f.urls, "url", "a turn:/turns:/stun: `URL` to put in the RTCIceServer JSON, repeatable; without one the uclient -u/-w pair is printed")
	c.fs.BoolVar(&f.json, "json", false, "print RTCIceServer JSON (needs --url)")
	if err := c.parse(args); err != nil {
		return err
	}
	if f.secret == "" {
		// The first entry, split as the node splits the variable.
		if s := config.SplitList(c.getenv("SUPERNODE_AUTH_SECRET")); len(s) > 0 {
			f.secret = s[0]
		}
	}
	id, err := f.restID()
	if err != nil {
		return err
	}
	return Credentials(c.client.Out, f.secret, id, f.ttl, f.urls)
}

// restID checks f, its secret already defaulted from the environment, and
// returns the REST id to mint for: the user id, or with --call the id that
// names the call as /v1/ice-servers?call= mints it (unplaced: no zone, no
// node). Each error names the flag at fault.
func (f credentialsFlags) restID() (string, error) {
	switch {
	case f.secret == "":
		return "", errors.New("credentials: --secret is required (or SUPERNODE_AUTH_SECRET)")
	case f.user == "":
		return "", errors.New("credentials: --user is required")
	case !allocation.ValidUserID(f.user):
		return "", errors.New("credentials: --user: at most 128 bytes, no control characters")
	case cluster.ReservedID(f.user):
		return "", errors.New("credentials: --user may not start with c= (reserved for placed calls; pass --call)")
	case f.ttl < time.Second:
		return "", fmt.Errorf("credentials: --ttl %s: want at least 1s (credentials expire on a whole second)", f.ttl)
	case f.json && len(f.urls) == 0:
		return "", errors.New("credentials: --json needs at least one --url")
	}
	if f.call == "" {
		return f.user, nil
	}
	id, err := cluster.CallUser(f.call, "", "", f.user)
	if err != nil {
		return "", fmt.Errorf("credentials: --call %q: 1-64 of A-Z a-z 0-9 . - _", f.call)
	}
	return id, nil
}

// Credentials mints TURN REST credentials for the REST id (a user id, or
// one naming a call) with secret, valid for ttl, and prints them: as
// turnutils_uclient's -u and -w arguments without urls, else as the
// RTCIceServer JSON that /v1/ice-servers answers with.
func Credentials(out io.Writer, secret, id string, ttl time.Duration, urls []string) error {
	store := allocation.NewStore("", allocation.Credentials{Secrets: []string{secret}}, nil)
	username, password, expiry, err := store.Mint(id, ttl)
	if err != nil {
		return err
	}
	if len(urls) == 0 {
		fmt.Fprintf(out, "-u %s -w %s\n", username, password)
		return nil
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(api.IceServersResponse{
		IceServers: []api.IceServer{{URLs: urls, Username: username, Credential: password}},
		TTL:        int64(ttl / time.Second),
		ExpiresAt:  expiry.UTC(),
	})
}
