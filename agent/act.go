package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// act carries out a decision. Quick actions run inline, each bounded by a
// timeout; long ones (bootstrap, clone, rewind, reinit) run as background
// jobs so that the loop keeps publishing and renewing meanwhile.
func (a *Agent) act(ctx context.Context, o *Observation, d Decision) {
	timeout := o.Config.RetryTimeout.D()
	switch d.Action {
	case ActNone:
		// A streaming replica: after an agent restart this is where it
		// first learns its role (on_start); later calls change nothing.
		a.roleChanged(string(backends.RoleReplica))
		a.replicaChores(ctx, o)
		a.ackChores(ctx, o)
		return

	case ActWait:
		// Whatever else waits, a replica keeps its acknowledgements as
		// the sync key says (off when the DCS cannot be read).
		a.ackChores(ctx, o)
		return

	case ActStayDown:
		return

	case ActAdopt:
		a.adopt(ctx, o)

	case ActRaceInitialize:
		a.raceInitialize(ctx, o)

	case ActClone:
		up := *d.Upstream
		a.startJob(ctx, ActClone, func(ctx context.Context) error {
			if err := a.db.Clone(ctx, up); err != nil {
				return fmt.Errorf("cloning from %s: %w", up.Name, err)
			}
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return a.db.Start(sctx, backends.RoleReplica, &up)
		})

	case ActStartReplica:
		sctx, cancel := context.WithTimeout(ctx, 2*timeout)
		err := a.db.Start(sctx, backends.RoleReplica, d.Upstream)
		cancel()
		a.logResult("start database as a replica", err, "upstream", upName(d.Upstream))
		a.noteFailure(ActStartReplica, err)
		a.roleChanged(string(backends.RoleReplica))

	case ActStartPrimary:
		a.mu.Lock()
		if a.mem.StartingSince.IsZero() {
			a.mem.StartingSince = o.Now
		}
		a.mu.Unlock()
		sctx, cancel := context.WithTimeout(ctx, 2*timeout)
		err := a.db.Start(sctx, backends.RolePrimary, nil)
		cancel()
		a.logResult("restart the primary in place", err)
		a.noteFailure(ActStartPrimary, err)

	case ActFollow:
		fctx, cancel := context.WithTimeout(ctx, timeout)
		err := a.db.Follow(fctx, d.Upstream)
		cancel()
		a.logResult("repoint replica", err, "upstream", upName(d.Upstream))
		a.mu.Lock()
		a.mem.Diverged, a.mem.DivergedFrom, a.mem.RewindFailed, a.mem.RewindFailures = nil, "", "", 0
		if o.DB.ApplierError != "" {
			a.mem.ApplierRestartAt = a.now()
		}
		a.mu.Unlock()

	case ActCheckDivergence:
		a.checkDivergence(ctx, o, *d.Upstream, timeout)

	case ActRewind:
		up := *d.Upstream
		div := o.Mem.Diverged
		a.startJob(ctx, ActRewind, func(ctx context.Context) error { return a.rewind(ctx, up, div, timeout) })

	case ActReinit:
		up := *d.Upstream
		a.startJob(ctx, ActReinit, func(ctx context.Context) error { return a.reinit(ctx, up, timeout) })

	case ActAcquire:
		a.acquireAndPromote(ctx, o, d)

	case ActSwitchover:
		job := switchoverJob{request: *d.Switchover, cluster: o.Cluster, config: o.Config, term: o.Lead.Term, timeout: timeout}
		if strings.Contains(d.Reason, "discarding") {
			job.discard = d.Reason
		}
		a.startJob(ctx, ActSwitchover, func(ctx context.Context) error { return a.switchover(ctx, job) })

	case ActRestart:
		a.mu.Lock()
		a.mem.RestartRequested = false
		a.mu.Unlock()
		role, up := backends.RoleReplica, d.Upstream
		if o.DB.Writable && o.Lead.Valid(o.Now) {
			role, up = backends.RolePrimary, nil
		}
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := a.db.Stop(sctx, backends.StopFast)
		cancel()
		if err == nil {
			sctx, cancel = context.WithTimeout(ctx, 2*timeout)
			err = a.db.Start(sctx, role, up)
			cancel()
		}
		a.logResult("restart the database (operator request)", err, "role", role)
		a.noteFailure(ActRestart, err)

	case ActFence:
		// The job gets copies: the loop goes on using o meanwhile.
		job := fenceJob{term: o.Lead.Term, target: formerLeader(o), timeout: timeout}
		if m, ok := o.Cluster.Members[job.target]; ok {
			job.member = m
		}
		a.startJob(ctx, ActFence, func(ctx context.Context) error { return a.fence(ctx, job) })

	case ActPromote:
		a.promote(ctx, o, d, "failover")

	case ActDemote:
		a.demote(ctx, o, d)

	case ActRelease:
		a.release(ctx, o, d)

	case ActReacquire:
		a.reacquire(ctx, o)

	case ActLead:
		a.leaderChores(ctx, o)
		a.releaseStuckWaiters(ctx, o)
		a.manageSync(ctx, o, d.Sync)
	}
}

