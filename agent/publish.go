package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// View is the agent's state as the REST API and the CLI see it. It is a copy:
// reading it never touches the database or the DCS.
type View struct {
	Member        dcs.Member
	Cluster       *dcs.Cluster // last successfully loaded view (may be stale; see DCSAt)
	DB            backends.Status
	Config        config.Dynamic
	Decision      string
	LeaseDeadline time.Time // zero: not leader
	LoopAt        time.Time // when the last loop started
	DCSAt         time.Time // when the DCS was last read successfully
	DCSError      string
}

// Snapshot returns a copy of the current view.
func (a *Agent) Snapshot() View {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.view
}

// PeerStatus is what this member tells other members about itself.
func (a *Agent) PeerStatus(now time.Time) PeerStatus {
	v := a.Snapshot()
	m := v.Member
	return PeerStatus{
		Name: m.Name, Role: m.Role, State: m.State, Writable: m.Writable,
		Leader:   !v.LeaseDeadline.IsZero() && now.Before(v.LeaseDeadline),
		Timeline: m.Timeline, Position: m.Position, Received: m.Received, Replayed: m.Replayed,
		Eligible: m.Eligible, Reasons: m.IneligibleReason, Priority: m.Priority, NoFailover: m.NoFailover,
		Paused: v.Config.Paused, CannotPromote: m.CannotPromote,
		LagBytes: func() *int64 {
			if m.Role != dcs.RoleReplica || m.LagBytes < 0 {
				return nil
			}
			l := m.LagBytes
			return &l
		}(),
	}
}

// publish builds this member's record, keeps the in-memory view current and
// writes the member key when it changed (or every 30 s).
func (a *Agent) publish(ctx context.Context, o *Observation, d Decision) {
	// The action may have changed leadership or started a job; re-read it.
	a.mu.Lock()
	o.Lead = a.lead
	o.Mem = a.mem
	if a.job != nil {
		o.Job = &JobInfo{Kind: a.job.kind, Since: a.job.since}
	} else {
		o.Job = nil
	}
	a.mu.Unlock()

	m := a.memberRecord(o, d)
	a.mu.Lock()
	a.view.Member = m
	if o.Cluster != nil {
		a.view.Cluster = o.Cluster
		a.view.DCSAt = o.Now
		a.view.DCSError = ""
	} else if o.DCSErr != nil {
		a.view.DCSError = o.DCSErr.Error()
	}
	a.view.DB = o.DB
	a.view.Config = o.Config
	a.view.Decision = d.String()
	a.view.LoopAt = o.Now
	if a.lead.Held {
		a.view.LeaseDeadline = a.lead.Deadline
	} else {
		a.view.LeaseDeadline = time.Time{}
	}
	a.mu.Unlock()

	if o.Cluster == nil {
		return // the DCS is unreachable; nothing to write to
	}
	// Write the member key when anything but the positions changed (role,
	// state, readiness and its reasons, tags, ...: at once), when only the
	// positions moved and the last write is positionRefresh old, and at
	// least every 30 s. On a busy cluster the positions move on every loop
	// (the leader's heartbeat commit alone moves them); writing them every
	// loop would be one etcd write per member per loop for figures that
	// only `list` shows: failover decisions read positions live from the
	// members' APIs and lag against the leader's status key.
	cmp := m
	cmp.Heartbeat = time.Time{}
	b, _ := json.Marshal(cmp)
	cmp.Position, cmp.Received, cmp.Replayed, cmp.Delay = backends.Position{}, backends.Position{}, backends.Position{}, 0
	// The lag itself waits for the refresh, but not a change of which side
	// of maximum_lag_on_failover it is on: `list` and /cluster would show a
	// caught-up replica as "not eligible" (a WAL segment switch on the leader
	// briefly puts every replica 16 MB behind) until the next refresh.
	cmp.LagBytes = lagClass(m.LagBytes, int64(o.Config.MaximumLagOnFailover))
	shape, _ := json.Marshal(cmp)
	_, present := o.Cluster.Members[m.Name]
	age := o.Now.Sub(a.lastPublishTime)
	switch {
	case !present, string(shape) != string(a.lastPublishedShape), age >= 30*time.Second:
	case string(b) != string(a.lastPublished) && age >= positionRefresh(o.Config):
	default:
		return
	}
	pctx, cancel := context.WithTimeout(ctx, o.Config.RetryTimeout.D())
	defer cancel()
	if err := a.store.PutMember(pctx, m); err != nil {
		a.opts.Metrics.DCSError("publish")
		if !errors.Is(err, context.Canceled) {
			a.log.Warn("publishing the member key failed", "err", err)
		}
		return
	}
	a.lastPublished, a.lastPublishedShape, a.lastPublishTime = b, shape, o.Now
}

// lagClass buckets a published lag: unknown, within the failover limit, or
// beyond it.
func lagClass(lag, limit int64) int64 {
	switch {
	case lag < 0:
		return -1
	case lag > limit:
		return 2
	default:
		return 1
	}
}

// positionRefresh is how often a member key is rewritten when only its
// positions moved: a third of the ttl, within [loop_wait, 5 s].
func positionRefresh(c config.Dynamic) time.Duration {
	return min(max(c.TTL.D()/3, c.LoopWait.D()), max(5*time.Second, c.LoopWait.D()))
}

