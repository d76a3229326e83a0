package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// router is an http.ServeMux that remembers which methods each path takes,
// so that under a prefix given to notFound a wrong method or an unknown
// path is answered in JSON like every other /v1/* error, not with the
// mux's plain-text 405 or 404.
type router struct {
	*http.ServeMux
	methods map[string][]string // path -> methods its patterns name
}

func newRouter() *router {
	return &router{ServeMux: http.NewServeMux(), methods: map[string][]string{}}
}

// Handle registers h for pattern ("METHOD /path" or "/path").
func (m *router) Handle(pattern string, h http.Handler) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = "", pattern
	}
	m.methods[path] = append(m.methods[path], method)
	m.ServeMux.Handle(pattern, h)
}

// HandleFunc registers f for pattern.
func (m *router) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(f))
}

// notFound answers, for every path under prefix that no pattern serves,
// 405 naming the methods the path takes, or 404.
func (m *router) notFound(prefix string) {
	m.ServeMux.HandleFunc(prefix, func(w http.ResponseWriter, r *http.Request) {
		if ms := m.methods[r.URL.Path]; len(ms) > 0 {
			allowed := slices.Clone(ms)
			if slices.Contains(allowed, http.MethodGet) {
				allowed = append(allowed, http.MethodHead)
			}
			slices.Sort(allowed)
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			jsonError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed, want %s", r.Method, r.URL.Path, strings.Join(allowed, " or ")))
			return
		}
		jsonError(w, http.StatusNotFound, r.URL.Path+": no such endpoint")
	})
}
