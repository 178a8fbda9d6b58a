package agent

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// Action is what one loop decided to do.
type Action string

const (
	ActNone            Action = "none"             // healthy; nothing to change
	ActWait            Action = "wait"             // something is in progress or we are waiting for someone else
	ActStayDown        Action = "stay-down"        // refuse to run the database; Reason says why (operator action needed)
	ActRaceInitialize  Action = "race-initialize"  // no cluster yet: try to create the initialize key, then bootstrap
	ActClone           Action = "clone"            // empty data directory: clone from the leader
	ActStartReplica    Action = "start-replica"    // start the stopped database read-only, following Upstream
	ActStartPrimary    Action = "start-primary"    // we hold the key and our primary crashed: restart it in place
	ActFollow          Action = "follow"           // repoint a running replica at Upstream
	ActCheckDivergence Action = "check-divergence" // running replica not streaming: does its history fork from Upstream's?
	ActRewind          Action = "rewind"           // diverged: stop, pg_rewind from Upstream, start as its replica
	ActReinit          Action = "reinit"           // diverged and rewind impossible: wipe and re-clone (only when configured)
	ActAcquire         Action = "acquire"          // no leader: race for the key, then promote
	ActPromote         Action = "promote"          // we hold the key but the database is a replica
	ActDemote          Action = "demote"           // writable without the key: stop writes now, restart as a replica
	ActRelease         Action = "release"          // unhealthy leader with an eligible replica: stop writes, release the key
	ActAdopt           Action = "adopt"            // the key carries our name from a previous run: adopt its lease
	ActReacquire       Action = "reacquire"        // writable primary without a key (agent restarted after expiry): take the key back
	ActLead            Action = "lead"             // healthy leader: publish status, keep slots
	ActFence           Action = "fence"            // holding the key after a failover: fence the former primary before promoting
	ActSwitchover      Action = "switchover"       // leader: carry out a planned switchover (rule 4)
	ActRestart         Action = "restart"          // an operator asked to restart this member's database

)

// Decision is the outcome of decide: an action, its reason, and what it
// needs.
type Decision struct {
	Action   Action
	Reason   string
	Upstream *backends.Upstream // the leader to follow / clone / rewind from
	// Peers considered for a failover (rule 8: recorded in history).
	Candidates []dcs.Candidate
	// Switchover is the request this decision carries out (as the old
	// leader, or as the candidate taking the key).
	Switchover *dcs.Versioned[dcs.Switchover]
	// Sync is the leader's next synchronous-replication step (rule 6).
	Sync *syncStep
}

func (d Decision) String() string { return string(d.Action) + ": " + d.Reason }

// Self describes this member (from its local configuration).
type Self struct {
	Name       string
	NoFailover bool
	Priority   int
	NoSync     bool
	// Reinit allows wiping and re-cloning a diverged member that cannot be
	// rewound (postgres.remove_data_directory_on_rewind_failure).
	Reinit bool
	// Rewind allows pg_rewind (postgres.use_pg_rewind).
	Rewind bool
	// Kind is the backend ("postgres" or "mysql"), for the texts that name
	// configuration keys.
	Kind string
}

// LeadState is this member's own view of its leadership.
type LeadState struct {
	Held     bool
	Term     int64
	Deadline time.Time // rule 1: writes must stop by then without a renewal
}

// Valid reports whether the lease deadline has not passed.
func (l LeadState) Valid(now time.Time) bool { return l.Held && now.Before(l.Deadline) }

// JobInfo describes a long action running in the background.
type JobInfo struct {
	Kind  Action
	Since time.Time
}

// PeerResult is the outcome of asking one member for its state.
type PeerResult struct {
	Name   string
	APIURL string
	Status PeerStatus
	Err    error // unreachable
}

