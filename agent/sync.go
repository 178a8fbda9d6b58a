package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// Synchronous replication (DESIGN rule 6, docs/replication-modes.md).
//
// Two records must agree at every instant: what the primary's database
// waits for before it acknowledges a commit (DB: Num of Names), and what the
// DCS sync key promises every other member (V = Members, q = Quorum: every
// acknowledged commit is on at least q members of V). The promise holds
// while
//
//	q <= maxQuorum(DB, V) = DB.Num - |DB.Names \ V|
//
// (of the DB.Num members that confirmed a commit, at most |DB.Names \ V| are
// outside V), and while every member counted in V already held every commit
// acknowledged before the database started waiting for it. The leader keeps
// both by the order of its steps, one at a time:
//
//   - a promise that shrinks (a member leaves V, q goes down) is written to
//     the DCS first, then the database stops waiting;
//   - the database starts waiting for a member first; the member joins V
//     (or q goes up) only once it is synchronous and has flushed the
//     primary's position read after the change took effect.
//
// A candidate may be promoted when it is in V and reaches at least
// len(V) - q + 1 members of V (itself included) none of which is ahead of
// it: any q members holding a commit and any len(V) - q + 1 members of V
// share one, whose copy the candidate's position covers.

// Synchronous modes (synchronous_mode).
const (
	SyncOff    = "off"
	SyncOn     = "on"
	SyncStrict = "strict"
	SyncQuorum = "quorum"
)

// NoStandbyName is the standby name a strict-mode primary waits for when
// no real standby is available: none has it, so commits wait.
const NoStandbyName = "steward.no-standby"

// SyncReplicator is a Backend that can make its primary wait for standbys.
type SyncReplicator interface {
	// SetSync makes the database wait for cfg before acknowledging a commit
	// (the zero SyncConfig: asynchronous), persistently, and returns once
	// every server process applies it, with the primary's flushed position
	// read after that (zero on a standby, where the setting only waits for
	// a promotion).
	SetSync(ctx context.Context, cfg backends.SyncConfig) (backends.Position, error)
}

// syncReplicator returns the backend as a SyncReplicator when its server
// can make commits wait for standbys, or nil and why not.
func syncReplicator(db Backend) (SyncReplicator, string) {
	sr, ok := db.(SyncReplicator)
	if !ok {
		return nil, "not supported by the " + db.Kind() + " backend"
	}
	if ar, isAck := db.(AckReplicator); isAck {
		if why := ar.SyncUnsupported(); why != "" {
			return nil, why
		}
	}
	return sr, ""
}

// SyncApplied is the last change this leader made to the database's
// synchronous configuration, and the primary's flushed position read after
// every process applied it: every commit acknowledged before the change is
// at or before Flush.
type SyncApplied struct {
	Config backends.SyncConfig
	Flush  backends.Position
	Term   int64
}

// syncRules is what the DCS sync key promises, as every member reads it.
type syncRules struct {
	Active  bool // the sync key restricts promotion
	Broken  string
	Mode    string
	Leader  string // the leader that keeps the key: it has every commit it acknowledged
	Members []string
	Quorum  int
}

func rulesOf(cl *dcs.Cluster) syncRules {
	if cl == nil {
		return syncRules{}
	}
	if cl.SyncError != "" {
		return syncRules{Active: true, Broken: cl.SyncError}
	}
	if cl.Sync == nil || !cl.Sync.Value.Active() {
		return syncRules{}
	}
	s := cl.Sync.Value
	return syncRules{Active: true, Mode: s.Mode, Leader: s.Leader, Members: s.Members, Quorum: s.Quorum}
}

func (r syncRules) has(name string) bool { return slices.Contains(r.Members, name) }

// votesNeeded is how many members of the sync set a candidate must reach,
// itself included, none of them ahead of it (0: nobody can prove it holds
// every acknowledged commit).
func (r syncRules) votesNeeded() int {
	if r.Broken != "" || r.Quorum <= 0 || r.Quorum > len(r.Members) {
		return 0
	}
	return len(r.Members) - r.Quorum + 1
}

