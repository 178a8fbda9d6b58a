package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// Switchover phases recorded in the switchover key while the old leader
// carries a request out.
const (
	PhaseDemoting = "demoting" // the leader is stopping its database
	PhaseHandover = "handover" // the leader released the key; the candidate takes it at FinalPosition
)

// handoverTimeout bounds how long the other members stand back for a named
// candidate (after a handover, or for a manual failover) before a normal
// race may take place: the candidate may have died.
func handoverTimeout(cfg config.Dynamic) time.Duration { return 2 * cfg.TTL.D() }

// MemberCheck is why one member could or could not be the candidate.
type MemberCheck struct {
	Name     string            `json:"name"`
	Position backends.Position `json:"position"`
	LagBytes int64             `json:"lag_bytes"`
	Eligible bool              `json:"eligible"`
	Reasons  []string          `json:"reasons,omitempty"`
}

// SwitchoverPlan is the candidate a switchover (or manual failover) would
// use, and why the other members would not be chosen.
type SwitchoverPlan struct {
	Leader    string        `json:"leader,omitempty"`
	Candidate string        `json:"candidate"`
	Members   []MemberCheck `json:"members"`
}

// PlanInput is what planning needs: the DCS view, the dynamic config, the
// members' live state (GET /status of each), and the backend's position
// arithmetic.
type PlanInput struct {
	Cluster *dcs.Cluster
	Config  config.Dynamic
	Peers   map[string]PeerResult
	Lag     func(leader, pos backends.Position) int64
	Compare func(a, b backends.Position) int
	Now     time.Time
}

// Planning errors.
var (
	ErrNoLeader     = errors.New("the cluster has no leader")
	ErrNotCandidate = errors.New("no eligible candidate")
)

// PlanSwitchover checks a switchover request against the cluster and picks
// the candidate: the named one if it is eligible (unless force), otherwise
// the best eligible replica (highest position, then failover_priority, then
// name). A planned switchover needs a healthy leader; the candidate must be
// streaming from it within maximum_lag_on_failover, not nofailover, on the
// cluster's timeline (DESIGN rules 3 and 4).
func PlanSwitchover(in PlanInput, leader, candidate string, force bool) (SwitchoverPlan, error) {
	cl := in.Cluster
	plan := SwitchoverPlan{}
	if cl.Leader == nil {
		return plan, fmt.Errorf("%w: a switchover hands over from a running leader; use failover", ErrNoLeader)
	}
	plan.Leader = cl.Leader.Name
	if leader != "" && leader != cl.Leader.Name {
		return plan, fmt.Errorf("leader %q is not the current leader (%s)", leader, cl.Leader.Name)
	}
	if candidate == cl.Leader.Name {
		return plan, fmt.Errorf("candidate %s is already the leader", candidate)
	}
	return pickCandidate(in, plan, candidate, force, true, true)
}

// PlanFailover checks a manual failover to candidate: it needs no leader,
// but the candidate must be healthy and within maximum_lag_on_failover of
// the last leader position unless force.
func PlanFailover(in PlanInput, candidate string, force bool) (SwitchoverPlan, error) {
	plan := SwitchoverPlan{}
	if in.Cluster.Leader != nil {
		plan.Leader = in.Cluster.Leader.Name
	}
	if candidate == "" {
		return plan, errors.New("candidate: missing; a manual failover names the member to promote")
	}
	if candidate == plan.Leader {
		return plan, fmt.Errorf("candidate %s is already the leader", candidate)
	}
	return pickCandidate(in, plan, candidate, force, in.Cluster.Leader != nil, false)
}

