package agent

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// ---------------------------------------------------------------------------
// ackView: what a semi-synchronous primary may wait for.

func ackStatus(master bool, clients int, connected ...string) backends.Status {
	st := backends.Status{State: backends.StateRunning, Writable: true,
		SemiSync: &backends.SemiSync{MasterEnabled: master, Clients: clients}}
	for _, n := range connected {
		st.Replicas = append(st.Replicas, backends.ReplicaConn{Name: n, State: "streaming", SyncState: "async"})
	}
	return st
}

func ackCluster(acks []string, epoch int64, members map[string]dcs.Member) *dcs.Cluster {
	members["a"] = dcs.Member{Name: "a"}
	return &dcs.Cluster{Members: members,
		Sync: &dcs.Versioned[dcs.SyncState]{Value: dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{}, Acknowledgers: acks, AckEpoch: epoch}, Version: 3}}
}

func report(acking, active bool, epoch int64) dcs.Member {
	return dcs.Member{Following: "a", ReplicationState: "streaming", Received: pos(100),
		SemiSync: &dcs.SemiSyncReport{Acking: acking, Active: active, Epoch: epoch}}
}

func TestAckView(t *testing.T) {
	cases := []struct {
		name    string
		st      backends.Status
		cl      *dcs.Cluster
		want    backends.SyncConfig
		syncOf  map[string]string // replica → SyncState
		stateOf map[string]string // replica → State
		seen    map[string]dcs.SemiSyncReport
	}{
		{"master off: asynchronous, whatever the replicas do",
			ackStatus(false, 1, "b"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": report(true, true, 2)}),
			backends.SyncConfig{}, map[string]string{"b": "sync"}, nil, nil},
		{"listed and acknowledging: ANY 1 (b), b synchronous",
			ackStatus(true, 1, "b", "c"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": report(true, true, 2), "c": report(false, false, 2)}),
			anyOf(1, "b"), map[string]string{"b": "sync", "c": "async"}, nil, nil},
		{"listed, not acknowledging yet: still counted (it may start any time)",
			ackStatus(true, 0, "b"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": report(false, false, 2)}),
			anyOf(1, "b"), map[string]string{"b": "async"}, nil, nil},
		{"taken off the list, still reporting on: counted",
			ackStatus(true, 2, "b", "c"), ackCluster([]string{"c"}, 3, map[string]dcs.Member{"b": report(true, true, 3), "c": report(true, true, 3)}),
			anyOf(1, "b", "c"), nil, nil, nil},
		{"reported off, but for an older list: counted until it reports on the current one",
			ackStatus(true, 1, "b", "c"), ackCluster([]string{"c"}, 3, map[string]dcs.Member{"b": report(false, false, 2), "c": report(true, true, 3)}),
			anyOf(1, "b", "c"), map[string]string{"b": "async", "c": "sync"}, nil, nil},
		{"an acknowledger whose report is older than the list is not confirmed",
			ackStatus(true, 1, "c"), ackCluster([]string{"c"}, 3, map[string]dcs.Member{"c": report(true, true, 2)}),
			anyOf(1, "c"), map[string]string{"c": "async"}, nil, nil},
		{"reported off for the current list: not counted",
			ackStatus(true, 1, "b", "c"), ackCluster([]string{"c"}, 3, map[string]dcs.Member{"b": report(false, false, 3), "c": report(true, true, 3)}),
			anyOf(1, "c"), nil, nil, nil},
		{"connected without a member key (agent gone): counted",
			ackStatus(true, 1, "b", "x"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": report(true, true, 2)}),
			anyOf(1, "b", "x"), nil, nil, nil},
		{"connected without a member key, last seen off for the current list: not counted",
			ackStatus(true, 1, "b", "x"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": report(true, true, 2)}),
			anyOf(1, "b"), nil, nil, map[string]dcs.SemiSyncReport{"x": {Epoch: 2}}},
		{"connected without a member key, last seen off for an older list: counted",
			ackStatus(true, 1, "b", "x"), ackCluster([]string{"b"}, 3, map[string]dcs.Member{"b": report(true, true, 3)}),
			anyOf(1, "b", "x"), nil, nil, map[string]dcs.SemiSyncReport{"x": {Epoch: 2}}},
		{"connected without a member key, last seen acknowledging: counted",
			ackStatus(true, 2, "b", "x"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": report(true, true, 2)}),
			anyOf(1, "b", "x"), nil, nil, map[string]dcs.SemiSyncReport{"x": {Acking: true, Epoch: 2}}},
		{"a member that reports no semi-sync state while connected: counted",
			ackStatus(true, 1, "b", "c"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": report(true, true, 2), "c": {Following: "a", ReplicationState: "streaming"}}),
			anyOf(1, "b", "c"), nil, nil, nil},
		{"more acknowledger connections than members that account for them: an unknown one",
			ackStatus(true, 2, "b", "c"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": report(true, true, 2), "c": report(false, false, 2)}),
			anyOf(1, "b", UnknownAcknowledger), nil, nil, nil},
		{"strict with nobody to wait for: the placeholder",
			ackStatus(true, 0), ackCluster([]string{NoStandbyName}, 2, map[string]dcs.Member{}),
			anyOf(1, NoStandbyName), nil, nil, nil},
		{"a replica whose agent says it does not stream from this primary is not streaming here",
			ackStatus(true, 1, "b"), ackCluster([]string{"b"}, 2, map[string]dcs.Member{"b": {Following: "a", ReplicationState: "", SemiSync: &dcs.SemiSyncReport{Acking: true, Epoch: 2}}}),
			anyOf(1, "b"), map[string]string{"b": "async"}, map[string]string{"b": "not-streaming"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, reps := ackView(c.st, c.cl, "a", c.seen)
			if !got.Equal(c.want) {
				t.Fatalf("waits for %s, want %s", got, c.want)
			}
			for _, r := range reps {
				if w, ok := c.syncOf[r.Name]; ok && r.SyncState != w {
					t.Errorf("%s: sync state %q, want %q", r.Name, r.SyncState, w)
				}
				if w, ok := c.stateOf[r.Name]; ok && r.State != w {
					t.Errorf("%s: state %q, want %q", r.Name, r.State, w)
				}
				if r.SyncState == "sync" && r.Flushed != pos(100) {
					t.Errorf("%s: flushed %v, want its reported received position", r.Name, r.Flushed)
				}
			}
		})
	}
}

func TestOneAckTarget(t *testing.T) {
	in := leaderIn(SyncOn, 3)
	in.OneAck = true
	in.Replicas = []backends.ReplicaConn{streaming("c", 5, "async"), streaming("b", 9, "async")}
	if got := syncTarget(in, nil); !got.Equal(anyOf(1, "b")) {
		t.Fatalf("on, synchronous_node_count 3: %s, want one standby, the most advanced (ANY 1 (b))", got)
	}
	in.Mode = SyncQuorum
	if got := syncTarget(in, nil); !got.Equal(anyOf(1, "b", "c")) {
		t.Fatalf("quorum: %s, want ANY 1 (b, c)", got)
	}
	in.Mode, in.Replicas, in.DB = SyncStrict, nil, anyOf(1, "c", UnknownAcknowledger)
	if got := syncTarget(in, nil); !got.Equal(anyOf(1, "c")) {
		t.Fatalf("strict, the standby gone (no member key either): %s, want to keep waiting for c", got)
	}
	in.DB = backends.SyncConfig{}
	if got := syncTarget(in, nil); !got.Equal(anyOf(1, NoStandbyName)) {
		t.Fatalf("strict, no standby ever: %s, want the placeholder", got)
	}
	in.Mode = SyncOn
	if got := syncTarget(in, nil); !got.Async() {
		t.Fatalf("on, no standby: %s, want asynchronous", got)
	}
}

func TestWithAcksCarriesTheList(t *testing.T) {
	cur := &dcs.Versioned[dcs.SyncState]{Value: dcs.SyncState{Leader: "a", Mode: SyncOn, Acknowledgers: []string{"b"}, AckEpoch: 4}}
	st := withAcks(dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{"b"}, Quorum: 1}, cur, "", "a")
	if !slices.Equal(st.Acknowledgers, []string{"b"}) || st.AckEpoch != 4 {
		t.Fatalf("this leader's key rewritten: acknowledgers %v epoch %d, want [b] 4", st.Acknowledgers, st.AckEpoch)
	}
	st = withAcks(dcs.SyncState{Leader: "c", Mode: SyncOn}, cur, "", "c")
	if len(st.Acknowledgers) != 0 || st.AckEpoch != 5 {
		t.Fatalf("a new leader's key: acknowledgers %v epoch %d, want none, epoch 5", st.Acknowledgers, st.AckEpoch)
	}
}

// ---------------------------------------------------------------------------
// The promise under a storm of events, with the replicas deciding (rule 6
// as a property, as TestSyncPromiseUnderRandomEvents for PostgreSQL).
//
// A model MariaDB primary "a" and replicas b, c, d. A replica acknowledges
// when its flag is on and it is connected; a commit is acknowledged when the
// primary does not wait, or when a flagged, connected replica received it.
// Each replica's agent reads the sync key and sets its flag in one event,
// and publishes its report in a later one: the leader may act on a stale
// report in between. The leader runs planSync and manageSync's
// one-acknowledgement steps (oneAckPending, oneAckChoice, the list in the
// key) on ackView. After every event every acknowledged commit must be on
// at least Quorum members of the key.

type ackReplica struct {
	connected bool
	flag      bool
	received  uint64
	report    *dcs.SemiSyncReport // published (nil: no member key)
	pending   *dcs.SemiSyncReport // decided, not published yet
}

type ackSim struct {
	fail     func(format string, args ...any)
	rng      *rand.Rand
	lsn      uint64
	master   bool
	replicas map[string]*ackReplica
	key      dcs.SyncState
	keyVer   int64
	applied  *SyncApplied
	lastSet  *backends.SyncConfig
	commits  []*simCommit
	mode     string
	steps    int
	relied   int // key writes that promised a standby (Quorum > 0)
	// view, when set, replaces ackView; eager takes the flushed position
	// even while the database may still wait for more than the target
	// (checker tests).
	view  func(st backends.Status, cl *dcs.Cluster) (backends.SyncConfig, []backends.ReplicaConn)
	eager bool
}

var ackNames = []string{"b", "c", "d"}

func newAckSim(fail func(string, ...any), seed int64) *ackSim {
	s := &ackSim{fail: fail, rng: rand.New(rand.NewSource(seed)), replicas: map[string]*ackReplica{}, mode: SyncOn,
		key: dcs.SyncState{Leader: "a", Mode: SyncOn, Members: []string{}, Acknowledgers: []string{}, AckEpoch: 1}, keyVer: 1}
	for _, n := range ackNames {
		s.replicas[n] = &ackReplica{connected: true, report: &dcs.SemiSyncReport{Epoch: 1}}
	}
	return s
}

func (s *ackSim) release() {
	for _, c := range s.commits {
		if c.acked {
			continue
		}
		if !s.master {
			c.acked = true
			continue
		}
		for _, r := range s.replicas {
			if r.flag && r.connected && r.received >= c.lsn {
				c.acked = true
			}
		}
	}
}

func (s *ackSim) cluster() *dcs.Cluster {
	cl := &dcs.Cluster{Members: map[string]dcs.Member{"a": {Name: "a"}},
		Sync: &dcs.Versioned[dcs.SyncState]{Value: s.key, Version: s.keyVer}}
	for n, r := range s.replicas {
		if r.report == nil {
			continue
		}
		m := dcs.Member{Name: n, Following: "a", Received: pos(r.received), SemiSync: r.report}
		if r.connected {
			m.ReplicationState = "streaming"
		}
		cl.Members[n] = m
	}
	return cl
}

func (s *ackSim) input() syncInput {
	st := backends.Status{State: backends.StateRunning, Writable: true, SemiSync: &backends.SemiSync{MasterEnabled: s.master}}
	for _, n := range ackNames {
		r := s.replicas[n]
		if r.connected {
			st.Replicas = append(st.Replicas, backends.ReplicaConn{Name: n, State: "streaming", SyncState: "async"})
			if r.flag {
				st.SemiSync.Clients++
			}
		}
	}
	cl := s.cluster()
	view := func(st backends.Status, cl *dcs.Cluster) (backends.SyncConfig, []backends.ReplicaConn) {
		return ackView(st, cl, "a", nil)
	}
	if s.view != nil {
		view = s.view
	}
	db, reps := view(st, cl)
	return syncInput{Me: "a", Mode: s.mode, N: 1, OneAck: true, Sync: cl.Sync, DB: db, Replicas: reps,
		Members: cl.Members, Applied: s.applied, Compare: lsnCmp}
}

func (s *ackSim) check(what string) {
	held := func(m string) uint64 {
		if r, ok := s.replicas[m]; ok {
			return r.received
		}
		return 0
	}
	if broken := brokenPromise(s.key, s.commits, held); broken != "" {
		s.fail("after %s (step %d): %s (acknowledgers %v, master %v)", what, s.steps, broken, s.key.Acknowledgers, s.master)
	}
}

func (s *ackSim) writeKey(st dcs.SyncState) {
	s.key = st
	s.keyVer++
	if st.Active() && st.Quorum > 0 {
		s.relied++
	}
}

// loop is one leader loop (manageSync for a one-acknowledgement backend).
func (s *ackSim) loop() {
	for i := 0; i < maxSyncSteps; i++ {
		in := s.input()
		st := planSync(in)
		s.steps++
		switch st.Kind {
		case syncNone, syncWait:
			return
		case syncWriteDCS:
			s.writeKey(withAcks(st.DCS, in.Sync, "", "a"))
			s.check("writing the key " + fmt.Sprint(st.DCS))
		case syncSetDB:
			if oneAckPending(in, st.DB, s.lastSet) {
				return
			}
			if want := ackList(st.DB); !slices.Equal(s.key.Acknowledgers, want) {
				k := s.key
				k.Acknowledgers, k.AckEpoch = want, k.AckEpoch+1
				s.writeKey(k)
				in = s.input()
			}
			apply, poll := oneAckChoice(in, st.DB)
			if poll {
				return
			}
			s.master = !apply.Async()
			s.applied = nil
			if (s.eager || in.DB.Equal(st.DB)) && apply.Equal(st.DB) {
				s.applied = &SyncApplied{Config: st.DB, Flush: pos(s.lsn)}
			}
			s.lastSet = &apply
			s.release()
			s.check("setting the database to " + apply.String())
		}
	}
}

// agentReads: replica n's agent reads the key and sets its flag (ackChores).
func (s *ackSim) agentReads(n string) {
	r := s.replicas[n]
	want := slices.Contains(s.key.Acknowledgers, n) && r.connected
	r.flag = want
	r.pending = &dcs.SemiSyncReport{Acking: r.flag, Active: r.flag && r.connected, Epoch: s.key.AckEpoch}
}

func (s *ackSim) event() {
	n := ackNames[s.rng.Intn(3)]
	r := s.replicas[n]
	switch x := s.rng.Intn(100); {
	case x < 35: // a commit
		s.lsn++
		s.commits = append(s.commits, &simCommit{lsn: s.lsn})
	case x < 60: // a connected replica receives part of the binary log
		if r.connected && r.received < s.lsn {
			r.received += uint64(1 + s.rng.Intn(int(s.lsn-r.received)))
		}
	case x < 70:
		s.agentReads(n)
	case x < 80: // its agent publishes what it decided
		if r.pending != nil {
			r.report, r.pending = r.pending, nil
		}
	case x < 84: // the connection drops (the flag stays)
		r.connected = false
	case x < 88: // reconnects
		r.connected = true
	case x < 91: // the server restarts: the flag is forgotten
		r.flag = false
	case x < 94:
		s.mode = []string{SyncOn, SyncStrict, SyncQuorum, SyncOn, SyncQuorum, SyncOff}[s.rng.Intn(6)]
	default:
		s.loop()
	}
	s.release()
	s.check("an event")
}

func runAckSim(s *ackSim, events int) {
	for i := 0; i < events; i++ {
		s.event()
		if i%4 == 0 {
			s.loop()
		}
	}
}

func TestAckPromiseUnderRandomEvents(t *testing.T) {
	confirmed := 0
	for seed := int64(1); seed <= 300; seed++ {
		s := newAckSim(t.Fatalf, seed)
		runAckSim(s, 800)
		if s.relied > 0 {
			confirmed++
		}
	}
	// Not vacuous: most runs come to rely on a confirmed acknowledger.
	if confirmed < 150 {
		t.Fatalf("only %d of 300 runs ever relied on a confirmed acknowledger", confirmed)
	}
	t.Logf("%d of 300 runs relied on a confirmed acknowledger at some point", confirmed)
}

// The checker is not vacuous: it catches a leader that counts only the
// listed acknowledgers (not those that have yet to report theirs off), and
// one that takes the flushed position while a former acknowledger may
// still acknowledge: both rely on a new standby too early.
func TestAckPromiseCheckerCatchesWrongSteps(t *testing.T) {
	wrong := map[string]func(s *ackSim){
		"only the listed acknowledgers counted": func(s *ackSim) {
			s.view = func(st backends.Status, cl *dcs.Cluster) (backends.SyncConfig, []backends.ReplicaConn) {
				db, reps := ackView(st, cl, "a", nil)
				if db.Async() {
					return db, reps
				}
				names := ackList(anyOf(1, cl.Sync.Value.Acknowledgers...))
				if len(names) == 0 {
					names = []string{NoStandbyName}
				}
				return anyOf(1, names...), reps
			}
		},
		"flushed position taken too early": func(s *ackSim) { s.eager = true },
	}
	for name, mistake := range wrong {
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
					s := newAckSim(func(format string, args ...any) { panic(fatalCatcher{msg: fmt.Sprintf(format, args...)}) }, seed)
					mistake(s)
					runAckSim(s, 800)
				}()
			}
			if !caught {
				t.Fatalf("a leader whose mistake is %q was not caught breaking the promise", name)
			}
		})
	}
}