// syncIneligibility is why member name may not be promoted under the sync
// rules (empty: the rules allow it, subject to quorumHolds at race time).
// The leader the key names may always be promoted again: every commit it
// acknowledged was flushed on its own disk first (a primary that crashed
// and came back before anyone took over).
func syncIneligibility(cl *dcs.Cluster, name string) []string {
	r := rulesOf(cl)
	switch {
	case !r.Active:
		return nil
	case r.Broken == "" && r.Leader == name:
		return nil
	case r.Broken != "":
		return []string{"the DCS sync key cannot be decoded (" + r.Broken + "): no member is known to hold every acknowledged commit"}
	case !r.has(name):
		return []string{fmt.Sprintf("not in sync set (synchronous_mode %s: only members the leader confirmed synchronous may be promoted)", r.Mode)}
	case r.votesNeeded() == 0:
		return []string{fmt.Sprintf("the sync set promises no member every acknowledged commit (quorum %d of %d)", r.Quorum, len(r.Members))}
	}
	return nil
}

// quorumHolds applies the quorum rule to this member (already known to be
// in the sync set): it must reach votesNeeded members of the set, itself
// included, whose databases run on its timeline and are not ahead of it
// (positions read live over the REST API).
func quorumHolds(o *Observation, me facts) (bool, string) {
	r := rulesOf(o.Cluster)
	if r.Broken == "" && r.Leader == me.Name {
		return true, "this member is the leader the sync key names: it has every commit it acknowledged"
	}
	need := r.votesNeeded()
	if need == 0 || !r.has(me.Name) {
		return false, "the sync set does not allow this member to be promoted"
	}
	votes := []string{me.Name}
	var ahead, unknown []string
	for _, n := range r.Members {
		if n == me.Name {
			continue
		}
		p, ok := o.Peers[n]
		if !ok || p.Err != nil {
			unknown = append(unknown, n+" unreachable")
			continue
		}
		f := peerFacts(p.Status)
		switch {
		case !f.Running || f.Position.IsZero():
			// A stopped database's last published position may be older
			// than what it has on disk: it proves nothing.
			unknown = append(unknown, n+" database not running")
		case f.Writable:
			unknown = append(unknown, n+" writable")
		case me.Timeline > 0 && f.Timeline > 0 && f.Timeline != me.Timeline:
			unknown = append(unknown, fmt.Sprintf("%s on timeline %d", n, f.Timeline))
		case o.compare(f.Position, me.Position) > 0:
			ahead = append(ahead, fmt.Sprintf("%s at %s", n, f.Position))
		default:
			votes = append(votes, n)
		}
	}
	detail := fmt.Sprintf("%d of the %d members of the sync set %v reached at or behind %s (%s)", len(votes), len(r.Members), r.Members,
		me.Position, strings.Join(votes, ", "))
	if len(ahead) > 0 {
		detail += "; ahead: " + strings.Join(ahead, ", ")
	}
	if len(unknown) > 0 {
		detail += "; not counted: " + strings.Join(unknown, ", ")
	}
	if len(votes) < need {
		return false, fmt.Sprintf("quorum rule: every acknowledged commit is on %d of the sync set, so a candidate must reach %d of its %d members at or behind its own position; %s: this member cannot prove it holds every acknowledged commit",
			r.Quorum, need, len(r.Members), detail)
	}
	return true, fmt.Sprintf("quorum rule holds: %s (%d needed)", detail, need)
}

// memberSyncState is what a member publishes as its sync_state: "sync"
// (modes on, strict) or "quorum" when the sync key counts it, "async" for
// any other replica, "" for the leader.
func memberSyncState(cl *dcs.Cluster, name string, replica bool) string {
	if !replica {
		return ""
	}
	r := rulesOf(cl)
	if !r.Active || r.Broken != "" || !r.has(name) || r.votesNeeded() == 0 {
		return "async"
	}
	if r.Mode == SyncQuorum {
		return "quorum"
	}
	return "sync"
}

// ---------------------------------------------------------------------------
// The leader's planner (pure)

// syncInput is what the leader's synchronous-replication planner sees.
type syncInput struct {
	Me       string
	Mode     string // synchronous_mode
	N        int    // synchronous_node_count
	Sync     *dcs.Versioned[dcs.SyncState]
	SyncErr  string
	DB       backends.SyncConfig // what the primary waits for now
	Replicas []backends.ReplicaConn
	Members  map[string]dcs.Member
	Applied  *SyncApplied // nil: no flushed position known for DB
	Compare  func(a, b backends.Position) int
	// OneAck: the database waits for one acknowledgement from replicas
	// that decide themselves whether they acknowledge (ack.go): every
	// target is ANY 1 of a sorted list, and at most one standby is needed.
	OneAck bool
	// SyncWait is how long the oldest commit has waited for the standbys;
	// StallAfter the bound (retry_timeout) past which a standby that has
	// not replied for as long is stalled (see stalled).
	SyncWait, StallAfter time.Duration
}

