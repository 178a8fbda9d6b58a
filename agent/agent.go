package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// Member states published in the member key and the API.
const (
	StateRunning       = "running"   // primary accepting writes, or a replica not streaming (see reason)
	StateStreaming     = "streaming" // replica receiving from the leader
	StateStarting      = "starting"
	StateStopped       = "stopped"
	StateCrashed       = "crashed"
	StateUnresponsive  = "unresponsive"
	StateUninitialized = "uninitialized"
	StateBootstrapping = "bootstrapping"
	StateCloning       = "cloning"
	StateRewinding     = "rewinding"
	StateDiverged      = "diverged"
	StateUnhealthy     = "unhealthy" // primary that cannot commit
	StateFencing       = "fencing"   // holds the key after a failover; fencing the former primary before promoting
	StateFailed        = "failed"    // staying down, operator action needed
)

// Options wire an Agent.
type Options struct {
	Self    Self
	Store   Store
	Backend Backend
	Peers   Peers
	Logger  *slog.Logger
	// Now reads the monotonic clock (default time.Now).
	Now func() time.Time

	APIURL    string // this member's REST API base URL, as others reach it
	DBAddress string // host:port of this member's database, as others reach it
	Tags      map[string]string
	NoLB      bool
	Version   string

	// Bootstrap is the dynamic config from the file, written to the DCS by
	// the first member and used until the DCS copy is readable.
	Bootstrap config.Dynamic
	// SafetyMargin returns the lease safety margin for a ttl (rule 1).
	SafetyMargin func(ttl time.Duration) time.Duration

	// OnRoleChange is called (in its own goroutine) after the database's
	// role changed: "primary" or "replica".
	OnRoleChange func(role string)
	// Callbacks are the operator's notification commands
	// (callbacks.on_role_change, run by callbackRunner); SetCallbacks
	// replaces them on a reload.
	Callbacks config.Callbacks
	// OnLoop is called after every loop (systemd watchdog, status).
	OnLoop func(LoopReport)
	// Metrics receives events (nil: none).
	Metrics Metrics

	// Cluster is the cluster's name (for fencing hooks and callbacks).
	Cluster string
	// Fencer runs STONITH hooks against a former primary; FencingMode is
	// fencing.mode.
	Fencer      Fencer
	FencingMode string
	// Watchdog is armed while this member leads (nil: none).
	Watchdog Watchdog
}

// LoopReport summarises one loop for observers (systemd, metrics).
type LoopReport struct {
	Decision Decision
	Duration time.Duration
	Role     string
	Leader   string
	Healthy  bool // the loop could read the DCS and the database
}

// Agent runs the HA loop for one member.
type Agent struct {
	opts  Options
	name  string // this member's name (never changes)
	log   *slog.Logger
	now   func() time.Time
	store Store
	db    Backend
	// callbacks runs callbacks.on_role_change off the loop (callbacks.go).
	callbacks *callbackRunner

	wake      chan struct{} // wakes the loop at once
	leaseMove chan struct{} // wakes the fence timer: the deadline moved
	renewWake chan struct{} // wakes the lease keeper: leadership started
	dueAt     time.Time     // when this leader's scheduled switchover falls due (zero: none)

	mu        sync.Mutex
	lead      LeadState
	leaseTTL  time.Duration
	dyn       config.Dynamic
	mem       Memory
	job       *runningJob
	loopAlive time.Time // last loop start, for the lease keeper's liveness check
	view      View
	known     map[string]knownPeer // members seen recently (rule 2 asks all of them)
	// failsafeSince: when this leader last kept its lease through the DCS
	// failsafe (every member confirmed it); zero when the DCS answers.
	failsafeSince time.Time
	failsafeLog   string

	// loop-owned state (only the loop goroutine touches these)
	lastPublished      []byte
	lastPublishedShape []byte
	lastPublishTime    time.Time
	lastStatusPos      backends.Position
	lastStatusTerm     int64
	lastSlots          string
	lastSlotsDropped   string // replicaChores: membership whose slots were last cleared
	lastRole           string
	lastLeaderName     string
	historyTerm        int64
	configVersion      int64
	lastSyncLog        string                        // the last synchronous-replication step logged (a.mu)
	ackRestartAt       time.Time                     // when ackChores last changed this replica's acknowledgements (loop goroutine)
	ackSeen            map[string]dcs.SemiSyncReport // the last semi-sync report read from each member key (a.mu; ackView)
	warned             map[string]bool               // one-time warnings given (a.mu)
}

