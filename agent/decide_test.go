package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func lsnLag(leader, pos backends.Position) int64 {
	if leader.LSN == 0 || pos.LSN == 0 {
		return -1
	}
	if pos.LSN >= leader.LSN {
		return 0
	}
	return int64(leader.LSN - pos.LSN)
}

func lsnCmp(a, b backends.Position) int {
	switch {
	case a.LSN < b.LSN:
		return -1
	case a.LSN > b.LSN:
		return 1
	}
	return 0
}

func pos(n uint64) backends.Position { return backends.Position{LSN: n} }

// obs builds an observation of member "b", a healthy streaming replica of
// leader "a", with status at LSN 1000, timeline 2. Cases mutate it.
func obs() *Observation {
	dyn := config.DefaultDynamic()
	return &Observation{
		Now:    t0,
		Config: dyn,
		Self:   Self{Name: "b", Priority: 1, Rewind: true},
		Cluster: &dcs.Cluster{
			Leader: &dcs.Leader{Name: "a", Term: 10, Lease: 1},
			Members: map[string]dcs.Member{
				"a": {Name: "a", Role: dcs.RolePrimary, DBURL: "127.0.0.1:5432", APIURL: "http://127.0.0.1:8008"},
				"b": {Name: "b", Role: dcs.RoleReplica, DBURL: "127.0.0.1:5433", APIURL: "http://127.0.0.1:8009"},
			},
			Status:      &dcs.Status{Leader: "a", Term: 10, Timeline: 2, Position: pos(1000)},
			Initialize:  &dcs.Versioned[dcs.Initialize]{Value: dcs.Initialize{Member: "a", SystemID: "7000"}, Version: 3},
			LastHistory: &dcs.HistoryRecord{Kind: "failover", NewLeader: "a", Term: 10, Timeline: 2},
		},
		DB: backends.Status{State: backends.StateRunning, InRecovery: true, Streaming: true, Timeline: 2,
			Position: pos(1000), Received: pos(1000), Replayed: pos(1000), Upstream: "127.0.0.1:5432", SystemID: "7000"},
		Lag:     lsnLag,
		Compare: lsnCmp,
	}
}

// asLeader turns the observation into member "a", the healthy leader.
func asLeader(o *Observation) {
	o.Self.Name = "a"
	o.Lead = LeadState{Held: true, Term: 10, Deadline: t0.Add(5 * time.Second)}
	o.DB = backends.Status{State: backends.StateRunning, Writable: true, Timeline: 2, Position: pos(1000), SystemID: "7000"}
}

func noLeader(o *Observation) {
	o.Cluster.Leader = nil
	delete(o.Cluster.Members, "a")
	o.DB.Streaming = false
	o.DB.Upstream = "127.0.0.1:5432"
}