// stalled: commits have waited longer than StallAfter and this standby,
// behind the primary, has not replied for as long: it is frozen (SIGSTOP,
// a hung disk, a dead host whose TCP connection has not timed out yet) and
// counts as unavailable, so that mode on and quorum pick another standby
// instead of letting every commit wait until wal_sender_timeout (60 s by
// default) drops the connection. Both conditions are needed: an idle
// standby replies only every wal_receiver_status_interval (10 s), and one
// that just received WAL has not confirmed it yet.
func (in syncInput) stalled(r backends.ReplicaConn) bool {
	return in.StallAfter > 0 && in.SyncWait > in.StallAfter && r.Unconfirmed > in.StallAfter
}

// stallNote names the stalled standbys for the log ("" when none).
func (in syncInput) stallNote() string {
	var s []string
	for _, r := range in.Replicas {
		if in.stalled(r) {
			s = append(s, fmt.Sprintf("%s (no reply for %s)", r.Name, r.Unconfirmed.Round(time.Millisecond)))
		}
	}
	if len(s) == 0 {
		return ""
	}
	return fmt.Sprintf("; stalled while commits wait %s (retry_timeout %s): %s", in.SyncWait.Round(time.Millisecond), in.StallAfter, strings.Join(s, ", "))
}

func syncInputOf(o *Observation) syncInput {
	in := syncInput{Me: o.Self.Name, Mode: o.Config.SynchronousMode, N: o.Config.SynchronousNodeCount,
		DB: o.DB.Sync, Replicas: o.DB.Replicas, Compare: o.compare,
		SyncWait: o.DB.SyncWait, StallAfter: o.Config.RetryTimeout.D(), OneAck: o.OneAck}
	if o.Cluster != nil {
		in.Sync, in.SyncErr, in.Members = o.Cluster.Sync, o.Cluster.SyncError, o.Cluster.Members
	}
	if a := o.Mem.SyncApplied; a != nil && a.Term == o.Lead.Term {
		in.Applied = a
	}
	return in
}

type syncStepKind string

const (
	syncNone     syncStepKind = "none"           // as configured
	syncWait     syncStepKind = "wait"           // a standby has yet to confirm
	syncWriteDCS syncStepKind = "write-sync-key" // CAS the sync key to DCS
	syncSetDB    syncStepKind = "set-database"   // make the database wait for DB
)

// syncStep is one step of the leader's synchronous-replication upkeep.
type syncStep struct {
	Kind   syncStepKind
	DCS    dcs.SyncState
	DB     backends.SyncConfig
	Reason string
}

// maxQuorum is the largest q the sync key may promise for members V while
// the database waits for db: of the db.Num standbys that confirm a commit,
// all but those outside V are in V.
func maxQuorum(db backends.SyncConfig, v []string) int {
	if db.Async() {
		return 0
	}
	outside := 0
	seen := map[string]bool{}
	for _, n := range db.Names {
		if !seen[n] && !slices.Contains(v, n) {
			outside++
		}
		seen[n] = true
	}
	return max(db.Num-outside, 0)
}