// memberRecord is what this member publishes about itself.
func (a *Agent) memberRecord(o *Observation, d Decision) dcs.Member {
	db := o.DB
	m := dcs.Member{
		Name:           o.Self.Name,
		APIURL:         a.opts.APIURL,
		DBURL:          a.opts.DBAddress,
		Backend:        a.db.Kind(),
		Writable:       db.Writable,
		Timeline:       db.Timeline,
		Position:       db.Position,
		Received:       db.Received,
		Replayed:       db.Replayed,
		LagBytes:       -1,
		Tags:           o.Tags,
		NoFailover:     o.Self.NoFailover,
		NoLoadBalance:  o.NoLB,
		NoSync:         o.Self.NoSync,
		Priority:       o.Self.Priority,
		Paused:         o.Config.Paused,
		Version:        a.opts.Version,
		DBVersion:      db.Version,
		SystemID:       db.SystemID,
		Heartbeat:      time.Now().UTC(),
		PendingRestart: db.PendingRestart,
	}
	switch {
	case db.State == backends.StateRunning && db.Writable:
		m.Role = dcs.RolePrimary
	case db.State == backends.StateRunning && db.InRecovery:
		m.Role = dcs.RoleReplica
		if db.Streaming {
			m.ReplicationState = "streaming"
		}
		if db.Upstream != "" && o.Cluster != nil && o.Cluster.Leader != nil {
			m.Following = o.Cluster.Leader.Name
		}
	case db.State == backends.StateUninitialized:
		m.Role = dcs.RoleUninitialized
	default:
		m.Role = dcs.RoleUnknown
	}
	if m.Role == dcs.RoleReplica && o.Cluster != nil && o.Cluster.Status != nil {
		m.LagBytes = o.lag(o.Cluster.Status.Position, db.Replayed)
		if !db.ReplayTime.IsZero() {
			m.Delay = time.Since(db.ReplayTime).Seconds()
		}
	} else if m.Role == dcs.RolePrimary {
		m.LagBytes = 0
	}
	m.Sync = memberSyncState(o.Cluster, m.Name, m.Role == dcs.RoleReplica)
	m.SemiSync = semiSyncReport(o)
	m.State, m.Reason = memberState(o, d)
	m.Eligible, m.IneligibleReason = readiness(o)
	if l := o.Cluster; l == nil || l.Leader == nil || l.Leader.Name != o.Self.Name {
		m.CannotPromote = promotionBlocks(o)
	}
	return m
}

// memberState turns the observation into the state shown in `list`.
func memberState(o *Observation, d Decision) (string, string) {
	db := o.DB
	if o.Job != nil {
		switch o.Job.Kind {
		case ActRaceInitialize:
			return StateBootstrapping, ""
		case ActClone, ActReinit:
			return StateCloning, "from the leader"
		case ActRewind:
			return StateRewinding, ""
		case ActFence:
			target := ""
			if o.Cluster != nil {
				target = formerLeader(o)
			}
			if f := o.Mem.Fence; f != nil && f.Term == o.Lead.Term && !f.Confirmed {
				return StateFencing, fmt.Sprintf("retrying to fence the former primary %s; the last attempt failed (%s); no promotion until it succeeds (fencing.mode %s)",
					target, f.Summary, o.FencingMode)
			}
			return StateFencing, fmt.Sprintf("fencing the former primary %s before promoting (fencing.mode %s)", target, o.FencingMode)
		}
		return string(o.Job.Kind), ""
	}
	if d.Action == ActStayDown {
		return StateFailed, d.Reason
	}
	if d.Action == ActWait && o.Lead.Valid(o.Now) && strings.HasPrefix(d.Reason, "promotion waits") {
		return StateFencing, d.Reason
	}
	if o.Mem.Diverged != nil {
		return StateDiverged, o.Mem.Diverged.Reason
	}
	reason := db.Reason
	if o.Mem.LastJobError != "" {
		reason = string(o.Mem.LastJobKind) + " failed: " + o.Mem.LastJobError
	}
	switch db.State {
	case backends.StateRunning:
		if db.Writable {
			if !o.Mem.UnhealthySince.IsZero() {
				return StateUnhealthy, "cannot commit: " + o.Mem.UnhealthyReason
			}
			return StateRunning, ""
		}
		if db.InRecovery {
			if db.Streaming {
				return StateStreaming, ""
			}
			return StateRunning, "not streaming (receiver: " + orDash(db.ReceiverState) + ")"
		}
		return StateRunning, reason
	case backends.StateStarting:
		return StateStarting, reason
	case backends.StateStopped:
		return StateStopped, reason
	case backends.StateCrashed:
		return StateCrashed, reason
	case backends.StateUnresponsive:
		return StateUnresponsive, reason
	case backends.StateUninitialized:
		if d.Action == ActWait {
			return StateUninitialized, d.Reason
		}
		return StateUninitialized, reason
	}
	return string(db.State), reason
}

// jsonDynamic encodes the dynamic config for the DCS.
func jsonDynamic(d config.Dynamic) ([]byte, error) { return json.Marshal(d) }
