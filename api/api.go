// Package api is supernode's HTTP surface: Prometheus metrics, health and
// readiness probes, the credentials endpoint the signaling backend asks
// for a call's ICE servers, and the operator's admin endpoints, with
// /debug/ice (a browser self-test) and /debug/pprof behind flags. Beyond
// checking requests, the decisions behind its answers are not its own:
// placement is Config.Place's (package fleet), the admin actions
// Config.Admin's, minting Config.Credentials'.
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/metrics"
)

// ErrMissingField reports a required Config field that is unset.
var ErrMissingField = errors.New("api: required config field missing")

// Node is what the API needs to know about the relay.
type Node interface {
	// Draining fails /readyz and is reported by /v1/drain.
	Draining() bool
	// AllocationCount is reported by /v1/drain.
	AllocationCount() int
}

// Config configures the HTTP handler.
type Config struct {
	Metrics     *metrics.Metrics  // required
	Credentials *allocation.Store // required
	Node        Node              // required
	// URLs are the turn:/turns:/stun: URLs handed to clients. Required.
	URLs []string
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// /v1/*. Without one, /v1/* answers only requests whose Host is an IP
	// address or localhost (421 otherwise), so that a web page cannot reach
	// it by rebinding its own name to a loopback address.
	Token string
	// DefaultTTL is the credential lifetime when ?ttl is absent; zero is 24h.
	DefaultTTL time.Duration
	// MaxTTL caps ?ttl; zero is 7 days.
	MaxTTL time.Duration
	// Place, when set, answers for a call: the URLs of the node that owns it
	// and the REST id to mint credentials for (which names the call). Nil
	// serves every call here with id = user.
	Place func(call, zone, user string) (urls []string, id string, err error)
	// Profiling mounts Go's runtime profiles under /debug/pprof/ (behind
	// Token when one is set). Off by default: a profile reveals internals.
	Profiling bool
	// DebugUI serves the /debug/ice self-test page. Off by default. The
	// page itself needs no token; the /v1/ice-servers call it makes does.
	DebugUI bool
	// Admin, when set, serves the admin endpoints (behind Token when one is
	// set): /v1/allocations, /v1/drain and /v1/fleet (see admin.go).
	Admin Admin
	// Logger; nil discards.
	Logger *slog.Logger
}

// IceServer is one W3C RTCIceServer dictionary.
type IceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// IceServersResponse is the body of /v1/ice-servers: an RTCConfiguration
// fragment plus the credential's lifetime.
type IceServersResponse struct {
	IceServers []IceServer `json:"iceServers"`
	TTL        int64       `json:"ttl"`
	ExpiresAt  time.Time   `json:"expiresAt"`
}