// planned: a switchover, whose handover waits for the candidate to replay
// the final position anyway; its lag pre-check may use the candidate's own
// measurement. A failover's lag check bounds data loss and does not.
func pickCandidate(in PlanInput, plan SwitchoverPlan, candidate string, force, leaderAlive, planned bool) (SwitchoverPlan, error) {
	o := &Observation{Now: in.Now, Cluster: in.Cluster, Config: in.Config, Lag: in.Lag, Compare: in.Compare}
	o.Config.Paused = false // pausing does not make a member ineligible for an operator's switchover
	names := make([]string, 0, len(in.Peers))
	for n := range in.Peers {
		if in.Cluster.Leader == nil || n != in.Cluster.Leader.Name {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	found := false
	for _, n := range names {
		p := in.Peers[n]
		mc := MemberCheck{Name: n, LagBytes: -1}
		if p.Err != nil {
			mc.Reasons = []string{"unreachable: " + p.Err.Error()}
		} else {
			f := peerFacts(p.Status)
			f.Name = n
			mc.Position = f.Position
			po := o
			if l := p.Status.LagBytes; planned && l != nil && *l >= 0 {
				// The member's own measurement (see PeerStatus.LagBytes).
				// Not a safety gate: the handover still waits until the
				// candidate replayed the final position.
				c := *o
				c.Lag = func(backends.Position, backends.Position) int64 { return *l }
				po = &c
			}
			if in.Cluster.Status != nil {
				mc.LagBytes = po.lag(in.Cluster.Status.Position, f.Replayed)
			}
			mc.Reasons = ineligibility(po, f, leaderAlive)
			mc.Eligible = len(mc.Reasons) == 0
		}
		if n == candidate {
			found = true
		}
		plan.Members = append(plan.Members, mc)
	}
	if candidate != "" {
		if !found {
			if _, known := in.Cluster.Members[candidate]; !known {
				return plan, fmt.Errorf("candidate %s is not a member of the cluster (members: %v)", candidate, names)
			}
			return plan, fmt.Errorf("candidate %s did not answer", candidate)
		}
		for _, mc := range plan.Members {
			if mc.Name != candidate {
				continue
			}
			if isUnreachable(mc) {
				return plan, fmt.Errorf("candidate %s did not answer (%s): it cannot take over", candidate, strings.TrimPrefix(mc.Reasons[0], "unreachable: "))
			}
			if !mc.Eligible && !force {
				return plan, fmt.Errorf("candidate %s is not eligible: %s (--force overrides lag and health checks)", candidate, joinReasons(mc.Reasons))
			}
		}
		plan.Candidate = candidate
		return plan, nil
	}
	var best *MemberCheck
	for i := range plan.Members {
		mc := &plan.Members[i]
		if !mc.Eligible {
			continue
		}
		if best == nil {
			best = mc
			continue
		}
		c := o.compare(mc.Position, best.Position)
		pb, pm := in.Peers[best.Name].Status.Priority, in.Peers[mc.Name].Status.Priority
		if c > 0 || (c == 0 && pm > pb) {
			best = mc
		}
	}
	if best == nil {
		return plan, fmt.Errorf("%w: %s", ErrNotCandidate, describeRejections(plan.Members))
	}
	plan.Candidate = best.Name
	return plan, nil
}

func isUnreachable(mc MemberCheck) bool {
	return len(mc.Reasons) == 1 && strings.HasPrefix(mc.Reasons[0], "unreachable:")
}

func describeRejections(ms []MemberCheck) string {
	if len(ms) == 0 {
		return "no other member answered"
	}
	s := ""
	for i, m := range ms {
		if i > 0 {
			s += "; "
		}
		s += m.Name + ": " + joinReasons(m.Reasons)
	}
	return s
}

// ---------------------------------------------------------------------------
// The agent's side

// switchoverDecision: this member leads; is a switchover request due?
func switchoverDecision(o *Observation) (Decision, bool) {
	sw := o.Cluster.Switchover
	if sw == nil {
		return Decision{}, false
	}
	v := sw.Value
	if v.Phase == PhaseHandover {
		return Decision{}, false // a handover we started is finishing; nothing to do as leader
	}
	if o.Config.Paused && v.Phase == "" {
		// Rule 7: no handover while paused; the candidate would not take
		// the key and the cluster would be left without a primary. The
		// request waits; one scheduled meanwhile is discarded as missed
		// after resume.
		return Decision{}, false
	}
	if v.Leader != "" && v.Leader != o.Self.Name {
		return Decision{Action: ActSwitchover, Reason: fmt.Sprintf("a switchover request names %s as the leader, but this member leads: discarding it", v.Leader)}, true
	}
	if !v.ScheduledAt.IsZero() {
		// Never early: the loop wakes at the scheduled instant (Run's
		// timer), so it starts within milliseconds of it.
		lw := o.Config.LoopWait.D()
		if d := v.ScheduledAt.Sub(o.Now); d > 0 {
			return Decision{}, false
		} else if -d > lw*3/2+time.Second {
			return Decision{Action: ActSwitchover, Reason: fmt.Sprintf("switchover scheduled at %s was missed by %v: discarding it, not running it late",
				v.ScheduledAt.Format(time.RFC3339), (-d).Round(time.Second))}, true
		}
	}
	to := "the best eligible replica"
	if v.Candidate != "" {
		to = v.Candidate
	}
	return Decision{Action: ActSwitchover, Reason: "planned switchover to " + to + " requested"}, true
}

// handoverDecision: nobody holds the key. Is a switchover handover or a
// manual failover pending for a named candidate? blocked: this member must
// not race normally.
func handoverDecision(o *Observation) (Decision, bool) {
	sw := o.Cluster.Switchover
	if sw == nil {
		return Decision{}, false
	}
	v := sw.Value
	handover := v.Phase == PhaseHandover
	manual := v.Leader == "" && v.Candidate != ""
	if !handover && !manual {
		return Decision{}, false
	}
	seen := o.Mem.SwitchoverSeenAt
	if o.Mem.SwitchoverSeenVersion == sw.Version && !seen.IsZero() && o.Now.Sub(seen) > handoverTimeout(o.Config) {
		return Decision{}, false // the candidate never took over: a normal race may proceed
	}
	what := "switchover"
	if manual && !handover {
		what = "manual failover"
	}
	if v.Candidate != o.Self.Name {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("%s to %s in progress: standing back", what, v.Candidate)}, true
	}
	db := o.DB
	if db.State != backends.StateRunning || !db.InRecovery {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("%s to this member requested, but its database is %s", what, db.State)}, true
	}
	if handover && !v.Force && o.compare(db.Replayed, v.FinalPosition) < 0 {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("switchover: waiting to replay the old leader's final position %s (at %s)", v.FinalPosition, db.Replayed)}, true
	}
	if manual && !v.Force {
		if r := ineligibility(o, selfFacts(o), false); len(r) > 0 {
			return Decision{Action: ActWait, Reason: "manual failover to this member requested, but it is not eligible: " + joinReasons(r) + " (use --force)"}, true
		}
	}
	reason := fmt.Sprintf("switchover from %s: this member replayed the final position %s; taking the key", v.Leader, v.FinalPosition)
	if manual && !handover {
		reason = "manual failover to this member requested"
		if v.Force {
			reason += " (forced)"
		}
	}
	return Decision{Action: ActAcquire, Reason: reason}, true
}