func peer(name string, p PeerStatus) PeerResult {
	p.Name = name
	if p.Priority == 0 {
		p.Priority = 1
	}
	if p.State == "" {
		p.State = StateRunning
	}
	return PeerResult{Name: name, Status: p}
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name   string
		mut    func(o *Observation)
		want   Action
		reason string // fragment the reason must contain
	}{
		// Steady states.
		{"streaming replica does nothing", func(o *Observation) {}, ActNone, "streaming from a"},
		{"healthy leader leads", asLeader, ActLead, "healthy leader"},

		// Rule 1: one writer.
		{"writable database while another member holds the key is demoted", func(o *Observation) {
			o.DB = backends.Status{State: backends.StateRunning, Writable: true, Timeline: 2, Position: pos(1200), SystemID: "7000"}
		}, ActDemote, "holds the leader key"},
		{"leader whose key is now someone else's demotes", func(o *Observation) {
			asLeader(o)
			o.Cluster.Leader = &dcs.Leader{Name: "c", Term: 11}
		}, ActDemote, "held by c"},
		{"leader whose key vanished demotes", func(o *Observation) {
			asLeader(o)
			o.Cluster.Leader = nil
		}, ActDemote, "gone"},
		{"leader whose key has a new term (re-created by someone) demotes", func(o *Observation) {
			asLeader(o)
			o.Cluster.Leader.Name = "a"
			o.Cluster.Leader.Term = 11
		}, ActDemote, "term 11"},
		{"DCS unreachable: leader keeps running until its deadline", func(o *Observation) {
			asLeader(o)
			o.Cluster, o.DCSErr = nil, errors.New("etcd down")
		}, ActWait, "until the lease deadline"},
		{"DCS unreachable: writable database without the key is demoted", func(o *Observation) {
			o.Cluster, o.DCSErr = nil, errors.New("etcd down")
			o.DB.Writable, o.DB.InRecovery = true, false
		}, ActDemote, "without the key"},
		{"DCS unreachable: stopped database starts read-only", func(o *Observation) {
			o.Cluster, o.DCSErr = nil, errors.New("etcd down")
			o.DB = backends.Status{State: backends.StateCrashed}
		}, ActStartReplica, "read-only"},
		{"lease deadline passed (not yet fenced): not a leader any more", func(o *Observation) {
			asLeader(o)
			o.Lead.Deadline = t0.Add(-time.Millisecond)
			o.Cluster.Leader.Name = "a"
		}, ActDemote, "lease deadline passed"},

		// Restart while the key lives: adopt, do not restart.
		{"agent restarted while its key lives adopts it", func(o *Observation) {
			asLeader(o)
			o.Lead = LeadState{}
		}, ActAdopt, "adopting"},

		// Rule 11: a writable primary without a key.
		{"primary without a key that was the last leader takes it back", func(o *Observation) {
			asLeader(o)
			o.Lead = LeadState{}
			o.Cluster.Leader = nil
		}, ActReacquire, "taking the key back"},
		{"primary without a key that was not the last leader demotes", func(o *Observation) {
			asLeader(o)
			o.Lead = LeadState{}
			o.Cluster.Leader = nil
			o.Cluster.LastHistory.NewLeader = "c"
		}, ActDemote, "last leader was c"},
		{"stale primary on an older timeline demotes (Patroni #2779)", func(o *Observation) {
			asLeader(o)
			o.Lead = LeadState{}
			o.Cluster.Leader = nil
			o.DB.Timeline = 1
		}, ActDemote, "timeline 1 is behind"},

		// Rule 2/3: the race.
		{"no leader, eligible, peers behind: race", func(o *Observation) {
			noLeader(o)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(900), Replayed: pos(900)})}
		}, ActAcquire, "racing"},
		{"no leader, a peer's database is still writable: no race", func(o *Observation) {
			noLeader(o)
			o.Peers = map[string]PeerResult{"a": peer("a", PeerStatus{Role: "primary", Writable: true, Timeline: 2, Position: pos(1000)})}
		}, ActWait, "writable database"},
		{"no leader, an unreachable old primary does not block", func(o *Observation) {
			noLeader(o)
			o.Peers = map[string]PeerResult{"a": {Name: "a", Err: errors.New("connection refused")}}
		}, ActAcquire, "racing"},
		{"no leader, an eligible peer is ahead: no race", func(o *Observation) {
			noLeader(o)
			o.DB.Position, o.DB.Replayed = pos(990), pos(990)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000)})}
		}, ActWait, "c is ahead"},
		{"no leader, a nofailover peer ahead does not block", func(o *Observation) {
			noLeader(o)
			o.DB.Position, o.DB.Replayed = pos(990), pos(990)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000), NoFailover: true})}
		}, ActAcquire, "racing"},
		{"no leader, a lagging peer ahead in received WAL does not block", func(o *Observation) {
			noLeader(o)
			o.Cluster.Status.Position = pos(5_000_000)
			o.DB.Position, o.DB.Replayed = pos(4_900_000), pos(4_900_000)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(5_000_000), Replayed: pos(100)})}
		}, ActAcquire, "racing"},
		{"no leader, a peer ahead that cannot promote (full WAL disk) does not block", func(o *Observation) {
			noLeader(o)
			o.DB.Position, o.DB.Replayed = pos(990), pos(990)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000),
				CannotPromote: []string{"not enough disk space to promote: 256.0 kB free"}})}
		}, ActAcquire, "racing"},
		{"no leader, a peer ahead backing off after its failed promotion does not block", func(o *Observation) {
			noLeader(o)
			o.DB.Position, o.DB.Replayed = pos(990), pos(990)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000),
				CannotPromote: []string{"backing off after a failed promotion until 12:00:05"}})}
		}, ActAcquire, "racing"},
		{"no leader, this member cannot promote (full WAL disk): no race", func(o *Observation) {
			noLeader(o)
			o.DB.CannotPromote = "not enough disk space to promote: 256.0 kB free on the filesystem of /data/pg_wal"
		}, ActWait, "not enough disk space to promote"},
		{"no leader, a peer ahead that cannot promote still counts against the quorum rule", func(o *Observation) {
			noLeader(o)
			o.Config.SynchronousMode = SyncOn
			o.Cluster.Sync = &dcs.Versioned[dcs.SyncState]{Value: dcs.SyncState{Leader: "a", Members: []string{"b", "c"}, Quorum: 1, Mode: SyncOn}, Version: 1}
			o.DB.Position, o.DB.Replayed = pos(990), pos(990)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000),
				CannotPromote: []string{"not enough disk space to promote"}})}
		}, ActWait, "ahead: c"},
		{"no leader, MySQL: this member holds a tail the last promotion discarded: no race", func(o *Observation) {
			noLeader(o)
			o.Cluster.LastHistory = &dcs.HistoryRecord{Kind: "failover", NewLeader: "a", Term: 10, Forked: backends.Position{GTID: "fork"}}
			o.SinceFork = func(pos, fork backends.Position) string {
				if fork.GTID == "fork" && pos.LSN == 1000 {
					return "holds transactions written after the last promotion's fork point by another server"
				}
				return ""
			}
		}, ActWait, "after the last promotion's fork point"},
		{"no leader, MySQL: a diverged peer with such a tail does not block the member that has the new primary's writes", func(o *Observation) {
			noLeader(o)
			o.Cluster.LastHistory = &dcs.HistoryRecord{Kind: "failover", NewLeader: "a", Term: 10, Forked: backends.Position{GTID: "fork"}}
			o.SinceFork = func(pos, fork backends.Position) string {
				if pos.LSN == 2000 {
					return "holds transactions written after the last promotion's fork point by another server"
				}
				return ""
			}
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Position: pos(2000), Replayed: pos(2000)})}
		}, ActAcquire, "racing"},
		{"no leader, equal position and higher priority elsewhere: no race", func(o *Observation) {
			noLeader(o)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000), Priority: 5})}
		}, ActWait, "higher failover_priority"},
		{"no leader, equal position and priority: both race (the atomic create decides)", func(o *Observation) {
			noLeader(o)
			o.Peers = map[string]PeerResult{"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000)})}
		}, ActAcquire, "racing"},
		{"no leader, replay lag beyond maximum_lag_on_failover: no race", func(o *Observation) {
			noLeader(o)
			o.Cluster.Status.Position = pos(10 << 20)
			o.DB.Replayed = pos(1 << 20)
			o.DB.Position = pos(10 << 20) // received everything, replay paused
		}, ActWait, "exceeds maximum_lag_on_failover"},
		{"no leader, nofailover: no race", func(o *Observation) {
			noLeader(o)
			o.Self.NoFailover = true
		}, ActWait, "nofailover"},
		{"no leader, failover_priority 0: no race", func(o *Observation) {
			noLeader(o)
			o.Self.Priority = 0
		}, ActWait, "failover_priority is 0"},
		{"no leader, timeline behind history: no race", func(o *Observation) {
			noLeader(o)
			o.DB.Timeline = 1
		}, ActWait, "timeline 1 is behind"},
		{"no leader, no status record: no race", func(o *Observation) {
			noLeader(o)
			o.Cluster.Status = nil
		}, ActWait, "leader position unknown"},
		{"no leader, backing off after a failed promotion", func(o *Observation) {
			noLeader(o)
			o.Mem.RaceBackoffUntil = t0.Add(time.Second)
		}, ActWait, "backing off"},
		{"holding the key with a replica database: promote", func(o *Observation) {
			o.Self.Name = "a"
			o.Lead = LeadState{Held: true, Term: 10, Deadline: t0.Add(5 * time.Second)}
		}, ActPromote, "promoting"},

		// Rule 7: paused.
		{"paused: no race", func(o *Observation) { noLeader(o); o.Config.Paused = true }, ActWait, "paused"},
		{"paused: writable without key is not demoted", func(o *Observation) {
			o.Config.Paused = true
			o.DB.Writable, o.DB.InRecovery = true, false
		}, ActWait, "not demoting"},
		{"paused: lost key is not demoted", func(o *Observation) {
			asLeader(o)
			o.Config.Paused = true
			o.Cluster.Leader = nil
		}, ActWait, "not demoting"},
		{"paused: a diverged replica is not rewound", func(o *Observation) {
			o.Config.Paused = true
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "forked"}, "a"
		}, ActWait, "not repointing or rewinding"},
		{"paused: a replica of the old leader is not repointed", func(o *Observation) {
			o.Config.Paused = true
			o.DB.Upstream = "127.0.0.1:5999"
		}, ActWait, "not repointing or rewinding"},
		{"paused: stopped database is not started", func(o *Observation) {
			o.Config.Paused = true
			o.DB = backends.Status{State: backends.StateCrashed}
		}, ActWait, "not starting"},

		// Bootstrap and cloning.
		{"uninitialized cluster: race to bootstrap", func(o *Observation) {
			o.Cluster = &dcs.Cluster{Members: map[string]dcs.Member{}}
			o.DB = backends.Status{State: backends.StateUninitialized}
		}, ActRaceInitialize, "bootstrap"},
		{"initialized cluster, empty data dir: clone from the leader", func(o *Observation) {
			o.DB = backends.Status{State: backends.StateUninitialized}
		}, ActClone, "cloning from the leader a"},
		{"initialized cluster without leader, empty data dir: wait", func(o *Observation) {
			noLeader(o)
			o.DB = backends.Status{State: backends.StateUninitialized}
		}, ActWait, "waiting for a leader"},
		{"data directory of another cluster: stay down", func(o *Observation) { o.DB.SystemID = "9999" }, ActStayDown, "another cluster"},

		// Crashes and health.
		{"leader's database crashed: restart in place", func(o *Observation) {
			asLeader(o)
			o.DB = backends.Status{State: backends.StateCrashed}
		}, ActStartPrimary, "restarting it in place"},
		{"leader's database does not start within primary_start_timeout, eligible replica: release", func(o *Observation) {
			asLeader(o)
			o.DB = backends.Status{State: backends.StateCrashed}
			o.Mem.StartingSince = t0.Add(-time.Minute)
			o.Peers = map[string]PeerResult{"b": peer("b", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000)})}
		}, ActRelease, "primary_start_timeout"},
		{"leader cannot commit beyond primary_unhealthy_timeout, eligible replica: release", func(o *Observation) {
			asLeader(o)
			o.Mem.UnhealthySince, o.Mem.UnhealthyReason = t0.Add(-time.Minute), "No space left on device"
			o.Peers = map[string]PeerResult{"b": peer("b", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1000)})}
		}, ActRelease, "No space left"},
		{"leader cannot commit but no replica is eligible: keep the key", func(o *Observation) {
			asLeader(o)
			o.Mem.UnhealthySince, o.Mem.UnhealthyReason = t0.Add(-time.Minute), "disk full"
			o.Peers = map[string]PeerResult{"b": peer("b", PeerStatus{Role: "replica", Timeline: 2, Position: pos(1000), Replayed: pos(1), NoFailover: true})}
		}, ActLead, "no replica is eligible"},
		{"leader unhealthy for less than the timeout: keep leading", func(o *Observation) {
			asLeader(o)
			o.Mem.UnhealthySince, o.Mem.UnhealthyReason = t0.Add(-time.Second), "disk full"
		}, ActLead, "healthy leader"},
		{"replica's database crashed: start it following the leader", func(o *Observation) {
			o.DB = backends.Status{State: backends.StateCrashed}
		}, ActStartReplica, "replica of a"},

		// Rule 5: rejoin.
		{"replica pointed at an old leader follows the new one", func(o *Observation) { o.DB.Upstream = "127.0.0.1:5999" }, ActFollow, "following the new leader a"},
		{"replica not streaming: check its history", func(o *Observation) { o.DB.Streaming = false }, ActCheckDivergence, "not streaming"},
		{"diverged replica with use_pg_rewind: rewind", func(o *Observation) {
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "forked"}, "a"
		}, ActRewind, "rewinding"},
		{"diverged replica without rewind: stay down and say why", func(o *Observation) {
			o.Self.Rewind = false
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "forked"}, "a"
		}, ActStayDown, "use_pg_rewind is off"},
		{"diverged MySQL replica (errant transactions): stay down, naming reinit and no PostgreSQL key", func(o *Observation) {
			o.Self.Rewind, o.Self.Kind = false, "mysql"
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "errant transactions"}, "a"
		}, ActStayDown, "(errant transactions); staying out until `steward reinit b` (or enable mysql.reclone_on_divergence)"},
		{"diverged MySQL replica with mysql.reclone_on_divergence: re-clone", func(o *Observation) {
			o.Self.Rewind, o.Self.Kind, o.Self.Reinit = false, "mysql", true
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "errant transactions"}, "a"
		}, ActReinit, "(errant transactions): re-cloning, which discards them (mysql.reclone_on_divergence)"},
		{"MySQL replica whose applier an error stopped: restart it", func(o *Observation) {
			o.DB.ApplierError = "error 1114: The table 'chaos' is full"
		}, ActFollow, "the applier stopped (error 1114"},
		{"MySQL applier restarted less than 5 s ago: wait before the next try", func(o *Observation) {
			o.DB.ApplierError = "error 1062: Duplicate entry"
			o.Mem.ApplierRestartAt = t0.Add(-2 * time.Second)
		}, ActNone, "streaming from a"},
		{"paused: an applier stopped by an error is left alone (rule 7)", func(o *Observation) {
			o.DB.ApplierError = "error 1062: Duplicate entry"
			o.Config.Paused = true
		}, ActNone, ""},
		{"diverged replica whose rewind failed once: retry after the backoff", func(o *Observation) {
			o.Mem.RewindFailed, o.Mem.RewindFailures, o.Mem.RewindRetryAt = "boom", 1, t0.Add(-time.Second)
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "forked"}, "a"
		}, ActRewind, "rewind attempt 2 of 3"},
		{"diverged replica whose rewind failed, backoff not over: wait", func(o *Observation) {
			o.Mem.RewindFailed, o.Mem.RewindFailures, o.Mem.RewindRetryAt = "boom", 1, t0.Add(5*time.Second)
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "forked"}, "a"
		}, ActWait, "retrying in 5s"},
		{"diverged replica whose rewinds all failed: stay down and say why", func(o *Observation) {
			o.Mem.RewindFailed, o.Mem.RewindFailures = "boom", 3
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "forked"}, "a"
		}, ActStayDown, "rewind failed: boom"},
		{"diverged replica whose rewind failed, reinit allowed: re-clone", func(o *Observation) {
			o.Self.Reinit = true
			o.Mem.RewindFailed, o.Mem.RewindFailures = "boom", 3
			o.Mem.Diverged, o.Mem.DivergedFrom = &backends.Divergence{Diverged: true, Reason: "forked"}, "a"
		}, ActReinit, "rewind failed"},
		{"background job running: wait", func(o *Observation) { o.Job = &JobInfo{Kind: ActClone, Since: t0.Add(-3 * time.Second)} }, ActWait, "clone in progress"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := obs()
			c.mut(o)
			d := decide(o)
			if d.Action != c.want {
				t.Fatalf("decide = %s (%s), want %s", d.Action, d.Reason, c.want)
			}
			if !strings.Contains(d.Reason, c.reason) {
				t.Fatalf("reason %q does not mention %q", d.Reason, c.reason)
			}
		})
	}
}

