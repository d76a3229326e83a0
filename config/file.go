package config

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Line is one value of the config file and the line it is on.
type Line struct {
	Value string
	Line  int
}

// ReadFile parses the config file at path: one `name = value` (or
// `name value`) line per setting, a leading "--" allowed, a line repeated
// for each value of a repeatable flag, a bare boolean flag meaning true.
// Lines starting with # are comments, and so is a # that starts a word
// after the value (see trailingComment); a value in double quotes is taken
// as it is up to the closing quote. Every name must be a flag of fs other
// than the flag file, which names the file itself.
func ReadFile(path string, fs *flag.FlagSet, file string) (map[string][]Line, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", file, err)
	}
	defer f.Close()
	vals := map[string][]Line{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok {
			name, val, _ = strings.Cut(line, " ")
		}
		name = strings.TrimPrefix(strings.TrimSpace(name), "--")
		if q := strings.TrimSpace(val); len(q) >= 2 && q[0] == '"' && strings.IndexByte(q[1:], '"') >= 0 {
			// "quoted": taken as is up to the closing quote, so a secret
			// may contain " #"; anything after it is a comment.
			val = q[1 : 1+strings.IndexByte(q[1:], '"')]
		} else if i := trailingComment(val); i >= 0 {
			val = strings.TrimSpace(val[:i])
		} else {
			val = strings.TrimSpace(val)
		}
		fl := fs.Lookup(name)
		if fl == nil || name == file {
			return nil, fmt.Errorf("%s:%d: unknown setting %q", path, n, name)
		}
		if bf, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() && val == "" {
			val = "true"
		}
		vals[name] = append(vals[name], Line{Value: val, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--%s %s: %w", file, path, err)
	}
	return vals, nil
}

// trailingComment is the index in val (what follows the '=' or the name)
// of the '#' that starts a comment: one at the start or after a space or
// tab; -1 if none. A '#' inside a word (a secret's, say) is kept.
func trailingComment(val string) int {
	for i := 0; i < len(val); i++ {
		if val[i] == '#' && (i == 0 || val[i-1] == ' ' || val[i-1] == '\t') {
			return i
		}
	}
	return -1
}
