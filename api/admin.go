package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"

	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/relay"
)

// Admin is what the admin endpoints act on: the node's allocations, its
// drain and its view of the fleet.
type Admin interface {
	// Allocations lists the live allocations f selects.
	Allocations(f relay.Filter) []relay.Session
	// Kill ends the allocations f selects at once and says how many.
	Kill(f relay.Filter) int
	// SetDraining starts (true) or cancels (false) a drain; it fails when
	// the drain cannot be cancelled (a SIGTERM drain ends in an exit).
	SetDraining(on bool) error
	// Fleet lists the fleet's members as this node sees them.
	Fleet() []Member
}

// Member is one fleet member in GET /v1/fleet.
type Member struct {
	ID   string `json:"id"`
	Self bool   `json:"self"`
	// State is active or draining.
	State string `json:"state"`
	Zone  string `json:"zone,omitempty"`
	// Host is where clients reach it.
	Host        string  `json:"host"`
	Allocations int     `json:"allocations"`
	Capacity    float64 `json:"capacity"`
	// LoadShare is the member's share of the fleet's allocations, 0..1.
	LoadShare     float64 `json:"load_share"`
	BitsPerSecond int64   `json:"bits_per_second"`
	Version       string  `json:"version,omitempty"`
}

// AllocationsResponse is the body of GET /v1/allocations.
type AllocationsResponse struct {
	Allocations []relay.Session `json:"allocations"`
}

// KillResponse is the body of DELETE /v1/allocations.
type KillResponse struct {
	Killed int `json:"killed"`
}

// DrainResponse is the body of every /v1/drain answer.
type DrainResponse struct {
	Draining    bool `json:"draining"`
	Allocations int  `json:"allocations"`
}

// FleetResponse is the body of GET /v1/fleet.
type FleetResponse struct {
	Members []Member `json:"members"`
}

// Members builds the fleet view from cluster nodes, with load shares.
func Members(nodes []cluster.Node) []Member {
	total := 0
	for _, n := range nodes {
		total += n.Meta.Allocations
	}
	out := make([]Member, 0, len(nodes))
	for _, n := range nodes {
		m := Member{ID: n.ID, Self: n.Self, State: "active", Zone: n.Meta.Zone, Host: n.Meta.Host,
			Allocations: n.Meta.Allocations, Capacity: n.Meta.Capacity, BitsPerSecond: n.Meta.BitsPerSecond,
			Version: n.Meta.Version}
		if m.Capacity == 0 {
			m.Capacity = 1
		}
		if n.Meta.Draining {
			m.State = "draining"
		}
		if total > 0 {
			m.LoadShare = float64(n.Meta.Allocations) / float64(total)
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (cfg Config) mountAdmin(mux *router) {
	a := cfg.Admin
	// A browser on the node's host could otherwise drain a loopback node
	// without a token from any web page: a bodyless POST is a CORS simple
	// request. Requests that change state and come from another origin
	// (Sec-Fetch-Site, or an Origin that is not the node's) are refused
	// with 403; the CLI, curl and scripts send neither header.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jsonError(w, http.StatusForbidden, "cross-origin request refused: "+r.Method+" "+r.URL.Path+" changes the node's state and came from a web page of another origin")
	}))
	sameOrigin := cop.Handler
	mux.Handle("GET /v1/allocations", cfg.authorized(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := filterOf(w, r, false)
		if ok {
			writeJSON(w, http.StatusOK, AllocationsResponse{Allocations: a.Allocations(f)})
		}
	})))
	mux.Handle("DELETE /v1/allocations", sameOrigin(cfg.authorized(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := filterOf(w, r, true)
		if ok {
			writeJSON(w, http.StatusOK, KillResponse{Killed: a.Kill(f)})
		}
	}))))
	drain := func(on bool) http.Handler {
		return sameOrigin(cfg.authorized(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !noParams(w, r) {
				return
			}
			if err := a.SetDraining(on); err != nil {
				jsonError(w, http.StatusConflict, err.Error())
				return
			}
			cfg.Logger.Info("drain set over the admin API", "draining", on, "remote", r.RemoteAddr)
			writeJSON(w, http.StatusOK, DrainResponse{Draining: cfg.Node.Draining(), Allocations: cfg.Node.AllocationCount()})
		})))
	}
	mux.Handle("POST /v1/drain", drain(true))
	mux.Handle("DELETE /v1/drain", drain(false))
	mux.Handle("GET /v1/drain", cfg.authorized(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if noParams(w, r) {
			writeJSON(w, http.StatusOK, DrainResponse{Draining: cfg.Node.Draining(), Allocations: cfg.Node.AllocationCount()})
		}
	})))
	mux.Handle("GET /v1/fleet", cfg.authorized(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if noParams(w, r) {
			writeJSON(w, http.StatusOK, FleetResponse{Members: a.Fleet()})
		}
	})))
}

// filterOf reads user=, call= and transport=, answering 400 for anything
// else. A kill needs user or call: ending every allocation on the node is
// what a restart does.
func filterOf(w http.ResponseWriter, r *http.Request, kill bool) (relay.Filter, bool) {
	q, ok := query(w, r)
	if !ok {
		return relay.Filter{}, false
	}
	allowed := []string{"user", "call", "transport"}
	if kill {
		allowed = []string{"user", "call"}
	}
	if !knownParams(w, q, allowed) {
		return relay.Filter{}, false
	}
	for k, v := range q {
		if len(v) != 1 || v[0] == "" {
			jsonError(w, http.StatusBadRequest, k+": give it once, with a value")
			return relay.Filter{}, false
		}
	}
	f := relay.Filter{User: q.Get("user"), Call: q.Get("call"), Transport: q.Get("transport")}
	switch {
	case f.Transport != "" && !relay.ValidTransport(f.Transport):
		jsonError(w, http.StatusBadRequest, "transport: want udp, tcp, tls or dtls")
		return f, false
	case f.Call != "" && !cluster.ValidToken(f.Call):
		jsonError(w, http.StatusBadRequest, "call: 1-64 of A-Z a-z 0-9 . - _")
		return f, false
	case len(f.User) > 128:
		jsonError(w, http.StatusBadRequest, "user: at most 128 bytes")
		return f, false
	case kill && f.User == "" && f.Call == "":
		jsonError(w, http.StatusBadRequest, "missing user or call: pass ?user=ID or ?call=ID to say whose allocations to end")
		return f, false
	}
	return f, true
}

func query(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "bad query: "+err.Error())
		return nil, false
	}
	return q, true
}

// noParams answers 400 for an endpoint that takes no parameters.
func noParams(w http.ResponseWriter, r *http.Request) bool {
	q, ok := query(w, r)
	if !ok {
		return false
	}
	for k := range q {
		jsonError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: %s takes none", k, r.URL.Path))
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
