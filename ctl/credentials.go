package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/api"
)

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
