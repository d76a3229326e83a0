package allocation

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrNoCredentials is Reload's error when neither users nor secrets are
// configured any more.
var ErrNoCredentials = errors.New("allocation: no credentials configured")

// Sources are where a node's credentials come from: its flags and the
// files they name. Open reads them at start, Reload on every SIGHUP.
type Sources struct {
	// Users (--user) are name:password pairs, already checked.
	Users []string
	// UsersFile (--users-file) holds name:password lines; "" for none.
	UsersFile string
	// Secrets (--auth-secret) are REST secrets; the first mints.
	Secrets []string
	// SecretFile (--auth-secret-file) holds one REST secret a line, after
	// those of Secrets; "" for none.
	SecretFile string
	// Reachable says that other hosts can reach the node: Open and Reload
	// then refuse weak secrets (CheckReachable), Keys among them. On
	// loopback anything goes: tests and demos use short ones.
	Reachable bool
	// Keys are the node's other secrets, checked with the credentials when
	// Reachable: flag name and value (--api-token, --cluster-key).
	Keys [][2]string
}

// Open loads the credentials into a new Store for realm. When none are
// configured it makes up a REST secret for this run and reports it with
// generated: clients can then get credentials only from the node itself
// (/v1/ice-servers).
func (src Sources) Open(realm string) (st *Store, generated bool, err error) {
	c, err := src.checked()
	if err != nil {
		return nil, false, err
	}
	if generated = len(c.Users) == 0 && len(c.Secrets) == 0; generated {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		c.Secrets = []string{base64.RawURLEncoding.EncodeToString(b)}
	}
	return NewStore(realm, c, nil), generated, nil
}

// Reload loads the credentials again and puts them in st (SIGHUP). On an
// error, and with ErrNoCredentials when none are configured, st keeps the
// credentials it has.
func (src Sources) Reload(st *Store) (Credentials, error) {
	c, err := src.checked()
	if err == nil && len(c.Users) == 0 && len(c.Secrets) == 0 {
		err = ErrNoCredentials
	}
	if err != nil {
		return Credentials{}, err
	}
	st.Set(c)
	return c, nil
}

// checked is Load, then CheckReachable when the node is Reachable.
func (src Sources) checked() (Credentials, error) {
	c, err := src.Load()
	if err == nil && src.Reachable {
		err = src.CheckReachable(c, src.Keys...)
	}
	return c, err
}

// Load reads the credentials of src. In both files empty lines and lines
// starting with # are skipped; an error names the flag and the line.
func (src Sources) Load() (Credentials, error) {
	c := Credentials{Users: map[string]string{}, Secrets: append([]string(nil), src.Secrets...)}
	for _, u := range src.Users {
		n, p, _ := strings.Cut(u, ":")
		c.Users[n] = p
	}
	if src.UsersFile != "" {
		lines, err := readLines(src.UsersFile)
		if err != nil {
			return c, fmt.Errorf("--users-file: %w", err)
		}
		for i, l := range lines {
			n, p, ok := strings.Cut(l, ":")
			if !ok || n == "" || p == "" {
				return c, fmt.Errorf("--users-file %s: line %d: want name:password", src.UsersFile, i+1)
			}
			c.Users[n] = p
		}
	}
	if src.SecretFile != "" {
		lines, err := readLines(src.SecretFile)
		if err != nil {
			return c, fmt.Errorf("--auth-secret-file: %w", err)
		}
		if len(lines) == 0 {
			return c, fmt.Errorf("--auth-secret-file %s: no secret in file", src.SecretFile)
		}
		c.Secrets = append(c.Secrets, lines...)
	}
	return c, nil
}

// readLines returns the non-empty, non-comment lines of a file, trimmed.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && l[0] != '#' {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// minSecretLen is the shortest secret accepted on a node reachable off
// loopback: 16 bytes, the size of an AES-128 or HMAC key worth the name,
// and what `openssl rand -base64 12` gives; the examples suggest 32.
const minSecretLen = 16

// WeakSecret says why s is not a secret to run a reachable node with, or
// returns "" if it is: the CHANGE-ME values of deploy/'s examples, or, with
// checkLength, one shorter than 16 bytes. Long-term user passwords are
// checked without length: people choose them and coturn-style set-ups
// keep them short.
func WeakSecret(s string, checkLength bool) string {
	// The manifests' form (CHANGE-ME-…), or the bare word; not any value
	// that merely contains "changeme" (a password like "exchangemessage").
	if u := strings.ToUpper(s); strings.Contains(u, "CHANGE-ME") || u == "CHANGEME" {
		return "is a placeholder (CHANGE-ME): generate one, e.g. with openssl rand -base64 32"
	}
	if checkLength && len(s) < minSecretLen {
		return fmt.Sprintf("is %d bytes: want at least %d (e.g. openssl rand -base64 32)", len(s), minSecretLen)
	}
	return ""
}

// CheckReachable refuses weak secrets (WeakSecret) in c, the credentials
// loaded from src, and in keys (flag name and value: --api-token,
// --cluster-key; empty values are skipped), for a node that other hosts
// can reach. The error names the flag, and the file and line or position
// of the secret.
func (src Sources) CheckReachable(c Credentials, keys ...[2]string) error {
	const why = " (the node listens off loopback)"
	fromFlags := len(src.Secrets)
	for i, s := range c.Secrets {
		where, n := "--auth-secret", i+1
		if i >= fromFlags {
			where, n = "--auth-secret-file "+src.SecretFile, i-fromFlags+1
		}
		if weak := WeakSecret(s, true); weak != "" {
			return fmt.Errorf("%s: secret %d %s%s", where, n, weak, why)
		}
	}
	for _, kv := range keys {
		if kv[1] == "" {
			continue // a missing token or key is checked where it is needed
		}
		if weak := WeakSecret(kv[1], true); weak != "" {
			return fmt.Errorf("%s %s%s", kv[0], weak, why)
		}
	}
	for name, pw := range c.Users {
		if weak := WeakSecret(pw, false); weak != "" {
			return fmt.Errorf("--user/--users-file: the password of %q %s%s", name, weak, why)
		}
	}
	return nil
}