// Memory is what the agent remembers across loops (facts, not decisions).
type Memory struct {
	// UnhealthySince: when the primary's heartbeat commit started failing
	// (zero: healthy).
	UnhealthySince time.Time
	// UnhealthyReason is the last heartbeat error.
	UnhealthyReason string
	// StartingSince: when we began (re)starting the primary while holding
	// the key (zero: not restarting). Cleared only once the primary has
	// committed its heartbeat again: a primary that crashes soon after each
	// restart (a full disk that PANICs at its first WAL write) has not
	// started, however often it was seen running for a moment.
	StartingSince time.Time
	// NotStreamingSince: when the replica was last seen not streaming.
	NotStreamingSince time.Time
	// Diverged: the last divergence check against DivergedFrom found a fork.
	Diverged     *backends.Divergence
	DivergedFrom string
	// DivergenceCheckedAt: when the history was last compared with the
	// leader's, and the leader's timeline then.
	DivergenceCheckedAt time.Time
	// ApplierRestartAt: when this replica last restarted an applier that
	// an error had stopped (MySQL), to retry at most every few seconds.
	ApplierRestartAt    time.Time
	DivergenceCheckedTL int64
	// RewindFailed: the last rewind from DivergedFrom failed with this
	// error; it is retried (RewindFailures so far) at RewindRetryAt, at most
	// maxRewindAttempts times in all.
	RewindFailed   string
	RewindFailures int
	RewindRetryAt  time.Time
	// RaceBackoffUntil: do not race for the key before this time (after a
	// failed promotion we gave the key up).
	RaceBackoffUntil time.Time
	// FormerLeader is the last member seen holding the leader key other than
	// this one: the primary to fence after a failover.
	FormerLeader string
	// Fence is the outcome of fencing FormerLeader for our current term.
	Fence *FenceState
	// Candidates considered when this member won the race, kept until the
	// promotion is recorded in history.
	Candidates []dcs.Candidate
	// FailsafeLeader accepted over POST /failsafe while the DCS was
	// unreachable: this member does not race before FailsafeUntil.
	FailsafeLeader string
	FailsafeUntil  time.Time
	// WatchdogBroken: when watchdog.mode is required and arming the device
	// last failed (zero: not known broken). Such a member neither leads nor
	// races until WatchdogBrokenUntil.
	WatchdogBroken      string
	WatchdogBrokenUntil time.Time
	// SwitchoverSeenVersion/At: the switchover request last seen and when
	// (local clock): a named candidate that never takes over is given up on
	// after handoverTimeout.
	SwitchoverSeenVersion int64
	SwitchoverSeenAt      time.Time
	// RestartRequested / ReinitRequested: an operator asked for it (API).
	RestartRequested bool
	ReinitRequested  bool
	// PendingSwitchover is the request this member took the key for, to
	// consume (delete) and record once it promoted.
	PendingSwitchover *dcs.Versioned[dcs.Switchover]
	// LastJobError: the last background action that failed, and why.
	LastJobError string
	LastJobKind  Action
	// SyncApplied: the last synchronous configuration this leader gave its
	// database, and the flushed position from when it took effect.
	SyncApplied *SyncApplied
}

// FenceState is the result of fencing the former primary for one term.
type FenceState struct {
	Term      int64
	Target    string
	Confirmed bool      // a hook exited 0 (or nothing needed fencing)
	Summary   string    // what was done, for the log, list and history
	RetryAt   time.Time // required mode: when to try again
}

// Observation is everything one loop knows: the decide function sees only
// this.
type Observation struct {
	Now     time.Time
	Cluster *dcs.Cluster // nil when the DCS could not be read
	DCSErr  error
	Config  config.Dynamic // effective dynamic config
	DB      backends.Status
	Self    Self
	Lead    LeadState
	Job     *JobInfo
	Mem     Memory
	// Peers: the other members' live state, probed this loop when a
	// failover decision needs it (nil otherwise).
	Peers map[string]PeerResult
	// FencingMode is fencing.mode (off, best-effort, required).
	FencingMode string
	// Tags and NoLB are published in the member key.
	Tags map[string]string
	NoLB bool
	// Lag and Compare come from the backend (pure functions).
	Lag     func(leader, pos backends.Position) int64
	Compare func(a, b backends.Position) int
	// SinceFork (nil: the backend has none) says why a position cannot be
	// promoted after the promotion that forked at fork (ForkReporter).
	SinceFork func(pos, fork backends.Position) string
	// OneAck: synchronous replication where the database waits for one
	// acknowledgement from replicas that decide themselves whether they
	// acknowledge (MariaDB semi-sync, ack.go).
	OneAck bool
}

