package allocation

import (
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // RFC 8489 long-term credentials use MD5 keys.
	"crypto/sha1" //nolint:gosec // the TURN REST scheme uses HMAC-SHA1.
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pion/stun/v4"
)

// Credential errors. Each maps to one auth-failure reason in metrics.
var (
	ErrUnknownUser = errors.New("allocation: unknown user")
	ErrExpired     = errors.New("allocation: REST credential expired")
	ErrBadUsername = errors.New("allocation: malformed username")
	ErrBadRealm    = errors.New("allocation: wrong realm")
	ErrBadPassword = errors.New("allocation: message integrity check failed")
	ErrNoSecret    = errors.New("allocation: no auth secret configured")
	// ErrTooFarAhead is a REST credential expiring further ahead than the
	// node's maximum credential lifetime allows.
	ErrTooFarAhead = errors.New("allocation: REST credential expires too far in the future")
)

// MaxUsernameBytes is RFC 8489 §14.3's bound on a USERNAME.
const MaxUsernameBytes = 509

// DefaultMaxTTL is the longest REST credential lifetime accepted unless
// SetMaxTTL says otherwise: what /v1/ice-servers mints at most.
const DefaultMaxTTL = 7 * 24 * time.Hour

// Credentials is one immutable set of long-term users and REST secrets.
type Credentials struct {
	// Users maps a static user name to its password.
	Users map[string]string
	// Secrets are the TURN REST shared secrets; the first one mints, all verify.
	Secrets []string
}

// Store answers "which key authenticates this username" for the TURN server.
// Its credentials can be replaced at any time (SIGHUP) without dropping any
// allocation: the next request is checked against the new set.
type Store struct {
	realm  string
	now    func() time.Time
	cur    atomic.Pointer[Credentials]
	maxTTL atomic.Int64 // nanoseconds

	// secretOf remembers which REST secret verified a username, so that the
	// auth callback (which does not see the message) can return the right
	// key while several secrets are active during a rotation.
	mu       sync.Mutex
	secretOf map[string]int
}

// maxCachedUsernames bounds the rotation cache; it is cleared when full.
const maxCachedUsernames = 1 << 16

// NewStore returns a store for realm. now may be nil (time.Now).
func NewStore(realm string, c Credentials, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	s := &Store{realm: realm, now: now, secretOf: make(map[string]int)}
	s.maxTTL.Store(int64(DefaultMaxTTL))
	s.Set(c)
	return s
}

// SetMaxTTL sets how far in the future a REST credential may expire; one
// expiring later is refused (its holder could otherwise keep it for ever).
func (s *Store) SetMaxTTL(d time.Duration) { s.maxTTL.Store(int64(d)) }

// MaxTTL returns the longest REST credential lifetime accepted.
func (s *Store) MaxTTL() time.Duration { return time.Duration(s.maxTTL.Load()) }