type knownPeer struct {
	apiURL   string
	member   dcs.Member
	lastSeen time.Time
}

type runningJob struct {
	kind   Action
	since  time.Time
	cancel context.CancelFunc
}

// New returns an agent; Run starts it.
func New(o Options) *Agent {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
	if o.SafetyMargin == nil {
		o.SafetyMargin = func(ttl time.Duration) time.Duration { return config.Watchdog{}.Margin(ttl) }
	}
	// A safety margin set for a longer ttl than the cluster now uses (ttl is
	// dynamic, the margin local) would put the deadline at or before the
	// renewal itself and fence a healthy primary: never use more than half
	// the ttl.
	margin := o.SafetyMargin
	o.SafetyMargin = func(ttl time.Duration) time.Duration {
		if m := margin(ttl); m <= ttl/2 {
			return m
		}
		return ttl / 2
	}
	a := &Agent{
		opts:      o,
		name:      o.Self.Name,
		log:       o.Logger,
		now:       o.Now,
		store:     o.Store,
		db:        o.Backend,
		wake:      make(chan struct{}, 1),
		leaseMove: make(chan struct{}, 1),
		renewWake: make(chan struct{}, 1),
		dyn:       o.Bootstrap,
		leaseTTL:  o.Bootstrap.TTL.D(),
		known:     map[string]knownPeer{},
		callbacks: newCallbackRunner(o.Logger, o.Callbacks.OnRoleChange),
	}
	// Until the first loop publishes, peers asking GET /status see this
	// member's own settings (not a zero priority), and no eligibility.
	a.view.Member = dcs.Member{Name: o.Self.Name, Role: dcs.RoleUnknown, State: StateStarting, Priority: o.Self.Priority,
		NoFailover: o.Self.NoFailover, NoSync: o.Self.NoSync, Tags: o.Tags, NoLoadBalance: o.NoLB,
		IneligibleReason: []string{"agent starting: no loop has run yet"}}
	return a
}

// Reconfigure applies changed local settings (SIGHUP): the member's flags
// and tags take effect from the next loop. Name changes are refused by the
// caller (they need a restart).
func (a *Agent) Reconfigure(self Self, tags map[string]string, noLoadBalance bool) {
	a.mu.Lock()
	self.Name = a.name
	a.opts.Self, a.opts.Tags, a.opts.NoLB = self, tags, noLoadBalance
	a.mu.Unlock()
	a.Wake()
}

// SetCallbacks replaces the callback commands (SIGHUP): the next role
// change runs the new command; a callback already running is not touched.
func (a *Agent) SetCallbacks(c config.Callbacks) {
	a.callbacks.setCommand(c.OnRoleChange)
}