func upName(u *backends.Upstream) string {
	if u == nil {
		return ""
	}
	return u.Name
}

func (a *Agent) logResult(what string, err error, kv ...any) {
	if err != nil {
		a.log.Error(what+" failed", append(kv, "err", err)...)
		return
	}
	a.log.Info(what, kv...)
}

// roleChanged records the role this member's database now has ("primary"
// or "replica") and, when it differs from the last one recorded, runs the
// role change callback: on_start for the first role after the agent
// started, on_role_change for every later change. Notifying under a.mu
// keeps the callbacks in the order of the changes (callers are the loop and
// its background jobs); notify itself never waits on a callback.
func (a *Agent) roleChanged(role string) {
	a.mu.Lock()
	prev := a.lastRole
	a.lastRole = role
	if role != prev {
		action := CallbackOnRoleChange
		if prev == "" {
			action = CallbackOnStart
		}
		a.callbacks.notify(action, role, a.opts.Cluster, a.name)
	}
	a.mu.Unlock()
	if role == prev {
		return
	}
	if a.opts.OnRoleChange != nil {
		go a.opts.OnRoleChange(role)
	}
}

// adopt takes over the lease of a leader key that carries our name (the
// agent was restarted while its lease still lived): the running primary is
// kept as it is.
func (a *Agent) adopt(ctx context.Context, o *Observation) {
	l := o.Cluster.Leader
	sent, err := a.store.AdoptLease(ctx, l.Lease)
	if err != nil {
		a.log.Warn("adopting the leader key's lease failed; it will expire and the cluster elects a leader", "term", l.Term, "err", err)
		return
	}
	a.setLead(l.Term, sent)
	if o.DB.Writable {
		if err := a.armWatchdog(); err != nil {
			// Give the key up (it is on our lease, which we keep renewing)
			// and let the next loop demote the database.
			a.log.Error("adopted the leader key but the required watchdog is not working: releasing the key and demoting", "err", err)
			a.dropLead()
			rctx, cancel := context.WithTimeout(ctx, o.Config.RetryTimeout.D())
			_ = a.store.ReleaseLeader(rctx, l.Term)
			cancel()
			return // the next loop (after loop_wait, never at once) demotes
		}
	}
	a.opts.Metrics.LeaderChange("adopt")
	a.setHistoryTerm(l.Term) // the record of this term was written by our previous run
	a.log.Info("role change: adopted the leader key after a restart", "old_role", a.view.Member.Role, "new_role", "leader", "term", l.Term, "reason", "the key carries this member's name")
}

