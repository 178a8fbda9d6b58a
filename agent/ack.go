package agent

import (
	"context"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// Synchronous replication where the replicas decide whether they
// acknowledge (MariaDB semi-synchronous replication; docs/mysql.md).
//
// PostgreSQL's primary is told which standbys to wait for. A MariaDB primary
// only waits for one acknowledgement from any replica connected with
// rpl_semi_sync_slave_enabled, so the set of standbys the database waits
// for (the "DB" of sync.go) is whatever replicas have that flag. The leader
// therefore lists the replicas allowed to acknowledge in the sync key
// (SyncState.Acknowledgers, with AckEpoch bumped on every change); each
// replica's agent turns its flag on only while it is listed there, off
// otherwise, and reports its flag with the epoch of the list it acted on
// (dcs.Member.SemiSync). The leader counts as a possible acknowledger
// (ackView) every replica that
//
//   - is listed, or
//   - reports its flag on, or
//   - has not yet reported on the current list (its epoch is older), or
//   - is connected without any report (its agent is gone), or
//   - is one of the connections the server counts as acknowledgers
//     (Rpl_semi_sync_master_clients) beyond those it can name.
//
// That set can only be larger than the truth, never smaller, which is what
// the planner of sync.go needs: it then applies the same rule 6 ordering as
// for PostgreSQL, with the database waiting for ANY 1 of the set. A
// configuration counts as applied (and its flushed position is taken) only
// once the set equals the target, i.e. once every replica removed from the
// list reported its flag off for the current epoch.

// AckReplicator is a SyncReplicator whose replicas decide whether they
// acknowledge commits.
type AckReplicator interface {
	SyncReplicator
	// SyncUnsupported says why this server cannot run the synchronous
	// modes ("" when it can).
	SyncUnsupported() string
	// SetAcknowledger turns this replica's acknowledgements on or off, in
	// effect when it returns, and returns the state read after it.
	SetAcknowledger(ctx context.Context, on bool) (*backends.SemiSync, error)
	// ReleaseWaiters ends the wait of the commits waiting for an
	// acknowledgement when held (an acknowledger's received position)
	// contains all the primary has written, and says how many it released.
	ReleaseWaiters(ctx context.Context, held backends.Position) (int, error)
}

// UnknownAcknowledger stands for a connection the primary counts as an
// acknowledger that no member accounts for.
const UnknownAcknowledger = "steward.unknown-acknowledger"

// ackReplicator returns the backend as an AckReplicator when it is one and
// its server supports it.
func ackReplicator(db Backend) (AckReplicator, bool) {
	ar, ok := db.(AckReplicator)
	if _, why := syncReplicator(db); !ok || why != "" {
		return nil, false
	}
	return ar, true
}

// ackView is what a semi-synchronous primary waits for (ANY 1 of the
// possible acknowledgers; asynchronous when the server does not wait) and
// its replica connections with their acknowledgement state and received
// positions taken from their member keys.
//
// seen holds the last report the leader read from each member key (the
// member key of a replica cut off from etcd expires while its connection
// to the primary lingers for a minute or more): a connected member without
// a member key is counted unless its last report said its flag was off
// for the current list.
func ackView(st backends.Status, cl *dcs.Cluster, me string, seen map[string]dcs.SemiSyncReport) (backends.SyncConfig, []backends.ReplicaConn) {
	if st.SemiSync == nil || !st.Writable {
		return st.Sync, st.Replicas
	}
	var key dcs.SyncState
	keyOK := cl != nil && cl.Sync != nil && cl.SyncError == ""
	if keyOK {
		key = cl.Sync.Value
	}
	var members map[string]dcs.Member
	if cl != nil {
		members = cl.Members
	}
	connected := map[string]bool{}
	for _, r := range st.Replicas {
		connected[r.Name] = true
	}
	names := map[string]bool{}
	if keyOK && key.Leader == me {
		for _, n := range key.Acknowledgers {
			names[n] = true
		}
	}
	offForCurrentList := func(r dcs.SemiSyncReport, n string) bool {
		return !r.Acking && keyOK && r.Epoch >= key.AckEpoch && !slices.Contains(key.Acknowledgers, n)
	}
	for name, m := range members {
		if name == me || m.SemiSync == nil {
			continue
		}
		if r := *m.SemiSync; !offForCurrentList(r, name) {
			names[name] = true
		}
	}
	for n := range connected {
		if m, ok := members[n]; ok && m.SemiSync != nil {
			continue
		}
		// Connected without a report (no member key, or one without a
		// semi-sync state: its server does not answer its agent): assume
		// it acknowledges, unless it last reported its flag off for the
		// current list (it turns it on only when a later list names it).
		if r, ok := seen[n]; ok && offForCurrentList(r, n) {
			continue
		}
		names[n] = true
	}
	counted := 0
	for n := range connected {
		if names[n] {
			counted++
		}
	}
	if st.SemiSync.Clients > counted {
		names[UnknownAcknowledger] = true
	}

	replicas := make([]backends.ReplicaConn, len(st.Replicas))
	for i, r := range st.Replicas {
		m, ok := members[r.Name]
		switch {
		case ok && m.Following == me && m.ReplicationState == "streaming":
			r.Flushed = m.Received
			if s := m.SemiSync; s != nil && s.Active && (!keyOK || s.Epoch >= key.AckEpoch) {
				r.SyncState = "sync"
			}
		case ok:
			// Its agent says it does not stream from this primary (its
			// server died, or it follows another): the connection the
			// primary still lists is going away.
			r.State = "not-streaming"
		}
		replicas[i] = r
	}
	if !st.SemiSync.MasterEnabled {
		return backends.SyncConfig{}, replicas
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	if len(list) == 0 {
		list = []string{NoStandbyName} // waits (wait_no_slave) for nobody who exists
	}
	sort.Strings(list)
	return backends.SyncConfig{Method: backends.SyncAny, Num: 1, Names: list}, replicas
}

// ackList is the Acknowledgers list for a configuration.
func ackList(cfg backends.SyncConfig) []string {
	if cfg.Async() {
		return []string{}
	}
	l := slices.Clone(cfg.Names)
	sort.Strings(l)
	return l
}

// withAcks carries the acknowledger list and epoch of the current key into
// a sync key the planner writes (which knows nothing of them): kept when
// the key is this leader's, an empty list of the next epoch otherwise.
func withAcks(st dcs.SyncState, cur *dcs.Versioned[dcs.SyncState], curErr string, me string) dcs.SyncState {
	if cur == nil || curErr != "" {
		st.Acknowledgers, st.AckEpoch = []string{}, 1
		return st
	}
	if cur.Value.Leader == me {
		st.Acknowledgers, st.AckEpoch = cur.Value.Acknowledgers, cur.Value.AckEpoch
		return st
	}
	st.Acknowledgers, st.AckEpoch = []string{}, cur.Value.AckEpoch+1
	return st
}

// ackChores keeps this replica's acknowledgements as the sync key lists
// them: on while it follows the leader the key names and is listed, off
// otherwise.
func (a *Agent) ackChores(ctx context.Context, o *Observation) {
	ar, ok := ackReplicator(a.db)
	ss := o.DB.SemiSync
	if !ok || ss == nil || !o.DB.InRecovery || o.DB.State != backends.StateRunning || o.Lead.Held {
		return
	}
	want, why := false, "not listed as an acknowledger in the sync key"
	if o.Cluster == nil {
		why = "the DCS cannot be read: no acknowledgement the leader cannot count"
	}
	if cl := o.Cluster; cl != nil && cl.Sync != nil && cl.SyncError == "" && cl.Leader != nil {
		k := cl.Sync.Value
		switch {
		case !slices.Contains(k.Acknowledgers, o.Self.Name):
		case k.Leader != cl.Leader.Name:
			why = "listed by " + k.Leader + ", which no longer leads"
		case o.DB.Upstream == "":
			why = "listed, but not replicating"
		default:
			want, why = true, "listed as an acknowledger by the leader "+k.Leader
		}
	}
	var on bool
	switch {
	case !want && (ss.SlaveEnabled || ss.SlaveActive):
		on = false
	case want && !ss.SlaveEnabled:
		on = true
	case want && !ss.SlaveActive && o.DB.Streaming && a.now().Sub(a.ackRestartAt) > 30*time.Second:
		// The flag is on but the connection does not acknowledge (set
		// while the IO thread did not run): reconnect it, at most every 30 s.
		on, why = true, why+"; connected without acknowledging"
	default:
		return
	}
	a.ackRestartAt = a.now()
	a.log.Info("decision", "action", "semi-sync acknowledger", "acknowledging", on, "reason", why)
	actx, cancel := context.WithTimeout(ctx, o.Config.RetryTimeout.D())
	defer cancel()
	after, err := ar.SetAcknowledger(actx, on)
	if err != nil {
		a.log.Warn("setting this replica's semi-synchronous acknowledgements failed; the next loop tries again", "err", err, "acknowledging", on)
	}
	if after != nil {
		// The member key reports the state after the change: the leader
		// waits for it (ackView).
		o.DB.SemiSync = after
	}
}

// semiSyncReport is the member key's SemiSync field.
func semiSyncReport(o *Observation) *dcs.SemiSyncReport {
	ss := o.DB.SemiSync
	if ss == nil || o.DB.Writable {
		return nil
	}
	r := &dcs.SemiSyncReport{Acking: ss.SlaveEnabled || ss.SlaveActive, Active: ss.SlaveActive}
	if cl := o.Cluster; cl != nil && cl.Sync != nil && cl.SyncError == "" {
		r.Epoch = cl.Sync.Value.AckEpoch
	}
	return r
}

// setAcknowledgers writes the acknowledger list of cfg into this leader's
// sync key, as the next epoch, when it differs. false: the key is not this
// leader's or the write failed (the next loop tries again).
func (a *Agent) setAcknowledgers(ctx context.Context, o *Observation, in *syncInput, cfg backends.SyncConfig, budget time.Duration) bool {
	if in.Sync == nil || in.SyncErr != "" || in.Sync.Value.Leader != a.name {
		return false
	}
	cur := in.Sync.Value
	want := ackList(cfg)
	if slices.Equal(cur.Acknowledgers, want) {
		return true
	}
	next := cur
	next.Acknowledgers, next.AckEpoch = want, cur.AckEpoch+1
	a.log.Info("decision", "action", "sync", "step", string(syncWriteDCS), "acknowledgers", want, "ack_epoch", next.AckEpoch,
		"reason", "the replicas allowed to acknowledge commits are listed in the sync key before the database waits for them; those left out turn their acknowledgements off and report it")
	cctx, cancel := context.WithTimeout(ctx, budget)
	nv, err := a.store.CASSync(cctx, next, in.Sync.Version, o.Lead.Term)
	cancel()
	if err != nil {
		a.log.Warn("writing the sync key's acknowledgers failed; the next loop tries again", "err", err)
		return false
	}
	in.Sync = &dcs.Versioned[dcs.SyncState]{Value: next, Version: nv}
	return true
}

// reobserveAcks reads the DCS and the database again for the planner: the
// acknowledgers report in their member keys.
func (a *Agent) reobserveAcks(ctx context.Context, o *Observation, in *syncInput, budget time.Duration) bool {
	lctx, cancel := context.WithTimeout(ctx, budget)
	cl, err := a.store.Load(lctx)
	cancel()
	if err != nil {
		return false
	}
	octx, cancel := context.WithTimeout(ctx, budget)
	st := a.db.Observe(octx)
	cancel()
	if st.State != backends.StateRunning || !st.Writable {
		return false
	}
	a.mu.Lock()
	seen := maps.Clone(a.rememberAcks(cl))
	a.mu.Unlock()
	in.DB, in.Replicas = ackView(st, cl, a.name, seen)
	in.Members, in.Sync, in.SyncErr = cl.Members, cl.Sync, cl.SyncError
	in.SyncWait = st.SyncWait
	return true
}

// oneAckApply decides what a semi-synchronous primary's database is set
// to for the planner's target (manageSync's set-database step): the
// acknowledger list goes into the sync key first. Then
//
//   - poll: the target was set already and replicas taken off the list
//     have yet to report their acknowledgements off; or in modes on and
//     quorum, while the key promises nothing (quorum 0), no listed replica
//     acknowledges yet and the database already runs asynchronously: it
//     keeps doing so rather than make every commit wait for a replica's
//     next loop;
//   - apply: the configuration to set (asynchronous in that last case when
//     the database still waits, the target otherwise).
//
// ok is false when the sync key could not be written.
func (a *Agent) oneAckApply(ctx context.Context, o *Observation, in *syncInput, target backends.SyncConfig, lastSet *backends.SyncConfig, budget time.Duration) (apply backends.SyncConfig, poll, ok bool) {
	if oneAckPending(*in, target, lastSet) {
		return target, true, true
	}
	if !a.setAcknowledgers(ctx, o, in, target, budget) {
		return target, false, false
	}
	apply, poll = oneAckChoice(*in, target)
	return apply, poll, true
}

// oneAckPending: target was set already and the database may still wait
// for more than it (replicas taken off the list have not reported off).
func oneAckPending(in syncInput, target backends.SyncConfig, lastSet *backends.SyncConfig) bool {
	return lastSet != nil && lastSet.Equal(target) && !in.DB.Equal(target)
}

// oneAckChoice is what to set once the acknowledgers are listed for
// target (see oneAckApply).
func oneAckChoice(in syncInput, target backends.SyncConfig) (apply backends.SyncConfig, poll bool) {
	q := 0
	if in.Sync != nil {
		q = in.Sync.Value.Quorum
	}
	if target.Async() || in.Mode == SyncStrict || q != 0 || ackActive(in.Replicas, target) {
		return target, false
	}
	if in.DB.Async() {
		return target, true
	}
	return backends.SyncConfig{}, false
}

// ackActive: one of cfg's acknowledgers is connected and acknowledging.
func ackActive(replicas []backends.ReplicaConn, cfg backends.SyncConfig) bool {
	for _, r := range replicas {
		if r.SyncState == "sync" && cfg.Has(r.Name) {
			return true
		}
	}
	return false
}

// releaseStuckWaiters: a semi-synchronous primary whose commits wait while
// a listed acknowledger, connected and acknowledging, already received
// everything it wrote. MariaDB never releases such a commit (the
// acknowledger got it before it acknowledged anything, e.g. while it was an
// asynchronous replica, and does not acknowledge it again), and every later
// commit queues behind it: the backend ends the wait, which is as safe as
// the acknowledgement it stands for.
func (a *Agent) releaseStuckWaiters(ctx context.Context, o *Observation) {
	ar, ok := ackReplicator(a.db)
	ss := o.DB.SemiSync
	if !ok || !o.OneAck || ss == nil || !ss.MasterEnabled || ss.WaitSessions == 0 || o.Cluster == nil || o.Cluster.Sync == nil || o.Cluster.SyncError != "" {
		return
	}
	key := o.Cluster.Sync.Value
	if key.Leader != a.name {
		return
	}
	for _, r := range o.DB.Replicas {
		if r.SyncState != "sync" || !slices.Contains(key.Acknowledgers, r.Name) || r.Flushed.IsZero() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, o.Config.RetryTimeout.D())
		n, err := ar.ReleaseWaiters(rctx, r.Flushed)
		cancel()
		if err != nil {
			a.log.Warn("checking the commits waiting for an acknowledgement failed", "err", err, "acknowledger", r.Name)
			continue
		}
		if n > 0 {
			a.log.Info("decision", "action", "sync", "step", "release-waiters", "sessions", n, "acknowledger", r.Name,
				"reason", "commits waited for an acknowledgement of transactions the acknowledger "+r.Name+" already received ("+r.Flushed.String()+"), which MariaDB never sends: their wait is ended")
			return
		}
	}
}

// rememberAcks records the semi-sync reports of the member keys in cl and
// returns every report seen so far (a.mu held by the caller).
func (a *Agent) rememberAcks(cl *dcs.Cluster) map[string]dcs.SemiSyncReport {
	if a.ackSeen == nil {
		a.ackSeen = map[string]dcs.SemiSyncReport{}
	}
	if cl != nil {
		for n, m := range cl.Members {
			if m.SemiSync != nil {
				a.ackSeen[n] = *m.SemiSync
			}
		}
	}
	return a.ackSeen
}
