package allocation

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTableQuotasExactUnderConcurrency(t *testing.T) {
	tb := NewTable(TableConfig{UserQuota: 3, TotalQuota: 10})
	var ok, userRej, totalRej atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("u%d", i%5) // 5 users x quota 3 = 15 > total 10
			k := Key{Listener: i % 4, Client: fmt.Sprintf("10.0.0.1:%d", i)}
			switch err := tb.Reserve(k, user); {
			case err == nil:
				ok.Add(1)
				tb.Commit(k, user, "udp", nil)
			case errors.Is(err, ErrUserQuota):
				userRej.Add(1)
			case errors.Is(err, ErrTotalQuota):
				totalRej.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 10 || tb.Count() != 10 {
		t.Fatalf("admitted %d (table %d), want exactly the total quota 10", ok.Load(), tb.Count())
	}
	for u := range 5 {
		if n := tb.UserCount(fmt.Sprintf("u%d", u)); n > 3 {
			t.Fatalf("user u%d holds %d, over quota 3", u, n)
		}
	}
	if ok.Load()+userRej.Load()+totalRej.Load() != 200 {
		t.Fatal("lost a request")
	}
}

func TestTableReleaseAndDelete(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := NewTable(TableConfig{UserQuota: 1, Now: func() time.Time { return now }})
	a, b := Key{0, "a"}, Key{0, "b"}
	if err := tb.Reserve(a, "u"); err != nil {
		t.Fatal(err)
	}
	if err := tb.Reserve(b, "u"); !errors.Is(err, ErrUserQuota) {
		t.Fatalf("second reservation: %v, want ErrUserQuota", err)
	}
	tb.Release(a) // the allocation failed: slot comes back
	if err := tb.Reserve(b, "u"); err != nil {
		t.Fatalf("after release: %v", err)
	}
	tb.Commit(b, "u", "tcp", nil)
	now = now.Add(90 * time.Second)
	e, ok := tb.Delete(b)
	if !ok || e.Transport != "tcp" || now.Sub(e.Created) != 90*time.Second {
		t.Fatalf("Delete = %+v, %v", e, ok)
	}
	if tb.UserCount("u") != 0 || tb.Count() != 0 {
		t.Fatal("counts not back to zero")
	}
}

func TestTablePendingExpires(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := NewTable(TableConfig{TotalQuota: 1, Now: func() time.Time { return now }})
	if err := tb.Reserve(Key{0, "a"}, "u"); err != nil {
		t.Fatal(err)
	}
	if err := tb.Reserve(Key{0, "b"}, "u"); !errors.Is(err, ErrTotalQuota) {
		t.Fatalf("got %v, want ErrTotalQuota", err)
	}
	now = now.Add(pendingTimeout + time.Second) // creation never reported
	if err := tb.Reserve(Key{0, "b"}, "u"); err != nil {
		t.Fatalf("stale reservation not reclaimed: %v", err)
	}
}

func TestTableSetExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := NewTable(TableConfig{Now: func() time.Time { return now }})
	k := Key{Listener: 0, Client: "192.0.2.1:5000"}
	tb.SetExpiry(k, now.Add(time.Minute)) // no allocation yet: nothing to set
	if err := tb.Reserve(k, "alice"); err != nil {
		t.Fatal(err)
	}
	tb.Commit(k, "alice", "udp", nil)
	if e := tb.List()[0]; !e.Expires.IsZero() {
		t.Fatalf("expiry before SetExpiry: %v", e.Expires)
	}
	tb.SetExpiry(k, now.Add(10*time.Minute))
	e, ok := tb.Delete(k)
	if !ok || !e.Expires.Equal(now.Add(10*time.Minute)) || !e.Created.Equal(now) {
		t.Fatalf("deleted %+v %v", e, ok)
	}
}