// Wake makes the loop run now (a leader-key change, an API request).
func (a *Agent) Wake() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run runs the agent until ctx ends. It returns after every goroutine it
// started has stopped, including a role change callback still running
// (bounded by CallbackTimeout).
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		a.mu.Lock()
		if a.job != nil {
			a.job.cancel()
		}
		a.mu.Unlock()
		wg.Wait()
		// A running callback may finish (within its timeout); no new one
		// starts once the loop has stopped.
		a.callbacks.close()
	}()
	wg.Add(3)
	go func() { defer wg.Done(); a.watchLeader(ctx) }()
	go func() { defer wg.Done(); a.keepLease(ctx) }()
	go func() { defer wg.Done(); a.fenceAtDeadline(ctx) }()
	for {
		a.step(ctx)
		a.mu.Lock()
		wait := a.dyn.LoopWait.D()
		if d := time.Until(a.dueAt); d > 0 && d < wait {
			wait = d // a scheduled switchover falls due before the next loop
		}
		a.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-a.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// watchLeader wakes the loop as soon as the leader key changes, so a vanished
// key is acted on at once, not at the next tick.
func (a *Agent) watchLeader(ctx context.Context) {
	for ev := range a.store.WatchLeader(ctx) {
		a.log.Debug("leader key changed", "deleted", ev.Leader == nil && !ev.Resync, "resync", ev.Resync)
		a.Wake()
	}
}

// ---------------------------------------------------------------------------
// The lease (rule 1)

// renewInterval: a leader renews every loop_wait, but at least three times
// per lease deadline so that one slow answer does not cost the lease (rule
// 1). Any other member's lease only keeps its member key alive, so it renews
// three times per ttl (never more often than a leader would): at ttl 10 s and
// loop_wait 1 s that is one etcd request every 3.3 s instead of every second.
// Taking the key renews first (AcquireLeader) and wakes the keeper, so a new
// leader starts on the leader's cadence at once.
func (a *Agent) renewInterval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	iv := a.dyn.LoopWait.D()
	ttl := a.leaseTTL
	if budget := (ttl - a.opts.SafetyMargin(ttl)) / 3; budget > 0 && budget < iv {
		iv = budget
	}
	if !a.lead.Held && ttl/3 > iv {
		iv = ttl / 3
	}
	if iv < 50*time.Millisecond {
		iv = 50 * time.Millisecond
	}
	return iv
}

// keepLease renews the session lease from its own goroutine, independent of
// how long a loop takes — but only while the loop is alive: a loop stuck for
// longer than ttl stops the renewals, so that a hung agent is failed over.
func (a *Agent) keepLease(ctx context.Context) {
	warned := false
	for {
		t := time.NewTimer(a.renewInterval())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.renewWake:
			// Leadership started: the key was just renewed by the
			// acquisition; from now on renew on the leader's cadence.
			t.Stop()
			continue
		case <-t.C:
		}
		a.mu.Lock()
		alive, ttl := a.loopAlive, a.leaseTTL
		a.mu.Unlock()
		if alive.IsZero() {
			continue // the first loop has not run yet
		}
		if stall := a.now().Sub(alive); stall > ttl {
			if !warned {
				a.log.Error("HA loop stalled; no longer renewing the lease so that another member can take over", "stalled_for", stall.Round(time.Millisecond))
				warned = true
			}
			continue
		}
		warned = false
		a.renew(ctx)
	}
}

// renew sends one keep-alive and moves the lease deadline; a leader's
// watchdog is petted only right after a successful renewal. With the DCS
// unreachable and failsafe_mode on, a leader asks every known member to
// confirm it instead (DCS failsafe).
func (a *Agent) renew(ctx context.Context) {
	sent, err := a.store.KeepAlive(ctx)
	a.mu.Lock()
	leading, failsafe := a.lead.Held, a.dyn.FailsafeMode
	if err == nil {
		if a.lead.Held {
			a.extendDeadline(sent)
		}
		a.failsafeSince = time.Time{}
		a.mu.Unlock()
		if leading && a.opts.Watchdog != nil {
			if err := a.opts.Watchdog.Keepalive(); err != nil {
				a.log.Warn("watchdog keepalive failed", "err", err)
			}
		}
		return
	}
	a.mu.Unlock()
	a.opts.Metrics.DCSError("renew")
	switch {
	case errors.Is(err, dcs.ErrLeaseLost) && leading:
		if failsafe && a.failsafeHeld() && a.retakeAfterFailsafe(ctx) {
			return
		}
		a.mu.Lock()
		a.opts.Metrics.LeaderChange("lost")
		a.log.Warn("session lease expired: the leader key is gone", "term", a.lead.Term)
		a.lead.Deadline = time.Time{} // the fence timer acts now
		a.view.LeaseDeadline = time.Time{}
		a.mu.Unlock()
		a.signalLease()
	case leading && failsafe:
		a.failsafeRound(ctx, err)
	default:
		a.log.Debug("lease renewal failed", "err", err)
	}
}