// switchover is the ActSwitchover job on the leader (DESIGN rule 4): stop
// taking writes, read the final position P, wait (bounded) until the
// candidate replayed P, and only then hand the key over. On timeout the
// leader, still holding the key, takes writes again.
func (a *Agent) switchover(ctx context.Context, job switchoverJob) error {
	sw := job.request
	v := sw.Value
	log := a.log.With("switchover_to", v.Candidate)
	fail := func(reason string) error {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), job.timeout)
		defer cancel()
		if err := a.store.DeleteSwitchover(dctx, sw.Version); err != nil && !errors.Is(err, dcs.ErrConflict) {
			log.Warn("deleting the failed switchover request", "err", err)
		}
		_, _ = a.store.AppendHistory(dctx, dcs.HistoryRecord{Kind: "switchover-failed", OldLeader: a.name, NewLeader: v.Candidate, Term: job.term, Reason: reason})
		log.Warn("switchover failed", "reason", reason)
		return errors.New(reason)
	}
	if job.discard != "" {
		return fail(job.discard)
	}
	// Pick and check the candidate against live state.
	peers := a.probePeers(ctx, job.cluster, job.config)
	plan, err := PlanSwitchover(PlanInput{Cluster: job.cluster, Config: job.config, Peers: peers, Lag: a.db.Lag, Compare: a.db.Compare, Now: a.now()},
		a.name, v.Candidate, v.Force)
	if err != nil {
		return fail("switchover not possible: " + err.Error())
	}
	cand := plan.Candidate
	kp := a.knownPeer(cand)
	host, port, ok := splitHostPort(kp.member.DBURL)
	if !ok || kp.apiURL == "" {
		return fail("switchover not possible: the address of " + cand + " is unknown")
	}
	up := backends.Upstream{Name: cand, Host: host, Port: port}
	v.Candidate, v.Phase, v.Reason = cand, PhaseDemoting, ""
	ver, err := a.store.PutSwitchover(ctx, v, sw.Version)
	if err != nil {
		return fail("switchover aborted: the request changed (cancelled?): " + err.Error())
	}
	start := a.now()
	log.Info("switchover: stopping writes", "candidate", cand, "term", job.term)
	if cp, ok := a.db.(Checkpointer); ok {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := cp.Checkpoint(cctx); err != nil {
			log.Warn("checkpoint before the switchover failed; the shutdown checkpoint will be longer", "err", err)
		}
		cancel()
	}
	a.markStopped() // GET /primary turns 503 now
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = a.db.Stop(sctx, backends.StopFast)
	cancel()
	if err != nil {
		a.restartPrimary(ctx, job)
		return fail("switchover aborted: stopping the database failed: " + err.Error())
	}
	octx, cancel := context.WithTimeout(ctx, job.timeout)
	st := a.db.Observe(octx)
	cancel()
	final := st.Position
	if final.IsZero() {
		a.restartPrimary(ctx, job)
		return fail("switchover aborted: the final position of the stopped database is unknown")
	}
	// Wait until the candidate replayed the final position.
	wait := 2 * job.config.TTL.D()
	if wait < 10*time.Second {
		wait = 10 * time.Second
	}
	deadline := a.now().Add(wait)
	var at backends.Position
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		ps, err := a.opts.Peers.LiveStatus(pctx, kp.apiURL)
		cancel()
		if err == nil {
			at = ps.Replayed
			if a.db.Compare(at, final) >= 0 {
				break
			}
		}
		if a.now().After(deadline) || ctx.Err() != nil {
			a.restartPrimary(ctx, job)
			return fail(fmt.Sprintf("switchover aborted: %s did not replay the final position %s within %v (it is at %s); this member takes writes again",
				cand, final, wait, at))
		}
		time.Sleep(20 * time.Millisecond)
	}
	v.Phase, v.FinalPosition = PhaseHandover, final
	if _, err := a.store.PutSwitchover(ctx, v, ver); err != nil {
		a.restartPrimary(ctx, job)
		return fail("switchover aborted: recording the handover failed: " + err.Error())
	}
	// Hand over: the key goes; the candidate (and only it) takes it.
	a.dropLead()
	a.disarmWatchdog()
	rctx, cancel := context.WithTimeout(ctx, job.timeout)
	err = a.store.ReleaseLeader(rctx, job.term)
	cancel()
	if err != nil {
		log.Warn("releasing the leader key for the switchover failed; it expires after ttl", "err", err)
	}
	a.opts.Metrics.LeaderChange("switchover")
	log.Info("role change: handed the leader key over", "old_role", "primary", "new_role", "replica", "candidate", cand,
		"final_position", final.String(), "writes_stopped_for", a.now().Sub(start).Round(time.Millisecond))
	a.roleChanged(string(backends.RoleReplica))
	stctx, cancel := context.WithTimeout(ctx, 2*job.timeout)
	defer cancel()
	if err := a.db.Start(stctx, backends.RoleReplica, &up); err != nil {
		return fmt.Errorf("switchover done, but starting as a replica of %s failed: %w", cand, err)
	}
	return nil
}