// needsPeers reports whether this loop must probe the other members before
// deciding: when nobody leads (a failover may start) or when this member
// leads but its database is unhealthy (is there a replica to hand over to?).
func needsPeers(o *Observation) bool {
	cl := o.Cluster
	if cl == nil || o.Config.Paused {
		return false
	}
	if cl.Leader == nil {
		return o.DB.State == backends.StateRunning && o.DB.InRecovery && !o.Self.NoFailover
	}
	if cl.Leader.Name == o.Self.Name && o.Lead.Valid(o.Now) {
		return !o.Mem.UnhealthySince.IsZero() || !o.Mem.StartingSince.IsZero() ||
			o.DB.State == backends.StateUnresponsive
	}
	return false
}

// decide is the HA rule book: a pure function of the observation.
func decide(o *Observation) Decision {
	me := o.Self.Name
	db := o.DB
	now := o.Now
	paused := o.Config.Paused

	// The DCS could not be read. Leaders keep going until their lease
	// deadline (the fence timer enforces it); nobody else changes anything
	// that could create a second writer.
	if o.Cluster == nil {
		switch {
		case o.Lead.Valid(now):
			return Decision{Action: ActWait, Reason: fmt.Sprintf("DCS unreachable (%v); still leader for %v until the lease deadline, then writes stop",
				errText(o.DCSErr), o.Lead.Deadline.Sub(now).Round(time.Millisecond))}
		case paused:
			return Decision{Action: ActWait, Reason: "DCS unreachable and the cluster was paused: changing nothing"}
		case db.Writable:
			return Decision{Action: ActDemote, Reason: "DCS unreachable and this member does not hold the leader key: a writable database without the key must stop taking writes (rule 1)"}
		case db.State == backends.StateStopped || db.State == backends.StateCrashed:
			return Decision{Action: ActStartReplica, Reason: "DCS unreachable: starting the database read-only, without an upstream, until the cluster can be read"}
		}
		return Decision{Action: ActWait, Reason: fmt.Sprintf("DCS unreachable (%v): keeping the database as it is (not writable)", errText(o.DCSErr))}
	}
	cl := o.Cluster
	leader := cl.Leader

	// Reconcile our own idea of leadership with the key.
	if o.Lead.Held && (leader == nil || leader.Name != me || leader.Term != o.Lead.Term) {
		why := "the leader key is gone"
		if leader != nil {
			why = fmt.Sprintf("the leader key is now held by %s (term %d)", leader.Name, leader.Term)
		}
		if paused {
			return Decision{Action: ActWait, Reason: "lost leadership (" + why + ") while paused: not demoting (rule 7)"}
		}
		return Decision{Action: ActDemote, Reason: "lost leadership: " + why + "; stopping writes now", Upstream: upstreamOf(cl, leader, me)}
	}
	if o.Lead.Held && !o.Lead.Valid(now) && db.Writable && !paused {
		return Decision{Action: ActDemote, Reason: fmt.Sprintf("the lease deadline passed %v ago without a renewal: writes must stop (rule 1)", now.Sub(o.Lead.Deadline).Round(time.Millisecond)), Upstream: upstreamOf(cl, leader, me)}
	}
	if leader != nil && leader.Name == me && !o.Lead.Held {
		return Decision{Action: ActAdopt, Reason: fmt.Sprintf("the leader key (term %d) carries this member's name from before a restart: adopting its lease", leader.Term)}
	}
	iLead := o.Lead.Valid(now) && leader != nil && leader.Name == me

	// A background action (clone, rewind, start) is running: wait for it,
	// unless leadership changed under a promotion.
	if o.Job != nil {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("%s in progress for %v", o.Job.Kind, now.Sub(o.Job.Since).Round(time.Second))}
	}

	// Operator requests (steward reinit / restart).
	if o.Mem.ReinitRequested {
		if iLead {
			return Decision{Action: ActWait, Reason: "reinit requested, but this member is the leader: refused (switch over first)"}
		}
		if up := upstreamOf(cl, leader, me); up != nil {
			return Decision{Action: ActReinit, Reason: fmt.Sprintf("reinit requested by an operator: wiping the data directory and cloning from %s", up.Name), Upstream: up}
		}
		return Decision{Action: ActWait, Reason: "reinit requested: waiting for a leader to clone from"}
	}
	if o.Mem.RestartRequested && db.State == backends.StateRunning {
		return Decision{Action: ActRestart, Reason: "restart requested by an operator", Upstream: upstreamOf(cl, leader, me)}
	}

	// No data directory yet.
	if db.State == backends.StateUninitialized {
		if iLead {
			return Decision{Action: ActRelease, Reason: "this member leads but its data directory is empty: giving the key up"}
		}
		if cl.Initialize == nil {
			if paused {
				return Decision{Action: ActWait, Reason: "cluster not initialized, but paused: not bootstrapping"}
			}
			return Decision{Action: ActRaceInitialize, Reason: "cluster not initialized: racing to bootstrap it"}
		}
		up := upstreamOf(cl, leader, me)
		if up == nil {
			return Decision{Action: ActWait, Reason: "empty data directory: waiting for a leader to clone from"}
		}
		if paused {
			return Decision{Action: ActWait, Reason: "empty data directory, but paused: not cloning"}
		}
		return Decision{Action: ActClone, Reason: fmt.Sprintf("empty data directory: cloning from the leader %s", up.Name), Upstream: up}
	}

	// A data directory from another cluster must never join this one.
	if cl.Initialize != nil && cl.Initialize.Value.SystemID != "" && db.SystemID != "" && db.SystemID != cl.Initialize.Value.SystemID {
		return Decision{Action: ActStayDown, Reason: fmt.Sprintf("system identifier %s differs from the cluster's %s: this data directory belongs to another cluster; wipe it (steward reinit) to join",
			db.SystemID, cl.Initialize.Value.SystemID)}
	}

	switch db.State {
	case backends.StateStarting:
		if iLead && !o.Mem.StartingSince.IsZero() && now.Sub(o.Mem.StartingSince) > o.Config.PrimaryStartTimeout.D() {
			if c, ok := bestPeer(o); ok && !paused {
				return Decision{Action: ActRelease, Reason: fmt.Sprintf("primary still starting after primary_start_timeout (%v); %s can take over", o.Config.PrimaryStartTimeout.D(), c)}
			}
		}
		return Decision{Action: ActWait, Reason: "database starting"}
	case backends.StateStopped, backends.StateCrashed:
		if paused {
			return Decision{Action: ActWait, Reason: fmt.Sprintf("database %s, but paused: not starting it (rule 7)", db.State)}
		}
		if iLead {
			if !o.Mem.StartingSince.IsZero() && now.Sub(o.Mem.StartingSince) > o.Config.PrimaryStartTimeout.D() {
				if c, ok := bestPeer(o); ok {
					return Decision{Action: ActRelease, Reason: fmt.Sprintf("primary did not start within primary_start_timeout (%v); %s can take over", o.Config.PrimaryStartTimeout.D(), c)}
				}
				return Decision{Action: ActStartPrimary, Reason: fmt.Sprintf("this member holds the leader key and its database is %s, not healthy for %v (primary_start_timeout %v), but no replica is eligible to take over (steward list says why): restarting it in place",
					db.State, now.Sub(o.Mem.StartingSince).Round(100*time.Millisecond), o.Config.PrimaryStartTimeout.D())}
			}
			return Decision{Action: ActStartPrimary, Reason: fmt.Sprintf("this member holds the leader key and its database is %s: restarting it in place", db.State)}
		}
		up := upstreamOf(cl, leader, me)
		if up != nil && o.Mem.Diverged != nil && o.Mem.DivergedFrom == up.Name && db.State == backends.StateStopped {
			return rejoinDiverged(o, up)
		}
		if up == nil {
			return Decision{Action: ActStartReplica, Reason: fmt.Sprintf("database %s and no leader: starting it read-only", db.State)}
		}
		return Decision{Action: ActStartReplica, Reason: fmt.Sprintf("database %s: starting it as a replica of %s", db.State, up.Name), Upstream: up}
	case backends.StateUnresponsive:
		if iLead && !o.Mem.UnhealthySince.IsZero() && now.Sub(o.Mem.UnhealthySince) > o.Config.PrimaryUnhealthyTimeout.D() && !paused {
			if c, ok := bestPeer(o); ok {
				return Decision{Action: ActRelease, Reason: fmt.Sprintf("primary unresponsive for %v (primary_unhealthy_timeout %v): %s; %s can take over",
					now.Sub(o.Mem.UnhealthySince).Round(time.Second), o.Config.PrimaryUnhealthyTimeout.D(), db.Reason, c)}
			}
		}
		return Decision{Action: ActWait, Reason: "database unresponsive: " + db.Reason}
	}

	// The database runs.
	if db.Writable {
		if iLead {
			if !o.Mem.UnhealthySince.IsZero() && now.Sub(o.Mem.UnhealthySince) > o.Config.PrimaryUnhealthyTimeout.D() && !paused {
				if c, ok := bestPeer(o); ok {
					return Decision{Action: ActRelease, Reason: fmt.Sprintf("primary cannot commit for %v (primary_unhealthy_timeout %v): %s; %s can take over",
						now.Sub(o.Mem.UnhealthySince).Round(time.Second), o.Config.PrimaryUnhealthyTimeout.D(), o.Mem.UnhealthyReason, c)}
				}
				return Decision{Action: ActLead, Reason: "primary cannot commit (" + o.Mem.UnhealthyReason + ") but no replica is eligible to take over: keeping the key"}
			}
			if d, ok := switchoverDecision(o); ok {
				d.Switchover = cl.Switchover
				return d
			}
			d := Decision{Action: ActLead, Reason: "healthy leader"}
			if s := planSync(syncInputOf(o)); s.Kind != syncNone {
				d.Sync = &s
			}
			return d
		}
		if paused {
			return Decision{Action: ActWait, Reason: "paused: writable primary running without the leader key; not demoting (rule 7)"}
		}
		if leader == nil {
			if o.Mem.WatchdogBroken != "" && now.Before(o.Mem.WatchdogBrokenUntil) {
				return Decision{Action: ActDemote, Reason: "writable database without the leader key, and this member may not lead: watchdog.mode is required and the watchdog does not work (" + o.Mem.WatchdogBroken + ")"}
			}
			if ok, why := mayRetake(o); ok {
				return Decision{Action: ActReacquire, Reason: why}
			} else {
				return Decision{Action: ActDemote, Reason: "writable database without the leader key: " + why}
			}
		}
		return Decision{Action: ActDemote, Reason: fmt.Sprintf("writable database while %s holds the leader key (term %d): demoting (rule 1)", leader.Name, leader.Term), Upstream: upstreamOf(cl, leader, me)}
	}

	// Running read-only (a replica).
	if iLead {
		if paused {
			return Decision{Action: ActWait, Reason: "holding the leader key with a read-only database, but paused: not promoting"}
		}
		if d, blocked := fenceGate(o); blocked {
			return d
		}
		return Decision{Action: ActPromote, Reason: fmt.Sprintf("holding the leader key (term %d) with a read-only database: promoting", leader.Term)}
	}
	if leader == nil {
		if paused {
			return Decision{Action: ActWait, Reason: "no leader, but the cluster is paused: not promoting (rule 7)"}
		}
		if d, blocked := handoverDecision(o); blocked {
			d.Switchover = cl.Switchover
			return d
		}
		return raceDecision(o)
	}
	up := upstreamOf(cl, leader, me)
	if up == nil {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("leader %s has not published its database address yet", leader.Name)}
	}
	want := net.JoinHostPort(up.Host, strconv.Itoa(up.Port))
	if paused && (o.Mem.Diverged != nil || db.Upstream != want) {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("paused: not repointing or rewinding this replica to follow %s (rule 7)", up.Name), Upstream: up}
	}
	if o.Mem.Diverged != nil && o.Mem.DivergedFrom == up.Name {
		return rejoinDiverged(o, up)
	}
	if db.Upstream != want {
		return Decision{Action: ActFollow, Reason: fmt.Sprintf("following the new leader %s at %s (was %q)", up.Name, want, db.Upstream), Upstream: up}
	}
	if !db.Streaming {
		// Check the history when the replica stops streaming, again when
		// the leader's timeline moves past ours, and otherwise at most every
		// few seconds (the check needs the leader to answer).
		leaderTL := cl.Members[leader.Name].Timeline
		if !o.Mem.DivergenceCheckedAt.IsZero() && now.Sub(o.Mem.DivergenceCheckedAt) < divergenceRecheck &&
			!(leaderTL > db.Timeline && o.Mem.DivergenceCheckedTL < leaderTL) {
			return Decision{Action: ActWait, Reason: fmt.Sprintf("not streaming from %s (receiver: %s); history checked %v ago", up.Name,
				orDash(db.ReceiverState), now.Sub(o.Mem.DivergenceCheckedAt).Round(100*time.Millisecond)), Upstream: up}
		}
		return Decision{Action: ActCheckDivergence, Reason: fmt.Sprintf("not streaming from %s (receiver: %s): checking that our history is contained in the leader's", up.Name, orDash(db.ReceiverState)), Upstream: up}
	}
	if db.ApplierError != "" && !paused && (o.Mem.ApplierRestartAt.IsZero() || now.Sub(o.Mem.ApplierRestartAt) >= divergenceRecheck) {
		// A MySQL applier stopped by an error (a full disk, a lock wait
		// timeout) stays stopped after the cause is gone; found by the
		// fault-injection suite (a replica's full disk). One stopped by
		// hand has no error and is left alone.
		return Decision{Action: ActFollow, Reason: fmt.Sprintf("streaming from %s but the applier stopped (%s): restarting it", up.Name, db.ApplierError), Upstream: up}
	}
	return Decision{Action: ActNone, Reason: fmt.Sprintf("replica streaming from %s", up.Name), Upstream: up}
}