// extendDeadline moves the lease deadline to sent + ttl − margin (never
// back). Callers hold a.mu.
func (a *Agent) extendDeadline(sent time.Time) {
	d := sent.Add(a.leaseTTL - a.opts.SafetyMargin(a.leaseTTL))
	if d.After(a.lead.Deadline) {
		a.lead.Deadline = d
		a.view.LeaseDeadline = d
	}
}

func (a *Agent) signalLease() {
	select {
	case a.leaseMove <- struct{}{}:
	default:
	}
}

// fenceAtDeadline is rule 1's own timer: when the lease deadline passes
// without a renewal, the database stops taking writes — whatever the loop is
// doing, whether or not etcd answers.
func (a *Agent) fenceAtDeadline(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		a.mu.Lock()
		lead, paused := a.lead, a.dyn.Paused
		a.mu.Unlock()
		wait := time.Hour
		if lead.Held {
			wait = lead.Deadline.Sub(a.now())
			if wait <= 0 {
				a.mu.Lock()
				expired := a.lead.Held && a.lead.Term == lead.Term && !a.now().Before(a.lead.Deadline)
				if expired {
					a.lead.Held = false
					a.view.LeaseDeadline = time.Time{}
				}
				a.mu.Unlock()
				if expired {
					if faultActive("skip-self-fence") {
						// Test builds only: proves the chaos checkers catch a
						// primary that does not stop at its deadline.
						a.log.Error("FAULT INJECTED: not fencing at the lease deadline")
						continue
					}
					if paused {
						a.log.Warn("lease deadline passed while paused: not fencing the database (rule 7)", "term", lead.Term)
					} else {
						a.log.Warn("lease deadline passed without a renewal: fencing the database now (rule 1)",
							"term", lead.Term, "deadline", lead.Deadline.Format(time.RFC3339Nano))
						fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
						err := a.db.FenceWrites(fctx)
						cancel()
						a.opts.Metrics.LeaderChange("deadline")
						if err != nil {
							a.opts.Metrics.FencingAttempt("failure")
							// The watchdog stays armed: if the database
							// still takes writes, the host must reset.
							a.log.Error("fencing the database at the lease deadline failed; the watchdog (if any) stays armed", "err", err)
						} else {
							a.opts.Metrics.FencingAttempt("success")
							// The loop may be stuck: peers must not read a
							// writable database in our status, or they would
							// never take over.
							a.markStopped()
							a.disarmWatchdog()
							a.log.Info("database fenced at the lease deadline", "term", lead.Term, "late_by", a.now().Sub(lead.Deadline).Round(time.Millisecond))
						}
					}
					a.Wake()
				}
				continue
			}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.leaseMove:
		}
	}
}

// setLead records a new leadership (after acquiring or adopting the key).
func (a *Agent) setLead(term int64, sent time.Time) {
	a.mu.Lock()
	a.lead = LeadState{Held: true, Term: term, Deadline: sent.Add(a.leaseTTL - a.opts.SafetyMargin(a.leaseTTL))}
	a.view.LeaseDeadline = a.lead.Deadline
	a.mu.Unlock()
	a.signalLease()
	select {
	case a.renewWake <- struct{}{}:
	default:
	}
}

// dropLead forgets our leadership (key lost or released).
func (a *Agent) dropLead() {
	a.mu.Lock()
	a.lead = LeadState{}
	a.view.LeaseDeadline = time.Time{}
	a.mu.Unlock()
	a.signalLease()
}

// LeaseDeadline is the instant after which this member must not take writes
// (zero when it is not leader). The API's /primary answers from it.
func (a *Agent) LeaseDeadline() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.lead.Held {
		return time.Time{}
	}
	return a.lead.Deadline
}

// ---------------------------------------------------------------------------
// One loop