// available lists the standbys that could be synchronous now, best first:
// streaming from this primary, members of the cluster, not tagged nosync;
// failover candidates first, then those the sync key or the database
// already count (no churn), then the most advanced.
func available(in syncInput, v []string) []string {
	type cand struct {
		name    string
		nofo    bool
		inV     bool
		dbIdx   int
		flushed backends.Position
	}
	var cs []cand
	seen := map[string]bool{}
	for _, r := range in.Replicas {
		m, ok := in.Members[r.Name]
		if r.State != "streaming" || r.Name == in.Me || r.Name == "" || seen[r.Name] || !ok || m.NoSync || in.stalled(r) {
			continue
		}
		seen[r.Name] = true
		// Those the database already waits for first. With one
		// acknowledgement the database's set is every possible
		// acknowledger, sorted: the listed ones come first instead, or
		// two standbys would take turns as each other's list goes stale.
		current := in.DB.Names
		if in.OneAck && in.Sync != nil && in.SyncErr == "" {
			current = in.Sync.Value.Acknowledgers
		}
		idx := slices.Index(current, r.Name)
		if idx < 0 {
			idx = len(current) + 1
		}
		cs = append(cs, cand{name: r.Name, nofo: m.NoFailover, inV: slices.Contains(v, r.Name), dbIdx: idx, flushed: r.Flushed})
	}
	cmp := in.Compare
	if cmp == nil {
		cmp = func(a, b backends.Position) int { return 0 }
	}
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		switch {
		case a.nofo != b.nofo:
			return !a.nofo
		case a.inV != b.inV:
			return a.inV
		case a.dbIdx != b.dbIdx:
			return a.dbIdx < b.dbIdx
		}
		if c := cmp(a.flushed, b.flushed); c != 0 {
			return c > 0
		}
		return a.name < b.name
	})
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return out
}

// syncTarget is the configuration the database should wait for.
func syncTarget(in syncInput, v []string) backends.SyncConfig {
	n := max(in.N, 1)
	avail := available(in, v)
	if in.OneAck {
		return oneAckTarget(in, avail)
	}
	switch in.Mode {
	case SyncOn:
		k := min(n, len(avail))
		if k == 0 {
			return backends.SyncConfig{}
		}
		return backends.SyncConfig{Method: backends.SyncFirst, Num: k, Names: avail[:k]}
	case SyncStrict:
		names := append([]string(nil), avail[:min(n, len(avail))]...)
		// Never fall back: keep waiting for standbys that went away (in
		// their order), then for one that cannot exist.
		for _, d := range in.DB.Names {
			if len(names) >= n {
				break
			}
			if m, ok := in.Members[d]; (ok && m.NoSync) || d == in.Me || slices.Contains(names, d) {
				continue
			}
			names = append(names, d)
		}
		for i := 1; len(names) < n; i++ {
			p := NoStandbyName
			if i > 1 {
				p = fmt.Sprintf("%s-%d", NoStandbyName, i)
			}
			if !slices.Contains(names, p) {
				names = append(names, p)
			}
		}
		return backends.SyncConfig{Method: backends.SyncFirst, Num: n, Names: names}
	case SyncQuorum:
		if len(avail) == 0 {
			return backends.SyncConfig{}
		}
		names := append([]string(nil), avail...)
		sort.Strings(names)
		return backends.SyncConfig{Method: backends.SyncAny, Num: min(n, len(names)), Names: names}
	}
	return backends.SyncConfig{}
}

// oneAckTarget is syncTarget when the database waits for one
// acknowledgement from any of its acknowledgers (synchronous_node_count is
// capped at 1): on, one available standby (else asynchronous); strict, one
// available standby, else the one it waited for, else none that exists;
// quorum, every available standby.
func oneAckTarget(in syncInput, avail []string) backends.SyncConfig {
	one := func(names ...string) backends.SyncConfig {
		names = slices.Clone(names)
		sort.Strings(names)
		return backends.SyncConfig{Method: backends.SyncAny, Num: 1, Names: names}
	}
	switch in.Mode {
	case SyncOn:
		if len(avail) > 0 {
			return one(avail[0])
		}
	case SyncStrict:
		if len(avail) > 0 {
			return one(avail[0])
		}
		// Keep waiting for a standby that went away (its member key may
		// have expired with its agent), never fall back.
		for _, d := range in.DB.Names {
			if m, ok := in.Members[d]; (ok && m.NoSync) || d == in.Me || isPlaceholder(d) || d == UnknownAcknowledger {
				continue
			}
			return one(d)
		}
		return one(NoStandbyName)
	case SyncQuorum:
		if len(avail) > 0 {
			return one(avail...)
		}
	}
	return backends.SyncConfig{}
}

func syncActiveMode(m string) bool { return m == SyncOn || m == SyncStrict || m == SyncQuorum }

