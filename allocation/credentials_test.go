package allocation

import (
	"errors"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestRESTPasswordMatchesCoturnScheme(t *testing.T) {
	// base64(HMAC-SHA1("secret", "1700000000:alice")), computed independently
	// with: printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
	if got, want := RESTPassword("secret", "1700000000:alice"), "d8soP47RbdIKLDUOpnJPVQyq5Ts="; got != want {
		t.Fatalf("RESTPassword = %s, want %s", got, want)
	}
}

func signed(t *testing.T, user, realm, pass string) *stun.Message {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.NewUsername(user), stun.NewRealm(realm), stun.NewNonce("n"),
		stun.NewLongTermIntegrity(user, realm, pass))
	if err != nil {
		t.Fatal(err)
	}
	d := &stun.Message{Raw: m.Raw}
	if err := d.Decode(); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestStoreVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	s := NewStore("r", Credentials{Users: map[string]string{"bob": "pw"}, Secrets: []string{"new", "old"}}, clock)

	user, pass, expiry, err := s.Mint("alice", time.Hour)
	if err != nil || expiry.Unix() != now.Unix()+3600 || user != "1700003600:alice" {
		t.Fatalf("Mint = %q %q %v %v", user, pass, expiry, err)
	}
	oldUser := "1700003600:carol"
	oldPass := RESTPassword("old", oldUser)

	for _, tc := range []struct {
		name           string
		user, realm, p string
		wantID         string
		wantErr        error
	}{
		{"static user", "bob", "r", "pw", "bob", nil},
		{"static wrong password", "bob", "r", "nope", "", ErrBadPassword},
		{"rest first secret", user, "r", pass, "alice", nil},
		{"rest rotated-out secret still verifies", oldUser, "r", oldPass, "carol", nil},
		{"rest wrong password", user, "r", "x", "", ErrBadPassword},
		{"wrong realm", "bob", "other", "pw", "", ErrBadRealm},
		{"unknown user", "eve", "r", "pw", "", ErrUnknownUser},
		{"malformed rest", "12x:alice", "r", "pw", "", ErrBadUsername},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, key, err := s.Verify(signed(t, tc.user, tc.realm, tc.p))
			if !errors.Is(err, tc.wantErr) || id != tc.wantID {
				t.Fatalf("Verify = %q, %v; want %q, %v", id, err, tc.wantID, tc.wantErr)
			}
			if err == nil {
				// The auth callback must now hand pion the same key.
				_, k2, err := s.Key(tc.user, tc.realm)
				if err != nil || string(k2) != string(key) {
					t.Fatalf("Key after Verify differs: %v", err)
				}
			}
		})
	}

	now = now.Add(2 * time.Hour) // past the credential's expiry
	if _, _, err := s.Verify(signed(t, user, "r", pass)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired credential: %v, want ErrExpired", err)
	}

	s.Set(Credentials{Secrets: []string{"other"}})
	if _, _, err := s.Verify(signed(t, "bob", "r", "pw")); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("after reload without bob: %v", err)
	}
}
