package allocation

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Sources are where a node's credentials come from: its flags and the
// files they name. Load reads them at start and on every reload (SIGHUP).
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
