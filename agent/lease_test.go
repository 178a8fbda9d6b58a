package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// fakeStore is an in-memory DCS for loop tests. down makes every call fail
// as an unreachable etcd would.
type fakeStore struct {
	mu       sync.Mutex
	cl       dcs.Cluster
	down     bool
	lastSent time.Time // send time of the last successful keep-alive
	renewals int
	puts     int // member key writes
	events   chan dcs.LeaderEvent
}

func newFakeStore(leader string, term int64) *fakeStore {
	f := &fakeStore{events: make(chan dcs.LeaderEvent, 16)}
	f.cl = dcs.Cluster{
		Members:     map[string]dcs.Member{},
		Status:      &dcs.Status{Leader: leader, Term: term, Timeline: 1, Position: pos(1000)},
		Initialize:  &dcs.Versioned[dcs.Initialize]{Value: dcs.Initialize{Member: leader, SystemID: "7000"}, Version: 1},
		LastHistory: &dcs.HistoryRecord{Kind: "bootstrap", NewLeader: leader, Term: term, Timeline: 1},
	}
	if leader != "" {
		f.cl.Leader = &dcs.Leader{Name: leader, Term: term, Lease: 42}
	}
	return f
}

func (f *fakeStore) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }

func (f *fakeStore) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return dcs.ErrUnavailable
	}
	return nil
}

