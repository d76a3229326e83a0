// Package config sets a program's flags from three places, in rising
// precedence: a config file of `flag = value` lines, SUPERNODE_* variables
// of the environment, and the command line. The flags themselves are
// defined by the program (cmd/supernode); this package only layers values
// onto its flag.FlagSet, and reads the environment through the getenv
// function it is given, never by itself.
//
// Every value that does not parse is reported with where it came from
// (file and line, variable, or flag) and the type the flag wants; a
// variable that names no flag is reported by UnknownEnv with the flag it
// most likely meant.
package config

import (
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// List is a repeatable string flag: each use adds a value. From the
// environment it takes a comma-separated list; in the file, one line per
// value.
type List []string

// String is the list as one comma-separated value.
func (l *List) String() string { return strings.Join(*l, ",") }

// Set adds v.
func (l *List) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// EnvName is the environment variable for a flag: SUPERNODE_RELAY_IP for
// relay-ip.
func EnvName(flagName string) string {
	return "SUPERNODE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse sets fs's flags from args, the environment (getenv) and the config
// file that the flag named file (or its variable) names; the command line
// beats the environment, which beats the file. Flags named in skip are
// taken from the command line alone (a variable such as SUPERNODE_VERSION
// is often set by images for other reasons). fs should not print its parse
// errors (give it io.Discard output): the error Parse returns says more.
//
// The Origins it returns say where each value taken from the environment
// or the file came from.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string, file string, skip ...string) (Origins, error) {
	if err := fs.Parse(args); err != nil {
		return nil, parseError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	set := map[string]bool{file: true}
	for _, s := range skip {
		set[s] = true
	}
	fileFlag := fs.Lookup(file)
	cmdline := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { cmdline[f.Name] = true })
	if v := getenv(EnvName(file)); v != "" && !cmdline[file] {
		_ = fileFlag.Value.Set(v)
	}
	path := fileFlag.Value.String()
	var fileVals map[string][]Line
	if path != "" {
		var err error
		if fileVals, err = ReadFile(path, fs, file); err != nil {
			return nil, err
		}
	}
	var errs []error
	origins := Origins{}
	fs.VisitAll(func(f *flag.Flag) {
		if cmdline[f.Name] || set[f.Name] {
			return
		}
		_, isList := f.Value.(*List)
		if v := getenv(EnvName(f.Name)); v != "" {
			vals := []string{v}
			if isList {
				vals = SplitList(v)
			}
			for _, x := range vals {
				if err := f.Value.Set(x); err != nil {
					errs = append(errs, fmt.Errorf("%s=%q: %s", EnvName(f.Name), v, valueError(f, err)))
				}
			}
			origins[f.Name] = []origin{{where: EnvName(f.Name)}}
			return
		}
		for _, x := range fileVals[f.Name] {
			if err := f.Value.Set(x.Value); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %s = %q: %s", path, x.Line, f.Name, x.Value, valueError(f, err)))
			}
			origins[f.Name] = append(origins[f.Name], origin{where: fmt.Sprintf("%s:%d", path, x.Line), val: x.Value})
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return origins, nil
}

// Origins say, by flag name, where the values of each flag set from the
// environment or the config file came from: "SUPERNODE_X", or "file:line"
// for each value of a flag from the file.
type Origins map[string][]origin

// origin is where one value of a flag came from.
type origin struct {
	where string // SUPERNODE_X, or file:line
	val   string // the file line's value
}

// flagInError matches the flag an error names first ("--relay-ip ...").
var flagInError = regexp.MustCompile(`^--([a-z0-9-]+)`)

// Locate prefixes an error that names a flag first ("--relay-ip ...") with
// where that flag's value came from, when that was the environment or the
// config file: the operator then knows which line or variable to fix. For
// a list flag from the file, that is the line whose value the error
// quotes. Errors about flags given on the command line, and nil, are
// returned as they are.
func (o Origins) Locate(err error) error {
	if err == nil {
		return err
	}
	m := flagInError.FindStringSubmatch(err.Error())
	if m == nil || len(o[m[1]]) == 0 {
		return err
	}
	from := o[m[1]]
	where := from[0].where
	for _, f := range from {
		if f.val != "" && strings.Contains(err.Error(), f.val) {
			where = f.where
			break
		}
	}
	return fmt.Errorf("%s: %w", where, err)
}

// SplitList splits a list flag's value from the environment: comma-
// separated, spaces around values and empty values dropped.
func SplitList(v string) []string {
	var out []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// valueError says what a flag wants when a value from the environment or
// the config file does not parse: the flag package's own errors ("parse
// error", "invalid syntax") name no type.
func valueError(f *flag.Flag, err error) string {
	if want := wantType(f); want != "" {
		return "want " + want + " for --" + f.Name
	}
	return err.Error()
}

// wantType describes the values f takes, or "" for a string or list.
func wantType(f *flag.Flag) string {
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool:
			return "true or false"
		case int, int64, uint, uint64:
			return "an integer"
		case float64:
			return "a number"
		case time.Duration:
			return "a duration such as 90s, 10m or 1h30m"
		}
	}
	return ""
}

// badFlagValue matches the flag package's error for a value that does not
// parse, which names no type ("parse error", "invalid syntax").
var badFlagValue = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([a-z0-9-]+): `)

// parseError rewrites the flag package's error for a bad value on the
// command line as the environment's and the file's are.
func parseError(fs *flag.FlagSet, err error) error {
	m := badFlagValue.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	if f := fs.Lookup(m[2]); f != nil && wantType(f) != "" {
		return fmt.Errorf("--%s %s: want %s", f.Name, m[1], wantType(f))
	}
	return err
}