// raceInitialize: the first member to create the initialize key bootstraps
// the cluster; the others clone from it.
func (a *Agent) raceInitialize(ctx context.Context, o *Observation) {
	ver, err := a.store.CreateInitialize(ctx, dcs.Initialize{Member: a.name, Time: time.Now().UTC()})
	if errors.Is(err, dcs.ErrConflict) {
		a.log.Info("another member is bootstrapping the cluster")
		return
	}
	if err != nil {
		a.log.Warn("creating the initialize key failed", "err", err)
		return
	}
	l, sent, err := a.store.AcquireLeader(ctx)
	if err != nil {
		a.log.Error("won the initialize key but could not take the leader key; giving the bootstrap up", "err", err)
		_ = a.store.DeleteInitialize(ctx, ver)
		return
	}
	a.setLead(l.Term, sent)
	a.opts.Metrics.LeaderChange("bootstrap")
	a.log.Info("role change: bootstrapping a new cluster", "old_role", "uninitialized", "new_role", "leader", "term", l.Term)
	dyn := o.Config
	a.startJob(ctx, ActRaceInitialize, func(ctx context.Context) error {
		sysid, err := a.db.Bootstrap(ctx)
		if err != nil {
			a.log.Error("bootstrap failed; wiping the data directory and giving the cluster up to another member", "err", err)
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = a.db.Stop(sctx, backends.StopImmediate)
			_ = a.db.Wipe(sctx)
			_ = a.store.ReleaseLeader(sctx, l.Term)
			a.dropLead()
			_ = a.store.DeleteInitialize(sctx, ver)
			return fmt.Errorf("bootstrap: %w", err)
		}
		if _, err := a.store.UpdateInitialize(ctx, dcs.Initialize{Member: a.name, SystemID: sysid, Time: time.Now().UTC()}, ver); err != nil {
			a.log.Warn("recording the system identifier failed", "err", err)
		}
		if b, err := jsonDynamic(dyn); err == nil {
			if _, err := a.store.CASConfig(ctx, b, 0); err != nil && !errors.Is(err, dcs.ErrConflict) {
				a.log.Warn("writing the dynamic config failed", "err", err)
			}
		}
		st := a.db.Observe(ctx)
		if _, err := a.store.AppendHistory(ctx, dcs.HistoryRecord{Kind: "bootstrap", NewLeader: a.name, Term: l.Term,
			Timeline: st.Timeline, Promoted: st.Position, Reason: "cluster bootstrapped by " + a.name}); err != nil {
			a.log.Warn("appending the bootstrap history record failed", "err", err)
		} else {
			a.setHistoryTerm(l.Term)
		}
		a.roleChanged(string(backends.RolePrimary))
		return nil
	})
}

// acquireAndPromote is the failover: take the key (only possible once the
// old one expired or was released), re-check the term, promote, record it.
func (a *Agent) acquireAndPromote(ctx context.Context, o *Observation, d Decision) {
	l, sent, err := a.store.AcquireLeader(ctx)
	if errors.Is(err, dcs.ErrConflict) {
		a.log.Info("lost the leader race", "err", err)
		return
	}
	if err != nil {
		a.opts.Metrics.DCSError("acquire")
		a.log.Warn("leader race failed", "err", err)
		return
	}
	a.setLead(l.Term, sent)
	kind := "failover"
	a.mu.Lock()
	a.mem.Candidates = d.Candidates
	if sw := d.Switchover; sw != nil {
		if sw.Value.Phase == PhaseHandover {
			// The former leader handed over after stopping: nothing to fence.
			kind = "switchover"
			a.mem.Fence = &FenceState{Term: l.Term, Target: sw.Value.Leader, Confirmed: true,
				Summary: fmt.Sprintf("planned switchover: %s stopped cleanly at %s", sw.Value.Leader, sw.Value.FinalPosition)}
		} else {
			kind = "manual-failover"
		}
		a.mem.PendingSwitchover = sw
	}
	a.mu.Unlock()
	a.log.Info("acquired the leader key", "term", l.Term, "reason", d.Reason)
	o.Lead = LeadState{Held: true, Term: l.Term, Deadline: sent.Add(time.Hour)}
	a.mu.Lock()
	o.Mem = a.mem
	a.mu.Unlock()
	if _, blocked := fenceGate(o); blocked {
		// The next loop fences the former primary first (rule 2).
		a.Wake()
		return
	}
	a.promote(ctx, o, d, kind)
}