func (f *fakeStore) Load(ctx context.Context) (*dcs.Cluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		// An unreachable etcd answers nothing until the deadline.
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		return nil, dcs.ErrUnavailable
	}
	c := f.cl
	c.Members = map[string]dcs.Member{}
	for k, v := range f.cl.Members {
		c.Members[k] = v
	}
	return &c, nil
}
func (f *fakeStore) KeepAlive(ctx context.Context) (time.Time, error) {
	sent := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return time.Time{}, dcs.ErrUnavailable
	}
	f.lastSent = sent
	f.renewals++
	return sent, nil
}
func (f *fakeStore) AcquireLeader(ctx context.Context) (dcs.Leader, time.Time, error) {
	return dcs.Leader{}, time.Time{}, dcs.ErrConflict
}
func (f *fakeStore) ReleaseLeader(ctx context.Context, term int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return dcs.ErrUnavailable
	}
	if f.cl.Leader == nil || (term != 0 && f.cl.Leader.Term != term) {
		return dcs.ErrNotLeader
	}
	f.cl.Leader = nil
	return nil
}
func (f *fakeStore) AdoptLease(ctx context.Context, lease int64) (time.Time, error) {
	return f.KeepAlive(ctx)
}
func (f *fakeStore) Lease() int64 { return 42 }
func (f *fakeStore) RotateLease(context.Context, *dcs.Member) (time.Time, error) {
	return time.Now(), nil
}
func (f *fakeStore) SetTimings(time.Duration, time.Duration) {}
func (f *fakeStore) TTL() time.Duration                      { return 4 * time.Second }
func (f *fakeStore) RevokeSession(context.Context) error     { return nil }
func (f *fakeStore) PutMember(ctx context.Context, m dcs.Member) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return dcs.ErrUnavailable
	}
	f.cl.Members[m.Name] = m
	f.puts++
	return nil
}
func (f *fakeStore) PutStatus(context.Context, dcs.Status, int64) error { return f.err() }
func (f *fakeStore) CASConfig(context.Context, []byte, int64) (int64, error) {
	return 1, f.err()
}
func (f *fakeStore) CreateInitialize(context.Context, dcs.Initialize) (int64, error) {
	return 0, dcs.ErrConflict
}
func (f *fakeStore) UpdateInitialize(context.Context, dcs.Initialize, int64) (int64, error) {
	return 1, f.err()
}
func (f *fakeStore) DeleteInitialize(context.Context, int64) error { return f.err() }
func (f *fakeStore) PutSwitchover(context.Context, dcs.Switchover, int64) (int64, error) {
	return 1, f.err()
}
func (f *fakeStore) DeleteSwitchover(context.Context, int64) error { return f.err() }
func (f *fakeStore) CASSync(context.Context, dcs.SyncState, int64, int64) (int64, error) {
	return 1, f.err()
}
func (f *fakeStore) AppendHistory(context.Context, dcs.HistoryRecord) (int64, error) {
	return 1, f.err()
}
func (f *fakeStore) WatchLeader(ctx context.Context) <-chan dcs.LeaderEvent {
	out := make(chan dcs.LeaderEvent)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-f.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// fakeDB is a primary that accepts writes until fenced. hang makes Observe
// block without honouring its context (a stuck database call).
type fakeDB struct {
	mu       sync.Mutex
	writable bool
	fencedAt time.Time
	hang     chan struct{} // non-nil: Observe blocks until closed
	advance  bool          // the position moves on every Observe (a busy primary)
	lsn      uint64
	hbErr    error // what Heartbeat returns
}

func (d *fakeDB) Kind() string { return "fake" }
func (d *fakeDB) Observe(ctx context.Context) backends.Status {
	d.mu.Lock()
	h := d.hang
	d.mu.Unlock()
	if h != nil {
		<-h
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.fencedAt.IsZero() {
		return backends.Status{State: backends.StateCrashed, SystemID: "7000"}
	}
	p := pos(1000)
	if d.advance {
		d.lsn += 100
		p = pos(1000 + d.lsn)
	}
	return backends.Status{State: backends.StateRunning, Writable: d.writable, Timeline: 1, Position: p, SystemID: "7000"}
}
func (d *fakeDB) Bootstrap(context.Context) (string, error)                      { return "7000", nil }
func (d *fakeDB) Clone(context.Context, backends.Upstream) error                 { return nil }
func (d *fakeDB) Start(context.Context, backends.Role, *backends.Upstream) error { return nil }
func (d *fakeDB) Stop(context.Context, backends.StopMode) error {
	return d.FenceWrites(context.Background())
}
func (d *fakeDB) Promote(context.Context) error                    { return nil }
func (d *fakeDB) Follow(context.Context, *backends.Upstream) error { return nil }
func (d *fakeDB) Rewind(context.Context, backends.Upstream) error  { return nil }
func (d *fakeDB) Wipe(context.Context) error                       { return nil }
func (d *fakeDB) EnsureSlots(context.Context, []string) error      { return nil }
func (d *fakeDB) Heartbeat(context.Context, string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hbErr
}
func (d *fakeDB) Lag(l, p backends.Position) int64   { return lsnLag(l, p) }
func (d *fakeDB) Compare(a, b backends.Position) int { return lsnCmp(a, b) }
func (d *fakeDB) Divergence(context.Context, backends.Upstream) (backends.Divergence, error) {
	return backends.Divergence{}, nil
}
func (d *fakeDB) FenceWrites(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fencedAt.IsZero() {
		d.fencedAt = time.Now()
	}
	d.writable = false
	return nil
}
func (d *fakeDB) fenced() time.Time { d.mu.Lock(); defer d.mu.Unlock(); return d.fencedAt }

func leaderAgent(st *fakeStore, db *fakeDB) *Agent {
	dyn := config.DefaultDynamic()
	dyn.TTL = config.Duration(4 * time.Second)
	dyn.LoopWait = config.Duration(500 * time.Millisecond)
	dyn.RetryTimeout = config.Duration(time.Second)
	return New(Options{
		Self: Self{Name: "a", Priority: 1}, Store: st, Backend: db, Bootstrap: dyn,
		SafetyMargin: func(time.Duration) time.Duration { return 800 * time.Millisecond },
	})
}

// Rule 1: with etcd unreachable, the primary stops taking writes by
// t_sent + ttl − margin of its last successful renewal, on its own timer.
func TestFenceAtDeadlineWhenEtcdUnreachable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("a", 5)
		db := &fakeDB{writable: true}
		a := leaderAgent(st, db)
		defer startAgent(a)()
		time.Sleep(3 * time.Second) // the agent adopts the key and renews
		if a.LeaseDeadline().IsZero() {
			t.Fatal("the agent did not take up its leadership")
		}
		st.setDown(true)
		cut := time.Now()
		time.Sleep(10 * time.Second)
		fenced := db.fenced()
		if fenced.IsZero() {
			t.Fatal("the database was never fenced with etcd unreachable")
		}
		st.mu.Lock()
		last := st.lastSent
		st.mu.Unlock()
		want := last.Add(4*time.Second - 800*time.Millisecond)
		if fenced.After(want) {
			t.Fatalf("fenced %v after the deadline (last renewal sent %v before the cut)", fenced.Sub(want), cut.Sub(last))
		}
		if fenced.Before(want) {
			t.Fatalf("fenced %v before the deadline", want.Sub(fenced))
		}
	})
}