// planSync returns the leader's next synchronous-replication step. It is a
// pure function: the leader applies the step and asks again, so that the
// order of rule 6 is kept one step at a time.
func planSync(in syncInput) syncStep {
	var cur dcs.SyncState
	if in.Sync != nil && in.SyncErr == "" {
		cur = in.Sync.Value
	}
	if !syncActiveMode(in.Mode) {
		if in.SyncErr != "" || cur.Active() || (in.Sync != nil && cur.Leader != in.Me) {
			return syncStep{Kind: syncWriteDCS, DCS: dcs.SyncState{Leader: in.Me, Mode: SyncOff},
				Reason: "synchronous_mode is off: recording it in the sync key before the database stops waiting for standbys"}
		}
		if !in.DB.Async() {
			return syncStep{Kind: syncSetDB, Reason: fmt.Sprintf("synchronous_mode is off: the database stops waiting for %s", in.DB)}
		}
		return syncStep{Kind: syncNone, Reason: "asynchronous replication (synchronous_mode off)"}
	}

	// The sync key must name this leader and its mode, and promise nothing
	// the database does not keep.
	v, q := cur.Members, cur.Quorum
	switch {
	case in.Sync == nil || in.SyncErr != "" || cur.Leader != in.Me:
		why := "the sync key is missing"
		switch {
		case in.SyncErr != "":
			why = "the sync key cannot be decoded (" + in.SyncErr + ")"
		case in.Sync != nil:
			why = fmt.Sprintf("the sync key names %q, not this leader", cur.Leader)
		}
		return syncStep{Kind: syncWriteDCS, DCS: dcs.SyncState{Leader: in.Me, Mode: in.Mode, Members: []string{}},
			Reason: why + ": recording this leader with an empty sync set (nobody may be promoted) before any standby is relied on"}
	case cur.Mode != in.Mode || q > maxQuorum(in.DB, v) || q > len(v) || hasDup(v):
		nv := intersect(v, in.DB.Names)
		nq := max(min(q-(len(v)-len(nv)), maxQuorum(in.DB, nv), len(nv)), 0)
		why := fmt.Sprintf("synchronous_mode changed from %s to %s", cur.Mode, in.Mode)
		if cur.Mode == in.Mode {
			why = fmt.Sprintf("the sync key promises %d of %v but the database waits for %s", q, v, in.DB)
		}
		return syncStep{Kind: syncWriteDCS, DCS: dcs.SyncState{Leader: in.Me, Mode: in.Mode, Members: nv, Quorum: nq},
			Reason: why + fmt.Sprintf(": sync key now %d of %v", nq, nv)}
	}

	t := syncTarget(in, v)
	if !t.Equal(in.DB) {
		nv := intersect(v, t.Names)
		nq := max(min(q-(len(v)-len(nv)), maxQuorum(in.DB, nv), maxQuorum(t, nv)), 0)
		if nq != q || len(nv) != len(v) {
			return syncStep{Kind: syncWriteDCS, DCS: dcs.SyncState{Leader: in.Me, Mode: in.Mode, Members: nv, Quorum: nq},
				Reason: fmt.Sprintf("before the database waits for %s instead of %s: sync key from %d of %v to %d of %v (rule 6: out of the sync key first)%s",
					t, in.DB, q, v, nq, nv, in.stallNote())}
		}
		return syncStep{Kind: syncSetDB, DB: t, Reason: fmt.Sprintf("the database waits for %s instead of %s (available standbys: %v)%s", t, in.DB, available(in, v), in.stallNote())}
	}
	if t.Async() {
		return syncStep{Kind: syncNone, Reason: fmt.Sprintf("no standby available (synchronous_mode %s): commits are acknowledged without one, and the sync key promises nothing, so no other member may be promoted", in.Mode)}
	}
	if in.Applied == nil || !in.Applied.Config.Equal(in.DB) || in.Applied.Flush.IsZero() {
		return syncStep{Kind: syncSetDB, DB: in.DB, Reason: fmt.Sprintf("applying %s again to learn from when it is in effect (no flushed position recorded for it in this term)", in.DB)}
	}

	// Count the standbys that confirmed: synchronous, and flushed past
	// where the primary was once the configuration took effect.
	var confirmed, pending []string
	for _, n := range t.Names {
		ok := false
		for _, r := range in.Replicas {
			if r.Name == n && r.State == "streaming" && (r.SyncState == "sync" || r.SyncState == "quorum") &&
				in.Compare != nil && in.Compare(r.Flushed, in.Applied.Flush) >= 0 {
				ok = true
			}
		}
		switch {
		case ok:
			confirmed = append(confirmed, n)
		case !slices.Contains(v, n) && !isPlaceholder(n):
			pending = append(pending, n)
		}
	}
	// Every acknowledged commit is on at least q members of v. A confirmed
	// member joins v without raising q (that promise only grows with v);
	// q rises to what the database now keeps only when every member of the
	// new set confirmed, i.e. holds every commit acknowledged before the
	// configuration took effect.
	nv := append([]string(nil), v...)
	for _, n := range confirmed {
		if !slices.Contains(nv, n) {
			nv = append(nv, n)
		}
	}
	nq := q
	allConfirmed := true
	for _, n := range nv {
		allConfirmed = allConfirmed && slices.Contains(confirmed, n)
	}
	if allConfirmed {
		nq = max(q, maxQuorum(t, nv))
	}
	if len(nv) == len(v) && nq == q {
		if len(pending) > 0 {
			return syncStep{Kind: syncWait, Reason: fmt.Sprintf("the database waits for %s; %v not yet confirmed synchronous and flushed past %s; the sync key promises %d of %v",
				t, pending, in.Applied.Flush, q, v)}
		}
		return syncStep{Kind: syncNone, Reason: fmt.Sprintf("synchronous replication as configured: the database waits for %s, the sync key promises %d of %v", t, q, v)}
	}
	return syncStep{Kind: syncWriteDCS, DCS: dcs.SyncState{Leader: in.Me, Mode: in.Mode, Members: nv, Quorum: nq},
		Reason: fmt.Sprintf("%v synchronous and flushed past %s: sync key from %d of %v to %d of %v (rule 6: into the sync key last)", confirmed, in.Applied.Flush, q, v, nq, nv)}
}

