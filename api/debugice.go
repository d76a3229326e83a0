package api

import (
	_ "embed"
	"net/http"
)

// debugICEPage is the /debug/ice self-test: a page that fetches credentials
// from /v1/ice-servers and makes relay-only calls through this node in the
// browser that opens it. It loads nothing from anywhere else.
//
//go:embed debugice.html
var debugICEPage []byte

// debugICEPolicy confines the page to its own inline script and style and
// to requests back to this node. WebRTC is not governed by CSP, so the
// calls to the TURN URLs still work.
const debugICEPolicy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
	"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// serveDebugICE serves the page. It is served without the token: it holds
// no secret and shows nothing until it is run, and a browser navigating to
// it cannot send an Authorization header. What it does (minting
// credentials) goes through /v1/ice-servers, which the page calls with the
// token its user gives it.
func serveDebugICE(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", debugICEPolicy)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(debugICEPage)
}
