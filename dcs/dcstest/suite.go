package dcstest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// Store is what the conformance suite exercises: the operations the agent
// and the CLI need from a DCS.
type Store interface {
	KeepAlive(ctx context.Context) (time.Time, error)
	AcquireLeader(ctx context.Context) (dcs.Leader, time.Time, error)
	RenewLeader(ctx context.Context) (time.Time, error)
	ReleaseLeader(ctx context.Context, term int64) error
	GetLeader(ctx context.Context) (*dcs.Leader, error)
	WatchLeader(ctx context.Context) <-chan dcs.LeaderEvent
	PutMember(ctx context.Context, m dcs.Member) error
	DeleteMember(ctx context.Context, name string) error
	Members(ctx context.Context) ([]dcs.Member, error)
	Load(ctx context.Context) (*dcs.Cluster, error)
	PutStatus(ctx context.Context, st dcs.Status, term int64) error
	GetConfig(ctx context.Context) ([]byte, int64, error)
	CASConfig(ctx context.Context, cfg []byte, version int64) (int64, error)
	CreateInitialize(ctx context.Context, v dcs.Initialize) (int64, error)
	UpdateInitialize(ctx context.Context, v dcs.Initialize, version int64) (int64, error)
	DeleteInitialize(ctx context.Context, version int64) error
	PutSwitchover(ctx context.Context, v dcs.Switchover, version int64) (int64, error)
	DeleteSwitchover(ctx context.Context, version int64) error
	CASSync(ctx context.Context, v dcs.SyncState, version, term int64) (int64, error)
	AppendHistory(ctx context.Context, rec dcs.HistoryRecord) (int64, error)
	History(ctx context.Context) ([]dcs.HistoryRecord, error)
	Close() error
}

// Factory opens a store for one member of cluster `cluster` against the given
// endpoints, with the given lease TTL and per-call timeout.
type Factory func(t testing.TB, endpoints []string, cluster, member string, ttl, timeout time.Duration) Store