// divergenceRecheck bounds how often a replica that does not stream
// re-checks its history against the leader's.
const divergenceRecheck = 5 * time.Second

// maxRewindAttempts bounds how often a failed rewind is retried (a source
// that was not reachable, a checkpoint that had not happened yet) before the
// member stays down or is re-cloned.
const maxRewindAttempts = 3

// rejoinDiverged decides what a member whose history forked does (rule 5).
func rejoinDiverged(o *Observation, up *backends.Upstream) Decision {
	d := o.Mem.Diverged
	retry := o.Mem.RewindFailed != "" && o.Mem.RewindFailures < maxRewindAttempts
	switch {
	case o.Self.Rewind && o.Mem.RewindFailed == "":
		return Decision{Action: ActRewind, Reason: fmt.Sprintf("history diverged from %s (%s): rewinding", up.Name, d.Reason), Upstream: up}
	case o.Self.Rewind && retry && !o.Now.Before(o.Mem.RewindRetryAt):
		return Decision{Action: ActRewind, Reason: fmt.Sprintf("history diverged from %s; rewind attempt %d of %d (the last one failed: %s)",
			up.Name, o.Mem.RewindFailures+1, maxRewindAttempts, o.Mem.RewindFailed), Upstream: up}
	case o.Self.Rewind && retry:
		return Decision{Action: ActWait, Reason: fmt.Sprintf("rewind from %s failed (%s); retrying in %v", up.Name, o.Mem.RewindFailed,
			o.Mem.RewindRetryAt.Sub(o.Now).Round(time.Second)), Upstream: up}
	case o.Self.Reinit && o.Self.Kind == "mysql":
		return Decision{Action: ActReinit, Reason: fmt.Sprintf("history diverged from %s (%s): re-cloning, which discards them (mysql.reclone_on_divergence)", up.Name, d.Reason), Upstream: up}
	case o.Self.Reinit:
		why := "use_pg_rewind is off"
		if o.Mem.RewindFailed != "" {
			why = "rewind failed: " + o.Mem.RewindFailed
		}
		return Decision{Action: ActReinit, Reason: fmt.Sprintf("history diverged from %s and %s: re-cloning (remove_data_directory_on_rewind_failure)", up.Name, why), Upstream: up}
	}
	if o.Self.Kind == "mysql" {
		return Decision{Action: ActStayDown, Reason: fmt.Sprintf("history diverged from %s (%s); staying out until `steward reinit %s` (or enable mysql.reclone_on_divergence)", up.Name, d.Reason, o.Self.Name)}
	}
	why := "postgres.use_pg_rewind is off"
	if o.Mem.RewindFailed != "" {
		why = "rewind failed: " + o.Mem.RewindFailed
	}
	return Decision{Action: ActStayDown, Reason: fmt.Sprintf("history diverged from %s (%s) and %s; staying out until `steward reinit %s` (or enable postgres.remove_data_directory_on_rewind_failure)",
		up.Name, d.Reason, why, o.Self.Name)}
}