// promote turns our replica into the primary while we hold the key.
func (a *Agent) promote(ctx context.Context, o *Observation, d Decision, kind string) {
	a.mu.Lock()
	lead := a.lead
	a.mu.Unlock()
	timeout := o.Config.RetryTimeout.D()
	// Rule 2: re-check the term right before promoting.
	lctx, cancel := context.WithTimeout(ctx, timeout)
	cur, err := a.store.Load(lctx)
	cancel()
	switch {
	case err != nil:
		a.log.Warn("not promoting: cannot re-check the leader key", "err", err)
		return
	case cur.Leader == nil || cur.Leader.Name != a.name || cur.Leader.Term != lead.Term:
		a.log.Warn("not promoting: the leader key changed since it was taken", "term", lead.Term)
		a.dropLead()
		return
	case !lead.Valid(a.now()):
		a.log.Warn("not promoting: the lease deadline passed", "term", lead.Term)
		return
	}
	a.mu.Lock()
	planned := a.mem.PendingSwitchover != nil
	a.mu.Unlock()
	if why := syncIneligibility(cur, a.name); len(why) > 0 && !planned {
		// Rule 6, re-checked on the view read right before promoting (as
		// the term is): the sync key may have changed since the race.
		a.log.Warn("not promoting: "+why[0]+"; releasing the leader key", "term", lead.Term)
		rctx, cancel := context.WithTimeout(ctx, timeout)
		_ = a.store.ReleaseLeader(rctx, lead.Term)
		cancel()
		a.dropLead()
		a.mu.Lock()
		a.mem.RaceBackoffUntil = a.now().Add(o.Config.TTL.D())
		a.mu.Unlock()
		return
	}
	if !a.prePromoteSync(ctx, o, cur, lead.Term) {
		return // the next loop tries again (the key stays ours)
	}
	if err := a.armWatchdog(); err != nil {
		a.log.Error("not promoting: watchdog.mode is required and the watchdog does not work; releasing the leader key", "err", err, "term", lead.Term)
		rctx, cancel := context.WithTimeout(ctx, timeout)
		_ = a.store.ReleaseLeader(rctx, lead.Term)
		cancel()
		a.dropLead()
		a.mu.Lock()
		a.mem.RaceBackoffUntil = a.now().Add(o.Config.TTL.D())
		a.mem.LastJobError, a.mem.LastJobKind = "watchdog required but not working: "+err.Error(), ActPromote
		a.mu.Unlock()
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = a.db.Promote(pctx)
	cancel()
	if err != nil {
		a.log.Error("promotion failed: releasing the leader key and backing off for ttl", "err", err, "term", lead.Term)
		rctx, cancel := context.WithTimeout(ctx, timeout)
		_ = a.store.ReleaseLeader(rctx, lead.Term)
		cancel()
		a.dropLead()
		a.mu.Lock()
		a.mem.RaceBackoffUntil = a.now().Add(o.Config.TTL.D())
		a.mu.Unlock()
		return
	}
	// Replication slots for every member right away: a former primary that
	// restarts finds its slot (Patroni creates it a loop late).
	sctx, cancel := context.WithTimeout(ctx, timeout)
	if err := a.db.EnsureSlots(sctx, a.memberNames(cur)); err != nil {
		a.log.Warn("creating replication slots after promotion failed", "err", err)
	}
	cancel()
	a.lastSlots, a.lastSlotsDropped = "", ""
	octx, cancel := context.WithTimeout(ctx, timeout)
	st := a.db.Observe(octx)
	cancel()
	a.mu.Lock()
	old := a.mem.FormerLeader
	cands, fence, sw := a.mem.Candidates, a.mem.Fence, a.mem.PendingSwitchover
	a.mem.Candidates, a.mem.PendingSwitchover = nil, nil
	a.mu.Unlock()
	if sw != nil {
		a.consumeSwitchover(ctx, sw)
		if sw.Value.Phase == PhaseHandover {
			kind = "switchover"
			old = sw.Value.Leader
		} else {
			kind = "manual-failover"
		}
	}
	if old == "" && cur.LastHistory != nil && cur.LastHistory.NewLeader != a.name {
		old = cur.LastHistory.NewLeader
	}
	if len(d.Candidates) > 0 {
		cands = d.Candidates
	}
	reason := d.Reason
	if kind == "switchover" && fence != nil {
		reason += "; " + fence.Summary
	} else if fence != nil && fence.Term == lead.Term {
		if fence.Confirmed {
			reason += "; former primary " + fence.Target + " fenced: " + fence.Summary
		} else {
			reason += "; fencing of " + fence.Target + " not confirmed (fencing.mode " + a.opts.FencingMode + "): " + fence.Summary
		}
	}
	rec := dcs.HistoryRecord{Kind: kind, OldLeader: old, NewLeader: a.name, Term: lead.Term,
		Timeline: st.Timeline, Promoted: st.Position, Reason: reason, Candidates: cands}
	if fr, ok := a.db.(ForkReporter); ok {
		rec.Forked = fr.ForkPosition()
	}
	if cur.Status != nil {
		rec.Position = cur.Status.Position
	}
	if sw != nil && !sw.Value.FinalPosition.IsZero() {
		rec.Position = sw.Value.FinalPosition
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	if _, err := a.store.AppendHistory(hctx, rec); err != nil {
		a.opts.Metrics.DCSError("history")
		a.log.Warn("appending the history record failed", "err", err)
	} else {
		a.setHistoryTerm(lead.Term)
	}
	cancel()
	a.opts.Metrics.LeaderChange(kind)
	a.log.Info("role change: promoted", "old_role", "replica", "new_role", "primary", "term", lead.Term,
		"timeline", st.Timeline, "position", st.Position.String(), "reason", d.Reason)
	a.roleChanged(string(backends.RolePrimary))
	a.writeStatus(ctx, cur, st, lead.Term, timeout)
}

// demote stops writes now and restarts the database as a replica.
func (a *Agent) demote(ctx context.Context, o *Observation, d Decision) {
	if o.Lead.Held {
		a.opts.Metrics.LeaderChange("lost")
	}
	a.dropLead()
	timeout := o.Config.RetryTimeout.D()
	if o.DB.Writable || o.DB.State == backends.StateRunning || o.DB.State == backends.StateStarting || o.DB.State == backends.StateUnresponsive {
		sctx, cancel := context.WithTimeout(ctx, 2*timeout)
		err := a.db.Stop(sctx, backends.StopFast)
		cancel()
		if err != nil {
			a.log.Warn("fast stop did not finish in time; fencing", "err", err)
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := a.db.FenceWrites(fctx); err != nil {
				a.log.Error("fencing failed", "err", err)
			}
			cancel()
		}
	}
	a.markStopped()
	a.disarmWatchdog()
	a.log.Info("role change: demoted", "old_role", "primary", "new_role", "replica", "reason", d.Reason, "upstream", upName(d.Upstream))
	sctx, cancel := context.WithTimeout(ctx, 2*timeout)
	err := a.db.Start(sctx, backends.RoleReplica, d.Upstream)
	cancel()
	a.logResult("restart as a replica", err, "upstream", upName(d.Upstream))
	a.roleChanged(string(backends.RoleReplica))
}

// release: an unhealthy leader stops its database (no more writes), then
// gives the key up so that an eligible replica takes over.
func (a *Agent) release(ctx context.Context, o *Observation, d Decision) {
	a.mu.Lock()
	term := a.lead.Term
	a.mu.Unlock()
	fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	if err := a.db.FenceWrites(fctx); err != nil {
		a.log.Error("stopping the unhealthy primary failed; keeping the key so that no second writer appears", "err", err)
		cancel()
		return
	}
	cancel()
	a.markStopped()
	a.disarmWatchdog()
	a.dropLead()
	rctx, cancel := context.WithTimeout(ctx, o.Config.RetryTimeout.D())
	err := a.store.ReleaseLeader(rctx, term)
	cancel()
	a.mu.Lock()
	a.mem.RaceBackoffUntil = a.now().Add(o.Config.TTL.D())
	a.mu.Unlock()
	a.opts.Metrics.LeaderChange("released")
	a.log.Info("role change: released the leader key", "old_role", "primary", "new_role", "replica", "term", term, "reason", d.Reason, "release_err", err)
	a.roleChanged(string(backends.RoleReplica))
}

// reacquire takes the key back for a writable primary that lost it without
// anyone else taking over (rule 11 checked by decide).
func (a *Agent) reacquire(ctx context.Context, o *Observation) {
	l, sent, err := a.store.AcquireLeader(ctx)
	if err != nil {
		a.log.Warn("taking the leader key back failed", "err", err)
		return
	}
	a.setLead(l.Term, sent)
	if err := a.armWatchdog(); err != nil {
		a.log.Error("took the leader key back but the required watchdog is not working: giving it up and demoting", "err", err)
		_ = a.store.ReleaseLeader(ctx, l.Term)
		a.dropLead()
		return
	}
	a.opts.Metrics.LeaderChange("reacquire")
	a.log.Info("role change: took the leader key back", "old_role", "primary-without-key", "new_role", "leader", "term", l.Term)
	rec := dcs.HistoryRecord{Kind: "reacquire", OldLeader: a.name, NewLeader: a.name, Term: l.Term,
		Timeline: o.DB.Timeline, Promoted: o.DB.Position, Reason: "the agent restarted after its lease expired; nobody else had taken over"}
	if _, err := a.store.AppendHistory(ctx, rec); err == nil {
		a.setHistoryTerm(l.Term)
	}
}

// replicaChores: a streaming replica drops the replication slots it
// created for its peers when it led (a former primary that rejoined).
// Nobody streams from a replica, so those slots never advance and would
// keep every WAL segment from the demotion on until the disk is full. The
// leader creates its peers' slots at promotion (rule: a member that is
// briefly gone finds its slot there), so a replica needs none. Done once
// per membership, like the leader's EnsureSlots.
func (a *Agent) replicaChores(ctx context.Context, o *Observation) {
	sc, ok := a.db.(SlotCleaner)
	if !ok || !o.DB.InRecovery || o.Lead.Held {
		return
	}
	names := a.memberNames(o.Cluster)
	key := fmt.Sprint(names)
	if key == a.lastSlotsDropped {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, o.Config.RetryTimeout.D())
	defer cancel()
	if err := sc.DropMemberSlots(sctx, names); err != nil {
		a.log.Warn("dropping the slots this replica kept from when it led failed; will retry", "err", err)
		return
	}
	a.lastSlotsDropped = key
}

// leaderChores does the leader's chores: status (the position replicas measure their
// lag against), slots for every member, the config and history records.
func (a *Agent) leaderChores(ctx context.Context, o *Observation) {
	timeout := o.Config.RetryTimeout.D()
	a.mu.Lock()
	term := a.lead.Term
	a.mu.Unlock()
	a.writeStatus(ctx, o.Cluster, o.DB, term, timeout)
	names := a.memberNames(o.Cluster)
	if key := fmt.Sprint(names); key != a.lastSlots {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		if err := a.db.EnsureSlots(sctx, names); err != nil {
			a.log.Warn("ensuring replication slots failed", "err", err)
		} else {
			a.lastSlots = key
		}
		cancel()
	}
	if o.Cluster.Config == nil {
		if b, err := jsonDynamic(o.Config); err == nil {
			if _, err := a.store.CASConfig(ctx, b, 0); err != nil && !errors.Is(err, dcs.ErrConflict) {
				a.log.Warn("writing the dynamic config failed", "err", err)
			}
		}
	}
	if iv := o.Cluster.Initialize; iv != nil && iv.Value.SystemID == "" && o.DB.SystemID != "" {
		v := iv.Value
		v.SystemID = o.DB.SystemID
		_, _ = a.store.UpdateInitialize(ctx, v, iv.Version)
	}
	// A leadership without a history record (e.g. we crashed between
	// promoting and recording it) gets one now.
	if a.getHistoryTerm() != term && (o.Cluster.LastHistory == nil || o.Cluster.LastHistory.Term != term) {
		rec := dcs.HistoryRecord{Kind: "failover", OldLeader: a.lastLeaderName, NewLeader: a.name, Term: term,
			Timeline: o.DB.Timeline, Promoted: o.DB.Position, Reason: "leader without a history record for its term (recorded late)"}
		if _, err := a.store.AppendHistory(ctx, rec); err == nil {
			a.setHistoryTerm(term)
		}
	} else if o.Cluster.LastHistory != nil && o.Cluster.LastHistory.Term == term {
		a.setHistoryTerm(term)
	}
	a.roleChanged(string(backends.RolePrimary))
}

// writeStatus publishes the leader's position when it changed (guarded by
// the term). A refusal because the key is no longer ours is acted on at once.
func (a *Agent) writeStatus(ctx context.Context, cl *dcs.Cluster, st backends.Status, term int64, timeout time.Duration) {
	if st.Position.IsZero() {
		return
	}
	if st.Position == a.lastStatusPos && term == a.lastStatusTerm && cl != nil && cl.Status != nil && cl.Status.Term == term {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := a.store.PutStatus(sctx, dcs.Status{Leader: a.name, Term: term, Timeline: st.Timeline, Position: st.Position, Time: time.Now().UTC()}, term)
	switch {
	case err == nil:
		a.lastStatusPos, a.lastStatusTerm = st.Position, term
	case errors.Is(err, dcs.ErrNotLeader):
		a.log.Warn("status write refused: the leader key is not ours any more", "term", term)
		a.Wake()
	default:
		a.opts.Metrics.DCSError("status")
		a.log.Warn("writing status failed", "err", err)
	}
}

// checkDivergence compares a running replica's history with the leader's
// (rule 5) and remembers a fork.
func (a *Agent) checkDivergence(ctx context.Context, o *Observation, up backends.Upstream, timeout time.Duration) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	div, err := a.db.Divergence(dctx, up)
	cancel()
	a.mu.Lock()
	a.mem.DivergenceCheckedAt = a.now()
	if o.Cluster != nil {
		a.mem.DivergenceCheckedTL = o.Cluster.Members[up.Name].Timeline
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Debug("cannot check divergence yet", "upstream", up.Name, "err", err)
		return
	}
	if !div.Diverged {
		a.log.Debug("history contained in the leader's", "upstream", up.Name, "reason", div.Reason)
		if o.Self.Kind == "mysql" && !o.Config.Paused && o.DB.ReceiverState == "stopped" {
			// A PostgreSQL WAL receiver reconnects by itself; MySQL
			// replication threads stay stopped (skip_slave_start after a
			// restart that did not know the leader yet, an error, a hand).
			// Found by the fault-injection suite: after a whole-cluster
			// crash a replica stayed stopped under its leader for good.
			fctx, cancel := context.WithTimeout(ctx, timeout)
			err := a.db.Follow(fctx, &up)
			cancel()
			a.log.Info("replication was stopped under the leader: restarting it", "upstream", up.Name, "err", err)
		}
		return
	}
	a.log.Warn("history diverged from the leader", "upstream", up.Name, "reason", div.Reason, "discarded_bytes", div.Discarded)
	a.mu.Lock()
	if a.mem.DivergedFrom != up.Name {
		a.mem.RewindFailed, a.mem.RewindFailures = "", 0
	}
	a.mem.Diverged, a.mem.DivergedFrom = &div, up.Name
	a.mu.Unlock()
	a.Wake()
}

// rewind: stop cleanly, pg_rewind from the leader, start as its replica, and
// record in history what was thrown away.
func (a *Agent) rewind(ctx context.Context, up backends.Upstream, div *backends.Divergence, timeout time.Duration) error {
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err := a.db.Stop(sctx, backends.StopFast)
	cancel()
	if err != nil {
		return fmt.Errorf("stopping before the rewind: %w", err)
	}
	if err := a.db.Rewind(ctx, up); err != nil {
		a.mu.Lock()
		a.mem.RewindFailed = err.Error()
		a.mem.RewindFailures++
		a.mem.RewindRetryAt = a.now().Add(time.Duration(a.mem.RewindFailures) * 5 * time.Second)
		a.mu.Unlock()
		return fmt.Errorf("rewind from %s: %w", up.Name, err)
	}
	rec := dcs.HistoryRecord{Kind: "rewind", Member: a.name, NewLeader: up.Name, Reason: "history diverged from the leader; rewound with pg_rewind"}
	if div != nil {
		rec.Timeline = div.UpstreamTimeline
		rec.Discarded = div.Discarded
		rec.Position = div.LocalPosition
		rec.Promoted = div.SwitchPoint
		rec.Reason = fmt.Sprintf("%s; rewound with pg_rewind, discarding %s of local WAL after %s", div.Reason, bytesText(div.Discarded), div.SwitchPoint)
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	if _, err := a.store.AppendHistory(hctx, rec); err != nil {
		a.log.Warn("appending the rewind history record failed", "err", err)
	}
	cancel()
	a.mu.Lock()
	a.mem.Diverged, a.mem.DivergedFrom, a.mem.RewindFailed, a.mem.RewindFailures = nil, "", "", 0
	a.mu.Unlock()
	a.log.Info("rewound; starting as a replica", "upstream", up.Name, "discarded", rec.Discarded)
	stctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	return a.db.Start(stctx, backends.RoleReplica, &up)
}

// reinit: wipe and clone again (only when configured, or asked for).
func (a *Agent) reinit(ctx context.Context, up backends.Upstream, timeout time.Duration) error {
	a.mu.Lock()
	a.mem.ReinitRequested = false
	a.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	_ = a.db.Stop(sctx, backends.StopFast)
	cancel()
	if err := a.db.Wipe(ctx); err != nil {
		return fmt.Errorf("wiping the data directory: %w", err)
	}
	if err := a.db.Clone(ctx, up); err != nil {
		return fmt.Errorf("re-cloning from %s: %w", up.Name, err)
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	_, _ = a.store.AppendHistory(hctx, dcs.HistoryRecord{Kind: "reinit", Member: a.name, NewLeader: up.Name, Reason: "data directory wiped and cloned again from " + up.Name})
	cancel()
	a.mu.Lock()
	a.mem.Diverged, a.mem.DivergedFrom, a.mem.RewindFailed, a.mem.RewindFailures = nil, "", "", 0
	a.mu.Unlock()
	stctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	return a.db.Start(stctx, backends.RoleReplica, &up)
}

func (a *Agent) setHistoryTerm(t int64) {
	a.mu.Lock()
	a.historyTerm = t
	a.mu.Unlock()
}

func (a *Agent) getHistoryTerm() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.historyTerm
}

// markStopped updates the view right after the database stopped taking
// writes, so that peers probing our API before they race do not see a
// writable database that is gone.
func (a *Agent) markStopped() {
	a.mu.Lock()
	a.view.Member.Writable = false
	a.view.DB.Writable = false
	a.view.Member.State = StateStopped
	a.mu.Unlock()
}

// noteFailure remembers why an action failed, so that `list` and the API
// show it until the database runs again.
func (a *Agent) noteFailure(kind Action, err error) {
	if err == nil {
		return
	}
	a.mu.Lock()
	a.mem.LastJobError, a.mem.LastJobKind = err.Error(), kind
	a.mu.Unlock()
}
