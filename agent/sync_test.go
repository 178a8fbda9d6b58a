package agent

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// ---------------------------------------------------------------------------
// Helpers

func first(n int, names ...string) backends.SyncConfig {
	return backends.SyncConfig{Method: backends.SyncFirst, Num: n, Names: names}
}

func anyOf(n int, names ...string) backends.SyncConfig {
	return backends.SyncConfig{Method: backends.SyncAny, Num: n, Names: names}
}

func streaming(name string, flushed uint64, state string) backends.ReplicaConn {
	return backends.ReplicaConn{Name: name, State: "streaming", SyncState: state, Flushed: pos(flushed)}
}

func syncKey(mode string, q int, members ...string) *dcs.Versioned[dcs.SyncState] {
	if members == nil {
		members = []string{}
	}
	return &dcs.Versioned[dcs.SyncState]{Value: dcs.SyncState{Leader: "a", Mode: mode, Members: members, Quorum: q}, Version: 7}
}

// leaderIn is the planner input of leader "a" with standbys b, c, d all
// members of the cluster; cases set the mode, the key, the database and
// its replication connections.
func leaderIn(mode string, n int) syncInput {
	return syncInput{
		Me: "a", Mode: mode, N: n,
		Members: map[string]dcs.Member{"a": {Name: "a"}, "b": {Name: "b"}, "c": {Name: "c"}, "d": {Name: "d"}},
		Compare: lsnCmp,
	}
}

func applied(cfg backends.SyncConfig, flush uint64) *SyncApplied {
	return &SyncApplied{Config: cfg, Flush: pos(flush)}
}

// ---------------------------------------------------------------------------
// The leader's steps, one at a time, in rule 6's order.