// restartPrimary takes writes again after an aborted switchover (the key is
// still ours).
func (a *Agent) restartPrimary(ctx context.Context, job switchoverJob) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*job.timeout)
	defer cancel()
	if err := a.db.Start(sctx, backends.RolePrimary, nil); err != nil {
		a.log.Error("restarting the primary after an aborted switchover failed; the loop retries", "err", err)
	}
}

// Checkpointer is an optional Backend capability: a checkpoint before a
// planned stop keeps the shutdown (and so the switchover pause) short.
type Checkpointer interface {
	Checkpoint(ctx context.Context) error
}

// switchoverJob is what the switchover job needs, copied from the loop.
type switchoverJob struct {
	request dcs.Versioned[dcs.Switchover]
	cluster *dcs.Cluster
	config  config.Dynamic
	term    int64
	timeout time.Duration
	discard string // non-empty: do not run the request, delete it with this reason
}

func (a *Agent) knownPeer(name string) knownPeer {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.known[name]
}

// consumeSwitchover deletes the request this member just carried out as the
// candidate (exactly once: a conditional delete of the version read).
func (a *Agent) consumeSwitchover(ctx context.Context, sw *dcs.Versioned[dcs.Switchover]) {
	if sw == nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := a.store.DeleteSwitchover(dctx, sw.Version); err != nil && !errors.Is(err, dcs.ErrConflict) {
		a.log.Warn("deleting the switchover request after promotion failed", "err", err)
	}
}