func (a *Agent) step(ctx context.Context) {
	start := a.now()
	a.mu.Lock()
	a.loopAlive = start
	dyn := a.dyn
	a.mu.Unlock()
	timeout := dyn.RetryTimeout.D()

	// Observe.
	lctx, cancel := context.WithTimeout(ctx, timeout)
	cl, dcsErr := a.store.Load(lctx)
	cancel()
	if dcsErr != nil {
		a.opts.Metrics.DCSError("load")
	}
	if dcsErr == nil {
		dyn = a.applyConfig(ctx, cl)
		for k, e := range cl.Errors {
			a.log.Warn("ignoring an undecodable DCS record", "key", k, "err", e)
		}
		a.remember(cl, start)
		a.mu.Lock()
		if sw := cl.Switchover; sw != nil && sw.Version != a.mem.SwitchoverSeenVersion {
			a.mem.SwitchoverSeenVersion, a.mem.SwitchoverSeenAt = sw.Version, start
		}
		a.dueAt = time.Time{}
		if sw := cl.Switchover; sw != nil && cl.Leader != nil && cl.Leader.Name == a.opts.Self.Name {
			a.dueAt = sw.Value.ScheduledAt
		}
		a.mu.Unlock()
	}
	octx, cancel := context.WithTimeout(ctx, timeout)
	faultPoint("hang-observe") // test builds only: a database call that never returns
	dbs := a.db.Observe(octx)
	cancel()
	a.checkHealth(ctx, cl, dbs, start, timeout)

	o := a.observation(cl, dcsErr, dyn, dbs)
	if needsPeers(o) {
		o.Peers = a.probePeers(ctx, cl, dyn)
	}

	// Decide.
	d := decide(o)

	// Act.
	a.logDecision(d, o)
	a.act(ctx, o, d)

	// Publish.
	a.publish(ctx, o, d)
	a.opts.Metrics.LoopDone(a.now().Sub(start))
	if a.opts.OnLoop != nil {
		a.opts.OnLoop(LoopReport{Decision: d, Duration: a.now().Sub(start), Role: a.view.Member.Role, Leader: leaderName(cl), Healthy: dcsErr == nil && dbs.State == backends.StateRunning})
	}
}

func leaderName(cl *dcs.Cluster) string {
	if cl == nil || cl.Leader == nil {
		return ""
	}
	return cl.Leader.Name
}

func (a *Agent) observation(cl *dcs.Cluster, dcsErr error, dyn config.Dynamic, dbs backends.Status) *Observation {
	a.mu.Lock()
	defer a.mu.Unlock()
	var job *JobInfo
	if a.job != nil {
		job = &JobInfo{Kind: a.job.kind, Since: a.job.since}
	}
	_, oneAck := ackReplicator(a.db)
	if oneAck && dbs.Writable {
		// What a semi-synchronous primary waits for is decided by its
		// replicas: see ack.go.
		dbs.Sync, dbs.Replicas = ackView(dbs, cl, a.opts.Self.Name, a.rememberAcks(cl))
	}
	return &Observation{
		Now: a.now(), Cluster: cl, DCSErr: dcsErr, Config: dyn, DB: dbs,
		Self: a.opts.Self, Lead: a.lead, Job: job, Mem: a.mem, Tags: a.opts.Tags, NoLB: a.opts.NoLB,
		FencingMode: a.opts.FencingMode, OneAck: oneAck,
		Lag: a.db.Lag, Compare: a.db.Compare, SinceFork: sinceFork(a.db),
	}
}

func sinceFork(db Backend) func(pos, fork backends.Position) string {
	if fr, ok := db.(ForkReporter); ok {
		return fr.SinceFork
	}
	return nil
}

// logDecision writes one line per loop: Info when something changes, Debug
// for the steady state.
func (a *Agent) logDecision(d Decision, o *Observation) {
	lvl := slog.LevelInfo
	if d.Action == ActNone || d.Action == ActLead || (d.Action == ActWait && a.view.Decision == d.String()) {
		lvl = slog.LevelDebug
	}
	if d.Action == ActStayDown && a.view.Decision == d.String() {
		lvl = slog.LevelDebug
	}
	a.log.Log(context.Background(), lvl, "decision", "action", string(d.Action), "reason", d.Reason,
		"leader", leaderName(o.Cluster), "db", string(o.DB.State), "writable", o.DB.Writable)
}