// validUsername reports whether u is a USERNAME the node accepts: at most
// RFC 8489's 509 bytes of valid UTF-8 without control characters (a NUL or a
// newline in a username only ever serves to confuse logs and backends).
func validUsername(u string) bool {
	if u == "" || len(u) > MaxUsernameBytes || !utf8.ValidString(u) {
		return false
	}
	for _, r := range u {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// Realm returns the realm credentials are bound to.
func (s *Store) Realm() string { return s.realm }

// Set atomically replaces the credentials.
func (s *Store) Set(c Credentials) {
	cp := Credentials{Users: make(map[string]string, len(c.Users)), Secrets: append([]string(nil), c.Secrets...)}
	for k, v := range c.Users {
		cp.Users[k] = v
	}
	s.cur.Store(&cp)
	s.mu.Lock()
	clear(s.secretOf)
	s.mu.Unlock()
}

// Current returns the credentials in force.
func (s *Store) Current() Credentials { return *s.cur.Load() }

// Rotating reports whether several REST secrets are active, so a request's
// secret must be found with Verify before the auth callback runs.
func (s *Store) Rotating() bool { return len(s.cur.Load().Secrets) > 1 }

// HasSecret reports whether at least one REST secret is configured.
func (s *Store) HasSecret() bool { return len(s.cur.Load().Secrets) > 0 }

// ValidUserID reports whether id may be a user id that REST credentials are
// minted for: at most 128 bytes, without NUL, CR or LF (it is logged, and
// carried in the username of every request).
func ValidUserID(id string) bool {
	return len(id) <= 128 && !strings.ContainsAny(id, "\x00\r\n")
}

// ParseRESTUsername splits a TURN REST username "<expiry-unix>:<id>".
func ParseRESTUsername(username string) (expiry time.Time, id string, ok bool) {
	ts, rest, found := strings.Cut(username, ":")
	if !found || ts == "" || rest == "" {
		return time.Time{}, "", false
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || secs < 0 {
		return time.Time{}, "", false
	}
	return time.Unix(secs, 0), rest, true
}

// IsREST reports whether username is a TURN REST username that a configured
// secret may verify (and not a static user's name).
func (s *Store) IsREST(username string) bool {
	c := s.cur.Load()
	if len(c.Secrets) == 0 {
		return false
	}
	if _, static := c.Users[username]; static {
		return false
	}
	_, _, ok := ParseRESTUsername(username)
	return ok
}

// UserID returns the user id a username stands for — a static user's name,
// or the <id> of a REST username a secret may verify — without checking any
// password.
func (s *Store) UserID(username string) (string, bool) {
	c := s.cur.Load()
	if _, static := c.Users[username]; static {
		return username, true
	}
	if len(c.Secrets) == 0 {
		return "", false
	}
	_, id, ok := ParseRESTUsername(username)
	return id, ok
}

// RESTPassword is base64(HMAC-SHA1(secret, username)), the scheme coturn
// calls use-auth-secret.
func RESTPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Mint returns a REST username and password for id valid for ttl, signed
// with the first configured secret.
func (s *Store) Mint(id string, ttl time.Duration) (username, password string, expiry time.Time, err error) {
	c := s.cur.Load()
	if len(c.Secrets) == 0 {
		return "", "", time.Time{}, ErrNoSecret
	}
	expiry = s.now().Add(ttl).Truncate(time.Second)
	username = fmt.Sprintf("%d:%s", expiry.Unix(), id)
	return username, RESTPassword(c.Secrets[0], username), expiry, nil
}

// longTermKey is MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
func longTermKey(username, realm, password string) []byte {
	h := md5.Sum([]byte(username + ":" + realm + ":" + password)) //nolint:gosec
	return h[:]
}

// candidates returns the user id and every key that may authenticate
// username: one for a static user, one per secret for a REST username.
func (s *Store) candidates(username, realm string) (userID string, keys [][]byte, err error) {
	if realm != s.realm {
		return "", nil, ErrBadRealm
	}
	if !validUsername(username) {
		return "", nil, ErrBadUsername
	}
	c := s.cur.Load()
	if pw, ok := c.Users[username]; ok {
		return username, [][]byte{longTermKey(username, realm, pw)}, nil
	}
	if len(c.Secrets) == 0 {
		return "", nil, ErrUnknownUser
	}
	expiry, id, ok := ParseRESTUsername(username)
	if !ok {
		if strings.Contains(username, ":") {
			return "", nil, ErrBadUsername
		}
		return "", nil, ErrUnknownUser
	}
	now := s.now()
	if !now.Before(expiry) {
		return "", nil, ErrExpired
	}
	if expiry.Sub(now) > s.MaxTTL()+time.Second {
		// A second of slack: Mint rounds the expiry to whole seconds.
		return "", nil, ErrTooFarAhead
	}
	keys = make([][]byte, len(c.Secrets))
	for i, sec := range c.Secrets {
		keys[i] = longTermKey(username, realm, RESTPassword(sec, username))
	}
	return id, keys, nil
}

// Key returns the user id and the key the server checks a request's
// MESSAGE-INTEGRITY with. During a secret rotation it returns the key of the
// secret that Verify last matched for this username.
func (s *Store) Key(username, realm string) (userID string, key []byte, err error) {
	userID, keys, err := s.candidates(username, realm)
	if err != nil {
		return "", nil, err
	}
	if len(keys) == 1 {
		return userID, keys[0], nil
	}
	s.mu.Lock()
	i, ok := s.secretOf[username]
	s.mu.Unlock()
	if !ok || i >= len(keys) {
		i = 0
	}
	return userID, keys[i], nil
}

// Verify checks a decoded request's USERNAME, REALM and MESSAGE-INTEGRITY
// against every candidate key and returns the user id and the key that
// matched. It does not check the NONCE; the TURN server does that.
func (s *Store) Verify(m *stun.Message) (userID string, key []byte, err error) {
	var u stun.Username
	var r stun.Realm
	if err := u.GetFrom(m); err != nil {
		return "", nil, ErrBadUsername
	}
	if err := r.GetFrom(m); err != nil {
		return "", nil, ErrBadRealm
	}
	userID, keys, err := s.candidates(u.String(), r.String())
	if err != nil {
		return "", nil, err
	}
	for i, k := range keys {
		if stun.MessageIntegrity(k).Check(m) == nil {
			if len(keys) > 1 {
				s.mu.Lock()
				if len(s.secretOf) >= maxCachedUsernames {
					clear(s.secretOf)
				}
				s.secretOf[u.String()] = i
				s.mu.Unlock()
			}
			return userID, k, nil
		}
	}
	return "", nil, ErrBadPassword
}