// Run runs the conformance suite against a live server. Each subtest uses
// its own cluster name, so they share the server without interfering.
func Run(t *testing.T, srv Server, open Factory) {
	eps := srv.Endpoints()
	n := 0
	cluster := func() string { n++; return fmt.Sprintf("c%d-%d", n, time.Now().UnixNano()%1e6) }
	ctx := context.Background()

	t.Run("ExactlyOneOf20ContendersAcquires", func(t *testing.T) {
		c := cluster()
		const N = 20
		stores := make([]Store, N)
		for i := range stores {
			stores[i] = open(t, eps, c, fmt.Sprintf("m%02d", i), 5*time.Second, 5*time.Second)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		results := make([]error, N)
		terms := make([]int64, N)
		for i := range stores {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				l, _, err := stores[i].AcquireLeader(ctx)
				results[i], terms[i] = err, l.Term
			}(i)
		}
		close(start)
		wg.Wait()
		winners := 0
		winner := -1
		for i, err := range results {
			switch {
			case err == nil:
				winners++
				winner = i
			case errors.Is(err, dcs.ErrConflict):
			default:
				t.Errorf("contender %d: unexpected error %v (want success or ErrConflict)", i, err)
			}
		}
		if winners != 1 {
			t.Fatalf("%d contenders acquired the leader key, want exactly 1", winners)
		}
		l, err := stores[0].GetLeader(ctx)
		if err != nil || l == nil {
			t.Fatalf("GetLeader: %v %v", l, err)
		}
		if l.Name != fmt.Sprintf("m%02d", winner) || l.Term != terms[winner] {
			t.Fatalf("leader key holds %s term %d, want m%02d term %d", l.Name, l.Term, winner, terms[winner])
		}
		t.Logf("MEASURED 20 concurrent contenders: exactly 1 winner (m%02d, term %d)", winner, l.Term)
	})

	t.Run("KeyExpiresWithinTTLPlus1sAfterRenewalsStop", func(t *testing.T) {
		c := cluster()
		ttl := 2 * time.Second
		a := open(t, eps, c, "a", ttl, 3*time.Second)
		w := open(t, eps, c, "w", ttl, 3*time.Second)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		events := w.WatchLeader(wctx)
		if _, _, err := a.AcquireLeader(ctx); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, events, func(ev dcs.LeaderEvent) bool { return ev.Leader != nil && ev.Leader.Name == "a" }, 5*time.Second)
		sent, err := a.RenewLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// a now stops renewing (its agent froze).
		waitEvent(t, events, func(ev dcs.LeaderEvent) bool { return ev.Leader == nil && !ev.Resync }, ttl+5*time.Second)
		gone := time.Since(sent)
		if gone > ttl+time.Second {
			t.Fatalf("leader key disappeared %v after the last renewal was sent, want <= ttl+1s (%v)", gone, ttl+time.Second)
		}
		if gone < ttl-200*time.Millisecond {
			t.Fatalf("leader key disappeared %v after the last renewal, before its ttl %v", gone, ttl)
		}
		t.Logf("MEASURED leader key (ttl %v) gone %v after its last renewal was sent", ttl, gone.Round(time.Millisecond))
		if _, err := a.RenewLeader(ctx); !errors.Is(err, dcs.ErrLeaseLost) {
			t.Fatalf("renewing an expired lease: got %v, want ErrLeaseLost", err)
		}
	})

	t.Run("WatcherSeesDeletionWithin100ms", func(t *testing.T) {
		c := cluster()
		a := open(t, eps, c, "a", 10*time.Second, 3*time.Second)
		w := open(t, eps, c, "w", 10*time.Second, 3*time.Second)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		events := w.WatchLeader(wctx)
		var worst time.Duration
		for i := 0; i < 5; i++ {
			l, _, err := a.AcquireLeader(ctx)
			if err != nil {
				t.Fatal(err)
			}
			waitEvent(t, events, func(ev dcs.LeaderEvent) bool { return ev.Leader != nil && ev.Leader.Term == l.Term }, 5*time.Second)
			t0 := time.Now()
			if err := a.ReleaseLeader(ctx, l.Term); err != nil {
				t.Fatal(err)
			}
			waitEvent(t, events, func(ev dcs.LeaderEvent) bool { return ev.Leader == nil }, 5*time.Second)
			d := time.Since(t0)
			if d > worst {
				worst = d
			}
		}
		if worst > 100*time.Millisecond {
			t.Fatalf("watcher saw the deletion %v after it was requested, want <= 100ms", worst)
		}
		t.Logf("MEASURED leader-key deletion seen by a watcher within %v (worst of 5, measured from the delete request)", worst.Round(time.Microsecond))
	})

	t.Run("ReleaseOnlyIfOurs", func(t *testing.T) {
		c := cluster()
		a := open(t, eps, c, "a", 10*time.Second, 3*time.Second)
		b := open(t, eps, c, "b", 10*time.Second, 3*time.Second)
		la, _, err := a.AcquireLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ReleaseLeader(ctx, 0); !errors.Is(err, dcs.ErrNotLeader) {
			t.Fatalf("b released a's key: err=%v, want ErrNotLeader", err)
		}
		if err := a.ReleaseLeader(ctx, la.Term+1); !errors.Is(err, dcs.ErrNotLeader) {
			t.Fatalf("release with a stale term: err=%v, want ErrNotLeader", err)
		}
		if l, _ := a.GetLeader(ctx); l == nil || l.Name != "a" {
			t.Fatalf("leader key after refused releases = %+v, want a", l)
		}
		if _, _, err := b.AcquireLeader(ctx); !errors.Is(err, dcs.ErrConflict) {
			t.Fatalf("b acquired a held key: %v", err)
		}
		if err := a.ReleaseLeader(ctx, la.Term); err != nil {
			t.Fatal(err)
		}
		lb, _, err := b.AcquireLeader(ctx)
		if err != nil {
			t.Fatalf("b could not acquire after a released: %v", err)
		}
		if lb.Term <= la.Term {
			t.Fatalf("new term %d not after old term %d", lb.Term, la.Term)
		}
		// a's term is over: its leader-only writes are refused.
		if err := a.PutStatus(ctx, dcs.Status{Leader: "a", Term: la.Term}, la.Term); !errors.Is(err, dcs.ErrNotLeader) {
			t.Fatalf("status write with an old term: %v, want ErrNotLeader", err)
		}
		if err := b.PutStatus(ctx, dcs.Status{Leader: "b", Term: lb.Term, Position: backends.Position{LSN: 42}}, lb.Term); err != nil {
			t.Fatalf("status write by the leader: %v", err)
		}
		cl, err := a.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cl.Status == nil || cl.Status.Leader != "b" || cl.Status.Position.LSN != 42 {
			t.Fatalf("status = %+v", cl.Status)
		}
	})

	t.Run("CASConflictsAreDistinct", func(t *testing.T) {
		c := cluster()
		a := open(t, eps, c, "a", 10*time.Second, 3*time.Second)
		b := open(t, eps, c, "b", 10*time.Second, 3*time.Second)
		// config
		v1, err := a.CASConfig(ctx, []byte(`{"ttl":"10s"}`), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.CASConfig(ctx, []byte(`{"ttl":"20s"}`), 0); !errors.Is(err, dcs.ErrConflict) {
			t.Fatalf("second create of config: %v, want ErrConflict", err)
		}
		v2, err := b.CASConfig(ctx, []byte(`{"ttl":"20s"}`), v1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.CASConfig(ctx, []byte(`{"ttl":"30s"}`), v1); !errors.Is(err, dcs.ErrConflict) {
			t.Fatalf("stale config CAS: %v, want ErrConflict", err)
		}
		got, ver, err := a.GetConfig(ctx)
		if err != nil || string(got) != `{"ttl":"20s"}` || ver != v2 {
			t.Fatalf("config = %s@%d (%v), want ttl 20s @%d", got, ver, err, v2)
		}
		// initialize: exactly one creator
		iv, err := a.CreateInitialize(ctx, dcs.Initialize{Member: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.CreateInitialize(ctx, dcs.Initialize{Member: "b"}); !errors.Is(err, dcs.ErrConflict) {
			t.Fatalf("second initialize: %v, want ErrConflict", err)
		}
		iv2, err := a.UpdateInitialize(ctx, dcs.Initialize{Member: "a", SystemID: "7300"}, iv)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.DeleteInitialize(ctx, iv); !errors.Is(err, dcs.ErrConflict) {
			t.Fatalf("stale initialize delete: %v, want ErrConflict", err)
		}
		// switchover: consumed exactly once
		sv, err := a.PutSwitchover(ctx, dcs.Switchover{Leader: "a", Candidate: "b"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.PutSwitchover(ctx, dcs.Switchover{Leader: "a"}, 0); !errors.Is(err, dcs.ErrConflict) {
			t.Fatalf("second pending switchover: %v, want ErrConflict", err)
		}
		var wg sync.WaitGroup
		var ok, conflict int
		var mu sync.Mutex
		for _, s := range []Store{a, b, a, b} {
			wg.Add(1)
			go func(s Store) {
				defer wg.Done()
				err := s.DeleteSwitchover(ctx, sv)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, dcs.ErrConflict):
					conflict++
				default:
					t.Errorf("delete switchover: %v", err)
				}
			}(s)
		}
		wg.Wait()
		if ok != 1 || conflict != 3 {
			t.Fatalf("switchover consumed %d times (%d conflicts), want exactly once", ok, conflict)
		}
		// sync: CAS and guarded by the term
		la, _, err := a.AcquireLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s1, err := a.CASSync(ctx, dcs.SyncState{Leader: "a"}, 0, la.Term)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.CASSync(ctx, dcs.SyncState{Leader: "a", Members: []string{"b"}}, 0, la.Term); !errors.Is(err, dcs.ErrConflict) {
			t.Fatalf("stale sync CAS: %v, want ErrConflict", err)
		}
		if _, err := b.CASSync(ctx, dcs.SyncState{Leader: "b"}, s1, la.Term); !errors.Is(err, dcs.ErrNotLeader) {
			t.Fatalf("sync write by a non-leader: %v, want ErrNotLeader", err)
		}
		if _, err := a.CASSync(ctx, dcs.SyncState{Leader: "a", Members: []string{"b"}}, s1, la.Term); err != nil {
			t.Fatal(err)
		}
		cl, err := b.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cl.Sync == nil || len(cl.Sync.Value.Members) != 1 || cl.Initialize == nil || cl.Initialize.Version != iv2 ||
			cl.Initialize.Value.SystemID != "7300" || cl.Switchover != nil || cl.Leader == nil || cl.Leader.Term != la.Term {
			t.Fatalf("loaded cluster does not reflect the writes: %+v", cl)
		}
	})

	t.Run("MembersAndHistory", func(t *testing.T) {
		c := cluster()
		a := open(t, eps, c, "a", 10*time.Second, 3*time.Second)
		b := open(t, eps, c, "b", 10*time.Second, 3*time.Second)
		for _, m := range []struct {
			s Store
			m dcs.Member
		}{{a, dcs.Member{Name: "a", Role: dcs.RolePrimary, State: "running"}}, {b, dcs.Member{Name: "b", Role: dcs.RoleReplica, State: "streaming", LagBytes: 12}}} {
			if err := m.s.PutMember(ctx, m.m); err != nil {
				t.Fatal(err)
			}
		}
		ms, err := a.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 2 || ms[0].Name != "a" || ms[1].Name != "b" || ms[1].LagBytes != 12 {
			t.Fatalf("members = %+v", ms)
		}
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				s := a
				if i%2 == 1 {
					s = b
				}
				if _, err := s.AppendHistory(ctx, dcs.HistoryRecord{Kind: "failover", Reason: fmt.Sprint(i)}); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		h, err := a.History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 6 {
			t.Fatalf("history has %d records, want 6", len(h))
		}
		for i, r := range h {
			if r.Index != int64(i+1) {
				t.Fatalf("history record %d has index %d", i, r.Index)
			}
		}
		cl, err := a.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cl.LastHistory == nil || cl.LastHistory.Index != 6 || len(cl.Members) != 2 {
			t.Fatalf("Load: last history %+v, %d members", cl.LastHistory, len(cl.Members))
		}
		if err := b.DeleteMember(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if ms, _ := a.Members(ctx); len(ms) != 1 {
			t.Fatalf("after delete: %d members", len(ms))
		}
	})
}

// RunUnavailable checks that with etcd gone every call returns an error
// within its deadline (timeout), classified as dcs.ErrUnavailable.
func RunUnavailable(t *testing.T, s Store, timeout time.Duration) {
	ctx := context.Background()
	calls := []struct {
		name string
		f    func() error
	}{
		{"KeepAlive", func() error { _, err := s.KeepAlive(ctx); return err }},
		{"AcquireLeader", func() error { _, _, err := s.AcquireLeader(ctx); return err }},
		{"RenewLeader", func() error { _, err := s.RenewLeader(ctx); return err }},
		{"ReleaseLeader", func() error { return s.ReleaseLeader(ctx, 1) }},
		{"GetLeader", func() error { _, err := s.GetLeader(ctx); return err }},
		{"PutMember", func() error { return s.PutMember(ctx, dcs.Member{Name: "x"}) }},
		{"Members", func() error { _, err := s.Members(ctx); return err }},
		{"Load", func() error { _, err := s.Load(ctx); return err }},
		{"PutStatus", func() error { return s.PutStatus(ctx, dcs.Status{}, 1) }},
		{"GetConfig", func() error { _, _, err := s.GetConfig(ctx); return err }},
		{"CASConfig", func() error { _, err := s.CASConfig(ctx, []byte("{}"), 0); return err }},
		{"CreateInitialize", func() error { _, err := s.CreateInitialize(ctx, dcs.Initialize{}); return err }},
		{"PutSwitchover", func() error { _, err := s.PutSwitchover(ctx, dcs.Switchover{}, 0); return err }},
		{"DeleteSwitchover", func() error { return s.DeleteSwitchover(ctx, 1) }},
		{"CASSync", func() error { _, err := s.CASSync(ctx, dcs.SyncState{}, 0, 1); return err }},
		{"AppendHistory", func() error { _, err := s.AppendHistory(ctx, dcs.HistoryRecord{}); return err }},
		{"History", func() error { _, err := s.History(ctx); return err }},
	}
	// The calls run concurrently (each has its own deadline), so the test
	// takes one deadline, not seventeen.
	durs := make([]time.Duration, len(calls))
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func(i int, f func() error) {
			defer wg.Done()
			t0 := time.Now()
			errs[i] = f()
			durs[i] = time.Since(t0)
		}(i, c.f)
	}
	wg.Wait()
	var worst time.Duration
	for i, c := range calls {
		err, d := errs[i], durs[i]
		if err == nil {
			t.Errorf("%s succeeded with etcd unreachable", c.name)
			continue
		}
		if !errors.Is(err, dcs.ErrUnavailable) {
			t.Errorf("%s: error %q is not classified as dcs.ErrUnavailable", c.name, err)
		}
		// A call may make up to two requests (renew, then write), each with
		// its own deadline.
		if d > 2*timeout+500*time.Millisecond {
			t.Errorf("%s took %v with etcd unreachable, want <= %v", c.name, d, 2*timeout+500*time.Millisecond)
		}
		if d > worst {
			worst = d
		}
	}
	t.Logf("MEASURED with etcd unreachable, %d calls each failed with ErrUnavailable; slowest %v (deadline %v)", len(calls), worst.Round(time.Millisecond), timeout)
}

func waitEvent(t testing.TB, ch <-chan dcs.LeaderEvent, ok func(dcs.LeaderEvent) bool, within time.Duration) dcs.LeaderEvent {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ev, open := <-ch:
			if !open {
				t.Fatalf("leader watch closed")
			}
			if ok(ev) {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no matching leader event within %v", within)
		}
	}
}