// applyConfig adopts the DCS copy of the dynamic config (seeding it from the
// bootstrap section when absent) and applies timing changes.
func (a *Agent) applyConfig(ctx context.Context, cl *dcs.Cluster) config.Dynamic {
	a.mu.Lock()
	cur := a.dyn
	a.mu.Unlock()
	if cl.Config == nil {
		return cur
	}
	if cl.Config.Version == a.configVersion {
		return cur
	}
	d, err := config.ParseDynamicJSON(cl.Config.Value)
	if err != nil {
		a.log.Error("the DCS config is invalid; keeping the last good one", "err", err)
		a.configVersion = cl.Config.Version
		return cur
	}
	a.configVersion = cl.Config.Version
	if d == cur {
		return cur
	}
	a.log.Info("dynamic config changed", "ttl", d.TTL.D(), "loop_wait", d.LoopWait.D(), "retry_timeout", d.RetryTimeout.D(),
		"maximum_lag_on_failover", int64(d.MaximumLagOnFailover), "paused", d.Paused,
		"synchronous_mode", d.SynchronousMode, "synchronous_node_count", d.SynchronousNodeCount)
	if m := a.opts.SafetyMargin(d.TTL.D()); d.TTL.D()-m < d.LoopWait.D()+d.RetryTimeout.D() {
		a.log.Warn("the lease leaves less than loop_wait + retry_timeout after the safety margin: one slow renewal may fence the primary; lower watchdog.safety_margin or raise ttl",
			"ttl", d.TTL.D(), "safety_margin", m, "loop_wait", d.LoopWait.D(), "retry_timeout", d.RetryTimeout.D())
	}
	a.store.SetTimings(d.RetryTimeout.D(), d.TTL.D())
	a.mu.Lock()
	a.dyn = d
	ttlChanged := d.TTL != cur.TTL
	a.mu.Unlock()
	if ttlChanged {
		a.rotateLease(ctx, d.TTL.D())
	}
	return d
}

// rotateLease moves our keys to a lease with the new ttl. Until it succeeds
// the old (possibly shorter) lease keeps counting.
func (a *Agent) rotateLease(ctx context.Context, ttl time.Duration) {
	m := a.view.Member
	sent, err := a.store.RotateLease(ctx, &m)
	if err != nil {
		a.log.Warn("moving to a lease with the new ttl failed; will retry", "err", err)
		a.mu.Lock()
		a.dyn.TTL = config.Duration(a.leaseTTL) // retry next time the config is read
		a.mu.Unlock()
		a.configVersion = 0
		return
	}
	a.mu.Lock()
	old := a.leaseTTL
	a.leaseTTL = ttl
	if a.lead.Held {
		a.lead.Deadline = sent.Add(ttl - a.opts.SafetyMargin(ttl))
		a.view.LeaseDeadline = a.lead.Deadline
	}
	a.mu.Unlock()
	a.signalLease()
	a.log.Info("lease moved to the new ttl", "old_ttl", old, "ttl", ttl)
}

// remember keeps track of members seen recently: when the leader dies its
// member key vanishes with its lease, but rule 2 still asks it.
func (a *Agent) remember(cl *dcs.Cluster, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for n, m := range cl.Members {
		if n != a.name && m.APIURL != "" {
			a.known[n] = knownPeer{apiURL: m.APIURL, member: m, lastSeen: now}
		}
	}
	keep := 10 * a.leaseTTL
	if keep < time.Minute {
		keep = time.Minute
	}
	for n, p := range a.known {
		if now.Sub(p.lastSeen) > keep {
			delete(a.known, n)
		}
	}
	if cl.Leader != nil {
		a.lastLeaderName = cl.Leader.Name
		if cl.Leader.Name != a.name {
			a.mem.FormerLeader = cl.Leader.Name
		}
	}
}