// SwitchoverRequest is an operator's request (POST /switchover, POST
// /failover, steward switchover/failover).
type SwitchoverRequest struct {
	Leader      string    `json:"leader,omitempty"`
	Candidate   string    `json:"candidate,omitempty"`
	ScheduledAt time.Time `json:"scheduled_at,omitzero"`
	Force       bool      `json:"force,omitempty"`
	// Failover: a manual failover (promote Candidate, with or without a
	// leader), not a planned switchover.
	Failover bool `json:"-"`
}

// Plan checks a request against the cluster as it is now (a fresh DCS read
// and a live probe of every member) without changing anything.
func (a *Agent) Plan(ctx context.Context, r SwitchoverRequest) (SwitchoverPlan, *dcs.Cluster, error) {
	a.mu.Lock()
	dyn := a.dyn
	a.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, dyn.RetryTimeout.D())
	cl, err := a.store.Load(lctx)
	cancel()
	if err != nil {
		return SwitchoverPlan{}, nil, fmt.Errorf("reading the cluster: %w", err)
	}
	a.remember(cl, a.now())
	peers := a.probePeers(ctx, cl, dyn)
	// This member answers for itself without a round trip.
	if a.name != "" {
		peers[a.name] = PeerResult{Name: a.name, Status: a.LiveStatus(ctx)}
	}
	in := PlanInput{Cluster: cl, Config: dyn, Peers: peers, Lag: a.db.Lag, Compare: a.db.Compare, Now: a.now()}
	if r.Failover {
		if cl.Leader != nil && !r.Force {
			return SwitchoverPlan{Leader: cl.Leader.Name}, cl, fmt.Errorf("the cluster has a leader (%s): use a switchover, or force the failover", cl.Leader.Name)
		}
		if cl.Leader != nil {
			p, err := PlanSwitchover(in, cl.Leader.Name, r.Candidate, true)
			return p, cl, err
		}
		p, err := PlanFailover(in, r.Candidate, r.Force)
		return p, cl, err
	}
	p, err := PlanSwitchover(in, r.Leader, r.Candidate, r.Force)
	return p, cl, err
}