func isPlaceholder(n string) bool {
	return n == NoStandbyName || strings.HasPrefix(n, NoStandbyName+"-")
}

func intersect(a, b []string) []string {
	out := []string{}
	for _, x := range a {
		if slices.Contains(b, x) && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func hasDup(a []string) bool {
	seen := map[string]bool{}
	for _, x := range a {
		if seen[x] {
			return true
		}
		seen[x] = true
	}
	return false
}

// prePromoteSync is what a new leader records before it promotes: the sync
// key with itself and an empty set (nobody else may be promoted until a
// standby confirmed), and the configuration its database starts with
// (strict: waiting for a standby that cannot exist; otherwise none). ok is
// false when synchronous replication is neither configured nor recorded.
func prePromoteSync(o *Observation) (dcs.SyncState, backends.SyncConfig, bool) {
	mode := o.Config.SynchronousMode
	if !syncActiveMode(mode) && !rulesOf(o.Cluster).Active {
		return dcs.SyncState{}, backends.SyncConfig{}, false
	}
	if !syncActiveMode(mode) {
		mode = SyncOff
	}
	st := dcs.SyncState{Leader: o.Self.Name, Mode: mode, Members: []string{}}
	var db backends.SyncConfig
	if mode == SyncStrict {
		db = syncTarget(syncInput{Me: o.Self.Name, Mode: mode, N: o.Config.SynchronousNodeCount, OneAck: o.OneAck}, nil)
	}
	if o.OneAck {
		// The replicas that acknowledged the former leader stop: a new
		// list of the next epoch (the strict placeholder, or nobody).
		var cur *dcs.Versioned[dcs.SyncState]
		curErr := ""
		if o.Cluster != nil {
			cur, curErr = o.Cluster.Sync, o.Cluster.SyncError
		}
		st = withAcks(st, cur, curErr, o.Self.Name)
		if cur != nil && curErr == "" && cur.Value.Leader == o.Self.Name {
			st.AckEpoch++
		}
		st.Acknowledgers = ackList(db)
	}
	return st, db, true
}

// ---------------------------------------------------------------------------
// The leader's actions

// maxSyncSteps bounds the steps one loop takes (each is a DCS write or a
// database reload).
const maxSyncSteps = 8

// manageSync carries out the synchronous-replication steps, starting with
// first (decided from this loop's observation), re-observing the database
// after each change, for at most about retry_timeout: a standby that has to
// confirm is waited for briefly, so that a replacement usually completes
// within one loop.
func (a *Agent) manageSync(ctx context.Context, o *Observation, first *syncStep) {
	if first == nil || first.Kind == syncNone {
		return
	}
	sr, why := syncReplicator(a.db)
	if sr == nil {
		a.warnOnce("sync-unsupported", "synchronous_mode "+o.Config.SynchronousMode+": "+why+": replication stays asynchronous")
		return
	}
	in := syncInputOf(o)
	if in.OneAck && in.N > 1 {
		a.warnOnce("sync-one-ack", fmt.Sprintf("synchronous_node_count %d: a MariaDB primary waits for one acknowledgement (any of its semi-synchronous replicas); steward keeps 1", in.N))
	}
	var lastSet *backends.SyncConfig // OneAck: the configuration set in this loop
	budget := o.Config.RetryTimeout.D()
	deadline := a.now().Add(budget)
	step := *first
	changedDB := false
	for i := 0; i < maxSyncSteps || (in.OneAck && changedDB && a.now().Before(deadline)); i++ {
		switch step.Kind {
		case syncNone:
			return
		case syncWait:
			if !changedDB || !a.now().Before(deadline) {
				a.logSync(step, slogDebugIfSame)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pollEvery(in.OneAck)):
			}
		case syncWriteDCS:
			if in.OneAck {
				step.DCS = withAcks(step.DCS, in.Sync, in.SyncErr, a.name)
			}
			a.logSync(step, 0)
			ver := int64(0)
			if in.Sync != nil {
				ver = in.Sync.Version
			}
			cctx, cancel := context.WithTimeout(ctx, budget)
			nv, err := a.store.CASSync(cctx, step.DCS, ver, o.Lead.Term)
			cancel()
			if err != nil {
				a.log.Warn("writing the sync key failed; the next loop tries again", "err", err, "step", step.Reason)
				if errors.Is(err, dcs.ErrNotLeader) {
					a.Wake()
				}
				return
			}
			in.Sync, in.SyncErr = &dcs.Versioned[dcs.SyncState]{Value: step.DCS, Version: nv}, ""
		case syncSetDB:
			if !(in.OneAck && oneAckPending(in, step.DB, lastSet)) {
				a.logSync(step, 0)
			}
			if faultActive("sync-key-first") && !step.DB.Async() {
				// Test builds only: the wrong order (the key promises the
				// new standbys before the database waits for them), so the
				// end-to-end checker proves it would catch it.
				bad := dcs.SyncState{Leader: a.name, Mode: in.Mode, Members: step.DB.Names, Quorum: step.DB.Num}
				a.log.Error("FAULT INJECTED: writing the sync key before the database waits", "sync_members", bad.Members)
				if in.Sync != nil {
					if nv, err := a.store.CASSync(ctx, bad, in.Sync.Version, o.Lead.Term); err == nil {
						in.Sync = &dcs.Versioned[dcs.SyncState]{Value: bad, Version: nv}
					}
					time.Sleep(time.Second) // a slow database step: the window stays open

				}
			}
			apply, poll := step.DB, false
			if in.OneAck {
				var ok bool
				if apply, poll, ok = a.oneAckApply(ctx, o, &in, step.DB, lastSet, budget); !ok {
					return
				}
				if poll {
					if !a.now().Before(deadline) {
						a.logSync(syncStep{Kind: syncWait, Reason: fmt.Sprintf("the database is to wait for %s; it may still wait for %s: the replicas taken off the list have yet to report their acknowledgements off, or none listed acknowledges yet", step.DB, in.DB)}, slogDebugIfSame)
						return
					}
					select {
					case <-ctx.Done():
						return
					case <-time.After(pollEvery(in.OneAck)):
					}
				}
			}
			if !poll {
				sctx, cancel := context.WithTimeout(ctx, budget+2*time.Second)
				flush, err := sr.SetSync(sctx, apply)
				cancel()
				if err != nil {
					a.log.Error("changing the database's synchronous standbys failed; the next loop tries again", "err", err, "want", apply.String())
					return
				}
				applied := &SyncApplied{Config: step.DB, Flush: flush, Term: o.Lead.Term}
				if in.OneAck {
					// In effect only if nobody else could acknowledge when
					// the position was read: the set observed before the
					// change equals the target.
					if !in.DB.Equal(step.DB) || !apply.Equal(step.DB) {
						applied = nil
					}
					lastSet = &apply
				} else {
					in.DB = step.DB
				}
				in.Applied = applied
				a.mu.Lock()
				a.mem.SyncApplied = in.Applied
				a.mu.Unlock()
			}
			changedDB = true
		}
		if changedDB && in.OneAck {
			// The acknowledgers report in their member keys: read the
			// DCS again with the database.
			if !a.reobserveAcks(ctx, o, &in, budget) {
				return
			}
		} else if changedDB {
			// Fresh replication state for the confirmation.
			octx, cancel := context.WithTimeout(ctx, budget)
			st := a.db.Observe(octx)
			cancel()
			if st.State != backends.StateRunning || !st.Writable {
				return
			}
			in.Replicas = st.Replicas
			in.DB = st.Sync
			in.SyncWait = st.SyncWait
		}
		step = planSync(in)
	}
}

// pollEvery is how often manageSync looks again while a standby has yet to
// confirm: the database alone every 50 ms; with one acknowledgement the
// DCS too (the replicas report there), every 200 ms.
func pollEvery(oneAck bool) time.Duration {
	if oneAck {
		return 200 * time.Millisecond
	}
	return 50 * time.Millisecond
}

// slogDebugIfSame: log a waiting step at Info only when it changed.
const slogDebugIfSame = 1

func (a *Agent) logSync(s syncStep, flags int) {
	line := string(s.Kind) + ": " + s.Reason
	a.mu.Lock()
	same := a.lastSyncLog == line
	a.lastSyncLog = line
	a.mu.Unlock()
	if flags == slogDebugIfSame && same {
		a.log.Debug("decision", "action", "sync", "step", string(s.Kind), "reason", s.Reason)
		return
	}
	kv := []any{"action", "sync", "step", string(s.Kind), "reason", s.Reason}
	switch s.Kind {
	case syncWriteDCS:
		kv = append(kv, "sync_members", s.DCS.Members, "quorum", s.DCS.Quorum, "mode", s.DCS.Mode)
	case syncSetDB:
		kv = append(kv, "database", s.DB.String())
	}
	a.log.Info("decision", kv...)
}

func (a *Agent) warnOnce(key, msg string) {
	a.mu.Lock()
	seen := a.warned[key]
	if a.warned == nil {
		a.warned = map[string]bool{}
	}
	a.warned[key] = true
	a.mu.Unlock()
	if !seen {
		a.log.Warn(msg)
	}
}

// prePromoteSync: a new leader writes the sync key (itself, an empty set)
// before it promotes, and gives its database the configuration to start
// with (rule 6). false: do not promote now (the write failed; a stale
// version or a lost key), the next loop tries again.
func (a *Agent) prePromoteSync(ctx context.Context, o *Observation, cur *dcs.Cluster, term int64) bool {
	po := *o
	po.Cluster = cur
	st, db, ok := prePromoteSync(&po)
	sr, _ := syncReplicator(a.db) // nil: manageSync says why
	if !ok || sr == nil {
		// A backend without synchronous replication (MySQL 8 for now)
		// never promised anything: recording a sync set would only stop
		// every later failover.
		return true
	}
	ver := int64(0)
	if cur.Sync != nil {
		ver = cur.Sync.Version
	}
	timeout := o.Config.RetryTimeout.D()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	_, err := a.store.CASSync(cctx, st, ver, term)
	cancel()
	if err != nil {
		a.log.Warn("not promoting yet: writing the sync key before promoting failed (rule 6)", "err", err, "term", term)
		return false
	}
	a.log.Info("decision", "action", "sync", "step", string(syncWriteDCS), "mode", st.Mode, "sync_members", st.Members,
		"reason", "a new leader records itself with an empty sync set before promoting (rule 6)")
	sctx, cancel := context.WithTimeout(ctx, timeout+2*time.Second)
	_, err = sr.SetSync(sctx, db)
	cancel()
	if err != nil {
		if st.Mode == SyncStrict {
			a.log.Warn("not promoting yet: strict mode needs the database to wait for a standby from the start", "err", err)
			return false
		}
		a.log.Warn("setting the synchronous standbys before promoting failed; the leader loop sets them", "err", err)
	}
	a.mu.Lock()
	a.mem.SyncApplied = nil
	a.mu.Unlock()
	return true
}