// probePeers asks every known member for its state, in parallel, each with a
// short timeout.
func (a *Agent) probePeers(ctx context.Context, cl *dcs.Cluster, dyn config.Dynamic) map[string]PeerResult {
	a.mu.Lock()
	targets := map[string]string{}
	for n, p := range a.known {
		targets[n] = p.apiURL
	}
	a.mu.Unlock()
	timeout := dyn.RetryTimeout.D() / 2
	if timeout > 2*time.Second {
		timeout = 2 * time.Second
	}
	if timeout < 500*time.Millisecond {
		timeout = 500 * time.Millisecond
	}
	out := map[string]PeerResult{}
	if a.opts.Peers == nil || len(targets) == 0 {
		return out
	}
	// Under the sync rules a candidate compares its position with the
	// members' positions as their databases have them now, not as their
	// last loop saw them: a position published before the primary died
	// may be behind what the member flushed since (rule 6, quorum).
	get := a.opts.Peers.Status
	if rulesOf(cl).Active {
		get = a.opts.Peers.LiveStatus
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for n, u := range targets {
		wg.Add(1)
		go func(n, u string) {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := get(pctx, u)
			mu.Lock()
			out[n] = PeerResult{Name: n, APIURL: u, Status: st, Err: err}
			mu.Unlock()
		}(n, u)
	}
	wg.Wait()
	return out
}

// checkHealth runs the primary's commit probe and tracks how long the
// primary has been unhealthy or restarting.
func (a *Agent) checkHealth(ctx context.Context, cl *dcs.Cluster, dbs backends.Status, now time.Time, timeout time.Duration) {
	a.mu.Lock()
	leading := a.lead.Valid(now)
	a.mu.Unlock()
	var hbErr error
	committed := false
	switch {
	case leading && dbs.State == backends.StateRunning && dbs.Writable:
		hctx, cancel := context.WithTimeout(ctx, timeout)
		hbErr = a.db.Heartbeat(hctx, a.name)
		cancel()
		committed = hbErr == nil
	case leading && dbs.State == backends.StateUnresponsive:
		hbErr = errors.New(dbs.Reason)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if hbErr != nil {
		if a.mem.UnhealthySince.IsZero() {
			a.mem.UnhealthySince = now
			a.log.Warn("primary health check failed", "err", hbErr)
		}
		a.mem.UnhealthyReason = hbErr.Error()
	} else if leading && dbs.State == backends.StateRunning {
		if !a.mem.UnhealthySince.IsZero() {
			a.log.Info("primary healthy again", "was_unhealthy_for", now.Sub(a.mem.UnhealthySince).Round(time.Millisecond))
		}
		a.mem.UnhealthySince, a.mem.UnhealthyReason = time.Time{}, ""
	}
	if dbs.State == backends.StateRunning && (a.mem.LastJobKind == ActStartPrimary || a.mem.LastJobKind == ActStartReplica) {
		a.mem.LastJobError, a.mem.LastJobKind = "", ""
	}
	if !leading {
		a.mem.UnhealthySince, a.mem.UnhealthyReason = time.Time{}, ""
		a.mem.StartingSince = time.Time{}
	} else if committed {
		a.mem.StartingSince = time.Time{}
	}
	if dbs.State == backends.StateRunning && dbs.InRecovery && !dbs.Streaming {
		if a.mem.NotStreamingSince.IsZero() {
			a.mem.NotStreamingSince = now
		}
	} else {
		a.mem.NotStreamingSince = time.Time{}
		if dbs.Streaming {
			// Streaming again: the next stop is checked at once.
			a.mem.DivergenceCheckedAt, a.mem.DivergenceCheckedTL = time.Time{}, 0
		}
	}
}

// ---------------------------------------------------------------------------
// Background jobs

func (a *Agent) startJob(ctx context.Context, kind Action, f func(ctx context.Context) error) {
	jctx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	a.job = &runningJob{kind: kind, since: a.now(), cancel: cancel}
	a.mu.Unlock()
	go func() {
		defer cancel()
		err := f(jctx)
		a.mu.Lock()
		a.job = nil
		if err != nil {
			a.mem.LastJobError, a.mem.LastJobKind = err.Error(), kind
		} else if a.mem.LastJobKind == kind {
			a.mem.LastJobError, a.mem.LastJobKind = "", ""
		}
		a.mu.Unlock()
		if err != nil {
			a.log.Error("background action failed", "action", string(kind), "err", err)
		} else {
			a.log.Info("background action done", "action", string(kind))
		}
		a.Wake()
	}()
}

// ---------------------------------------------------------------------------
// helpers

func splitHostPort(addr string) (string, int, bool) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, false
	}
	return h, n, true
}