// Rule 1 with the loop stuck on a database call that ignores its deadline
// and etcd unreachable: the timer still fences before ttl.
func TestFenceWhenLoopStuckAndEtcdUnreachable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("a", 5)
		db := &fakeDB{writable: true}
		a := leaderAgent(st, db)
		defer startAgent(a)()
		time.Sleep(3 * time.Second)
		hang := make(chan struct{})
		defer close(hang) // runs before the agent is stopped (defers are LIFO)
		db.mu.Lock()
		db.hang = hang
		db.mu.Unlock()
		time.Sleep(time.Second) // the loop is now stuck in Observe
		st.setDown(true)
		time.Sleep(10 * time.Second)
		fenced := db.fenced()
		st.mu.Lock()
		last := st.lastSent
		st.mu.Unlock()
		if fenced.IsZero() || fenced.After(last.Add(4*time.Second)) {
			t.Fatalf("stuck loop + etcd down: fenced at %v, last renewal %v (want before last+ttl)", fenced, last)
		}
	})
}

// A loop stuck for longer than ttl stops renewing, even with etcd healthy,
// so that a hung agent is failed over (and its database fenced).
func TestStuckLoopStopsRenewing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("a", 5)
		db := &fakeDB{writable: true}
		a := leaderAgent(st, db)
		defer startAgent(a)()
		time.Sleep(3 * time.Second)
		hang := make(chan struct{})
		defer close(hang) // runs before the agent is stopped (defers are LIFO)
		db.mu.Lock()
		db.hang = hang
		db.mu.Unlock()
		stuckAt := time.Now()
		time.Sleep(15 * time.Second)
		st.mu.Lock()
		last := st.lastSent
		st.mu.Unlock()
		if last.Sub(stuckAt) > 4*time.Second+time.Second {
			t.Fatalf("renewals went on %v after the loop got stuck; want them to stop after ttl", last.Sub(stuckAt))
		}
		if db.fenced().IsZero() {
			t.Fatal("the hung leader's database was not fenced after renewals stopped")
		}
	})
}

// Healthy: renewals keep the deadline ahead and nothing is fenced, even when
// a loop is slow (the keeper renews from its own goroutine).
func TestRenewalsKeepLeaderAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("a", 5)
		db := &fakeDB{writable: true}
		a := leaderAgent(st, db)
		defer startAgent(a)()
		time.Sleep(60 * time.Second)
		if !db.fenced().IsZero() {
			t.Fatal("a healthy leader was fenced")
		}
		if d := a.LeaseDeadline(); time.Until(d) < 2*time.Second {
			t.Fatalf("lease deadline only %v ahead", time.Until(d))
		}
		st.mu.Lock()
		n := st.renewals
		st.mu.Unlock()
		if n < 100 || n > 130 {
			t.Fatalf("%d renewals in 60s at loop_wait 500ms, want ~120", n)
		}
	})
}

