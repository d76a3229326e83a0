package load

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// credentials are what one call's two legs present to the server.
type credentials struct {
	server   string // host:port
	username string
	password string
}

// RESTCredentials mints a TURN REST API credential (the scheme coturn calls
// use-auth-secret): username "<expiry-unix>:<id>", password
// base64(HMAC-SHA1(secret, username)).
func RESTCredentials(secret, id string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + id
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// iceServers is the part of a W3C RTCConfiguration turnload reads.
type iceServers struct {
	IceServers []struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	} `json:"iceServers"`
}

// fetchICE asks an ICE-servers endpoint (supernode's /v1/ice-servers or any
// that answers with RTCIceServer JSON) for one call's credentials, and picks
// the turn: or turns: URL for transport.
func fetchICE(ctx context.Context, hc *http.Client, endpoint, token, user, call, transport string) (credentials, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return credentials{}, fmt.Errorf("--ice-servers %q: %w", endpoint, err)
	}
	q := u.Query()
	if q.Get("user") == "" {
		q.Set("user", user)
	}
	if q.Get("call") == "" {
		// A fleet places each call on one node (both legs ask with the
		// same call id); other servers ignore the parameter.
		q.Set("call", call)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return credentials{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return credentials{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return credentials{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return credentials{}, fmt.Errorf("ice servers: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var r iceServers
	if err := json.Unmarshal(body, &r); err != nil {
		return credentials{}, fmt.Errorf("ice servers: %w", err)
	}
	for _, s := range r.IceServers {
		for _, raw := range s.URLs {
			hostport, ok := turnURLFor(raw, transport)
			if ok {
				return credentials{server: hostport, username: s.Username, password: s.Credential}, nil
			}
		}
	}
	return credentials{}, fmt.Errorf("ice servers: no turn URL for transport %s in the answer", transport)
}

// turnURLFor returns host:port of a turn:/turns: URL (RFC 7065) when it
// serves transport: udp and tcp take turn: with that ?transport (udp when
// absent), tls takes turns:.
func turnURLFor(raw, transport string) (string, bool) {
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return "", false
	}
	hostport, query, _ := strings.Cut(rest, "?")
	tr := "udp" // RFC 7065: turn: defaults to UDP, turns: to TCP
	if scheme == "turns" {
		tr = "tcp"
	}
	if q, err := url.ParseQuery(query); err == nil && q.Get("transport") != "" {
		tr = strings.ToLower(q.Get("transport"))
	}
	switch {
	case scheme == "turn" && (transport == "udp" || transport == "tcp") && tr == transport:
	case scheme == "turns" && transport == "tls" && tr == "tcp":
	default:
		return "", false
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		port := "3478"
		if scheme == "turns" {
			port = "5349"
		}
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), port)
	}
	return hostport, true
}

var errNoCredentials = errors.New("load: no credentials: set --user and --password, --secret, or --ice-servers")
