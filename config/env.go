package config

import (
	"flag"
	"strings"
)

// GivenEnv keeps the entries of environ ("NAME=value") that getenv also
// sees: the environment a program was given. A program's getenv is
// os.Getenv, so that is all of it; a test's program, given a few
// variables, is not warned about whatever else the test process's
// environment holds.
func GivenEnv(environ []string, getenv func(string) string) []string {
	var out []string
	for _, kv := range environ {
		if name, _, _ := strings.Cut(kv, "="); getenv(name) != "" {
			out = append(out, kv)
		}
	}
	return out
}

// UnknownEnv returns one message per SUPERNODE_* variable of environ
// ("NAME=value" entries, the prefix in any case, with or without its
// underscore) that names no flag of fs and is not in known, with the
// variable meant when the name differs from one only in its underscores
// or case.
func UnknownEnv(fs *flag.FlagSet, environ, known []string) []string {
	names := map[string]bool{}
	squashed := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		n := EnvName(f.Name)
		names[n] = true
		squashed[strings.ReplaceAll(n, "_", "")] = n
	})
	for _, n := range known {
		names[n] = true
		squashed[strings.ReplaceAll(n, "_", "")] = n
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		// supernode_relay_ip and Supernode_Relay_IP are misspellings too:
		// the prefix is compared like the rest, without case or underscores.
		squash := strings.ReplaceAll(strings.ToUpper(name), "_", "")
		if !strings.HasPrefix(squash, "SUPERNODE") || names[name] {
			continue
		}
		msg := name + " is not a setting and is ignored"
		if m, ok := squashed[squash]; ok {
			msg += "; did you mean " + m + "?"
		}
		out = append(out, msg)
	}
	return out
}