// startAgent runs the agent in the test's bubble and returns the function
// that stops it (deferred, so that a failing test still stops it).
func startAgent(a *Agent) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// A member that does not lead renews its session lease (which only keeps
// its member key alive) three times per ttl, not every loop; once it leads,
// it renews on the leader's cadence (every loop_wait) at once.
func TestRenewalCadenceFollowsLeadership(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("b", 5) // someone else leads
		db := &fakeDB{writable: false}
		a := leaderAgent(st, db) // ttl 4s, loop_wait 500ms, margin 800ms
		defer startAgent(a)()
		count := func() int { st.mu.Lock(); defer st.mu.Unlock(); return st.renewals }
		time.Sleep(time.Second) // the first loop ran
		n0 := count()
		time.Sleep(20 * time.Second)
		// ttl/3 = 1.33s: 15 renewals in 20 s (every loop_wait would be 40).
		if n := count() - n0; n < 14 || n > 16 {
			t.Fatalf("a member that does not lead renewed %d times in 20s, want 15 (every ttl/3)", n)
		}
		// The key now carries this member's name (it adopts it): from then
		// on every loop_wait (500 ms), the renewal interval of a leader.
		st.mu.Lock()
		st.cl.Leader = &dcs.Leader{Name: "a", Term: 7, Lease: 42}
		st.mu.Unlock()
		a.Wake()
		time.Sleep(time.Second)
		if a.LeaseDeadline().IsZero() {
			t.Fatal("the agent did not take up the leadership")
		}
		n1 := count()
		time.Sleep(10 * time.Second)
		if n := count() - n1; n < 19 || n > 21 {
			t.Fatalf("a leader renewed %d times in 10s, want 20 (every loop_wait)", n)
		}
	})
}

// The member key is rewritten when only the positions moved at most every
// positionRefresh (ttl/3 here), but at once when anything else changed.
func TestMemberKeyWritesOnPositionDrift(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("a", 5)
		db := &fakeDB{writable: true, advance: true}
		a := leaderAgent(st, db) // ttl 4s, loop_wait 500ms
		defer startAgent(a)()
		puts := func() int { st.mu.Lock(); defer st.mu.Unlock(); return st.puts }
		time.Sleep(3 * time.Second)
		n0 := puts()
		time.Sleep(20 * time.Second)
		// 40 loops, each with a new position: a write at the first loop at
		// least ttl/3 (1.33 s) after the last one, i.e. every third loop
		// (1.5 s) or sooner when a loop runs late: 13 to 15 in 20 s.
		if n := puts() - n0; n < 12 || n > 16 {
			t.Fatalf("%d member key writes in 20s of position drift, want 13-15 (every ttl/3, not every loop)", n)
		}
		st.mu.Lock()
		if m := st.cl.Members["a"]; m.Position.IsZero() || m.Role != dcs.RolePrimary {
			t.Fatalf("published member: %+v", m)
		}
		st.mu.Unlock()
		// A change of anything else is published in the same loop.
		time.Sleep(200 * time.Millisecond) // just after a loop
		n1 := puts()
		a.Reconfigure(Self{Priority: 7}, nil, false)
		time.Sleep(50 * time.Millisecond)
		st.mu.Lock()
		prio := st.cl.Members["a"].Priority
		st.mu.Unlock()
		if prio != 7 || puts() != n1+1 {
			t.Fatalf("after a tag change: priority %d published, %d writes (want 7, one write at once)", prio, puts()-n1)
		}
	})
}