// mayRetake decides whether a writable primary that lost its key (agent
// restarted after the lease expired, nobody else took over) may take it back
// without a demotion: only if it was the last leader and its timeline is not
// behind history (stricter than Patroni, which checks only the timeline).
func mayRetake(o *Observation) (bool, string) {
	cl := o.Cluster
	h := cl.LastHistory
	last := ""
	if h != nil {
		last = h.NewLeader
	} else if cl.Initialize != nil {
		last = cl.Initialize.Value.Member
	}
	if last != o.Self.Name {
		if last == "" {
			return false, "the last leader is unknown (no history): demoting so that the cluster elects one"
		}
		return false, fmt.Sprintf("the last leader was %s, not this member: demoting to rejoin", last)
	}
	if h != nil && h.Timeline > o.DB.Timeline {
		return false, fmt.Sprintf("timeline %d is behind the cluster's timeline %d: demoting to rejoin", o.DB.Timeline, h.Timeline)
	}
	if o.Cluster.Status != nil && o.Compare != nil && o.Compare(o.DB.Position, o.Cluster.Status.Position) < 0 {
		return false, fmt.Sprintf("position %s is behind the last published leader position %s: demoting", o.DB.Position, o.Cluster.Status.Position)
	}
	return true, "writable primary without a leader key, and this member was the last leader on the newest timeline: taking the key back without a restart"
}

