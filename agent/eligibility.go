package agent

import (
	"fmt"
	"sort"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// facts is what rule 3 looks at for one member, from the local observation
// (for this member) or from its REST status (for a peer).
type facts struct {
	Name       string
	Running    bool // database running and answering
	Writable   bool
	NoFailover bool
	Priority   int
	Timeline   int64
	Replayed   backends.Position
	Position   backends.Position // max(received, replayed): what it would have after promotion
	Streaming  bool
	Busy       string // a background action in progress
	// Blocked: reasons only the member itself can see why it could not
	// promote now (promotionBlocks); a peer reports them in its status.
	Blocked []string
}

func selfFacts(o *Observation) facts {
	f := facts{
		Name:       o.Self.Name,
		Running:    o.DB.State == backends.StateRunning,
		Writable:   o.DB.Writable,
		NoFailover: o.Self.NoFailover,
		Priority:   o.Self.Priority,
		Timeline:   o.DB.Timeline,
		Replayed:   o.DB.Replayed,
		Position:   o.DB.Position,
		Streaming:  o.DB.Streaming,
		Blocked:    promotionBlocks(o),
	}
	if o.Job != nil {
		f.Busy = string(o.Job.Kind)
	}
	return f
}

// promotionBlocks lists why this member could not promote now for reasons
// its peers cannot see from its position and state: its database says it
// cannot (a full WAL disk), it backs off after its own promotion failed, or
// it may not lead without a working watchdog. It is published with the
// member's status: a peer that is ahead but blocked must not hold back the
// others' race (otherwise it takes the key, fails, backs off and takes it
// again while nobody else may try).
func promotionBlocks(o *Observation) []string {
	var r []string
	if o.DB.CannotPromote != "" {
		r = append(r, o.DB.CannotPromote)
	}
	if !o.Mem.RaceBackoffUntil.IsZero() && o.Now.Before(o.Mem.RaceBackoffUntil) {
		r = append(r, fmt.Sprintf("backing off after a failed promotion until %s", o.Mem.RaceBackoffUntil.Format(time.TimeOnly)))
	}
	if o.Mem.WatchdogBroken != "" && o.Now.Before(o.Mem.WatchdogBrokenUntil) {
		r = append(r, "watchdog.mode is required and the watchdog does not work: "+o.Mem.WatchdogBroken)
	}
	return r
}

func peerFacts(p PeerStatus) facts {
	return facts{
		Name:       p.Name,
		Running:    p.State == StateRunning || p.State == StateStreaming,
		Writable:   p.Writable,
		NoFailover: p.NoFailover,
		Priority:   p.Priority,
		Timeline:   p.Timeline,
		Replayed:   p.Replayed,
		Position:   p.Position,
		Streaming:  p.State == StateStreaming,
		Blocked:    p.CannotPromote,
	}
}

const reasonNoFailover = "tagged nofailover"

// ineligibility lists every reason why member f could not take over right
// now (empty: eligible). leaderAlive says whether a healthy leader exists:
// then a replica that is not streaming from it is not ready; after the
// leader died nobody streams, and only positions count.
func ineligibility(o *Observation, f facts, leaderAlive bool) []string {
	var r []string
	cfg := o.Config
	if cfg.Paused {
		r = append(r, "cluster is paused (maintenance mode)")
	}
	if f.NoFailover {
		r = append(r, reasonNoFailover)
	} else if f.Priority <= 0 {
		r = append(r, "failover_priority is 0")
	}
	if f.Busy != "" {
		r = append(r, "busy: "+f.Busy+" in progress")
	}
	r = append(r, f.Blocked...)
	if !f.Running {
		r = append(r, "database not running")
		return r
	}
	if f.Writable {
		r = append(r, "database is writable (a primary)")
		return r
	}
	if leaderAlive && !f.Streaming {
		r = append(r, "not streaming from the leader")
	}
	if o.Cluster != nil {
		if st := o.Cluster.Status; st == nil {
			r = append(r, "leader position unknown (no status record in the DCS)")
		} else if lag := o.lag(st.Position, f.Replayed); lag < 0 {
			r = append(r, "replay position unknown")
		} else if lag > int64(cfg.MaximumLagOnFailover) {
			r = append(r, fmt.Sprintf("replay lag %s exceeds maximum_lag_on_failover %s", bytesText(lag), config.Size(cfg.MaximumLagOnFailover)))
		}
		if h := o.Cluster.LastHistory; h != nil && h.Timeline > 0 && f.Timeline > 0 && f.Timeline < h.Timeline {
			r = append(r, fmt.Sprintf("timeline %d is behind the cluster's timeline %d", f.Timeline, h.Timeline))
		}
		// MySQL has no timelines: the newest promotion's fork point says
		// which transactions its history can hold (a deposed primary's
		// tail is not among them).
		if h := o.Cluster.LastHistory; h != nil && !h.Forked.IsZero() && h.NewLeader != f.Name && o.SinceFork != nil {
			if why := o.SinceFork(f.Position, h.Forked); why != "" {
				r = append(r, why)
			}
		}
		// Rule 6: only a member the sync key counts may be promoted.
		r = append(r, syncIneligibility(o.Cluster, f.Name)...)
	}
	return r
}

func (o *Observation) lag(leader, pos backends.Position) int64 {
	if o.Lag == nil {
		return -1
	}
	return o.Lag(leader, pos)
}

func (o *Observation) compare(a, b backends.Position) int {
	if o.Compare == nil {
		switch {
		case a.LSN < b.LSN:
			return -1
		case a.LSN > b.LSN:
			return 1
		}
		return 0
	}
	return o.Compare(a, b)
}

// readiness is this member's failover readiness, published every loop
// (users of every tool ask to see *before* an incident that no replica could
// take over).
func readiness(o *Observation) (bool, []string) {
	if o.Cluster == nil {
		return false, []string{"DCS unreachable"}
	}
	l := o.Cluster.Leader
	if l != nil && l.Name == o.Self.Name {
		return false, nil // the leader is not a candidate
	}
	r := ineligibility(o, selfFacts(o), l != nil)
	if o.Mem.Diverged != nil {
		r = append(r, "history diverged from the leader: "+o.Mem.Diverged.Reason)
	}
	return len(r) == 0, r
}

// raceDecision: nobody holds the leader key. This member races only if it is
// eligible (rule 3), no reachable database is still writable (rule 2), and no
// reachable eligible member is ahead of it or equal with a higher priority.
func raceDecision(o *Observation) Decision {
	me := selfFacts(o)
	cands := []dcs.Candidate{}
	mine := ineligibility(o, me, false)
	cands = append(cands, dcs.Candidate{Name: me.Name, Position: me.Position, Timeline: me.Timeline, Eligible: len(mine) == 0, Reasons: mine})
	if len(mine) > 0 {
		return Decision{Action: ActWait, Reason: "no leader, and this member is not eligible: " + joinReasons(mine), Candidates: cands}
	}
	if o.Mem.FailsafeLeader != "" && o.Now.Before(o.Mem.FailsafeUntil) {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("no leader key, but %s confirmed it leads while the DCS was unreachable (failsafe) until %s: not racing",
			o.Mem.FailsafeLeader, o.Mem.FailsafeUntil.Format(time.TimeOnly)), Candidates: cands}
	}
	names := make([]string, 0, len(o.Peers))
	for n := range o.Peers {
		names = append(names, n)
	}
	sort.Strings(names)
	var veto string
	for _, n := range names {
		p := o.Peers[n]
		if p.Err != nil {
			cands = append(cands, dcs.Candidate{Name: n, Reasons: []string{"unreachable: " + p.Err.Error()}})
			continue
		}
		f := peerFacts(p.Status)
		f.Name = n
		why := ineligibility(o, f, false)
		if p.Status.Leader {
			why = append(why, "still holds the leader role by its own lease")
		}
		cands = append(cands, dcs.Candidate{Name: n, Position: f.Position, Timeline: f.Timeline, Eligible: len(why) == 0, Reasons: why})
		if veto != "" {
			continue
		}
		switch {
		case f.Writable:
			veto = fmt.Sprintf("member %s reports a writable database: not racing while the old primary may still take writes (rule 2)", n)
		case p.Status.Leader:
			veto = fmt.Sprintf("member %s still considers itself leader", n)
		case len(why) > 0:
			// An ineligible member does not block us.
		case o.compare(f.Position, me.Position) > 0:
			veto = fmt.Sprintf("member %s is ahead (%s > %s)", n, f.Position, me.Position)
		case o.compare(f.Position, me.Position) == 0 && f.Priority > me.Priority:
			veto = fmt.Sprintf("member %s has the same position and a higher failover_priority (%d > %d)", n, f.Priority, me.Priority)
		}
	}
	if veto != "" {
		return Decision{Action: ActWait, Reason: "no leader; " + veto, Candidates: cands}
	}
	why := ""
	if rulesOf(o.Cluster).Active {
		ok, q := quorumHolds(o, me)
		if !ok {
			cands[0].Eligible, cands[0].Reasons = false, []string{q}
			return Decision{Action: ActWait, Reason: "no leader; " + q, Candidates: cands}
		}
		why = "; " + q
	}
	return Decision{Action: ActAcquire, Reason: fmt.Sprintf("no leader; this member is eligible at %s and no reachable eligible member is ahead%s: racing for the key", me.Position, why), Candidates: cands}
}

// bestPeer returns a member that could take over from this leader now.
func bestPeer(o *Observation) (string, bool) {
	var best *facts
	for n, p := range o.Peers {
		if p.Err != nil {
			continue
		}
		f := peerFacts(p.Status)
		f.Name = n
		if len(ineligibility(o, f, false)) > 0 {
			continue
		}
		if best == nil || o.compare(f.Position, best.Position) > 0 {
			best = &f
		}
	}
	if best == nil {
		return "", false
	}
	return best.Name, true
}

// bytesText renders a byte count for humans ("12.0 kB (12288 bytes)").
func bytesText(b int64) string {
	switch {
	case b < 1024:
		return fmt.Sprintf("%d bytes", b)
	case b < 1<<20:
		return fmt.Sprintf("%.1f kB (%d bytes)", float64(b)/1024, b)
	case b < 1<<30:
		return fmt.Sprintf("%.1f MB (%d bytes)", float64(b)/(1<<20), b)
	}
	return fmt.Sprintf("%.1f GB (%d bytes)", float64(b)/(1<<30), b)
}
