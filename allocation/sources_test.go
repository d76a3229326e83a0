package allocation

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSourcesLoad(t *testing.T) {
	users := writeFile(t, "# static users\n\n  bob:pw2  \ncarol:a:b\nalice:from-file\n")
	secrets := writeFile(t, "# newest first\nfile-secret-1\n\n file-secret-2 \n")
	c, err := Sources{Users: []string{"alice:pw1"}, UsersFile: users, Secrets: []string{"flag-secret"}, SecretFile: secrets}.Load()
	if err != nil {
		t.Fatal(err)
	}
	wantUsers := map[string]string{"alice": "from-file", "bob": "pw2", "carol": "a:b"}
	if !reflect.DeepEqual(c.Users, wantUsers) {
		t.Errorf("users %v, want %v", c.Users, wantUsers)
	}
	if want := []string{"flag-secret", "file-secret-1", "file-secret-2"}; !reflect.DeepEqual(c.Secrets, want) {
		t.Errorf("secrets %q, want %q (flags first: the first mints)", c.Secrets, want)
	}
	if c, err := (Sources{}).Load(); err != nil || len(c.Users) != 0 || len(c.Secrets) != 0 {
		t.Errorf("no sources: %v, %v", c, err)
	}
}

func TestSourcesLoadErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	bad := writeFile(t, "# comment\nalice:pw\nbob\n")
	empty := writeFile(t, "# only a comment\n\n")
	for _, tc := range []struct {
		src  Sources
		want string
	}{
		{Sources{UsersFile: missing}, "--users-file: open " + missing},
		{Sources{UsersFile: bad}, "--users-file " + bad + ": line 2: want name:password"},
		{Sources{SecretFile: missing}, "--auth-secret-file: open " + missing},
		{Sources{SecretFile: empty}, "--auth-secret-file " + empty + ": no secret in file"},
	} {
		if _, err := tc.src.Load(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %s", tc.src, err, tc.want)
		}
	}
}

func TestWeakSecret(t *testing.T) {
	for _, tc := range []struct {
		s           string
		checkLength bool
		want        string
	}{
		{"CHANGE-ME-rest-secret-generate-with-openssl", true, "is a placeholder (CHANGE-ME)"},
		{"changeme", false, "is a placeholder"},
		{"exchangemessage-is-a-long-one", true, ""},
		{"short", true, "is 5 bytes: want at least 16"},
		{"short", false, ""},
		{"0123456789abcdef", true, ""},
	} {
		if got := WeakSecret(tc.s, tc.checkLength); (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
			t.Errorf("WeakSecret(%q, %v) = %q, want %q", tc.s, tc.checkLength, got, tc.want)
		}
	}
}

func TestCheckReachable(t *testing.T) {
	good := "0123456789abcdef0123"
	src := Sources{Secrets: []string{good}, SecretFile: "/etc/supernode/secrets"}
	for _, tc := range []struct {
		name string
		c    Credentials
		keys [][2]string
		want string
	}{
		{"all good", Credentials{Secrets: []string{good, good}, Users: map[string]string{"a": "pw"}},
			[][2]string{{"--api-token", good}, {"--cluster-key", ""}}, ""},
		{"flag secret", Credentials{Secrets: []string{"short"}}, nil, "--auth-secret: secret 1 is 5 bytes"},
		{"file secret", Credentials{Secrets: []string{good, good, "CHANGE-ME"}}, nil,
			"--auth-secret-file /etc/supernode/secrets: secret 2 is a placeholder"},
		{"key", Credentials{}, [][2]string{{"--api-token", "CHANGE-ME-token-0123456789"}}, "--api-token is a placeholder"},
		{"password", Credentials{Users: map[string]string{"alice": "CHANGE-ME"}}, nil,
			`--user/--users-file: the password of "alice" is a placeholder`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := src.CheckReachable(tc.c, tc.keys...)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), "(the node listens off loopback)") {
				t.Fatalf("error %v, want %s ... (the node listens off loopback)", err, tc.want)
			}
		})
	}
}

// Open makes up a secret when none is configured; Reload replaces the
// store's credentials, or keeps them on an error or when none are left.
func TestOpenAndReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secrets")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, generated, err := Sources{}.Open("r")
	if err != nil || !generated || len(st.Current().Secrets) != 1 || len(st.Current().Secrets[0]) < 32 || st.Realm() != "r" {
		t.Fatalf("Open without credentials: %v, generated %v, %q", err, generated, st.Current().Secrets)
	}
	if _, err := (Sources{}).Reload(st); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("Reload without credentials: %v, want ErrNoCredentials", err)
	}

	good := "0123456789abcdef0123"
	write(good + "\n")
	src := Sources{SecretFile: file, Reachable: true, Keys: [][2]string{{"--api-token", good}}}
	if st, generated, err = src.Open("r"); err != nil || generated || st.Current().Secrets[0] != good {
		t.Fatalf("Open: %v, generated %v, %q", err, generated, st.Current().Secrets)
	}
	write("CHANGE-ME\n")
	if _, err := src.Reload(st); err == nil || !strings.Contains(err.Error(), "placeholder") {
		t.Fatalf("Reload of a placeholder on a reachable node: %v", err)
	}
	if got := st.Current().Secrets; len(got) != 1 || got[0] != good {
		t.Fatalf("secrets after a refused reload %q, want the old one", got)
	}
	if _, _, err := src.Open("r"); err == nil {
		t.Fatal("Open of a placeholder on a reachable node succeeded")
	}
	src.Reachable = false // loopback: anything goes
	if c, err := src.Reload(st); err != nil || c.Secrets[0] != "CHANGE-ME" || st.Current().Secrets[0] != "CHANGE-ME" {
		t.Fatalf("Reload on loopback: %v %q", err, st.Current().Secrets)
	}
	src.Reachable, src.Keys = true, [][2]string{{"--cluster-key", "short"}}
	write(good + "\n")
	if _, err := src.Reload(st); err == nil || !strings.HasPrefix(err.Error(), "--cluster-key is 5 bytes") {
		t.Fatalf("Reload with a weak key: %v", err)
	}
}