// upstreamOf returns where the leader's database is, from its member key.
func upstreamOf(cl *dcs.Cluster, leader *dcs.Leader, me string) *backends.Upstream {
	if cl == nil || leader == nil || leader.Name == me {
		return nil
	}
	m, ok := cl.Members[leader.Name]
	if !ok || m.DBURL == "" {
		return nil
	}
	host, port, ok := splitHostPort(m.DBURL)
	if !ok {
		return nil
	}
	return &backends.Upstream{Name: leader.Name, Host: host, Port: port}
}

func errText(err error) string {
	if err == nil {
		return "no answer"
	}
	return err.Error()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinReasons(r []string) string { return strings.Join(r, "; ") }

// formerLeader is the primary a failover must fence: the last other member
// seen holding the key, or the last leader in history.
func formerLeader(o *Observation) string {
	if o.Mem.FormerLeader != "" {
		return o.Mem.FormerLeader
	}
	if h := o.Cluster.LastHistory; h != nil && h.NewLeader != o.Self.Name {
		return h.NewLeader
	}
	return ""
}

// fenceGate decides whether promotion must wait for fencing (rule 2: promote
// only after the old primary can no longer write). blocked=false: promote.
func fenceGate(o *Observation) (Decision, bool) {
	mode := o.FencingMode
	if mode == "" || mode == FencingOff {
		return Decision{}, false
	}
	target := formerLeader(o)
	if target == "" || target == o.Self.Name {
		return Decision{}, false
	}
	f := o.Mem.Fence
	if f == nil || f.Term != o.Lead.Term || f.Target != target {
		return Decision{Action: ActFence, Reason: fmt.Sprintf("fencing the former primary %s before promoting (fencing.mode %s)", target, mode)}, true
	}
	if f.Confirmed || mode == FencingBestEffort {
		return Decision{}, false
	}
	if o.Now.Before(f.RetryAt) {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("promotion waits: fencing %s did not succeed (%s) and fencing.mode is required; next attempt in %v",
			target, f.Summary, f.RetryAt.Sub(o.Now).Round(time.Second))}, true
	}
	return Decision{Action: ActFence, Reason: fmt.Sprintf("retrying to fence the former primary %s (the last attempt failed: %s)", target, f.Summary)}, true
}