// New returns the handler serving every endpoint.
func New(cfg Config) (http.Handler, error) {
	switch {
	case cfg.Metrics == nil:
		return nil, fmt.Errorf("%w: Metrics", ErrMissingField)
	case cfg.Credentials == nil:
		return nil, fmt.Errorf("%w: Credentials", ErrMissingField)
	case cfg.Node == nil:
		return nil, fmt.Errorf("%w: Node", ErrMissingField)
	case len(cfg.URLs) == 0:
		return nil, fmt.Errorf("%w: URLs", ErrMissingField)
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = 24 * time.Hour
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mux := newRouter()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Node.Draining() {
			http.Error(w, fmt.Sprintf("draining (%d allocations left)", cfg.Node.AllocationCount()), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ice := &iceHandler{cfg: cfg}
	mux.Handle("GET /v1/ice-servers", ice)
	mux.Handle("POST /v1/ice-servers", ice)
	if cfg.DebugUI {
		mux.HandleFunc("GET /debug/ice", serveDebugICE)
	}
	if cfg.Admin != nil {
		cfg.mountAdmin(mux)
	}
	if cfg.Profiling {
		mux.Handle("/debug/pprof/", cfg.authorized(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", cfg.authorized(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", cfg.authorized(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", cfg.authorized(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", cfg.authorized(http.HandlerFunc(pprof.Trace)))
	}
	mux.notFound("/v1/")
	return mux, nil
}

// authorized wraps h with the bearer-token check of Config.Token.
func (cfg Config) authorized(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cfg.tokenOK(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// tokenOK reports whether r carries Config.Token, answering 401 if not.
// Without a token (a loopback node), it admits only a Host that is an IP
// address or localhost: a web page that rebinds its own DNS name to
// 127.0.0.1 makes the browser's requests same-origin, so nothing but the
// name in Host tells them from the operator's.
func (cfg Config) tokenOK(w http.ResponseWriter, r *http.Request) bool {
	if cfg.Token == "" {
		if !loopbackHost(r.Host) {
			jsonError(w, http.StatusMisdirectedRequest, fmt.Sprintf("Host %q: a node without --api-token answers /v1/* only when addressed by IP address or as localhost (a defence against DNS rebinding)", r.Host))
			return false
		}
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(cfg.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="supernode"`)
		jsonError(w, http.StatusUnauthorized, "missing or wrong bearer token (see --api-token)")
		return false
	}
	return true
}

// loopbackHost reports whether a request's Host names this machine in a way
// no web page can take over: an IP address or localhost.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return strings.EqualFold(host, "localhost")
}

type iceHandler struct{ cfg Config }

// iceParams are the parameters /v1/ice-servers takes.
var iceParams = []string{"user", "ttl", "call", "zone", "local"}

func jsonError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// knownParams reports whether every parameter of q is in allowed; if not,
// it answers 400 naming one that is not.
func knownParams(w http.ResponseWriter, q url.Values, allowed []string) bool {
	for k := range q {
		if !slices.Contains(allowed, k) {
			jsonError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: want %s", k, strings.Join(allowed, ", ")))
			return false
		}
	}
	return true
}

func (h *iceHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.cfg.tokenOK(w, r) {
		return
	}
	if err := r.ParseForm(); err != nil {
		jsonError(w, http.StatusBadRequest, "bad query: "+err.Error())
		return
	}
	if !knownParams(w, r.Form, iceParams) {
		return
	}
	user := r.Form.Get("user")
	if user == "" {
		jsonError(w, http.StatusBadRequest, "missing user: pass ?user=ID")
		return
	}
	if !allocation.ValidUserID(user) {
		jsonError(w, http.StatusBadRequest, "user: at most 128 bytes, no control characters")
		return
	}
	ttl := h.cfg.DefaultTTL
	if s := r.Form.Get("ttl"); s != "" {
		secs, err := strconv.ParseInt(s, 10, 64)
		if err != nil || secs <= 0 {
			jsonError(w, http.StatusBadRequest, "ttl: want a positive number of seconds")
			return
		}
		if secs > int64(h.cfg.MaxTTL/time.Second) {
			jsonError(w, http.StatusBadRequest, fmt.Sprintf("ttl: at most %d seconds", int64(h.cfg.MaxTTL/time.Second)))
			return
		}
		ttl = time.Duration(secs) * time.Second
	}
	if cluster.ReservedID(user) {
		// Reserved: such an id names a call and the node it is placed on.
		jsonError(w, http.StatusBadRequest, "user: may not start with c= (reserved for placed calls; pass call=)")
		return
	}
	call, zone := r.Form.Get("call"), r.Form.Get("zone")
	for name, v := range map[string]string{"call": call, "zone": zone} {
		if v != "" && !cluster.ValidToken(v) {
			jsonError(w, http.StatusBadRequest, name+": 1-64 of A-Z a-z 0-9 . - _")
			return
		}
	}
	// local=true asks for this node's own URLs, whatever node the fleet
	// would place the user on: for checking one node (the /debug/ice page).
	local := false
	if s := r.Form.Get("local"); s != "" {
		var err error
		if local, err = strconv.ParseBool(s); err != nil {
			jsonError(w, http.StatusBadRequest, "local: want true or false")
			return
		}
		if local && call != "" {
			jsonError(w, http.StatusBadRequest, "local: not with call= (a call's credentials name the node the fleet places it on)")
			return
		}
	}
	urls, id := h.cfg.URLs, user
	if h.cfg.Place != nil && !local {
		var err error
		if urls, id, err = h.cfg.Place(call, zone, user); err != nil {
			jsonError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	username, password, expiry, err := h.cfg.Credentials.Mint(id, ttl)
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, "no auth secret configured: start the node with --auth-secret to mint credentials")
		return
	}
	resp := IceServersResponse{
		IceServers: []IceServer{{URLs: urls, Username: username, Credential: password}},
		TTL:        int64(ttl / time.Second),
		ExpiresAt:  expiry.UTC(),
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}