// Submit validates a request (Plan) and stores it in the DCS for the leader
// (or, without a leader, the candidate) to carry out. Only one request can be
// pending: dcs.ErrConflict otherwise. A scheduled switchover is stored after
// checking the leader and that the candidate (if named) is a member; its
// eligibility is checked again when it runs.
func (a *Agent) Submit(ctx context.Context, r SwitchoverRequest) (SwitchoverPlan, dcs.Versioned[dcs.Switchover], error) {
	plan, cl, err := a.Plan(ctx, r)
	if err != nil && !Deferrable(r, cl, time.Now()) {
		return plan, dcs.Versioned[dcs.Switchover]{}, err
	}
	if cl.Switchover != nil {
		return plan, dcs.Versioned[dcs.Switchover]{}, fmt.Errorf("a switchover is already pending (%s): cancel it first: %w", describeRequest(cl.Switchover.Value), dcs.ErrConflict)
	}
	if cl.Config != nil {
		if d, err := config.ParseDynamicJSON(cl.Config.Value); err == nil && d.Paused {
			return plan, dcs.Versioned[dcs.Switchover]{}, errors.New("the cluster is paused (maintenance mode): no member takes the leader key while paused (rule 7); resume first")
		}
	}
	v := dcs.Switchover{Candidate: r.Candidate, ScheduledAt: r.ScheduledAt, RequestedAt: time.Now().UTC(), Force: r.Force}
	if cl.Leader != nil {
		v.Leader = cl.Leader.Name
	}
	if r.ScheduledAt.IsZero() && plan.Candidate != "" {
		v.Candidate = plan.Candidate
	}
	a.mu.Lock()
	timeout := a.dyn.RetryTimeout.D()
	a.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ver, err := a.store.PutSwitchover(pctx, v, 0)
	if err != nil {
		return plan, dcs.Versioned[dcs.Switchover]{}, fmt.Errorf("storing the request: %w", err)
	}
	a.log.Info("switchover requested", "leader", v.Leader, "candidate", v.Candidate, "scheduled_at", v.ScheduledAt, "force", v.Force)
	a.Wake()
	return plan, dcs.Versioned[dcs.Switchover]{Value: v, Version: ver}, nil
}

// Cancel deletes the pending request, unless the leader has already started
// carrying it out.
func (a *Agent) Cancel(ctx context.Context) (dcs.Switchover, error) {
	a.mu.Lock()
	timeout := a.dyn.RetryTimeout.D()
	a.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl, err := a.store.Load(lctx)
	if err != nil {
		return dcs.Switchover{}, err
	}
	if cl.Switchover == nil {
		return dcs.Switchover{}, fmt.Errorf("no switchover is pending: %w", dcs.ErrNotFound)
	}
	if p := cl.Switchover.Value.Phase; p != "" {
		return cl.Switchover.Value, fmt.Errorf("the switchover is already running (phase %s) and can no longer be cancelled: %w", p, dcs.ErrConflict)
	}
	if err := a.store.DeleteSwitchover(lctx, cl.Switchover.Version); err != nil {
		return cl.Switchover.Value, err
	}
	a.log.Info("switchover request cancelled", "request", describeRequest(cl.Switchover.Value))
	return cl.Switchover.Value, nil
}

func hasMember(cl *dcs.Cluster, name string) bool { _, ok := cl.Members[name]; return ok }

// Deferrable: a scheduled switchover whose plan fails now is still accepted
// when the cluster has the leader it names and the candidate (if named) is a
// member: a replica lagging or restarting at scheduling time may well be
// ready at the scheduled time, and the leader checks eligibility again then
// (and records why in history if it refuses). Submit stores such a request;
// a dry run (POST /switchover with dry_run) answers that it would.
func Deferrable(r SwitchoverRequest, cl *dcs.Cluster, now time.Time) bool {
	return !r.Failover && r.ScheduledAt.After(now) && cl != nil && cl.Leader != nil &&
		(r.Candidate == "" || hasMember(cl, r.Candidate)) && (r.Leader == "" || r.Leader == cl.Leader.Name)
}

func describeRequest(v dcs.Switchover) string {
	s := "switchover"
	if v.Leader == "" {
		s = "manual failover"
	} else {
		s += " from " + v.Leader
	}
	if v.Candidate != "" {
		s += " to " + v.Candidate
	}
	if !v.ScheduledAt.IsZero() {
		s += " at " + v.ScheduledAt.Format(time.RFC3339)
	}
	return s
}
