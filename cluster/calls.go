package cluster

import (
	"errors"
	"strings"
)

// A credential placed by call carries the call, and the node the fleet
// placed it on, in the id part of its TURN REST username ("<expiry>:<id>"),
// so any node can tell from the verified username alone where an Allocate
// belongs:
//
//	id = "c=" call ["@" zone] ["+" node] "~" user
//
// call, zone and node are limited to letters, digits and ".-_" (so "~",
// "@" and "+" cannot appear in them); user is anything. The node is named
// rather than recomputed at Allocate time because placement with bounded
// load depends on loads that change between the two moments; the REST
// password signs the whole username, so a client cannot pick its node.

// callPrefix starts every id CallUser makes.
const callPrefix = "c="

// ReservedID reports whether a user id starts as the ids CallUser makes
// do. Such an id may not be minted for a plain user: it would name a call
// and the node it is placed on, and so let the client pick its node.
func ReservedID(user string) bool { return strings.HasPrefix(user, callPrefix) }

// ErrBadCallID reports a call id or zone outside the allowed characters.
var ErrBadCallID = errors.New("cluster: call id and zone: 1-64 of A-Z a-z 0-9 . - _")

// ValidToken reports whether s may be a call id or zone.
func ValidToken(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// CallUser is the REST id naming call, and the zone and node it was placed
// in (either may be empty), for user.
func CallUser(call, zone, node, user string) (string, error) {
	if !ValidToken(call) || (zone != "" && !ValidToken(zone)) || (node != "" && !ValidToken(node)) {
		return "", ErrBadCallID
	}
	id := callPrefix + call
	if zone != "" {
		id += "@" + zone
	}
	if node != "" {
		id += "+" + node
	}
	return id + "~" + user, nil
}

// ParseCallUser splits a TURN username ("<expiry>:<id>", or a bare id) made
// by CallUser. ok is false for any other username.
func ParseCallUser(username string) (call, zone, node, user string, ok bool) {
	id := username
	if expiry, rest, found := strings.Cut(username, ":"); found && expiry != "" && strings.Trim(expiry, "0123456789") == "" {
		id = rest
	}
	rest, found := strings.CutPrefix(id, callPrefix)
	if !found {
		return "", "", "", "", false
	}
	head, user, found := strings.Cut(rest, "~")
	if !found {
		return "", "", "", "", false
	}
	head, node, hasNode := strings.Cut(head, "+")
	call, zone, hasZone := strings.Cut(head, "@")
	if !ValidToken(call) || (hasZone && !ValidToken(zone)) || (hasNode && !ValidToken(node)) {
		return "", "", "", "", false
	}
	return call, zone, node, user, true
}