// memberNames returns the sorted names of the cluster's members (and the
// recently seen ones), excluding this member.
func (a *Agent) memberNames(cl *dcs.Cluster) []string {
	set := map[string]bool{}
	if cl != nil {
		for n := range cl.Members {
			set[n] = true
		}
	}
	a.mu.Lock()
	for n := range a.known {
		set[n] = true
	}
	a.mu.Unlock()
	delete(set, a.name)
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Shutdown runs after Run returned (SIGTERM). With stopDatabase, a leader
// stops its database cleanly (replicas receive every WAL record first) and
// releases the key so that a replica takes over at once; a replica stops its
// database. Otherwise the database is left running: a leader's key then
// expires after ttl unless the agent comes back first and adopts it.
func (a *Agent) Shutdown(ctx context.Context, stopDatabase bool) {
	a.mu.Lock()
	lead := a.lead
	a.mu.Unlock()
	if !stopDatabase {
		a.log.Info("shutting down; leaving the database running (on_shutdown: leave-running)", "leader", lead.Held)
		// Closing the device without disarming would reset the host.
		a.disarmWatchdog()
		return
	}
	if err := a.db.Stop(ctx, backends.StopFast); err != nil {
		a.log.Error("stopping the database on shutdown failed", "err", err)
		if lead.Held {
			// Keep the key: releasing it while our database may still take
			// writes would allow a second writer. It expires by itself.
			return
		}
	}
	a.disarmWatchdog()
	// Peers probing our API before they race must not see a writable
	// database that is gone.
	a.mu.Lock()
	a.view.DB = a.db.Observe(ctx)
	a.view.Member.Writable = false
	a.view.Member.State = StateStopped
	a.view.Member.Eligible = false
	a.mu.Unlock()
	if lead.Held {
		a.dropLead() // our database is stopped: peers may race as soon as the key goes
		a.opts.Metrics.LeaderChange("shutdown")
		if err := a.store.ReleaseLeader(ctx, lead.Term); err != nil {
			a.log.Warn("releasing the leader key on shutdown failed; it expires after ttl", "err", err)
		} else {
			a.log.Info("role change: released the leader key on shutdown", "old_role", "primary", "new_role", "stopped", "term", lead.Term)
		}
	}
	if err := a.store.RevokeSession(ctx); err != nil {
		a.log.Debug("revoking the session lease failed", "err", err)
	}
}

// RequestRestart asks the loop to restart this member's database (steward
// restart). pendingOnly: only when a setting waits for a restart.
func (a *Agent) RequestRestart(pendingOnly bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.view.DB.State != backends.StateRunning {
		return fmt.Errorf("the database of %s is %s, not running", a.name, a.view.DB.State)
	}
	if pendingOnly && !a.view.DB.PendingRestart {
		return fmt.Errorf("%s has no setting waiting for a restart (--pending)", a.name)
	}
	a.mem.RestartRequested = true
	a.wakeLocked()
	return nil
}

// RequestReinit asks the loop to wipe this member's data directory and clone
// it again from the leader (steward reinit). Refused on the leader.
func (a *Agent) RequestReinit() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lead.Valid(a.now()) {
		return fmt.Errorf("%s is the leader: reinit would wipe the primary; switch over first", a.name)
	}
	if a.job != nil {
		return fmt.Errorf("%s is busy (%s in progress)", a.name, a.job.kind)
	}
	a.mem.ReinitRequested = true
	a.wakeLocked()
	return nil
}

func (a *Agent) wakeLocked() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// LiveStatus is PeerStatus with the database's positions read now, not at
// the last loop: a switching-over leader waits on it for the candidate to
// replay its final position.
func (a *Agent) LiveStatus(ctx context.Context) PeerStatus {
	st := a.PeerStatus(a.now())
	octx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	db := a.db.Observe(octx)
	if db.State == backends.StateRunning {
		st.Position, st.Received, st.Replayed, st.Timeline, st.Writable = db.Position, db.Received, db.Replayed, db.Timeline, db.Writable
	}
	return st
}