// A replica's lag crossing maximum_lag_on_failover is published at once, in
// either direction, even inside the position refresh interval: otherwise
// `list` and /cluster show a caught-up replica as not eligible for seconds
// after a WAL segment switch on the leader.
func TestMemberKeyWritesWhenLagCrossesTheFailoverLimit(t *testing.T) {
	st := newFakeStore("b", 5)
	db := &fakeDB{}
	a := leaderAgent(st, db)
	a.opts.Self.Name = "a"
	dyn := config.DefaultDynamic() // maximum_lag_on_failover 1MB, ttl 30s
	now := time.Now()
	step := func(leaderPos, replayed uint64) (writes int, lag int64) {
		t.Helper()
		st.mu.Lock()
		st.cl.Status.Position = pos(leaderPos)
		st.mu.Unlock()
		cl, _ := st.Load(context.Background()) // what the loop reads
		o := &Observation{
			Now: now, Cluster: cl, Config: dyn, Self: Self{Name: "a"},
			DB: backends.Status{State: backends.StateRunning, InRecovery: true, Streaming: true,
				Timeline: 1, Position: pos(replayed), Received: pos(replayed), Replayed: pos(replayed), SystemID: "7000"},
			Lag: lsnLag, Compare: lsnCmp,
		}
		before := st.puts
		a.publish(context.Background(), o, Decision{Action: ActNone})
		now = now.Add(100 * time.Millisecond)
		return st.puts - before, st.cl.Members["a"].LagBytes
	}
	if n, lag := step(1000, 1000); n != 1 || lag != 0 {
		t.Fatalf("first publish: %d writes, lag %d; want 1 write, lag 0", n, lag)
	}
	if n, _ := step(2000, 1500); n != 0 {
		t.Fatalf("a 500-byte lag inside the refresh interval was written (%d writes); want none", n)
	}
	if n, lag := step(1000+16<<20, 1500); n != 1 || lag != 16<<20-500 {
		t.Fatalf("lag beyond the limit: %d writes, published lag %d; want 1 write at once", n, lag)
	}
	if n, lag := step(1000+16<<20, 1000+16<<20); n != 1 || lag != 0 {
		t.Fatalf("caught up again: %d writes, published lag %d; want 1 write at once with lag 0", n, lag)
	}
}

// A leader whose database crashes soon after every restart in place (a full
// disk: PostgreSQL PANICs at its first WAL write) has not started, even when
// a loop catches it running between two crashes: after primary_start_timeout
// it hands the key to an eligible replica. Only a committed heartbeat ends
// the restart period.
func TestCrashLoopingPrimaryIsReleased(t *testing.T) {
	for _, tc := range []struct {
		name      string
		hbErr     error
		want      Action
		wantTimer bool
	}{
		{"running between crashes, heartbeat failing", errors.New("heartbeat: the primary cannot commit: No space left on device"), ActRelease, true},
		{"running between crashes, heartbeat committed", nil, ActStartPrimary, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := &fakeDB{writable: true, hbErr: tc.hbErr}
			a := leaderAgent(newFakeStore("a", 10), db)
			now := t0
			a.lead = LeadState{Held: true, Term: 10, Deadline: now.Add(time.Hour)}
			a.mem.StartingSince = now // the first restart in place (act.go)
			crashed := backends.Status{State: backends.StateCrashed, SystemID: "7000"}
			running := backends.Status{State: backends.StateRunning, Writable: true, Timeline: 2, Position: pos(1000), SystemID: "7000"}
			for i := 1; i <= 12; i++ { // 6 s of loops: running, crashed, running, ...
				now = now.Add(500 * time.Millisecond)
				st := crashed
				if i%2 == 1 {
					st = running
				}
				a.checkHealth(context.Background(), nil, st, now, time.Second)
			}
			if got := !a.mem.StartingSince.IsZero(); got != tc.wantTimer {
				t.Fatalf("restart period still counted = %v, want %v (StartingSince %v)", got, tc.wantTimer, a.mem.StartingSince)
			}
			o := obs()
			asLeader(o)
			o.Now = now
			o.Lead.Deadline = now.Add(time.Hour)
			o.Config.PrimaryStartTimeout = config.Duration(5 * time.Second)
			o.DB = crashed
			o.Mem = a.mem
			o.Peers = map[string]PeerResult{"b": peer("b", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000)})}
			if d := decide(o); d.Action != tc.want {
				t.Fatalf("decision %s (%s), want %s", d.Action, d.Reason, tc.want)
			}
			// With no eligible replica the leader keeps restarting, and says why.
			o.Peers = map[string]PeerResult{"b": peer("b", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1), NoFailover: true})}
			if d := decide(o); d.Action != ActStartPrimary || (tc.wantTimer && !strings.Contains(d.Reason, "no replica is eligible")) {
				t.Fatalf("without an eligible replica: decision %s (%s), want %s saying no replica is eligible", d.Action, d.Reason, ActStartPrimary)
			}
		})
	}
}