func TestPlanSync(t *testing.T) {
	cases := []struct {
		name   string
		in     func() syncInput
		want   syncStepKind
		dcs    *dcs.SyncState       // the key written (for syncWriteDCS)
		db     *backends.SyncConfig // the configuration set (for syncSetDB)
		reason string
	}{
		// Off.
		{"off without a key: nothing to do", func() syncInput { return leaderIn(SyncOff, 1) }, syncNone, nil, nil, "asynchronous"},
		{"turning off: the key says off before the database stops waiting", func() syncInput {
			in := leaderIn(SyncOff, 1)
			in.Sync, in.DB = syncKey(SyncOn, 1, "b"), first(1, "b")
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOff}, nil, "before the database stops waiting"},
		{"turning off, key already off: then the database stops waiting", func() syncInput {
			in := leaderIn(SyncOff, 1)
			in.Sync, in.DB = syncKey(SyncOff, 0), first(1, "b")
			return in
		}, syncSetDB, nil, &backends.SyncConfig{}, "stops waiting"},

		// The key always names the leader.
		{"on, no key yet: the leader records itself with an empty set first", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Replicas = []backends.ReplicaConn{streaming("b", 900, "async")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{}}, nil, "sync key is missing"},
		{"on, the key names the former leader: rewritten with an empty set", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync = syncKey(SyncOn, 1, "a")
			in.Sync.Value.Leader = "x"
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{}}, nil, `names "x"`},
		{"on, undecodable key: overwritten, nobody promised anything", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.SyncErr = &dcs.Versioned[dcs.SyncState]{Version: 9}, "invalid character"
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{}}, nil, "cannot be decoded"},

		// Adding: database first, key last.
		{"on, a standby streams: the database waits for it first", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync = syncKey(SyncOn, 0)
			in.Replicas = []backends.ReplicaConn{streaming("b", 900, "async")}
			return in
		}, syncSetDB, nil, ptr(first(1, "b")), "waits for FIRST 1 (b)"},
		{"on, the database waits for b, not yet confirmed: wait", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 0), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "potential")}
			return in
		}, syncWait, nil, nil, "not yet confirmed"},
		{"on, b synchronous but not flushed past the change: wait", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 0), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 999, "sync")}
			return in
		}, syncWait, nil, nil, "not yet confirmed"},
		{"on, b synchronous and caught up: into the key last", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 0), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "sync")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{"b"}, Quorum: 1}, nil, "into the sync key last"},
		{"on, steady state: nothing", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 5000, "sync"), streaming("c", 5000, "async")}
			return in
		}, syncNone, nil, nil, "as configured"},
		{"on, after an agent restart (no flushed position known): the configuration is applied again", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB = syncKey(SyncOn, 1, "b"), first(1, "b")
			in.Replicas = []backends.ReplicaConn{streaming("b", 5000, "sync")}
			return in
		}, syncSetDB, nil, ptr(first(1, "b")), "applying FIRST 1 (b) again"},

		// A frozen synchronous standby (connected, not replying) while
		// commits wait: replaced like a gone one, key first.
		{"on, commits wait and the synchronous standby stopped replying: out of the key first", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			b := streaming("b", 1000, "sync")
			b.Unconfirmed = 3 * time.Second
			in.Replicas = []backends.ReplicaConn{b, streaming("c", 5000, "async")}
			in.SyncWait, in.StallAfter = 2*time.Second, time.Second
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{}, Quorum: 0}, nil, "stalled while commits wait 2s (retry_timeout 1s): b (no reply for 3s)"},
		{"on, frozen b out of the key: the database waits for c instead", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 0), first(1, "b"), applied(first(1, "b"), 1000)
			b := streaming("b", 1000, "sync")
			b.Unconfirmed = 3 * time.Second
			in.Replicas = []backends.ReplicaConn{b, streaming("c", 5000, "async")}
			in.SyncWait, in.StallAfter = 2*time.Second, time.Second
			return in
		}, syncSetDB, nil, ptr(first(1, "c")), "waits for FIRST 1 (c)"},
		{"on, an idle standby that has not replied for long is not stalled while no commit waits", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			b := streaming("b", 1000, "sync")
			b.Unconfirmed = 9 * time.Second // WAL arrived just now after a quiet period
			in.Replicas = []backends.ReplicaConn{b, streaming("c", 5000, "async")}
			in.SyncWait, in.StallAfter = 10*time.Millisecond, time.Second
			return in
		}, syncNone, nil, nil, "as configured"},
		{"on, commits wait on a standby that replied recently: kept (slow, not frozen)", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			b := streaming("b", 1000, "sync")
			b.Unconfirmed = 200 * time.Millisecond
			in.Replicas = []backends.ReplicaConn{b, streaming("c", 5000, "async")}
			in.SyncWait, in.StallAfter = 3*time.Second, time.Second
			return in
		}, syncNone, nil, nil, "as configured"},
		{"strict, the only standby frozen: commits keep waiting for it", func() syncInput {
			in := leaderIn(SyncStrict, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncStrict, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			b := streaming("b", 1000, "sync")
			b.Unconfirmed = 3 * time.Second
			in.Replicas = []backends.ReplicaConn{b}
			in.SyncWait, in.StallAfter = 3*time.Second, time.Second
			return in
		}, syncNone, nil, nil, "as configured"},

		// Removing: key first, database last.
		{"on, the synchronous standby is gone: out of the key first", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("c", 5000, "async")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{}, Quorum: 0}, nil, "out of the sync key first"},
		{"on, b out of the key: then the database waits for c instead", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 0), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("c", 5000, "async")}
			return in
		}, syncSetDB, nil, ptr(first(1, "c")), "instead of FIRST 1 (b)"},
		{"on, no standby left: asynchronous, the key keeps only the leader", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 0), first(1, "b"), applied(first(1, "b"), 1000)
			return in
		}, syncSetDB, nil, &backends.SyncConfig{}, "waits for async"},
		{"on, a nosync member is never synchronous", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync = syncKey(SyncOn, 0)
			in.Members["b"] = dcs.Member{Name: "b", NoSync: true}
			in.Replicas = []backends.ReplicaConn{streaming("b", 9000, "async"), streaming("c", 5000, "async")}
			return in
		}, syncSetDB, nil, ptr(first(1, "c")), ""},
		{"on, only a nosync member streams: stays asynchronous", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync = syncKey(SyncOn, 0)
			in.Members["b"] = dcs.Member{Name: "b", NoSync: true}
			in.Replicas = []backends.ReplicaConn{streaming("b", 9000, "async")}
			return in
		}, syncNone, nil, nil, "no standby available"},
		{"on, a nofailover member is chosen only after members that can take over", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync = syncKey(SyncOn, 0)
			in.Members["b"] = dcs.Member{Name: "b", NoFailover: true}
			in.Replicas = []backends.ReplicaConn{streaming("b", 9000, "async"), streaming("c", 5000, "async")}
			return in
		}, syncSetDB, nil, ptr(first(1, "c")), ""},
		{"on, a standby that is not a member of the cluster is never chosen", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync = syncKey(SyncOn, 0)
			in.Replicas = []backends.ReplicaConn{streaming("pg_basebackup", 9000, "async")}
			return in
		}, syncNone, nil, nil, "no standby available"},

		// synchronous_node_count changes.
		{"on, N 1 -> 2: the database waits for both before the key grows", func() syncInput {
			in := leaderIn(SyncOn, 2)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 5000, "sync"), streaming("c", 5000, "async")}
			return in
		}, syncSetDB, nil, ptr(first(2, "b", "c")), ""},
		{"on, N 2 -> 1: the key shrinks before the database stops waiting", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 2, "b", "c"), first(2, "b", "c"), applied(first(2, "b", "c"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 5000, "sync"), streaming("c", 5000, "sync")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{"b"}, Quorum: 1}, nil, "out of the sync key first"},

		// Strict: never falls back.
		{"strict, no standby at all: the database waits for one that cannot exist", func() syncInput {
			in := leaderIn(SyncStrict, 1)
			in.Sync = syncKey(SyncStrict, 0)
			return in
		}, syncSetDB, nil, ptr(first(1, NoStandbyName)), ""},
		{"strict, the synchronous standby died and none is left: nothing changes, writes wait", func() syncInput {
			in := leaderIn(SyncStrict, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncStrict, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			delete(in.Members, "b")
			return in
		}, syncNone, nil, nil, "as configured"},
		{"strict, another standby streams: b out of the key first", func() syncInput {
			in := leaderIn(SyncStrict, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncStrict, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("c", 5000, "async")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncStrict, Members: []string{}, Quorum: 0}, nil, "out of the sync key first"},
		{"strict, N=2 with one standby: waits for it and for the one that left", func() syncInput {
			in := leaderIn(SyncStrict, 2)
			in.Sync, in.DB, in.Applied = syncKey(SyncStrict, 2, "b", "c"), first(2, "b", "c"), applied(first(2, "b", "c"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 5000, "sync")}
			return in
		}, syncNone, nil, nil, "as configured"},

		// Quorum.
		{"quorum: ANY N over every available standby", func() syncInput {
			in := leaderIn(SyncQuorum, 1)
			in.Sync = syncKey(SyncQuorum, 0)
			in.Replicas = []backends.ReplicaConn{streaming("c", 5000, "async"), streaming("b", 5000, "async"), streaming("d", 5000, "async")}
			return in
		}, syncSetDB, nil, ptr(anyOf(1, "b", "c", "d")), ""},
		{"quorum: every voter confirmed: the key promises 1 of 3", func() syncInput {
			in := leaderIn(SyncQuorum, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncQuorum, 0), anyOf(1, "b", "c", "d"), applied(anyOf(1, "b", "c", "d"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "quorum"), streaming("c", 1200, "quorum"), streaming("d", 1000, "quorum")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncQuorum, Members: []string{"b", "c", "d"}, Quorum: 1}, nil, "into the sync key last"},
		{"quorum: two of three confirmed: they join, the quorum stays", func() syncInput {
			in := leaderIn(SyncQuorum, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncQuorum, 0), anyOf(1, "b", "c", "d"), applied(anyOf(1, "b", "c", "d"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "quorum"), streaming("c", 1200, "quorum"), streaming("d", 900, "quorum")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncQuorum, Members: []string{"b", "c"}, Quorum: 0}, nil, ""},
		{"quorum: a voter left: the key promises nothing until the database counts without it", func() syncInput {
			in := leaderIn(SyncQuorum, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncQuorum, 1, "b", "c", "d"), anyOf(1, "b", "c", "d"), applied(anyOf(1, "b", "c", "d"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "quorum"), streaming("c", 1000, "quorum")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncQuorum, Members: []string{"b", "c"}, Quorum: 0}, nil, "out of the sync key first"},
		{"quorum 2 of 3, a voter left: the key keeps 1 of the 2 left", func() syncInput {
			in := leaderIn(SyncQuorum, 2)
			in.Sync, in.DB, in.Applied = syncKey(SyncQuorum, 2, "b", "c", "d"), anyOf(2, "b", "c", "d"), applied(anyOf(2, "b", "c", "d"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "quorum"), streaming("c", 1000, "quorum")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncQuorum, Members: []string{"b", "c"}, Quorum: 1}, nil, ""},
		{"quorum, N raised 1 -> 2: the database counts more acknowledgements first", func() syncInput {
			in := leaderIn(SyncQuorum, 2)
			in.Sync, in.DB, in.Applied = syncKey(SyncQuorum, 1, "b", "c", "d"), anyOf(1, "b", "c", "d"), applied(anyOf(1, "b", "c", "d"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "quorum"), streaming("c", 1000, "quorum"), streaming("d", 1000, "quorum")}
			return in
		}, syncSetDB, nil, ptr(anyOf(2, "b", "c", "d")), ""},
		{"quorum, N raised: the promise grows only once every voter flushed past the change", func() syncInput {
			in := leaderIn(SyncQuorum, 2)
			in.Sync, in.DB, in.Applied = syncKey(SyncQuorum, 1, "b", "c", "d"), anyOf(2, "b", "c", "d"), applied(anyOf(2, "b", "c", "d"), 2000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 2000, "quorum"), streaming("c", 2000, "quorum"), streaming("d", 1500, "quorum")}
			return in
		}, syncNone, nil, nil, "as configured"},
		{"quorum, N lowered 2 -> 1: the promise shrinks first", func() syncInput {
			in := leaderIn(SyncQuorum, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncQuorum, 2, "b", "c", "d"), anyOf(2, "b", "c", "d"), applied(anyOf(2, "b", "c", "d"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "quorum"), streaming("c", 1000, "quorum"), streaming("d", 1000, "quorum")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncQuorum, Members: []string{"b", "c", "d"}, Quorum: 1}, nil, ""},

		// A key that promises more than the database keeps (a hand edit).
		{"the database waits for less than the key promises: the key is lowered", func() syncInput {
			in := leaderIn(SyncOn, 1)
			in.Sync, in.DB = syncKey(SyncOn, 1, "b"), backends.SyncConfig{}
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "async")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{}, Quorum: 0}, nil, "promises 1 of [b]"},
		{"mode on -> quorum: the key records the mode, keeping what still holds", func() syncInput {
			in := leaderIn(SyncQuorum, 1)
			in.Sync, in.DB, in.Applied = syncKey(SyncOn, 1, "b"), first(1, "b"), applied(first(1, "b"), 1000)
			in.Replicas = []backends.ReplicaConn{streaming("b", 1000, "sync"), streaming("c", 1000, "async")}
			return in
		}, syncWriteDCS, &dcs.SyncState{Leader: "a", Mode: SyncQuorum, Members: []string{"b"}, Quorum: 1}, nil, "changed from on to quorum"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in()
			got := planSync(in)
			if got.Kind != tc.want {
				t.Fatalf("step %s (%s), want %s", got.Kind, got.Reason, tc.want)
			}
			if tc.reason != "" && !strings.Contains(got.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", got.Reason, tc.reason)
			}
			if tc.dcs != nil {
				w, g := *tc.dcs, got.DCS
				if g.Leader != w.Leader || g.Mode != w.Mode || g.Quorum != w.Quorum || !slices.Equal(g.Members, w.Members) {
					t.Errorf("key written %+v, want %+v", g, w)
				}
			}
			if tc.db != nil && !got.DB.Equal(*tc.db) {
				t.Errorf("database set to %s, want %s", got.DB, tc.db)
			}
			// Whatever the step, it never breaks the promise against the
			// configuration that is (or becomes) in effect.
			if got.Kind == syncWriteDCS && got.DCS.Active() && got.DCS.Quorum > maxQuorum(in.DB, got.DCS.Members) {
				t.Errorf("the key would promise %d of %v while the database waits for %s", got.DCS.Quorum, got.DCS.Members, in.DB)
			}
			if got.Kind == syncSetDB && in.Sync != nil && in.Sync.Value.Active() && in.Sync.Value.Quorum > maxQuorum(got.DB, in.Sync.Value.Members) {
				t.Errorf("the database would wait for %s while the key promises %d of %v", got.DB, in.Sync.Value.Quorum, in.Sync.Value.Members)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// ---------------------------------------------------------------------------
// The promise under a storm of events (rule 6 as a property).
//
// A model primary with standbys b, c, d: commits are acknowledged when the
// configuration in effect says so, standbys die, come back and catch up at
// random, synchronous_node_count and the mode change. After every step of
// the planner, every acknowledged commit must be on at least Quorum members
// of the sync key (the promise failover relies on).

type simStandby struct {
	alive   bool
	flushed uint64
}

type simCommit struct {
	lsn   uint64
	acked bool
}

type sim struct {
	fail     func(format string, args ...any)
	rng      *rand.Rand
	lsn      uint64
	standbys map[string]*simStandby
	db       backends.SyncConfig
	key      *dcs.Versioned[dcs.SyncState]
	applied  *SyncApplied
	commits  []*simCommit
	mode     string
	n        int
	steps    int
	plan     func(in syncInput) syncStep
}

func newSim(fail func(string, ...any), seed int64, plan func(syncInput) syncStep) *sim {
	s := &sim{fail: fail, rng: rand.New(rand.NewSource(seed)), standbys: map[string]*simStandby{}, mode: SyncOn, n: 1, plan: plan}
	for _, n := range []string{"b", "c", "d"} {
		s.standbys[n] = &simStandby{alive: true}
	}
	return s
}

// satisfied: enough of the standbys the database waits for flushed c.
func (s *sim) satisfied(c *simCommit) bool {
	if s.db.Async() {
		return true
	}
	have := 0
	for _, n := range s.db.Names {
		if sb, ok := s.standbys[n]; ok && sb.alive && sb.flushed >= c.lsn {
			have++
		}
	}
	return have >= s.db.Num
}

func (s *sim) release() {
	for _, c := range s.commits {
		if !c.acked && s.satisfied(c) {
			c.acked = true
		}
	}
}

func (s *sim) input() syncInput {
	in := syncInput{Me: "a", Mode: s.mode, N: s.n, Sync: s.key, DB: s.db, Applied: s.applied, Compare: lsnCmp,
		Members: map[string]dcs.Member{"a": {Name: "a"}}}
	// pg_stat_replication as PostgreSQL computes it.
	for _, n := range []string{"b", "c", "d"} {
		sb := s.standbys[n]
		if !sb.alive {
			continue
		}
		in.Members[n] = dcs.Member{Name: n}
		st := "async"
		if s.db.Has(n) {
			if s.db.Method == backends.SyncAny {
				st = "quorum"
			} else {
				// the first Num connected names by priority are sync
				rank := 0
				for _, m := range s.db.Names {
					if o, ok := s.standbys[m]; ok && o.alive {
						rank++
					}
					if m == n {
						break
					}
				}
				if rank <= s.db.Num {
					st = "sync"
				} else {
					st = "potential"
				}
			}
		}
		in.Replicas = append(in.Replicas, backends.ReplicaConn{Name: n, State: "streaming", SyncState: st, Flushed: pos(sb.flushed)})
	}
	return in
}

// check asserts the promise: every acknowledged commit is on at least
// Quorum members of the key (when the key is active).
func (s *sim) check(what string) {
	if s.key == nil {
		return
	}
	held := func(m string) uint64 {
		if sb, ok := s.standbys[m]; ok {
			return sb.flushed
		}
		return 0
	}
	if broken := brokenPromise(s.key.Value, s.commits, held); broken != "" {
		s.fail("after %s (step %d): %s (database: %s)", what, s.steps, broken, s.db)
	}
}

// brokenPromise says how an active sync key k breaks its promise to the
// acknowledged commits ("" when it keeps it): every one must be held
// (held(member) >= its lsn) by at least Quorum of Members.
func brokenPromise(k dcs.SyncState, commits []*simCommit, held func(member string) uint64) string {
	if !k.Active() {
		return ""
	}
	for _, c := range commits {
		if !c.acked {
			continue
		}
		have := 0
		for _, m := range k.Members {
			if held(m) >= c.lsn {
				have++
			}
		}
		if have < k.Quorum {
			return fmt.Sprintf("commit at %d was acknowledged but only %d of %v hold it, the key promises %d", c.lsn, have, k.Members, k.Quorum)
		}
	}
	return ""
}

// loop is one leader loop: planner steps until nothing is left to do now.
func (s *sim) loop() {
	for i := 0; i < maxSyncSteps; i++ {
		st := s.plan(s.input())
		s.steps++
		switch st.Kind {
		case syncNone, syncWait:
			return
		case syncWriteDCS:
			ver := int64(1)
			if s.key != nil {
				ver = s.key.Version + 1
			}
			s.key = &dcs.Versioned[dcs.SyncState]{Value: st.DCS, Version: ver}
			s.check("writing the key " + fmt.Sprint(st.DCS))
		case syncSetDB:
			s.db = st.DB
			s.applied = &SyncApplied{Config: st.DB, Flush: pos(s.lsn)}
			s.release()
			s.check("setting the database to " + st.DB.String())
		}
	}
}

func (s *sim) event() {
	names := []string{"b", "c", "d"}
	sb := s.standbys[names[s.rng.Intn(3)]]
	switch r := s.rng.Intn(100); {
	case r < 40: // a commit
		s.lsn++
		s.commits = append(s.commits, &simCommit{lsn: s.lsn})
	case r < 70: // a standby receives and flushes WAL (all, or part of it)
		if sb.alive && sb.flushed < s.lsn {
			sb.flushed += uint64(1 + s.rng.Intn(int(s.lsn-sb.flushed)))
		}
	case r < 78:
		sb.alive = false
	case r < 88:
		sb.alive = true
	case r < 93:
		s.n = 1 + s.rng.Intn(3)
	case r < 96:
		s.mode = []string{SyncOn, SyncStrict, SyncQuorum, SyncOn, SyncQuorum, SyncOff}[s.rng.Intn(6)]
	default:
		s.loop()
	}
	s.release()
	s.check("an event")
}

func runSim(t *testing.T, seed int64, plan func(syncInput) syncStep, events int) {
	s := newSim(t.Fatalf, seed, plan)
	for i := 0; i < events; i++ {
		s.event()
		if i%5 == 0 {
			s.loop()
		}
	}
}

func TestSyncPromiseUnderRandomEvents(t *testing.T) {
	for seed := int64(1); seed <= 300; seed++ {
		runSim(t, seed, planSync, 400)
	}
}

// The checker above is not vacuous: planners that take a step out of
// rule 6's order break the promise, and the simulation catches it.
func TestSyncPromiseCheckerCatchesWrongOrder(t *testing.T) {
	wrong := map[string]func(syncInput) syncStep{
		// Into the key as soon as the database is told to wait, without
		// waiting for the standby to confirm.
		"key before confirmation": func(in syncInput) syncStep {
			st := planSync(in)
			if st.Kind == syncSetDB && !st.DB.Async() && in.Sync != nil && in.Sync.Value.Leader == in.Me {
				return syncStep{Kind: syncWriteDCS, DCS: dcs.SyncState{Leader: in.Me, Mode: in.Mode, Members: st.DB.Names, Quorum: st.DB.Num}}
			}
			return st
		},
		// Out of the database before out of the key.
		"database before key": func(in syncInput) syncStep {
			st := planSync(in)
			if st.Kind == syncWriteDCS && in.Sync != nil && in.Sync.Value.Leader == in.Me && len(st.DCS.Members) < len(in.Sync.Value.Members) {
				t := syncTarget(in, in.Sync.Value.Members)
				if !t.Equal(in.DB) {
					return syncStep{Kind: syncSetDB, DB: t}
				}
			}
			return st
		},
	}
	for name, plan := range wrong {
		t.Run(name, func(t *testing.T) {
			caught := false
			for seed := int64(1); seed <= 300 && !caught; seed++ {
				func() {
					defer func() {
						if r := recover(); r != nil {
							if _, ok := r.(fatalCatcher); !ok {
								panic(r)
							}
							caught = true
						}
					}()
					s := newSim(func(format string, args ...any) { panic(fatalCatcher{msg: fmt.Sprintf(format, args...)}) }, seed, plan)
					for i := 0; i < 400; i++ {
						s.event()
						if i%5 == 0 {
							s.loop()
						}
					}
				}()
			}
			if !caught {
				t.Fatalf("a planner that takes %q was not caught breaking the promise", name)
			}
		})
	}
}

// fatalCatcher is the panic value of a simulation that found the promise
// broken.
type fatalCatcher struct{ msg string }

// ---------------------------------------------------------------------------
// Failover under the sync rules: who may race.

// syncObs is member b after leader a died, in a cluster whose sync key is
// key; peers c and d answer with the given live states.
func syncObs(key *dcs.Versioned[dcs.SyncState], peers map[string]PeerResult) *Observation {
	o := obs()
	noLeader(o)
	o.Cluster.Sync = key
	o.Peers = peers
	return o
}

func TestFailoverUnderSyncRules(t *testing.T) {
	behind := func(n string, p uint64) PeerResult {
		return peer(n, PeerStatus{Position: pos(p), Replayed: pos(p), Timeline: 2})
	}
	cases := []struct {
		name   string
		key    *dcs.Versioned[dcs.SyncState]
		peers  map[string]PeerResult
		mut    func(o *Observation)
		want   Action
		reason string
	}{
		{"no sync key: asynchronous rules", nil, nil, nil, ActAcquire, "racing"},
		{"sync key off: asynchronous rules", syncKey(SyncOff, 0), nil, nil, ActAcquire, "racing"},
		{"on: a member of the sync set races on its own", syncKey(SyncOn, 1, "b"), nil, nil, ActAcquire, "quorum rule holds"},
		{"on: a member outside the sync set does not race", syncKey(SyncOn, 1, "c"), map[string]PeerResult{"c": behind("c", 900)}, nil,
			ActWait, "not in sync set"},
		{"on: the leader fell back to asynchronous (empty set): nobody races", syncKey(SyncOn, 0), nil, nil, ActWait, "not in sync set"},
		{"on: the former leader the key names may race again (it acknowledged only what it has)", syncKey(SyncOn, 1, "c"), nil, func(o *Observation) {
			o.Cluster.Sync.Value.Leader = "b"
		}, ActAcquire, "the leader the sync key names"},
		{"undecodable sync key: nobody races", &dcs.Versioned[dcs.SyncState]{Version: 3}, nil, func(o *Observation) { o.Cluster.SyncError = "unexpected EOF" },
			ActWait, "cannot be decoded"},
		{"quorum 1 of 3: b reaches c and d at or behind it", syncKey(SyncQuorum, 1, "b", "c", "d"),
			map[string]PeerResult{"c": behind("c", 1000), "d": behind("d", 990)}, nil, ActAcquire, "3 of the 3"},
		{"quorum 1 of 3: d unreachable, b cannot prove it holds every commit", syncKey(SyncQuorum, 1, "b", "c", "d"),
			map[string]PeerResult{"c": behind("c", 1000), "d": {Name: "d", Err: fmt.Errorf("connection refused")}}, nil, ActWait, "cannot prove"},
		{"quorum 2 of 3: one other member reached is enough", syncKey(SyncQuorum, 2, "b", "c", "d"),
			map[string]PeerResult{"c": behind("c", 1000), "d": {Name: "d", Err: fmt.Errorf("connection refused")}}, nil, ActAcquire, "2 of the 3"},
		{"quorum 2 of 3: a member ahead that may not take over is not a vote", syncKey(SyncQuorum, 2, "b", "c", "d"),
			map[string]PeerResult{"c": peer("c", PeerStatus{Position: pos(1100), Timeline: 2, NoFailover: true}), "d": {Name: "d", Err: fmt.Errorf("timeout")}},
			nil, ActWait, "ahead: c at"},
		{"quorum 2 of 3: a member whose database is stopped is not a vote", syncKey(SyncQuorum, 2, "b", "c", "d"),
			map[string]PeerResult{"c": peer("c", PeerStatus{Position: pos(900), Timeline: 2, State: StateStopped}), "d": {Name: "d", Err: fmt.Errorf("timeout")}},
			nil, ActWait, "c database not running"},
		{"quorum 2 of 3: a member on another timeline is not a vote", syncKey(SyncQuorum, 2, "b", "c", "d"),
			map[string]PeerResult{"c": peer("c", PeerStatus{Position: pos(900), Timeline: 3}), "d": {Name: "d", Err: fmt.Errorf("timeout")}},
			nil, ActWait, "c on timeline 3"},
		{"quorum 0: the promise is empty, nobody races", syncKey(SyncQuorum, 0, "b", "c"), map[string]PeerResult{"c": behind("c", 900)}, nil,
			ActWait, "promises no member"},
		{"on: a lagging member of the sync set still obeys maximum_lag_on_failover", syncKey(SyncOn, 1, "b"), nil, func(o *Observation) {
			o.DB.Replayed, o.DB.Position = pos(100), pos(100)
			o.Cluster.Status.Position = pos(5 << 20)
		}, ActWait, "exceeds maximum_lag_on_failover"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := syncObs(tc.key, tc.peers)
			if tc.mut != nil {
				tc.mut(o)
			}
			d := decide(o)
			if d.Action != tc.want || !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("decision %s: %s\nwant %s containing %q", d.Action, d.Reason, tc.want, tc.reason)
			}
		})
	}
}

// What `steward list` shows before any failure: a replica outside the sync
// set is not eligible, and says why; each member's sync state.
func TestSyncStatePublished(t *testing.T) {
	o := obs()
	o.Cluster.Sync = syncKey(SyncOn, 1, "c")
	ok, why := readiness(o)
	if ok || !strings.Contains(strings.Join(why, "; "), "not in sync set") {
		t.Fatalf("readiness of a member outside the sync set: %v %v", ok, why)
	}
	if s := memberSyncState(o.Cluster, "b", true); s != "async" {
		t.Errorf("b sync state %q, want async", s)
	}
	if s := memberSyncState(o.Cluster, "c", true); s != "sync" {
		t.Errorf("c sync state %q, want sync", s)
	}
	o.Cluster.Sync = syncKey(SyncQuorum, 1, "b", "c")
	if s := memberSyncState(o.Cluster, "b", true); s != "quorum" {
		t.Errorf("b sync state in quorum mode %q, want quorum", s)
	}
	if s := memberSyncState(o.Cluster, "a", false); s != "" {
		t.Errorf("the leader's sync state %q, want none", s)
	}
	o.Cluster.Sync = syncKey(SyncQuorum, 0, "b", "c")
	if s := memberSyncState(o.Cluster, "b", true); s != "async" {
		t.Errorf("b counted by an empty promise: %q, want async", s)
	}
	ok, _ = readiness(obs())
	if !ok {
		t.Fatal("without a sync key the replica should be eligible")
	}
}

// The healthy leader's decision carries its next sync step.
func TestDecideLeaderCarriesSyncStep(t *testing.T) {
	o := obs()
	asLeader(o)
	o.Config.SynchronousMode = SyncOn
	d := decide(o)
	if d.Action != ActLead || d.Sync == nil || d.Sync.Kind != syncWriteDCS {
		t.Fatalf("decision %+v, want lead with a sync-key write", d)
	}
	o.Cluster.Sync = syncKey(SyncOn, 0)
	o.DB.Replicas = []backends.ReplicaConn{streaming("b", 1000, "async")}
	d = decide(o)
	if d.Sync == nil || d.Sync.Kind != syncSetDB || !d.Sync.DB.Equal(first(1, "b")) {
		t.Fatalf("decision %+v, want the database to wait for b", d.Sync)
	}
}

// ---------------------------------------------------------------------------
// A new leader writes sync before promoting (rule 6).

// A backend without synchronous replication (MySQL today) never writes a
// sync key: a key with an empty set would stop every later failover.
func TestNoSyncKeyWithoutSyncBackend(t *testing.T) {
	var events []string
	fs := newFakeStore("b", 11)
	st := &syncStore{fakeStore: fs, events: &events}
	dyn := config.DefaultDynamic()
	dyn.SynchronousMode = SyncOn
	a := New(Options{Self: Self{Name: "b", Priority: 1}, Store: st, Backend: &fakeDB{}, Bootstrap: dyn})
	a.setLead(11, time.Now())
	o := obs()
	o.Config = dyn
	o.Lead = a.lead
	a.promote(context.Background(), o, Decision{Action: ActPromote, Reason: "test"}, "failover")
	asLeader(o)
	a.manageSync(context.Background(), o, &syncStep{Kind: syncWriteDCS, DCS: dcs.SyncState{Leader: "a", Mode: SyncOn}})
	if len(st.written) != 0 {
		t.Fatalf("sync key written with a backend that cannot replicate synchronously: %v", st.written)
	}
}

type syncStore struct {
	*fakeStore
	mu      sync.Mutex
	fail    error
	written []dcs.SyncState
	events  *[]string
}

func (s *syncStore) CASSync(_ context.Context, v dcs.SyncState, version, term int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		*s.events = append(*s.events, "sync-cas-failed")
		return 0, s.fail
	}
	s.written = append(s.written, v)
	*s.events = append(*s.events, "sync:"+v.Mode+fmt.Sprint(v.Members))
	return version + 1, nil
}

type syncDB struct {
	*fakeDB
	events *[]string
}

func (d *syncDB) Promote(context.Context) error {
	*d.events = append(*d.events, "promote")
	return nil
}

func (d *syncDB) SetSync(_ context.Context, cfg backends.SyncConfig) (backends.Position, error) {
	*d.events = append(*d.events, "set-database:"+cfg.String())
	return backends.Position{}, nil
}

func TestNewLeaderWritesSyncBeforePromoting(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode string
		key  *dcs.Versioned[dcs.SyncState]
		fail error
		want []string
	}{
		{"on", SyncOn, nil, nil, []string{"sync:on[]", "set-database:async", "promote"}},
		{"on, in the sync set", SyncOn, syncKey(SyncOn, 1, "b"), nil, []string{"sync:on[]", "set-database:async", "promote"}},
		{"strict waits for a standby from the start", SyncStrict, nil, nil, []string{"sync:strict[]", "set-database:FIRST 1 (" + NoStandbyName + ")", "promote"}},
		{"the write fails: no promotion", SyncOn, nil, dcs.ErrConflict, []string{"sync-cas-failed"}},
		{"off and no key: nothing written", SyncOff, nil, nil, []string{"promote"}},
		{"no longer in the sync set when re-read: no promotion, key released", SyncOn, syncKey(SyncOn, 1, "c"), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var events []string
			fs := newFakeStore("b", 11)
			fs.cl.Sync = tc.key
			st := &syncStore{fakeStore: fs, fail: tc.fail, events: &events}
			db := &syncDB{fakeDB: &fakeDB{}, events: &events}
			dyn := config.DefaultDynamic()
			dyn.SynchronousMode = tc.mode
			a := New(Options{Self: Self{Name: "b", Priority: 1}, Store: st, Backend: db, Bootstrap: dyn})
			a.setLead(11, time.Now())
			o := obs()
			o.Config = dyn
			o.Lead = a.lead
			a.promote(context.Background(), o, Decision{Action: ActPromote, Reason: "test"}, "failover")
			if !slices.Equal(events, tc.want) {
				t.Fatalf("events %v, want %v", events, tc.want)
			}
			if tc.want == nil && (a.LeaseDeadline() != time.Time{} || fs.cl.Leader != nil) {
				t.Fatalf("the key was kept (deadline %v, leader %v)", a.LeaseDeadline(), fs.cl.Leader)
			}
		})
	}
}