// Rule 8: a failover decision lists every candidate considered, with why
// each was rejected.
func TestRaceRecordsCandidates(t *testing.T) {
	o := obs()
	noLeader(o)
	o.Peers = map[string]PeerResult{
		"a": {Name: "a", Err: errors.New("connection refused")},
		"c": peer("c", PeerStatus{Role: "replica", Timeline: 2, Position: pos(900), Replayed: pos(1), NoFailover: true}),
	}
	d := decide(o)
	if d.Action != ActAcquire {
		t.Fatalf("decide = %v", d)
	}
	got := map[string]dcs.Candidate{}
	for _, c := range d.Candidates {
		got[c.Name] = c
	}
	if !got["b"].Eligible || got["a"].Eligible || got["c"].Eligible {
		t.Fatalf("candidates = %+v", d.Candidates)
	}
	if !strings.Contains(strings.Join(got["c"].Reasons, ";"), "nofailover") || !strings.Contains(strings.Join(got["a"].Reasons, ";"), "unreachable") {
		t.Fatalf("rejection reasons missing: %+v", d.Candidates)
	}
}

// Failover readiness is visible before any failure (issue: users of every
// tool ask for it).
func TestReadiness(t *testing.T) {
	o := obs()
	if ok, r := readiness(o); !ok {
		t.Fatalf("healthy streaming replica not ready: %v", r)
	}
	o.DB.Replayed = pos(1)
	o.Cluster.Status.Position = pos(5 << 20)
	o.DB.Streaming = false
	o.Self.NoFailover = true
	ok, r := readiness(o)
	if ok || len(r) != 3 {
		t.Fatalf("readiness = %v %q, want three reasons (nofailover, not streaming, lag)", ok, r)
	}
	for _, want := range []string{"nofailover", "not streaming", "replay lag 5.0 MB"} {
		if !strings.Contains(strings.Join(r, "; "), want) {
			t.Errorf("reasons %q lack %q", r, want)
		}
	}
	asLeader(o)
	if ok, r := readiness(o); ok || len(r) != 0 {
		t.Fatalf("leader readiness = %v %v, want not a candidate without reasons", ok, r)
	}
}

func TestNeedsPeers(t *testing.T) {
	o := obs()
	if needsPeers(o) {
		t.Fatal("healthy replica with a leader probes peers")
	}
	noLeader(o)
	if !needsPeers(o) {
		t.Fatal("replica without a leader does not probe peers")
	}
	o.Self.NoFailover = true
	if needsPeers(o) {
		t.Fatal("nofailover member probes peers for a race it cannot enter")
	}
	o = obs()
	asLeader(o)
	o.Mem.UnhealthySince = t0
	if !needsPeers(o) {
		t.Fatal("unhealthy leader does not look for a replica to hand over to")
	}
}
