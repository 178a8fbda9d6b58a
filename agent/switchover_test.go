package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/dcs"
)

// While paused the leader does not carry out a switchover (rule 7): the
// candidate would not take the key, and nobody would lead. After resume a
// due request runs; one whose time passed meanwhile is discarded.
func TestSwitchoverWaitsWhilePaused(t *testing.T) {
	o := obs()
	o.Self.Name = "a"
	req := func(at time.Time) *dcs.Versioned[dcs.Switchover] {
		return &dcs.Versioned[dcs.Switchover]{Version: 7, Value: dcs.Switchover{Leader: "a", Candidate: "b", ScheduledAt: at}}
	}
	o.Cluster.Switchover = req(time.Time{})
	o.Config.Paused = true
	if d, ok := switchoverDecision(o); ok {
		t.Fatalf("paused: the leader acts on the switchover: %+v", d)
	}
	o.Config.Paused = false
	if d, ok := switchoverDecision(o); !ok || d.Action != ActSwitchover {
		t.Fatalf("resumed: %+v %v, want the switchover", d, ok)
	}
	o.Cluster.Switchover = req(o.Now.Add(-time.Minute))
	if d, ok := switchoverDecision(o); !ok || d.Action != ActSwitchover || !strings.Contains(d.Reason, "missed") {
		t.Fatalf("resumed after the scheduled time: %+v %v, want it discarded as missed", d, ok)
	}
}

// A scheduled switchover never starts before its time, not even by part of
// a loop, and starts at the first loop at or after it.
func TestScheduledSwitchoverNeverEarly(t *testing.T) {
	o := obs()
	o.Self.Name = "a"
	at := o.Now.Add(o.Config.LoopWait.D() / 2)
	o.Cluster.Switchover = &dcs.Versioned[dcs.Switchover]{Version: 7, Value: dcs.Switchover{Leader: "a", Candidate: "b", ScheduledAt: at}}
	if d, ok := switchoverDecision(o); ok {
		t.Fatalf("half a loop before its time: %+v, want nothing yet", d)
	}
	o.Now = at
	if d, ok := switchoverDecision(o); !ok || d.Action != ActSwitchover || strings.Contains(d.Reason, "missed") {
		t.Fatalf("at its time: %+v %v, want the switchover", d, ok)
	}
}

// Right after a WAL segment switch the leader's position is 16 MB past a
// caught-up replica's replay of a loop ago. A switchover's pre-check uses
// the candidate's own lag measurement; a failover's does not (there the
// lag bounds what is lost).
func TestSwitchoverPrecheckUsesTheCandidatesOwnLag(t *testing.T) {
	o := obs()
	o.Cluster.Status.Position = pos(1000 + 16<<20)
	zero := int64(0)
	in := PlanInput{Cluster: o.Cluster, Config: o.Config, Lag: o.Lag, Compare: o.Compare, Now: o.Now,
		Peers: map[string]PeerResult{"b": peer("b", PeerStatus{Role: "replica", State: "streaming", Timeline: 2,
			Position: pos(1000), Received: pos(1000), Replayed: pos(1000), Priority: 1, LagBytes: &zero})}}
	in.Cluster.Leader.Name = "a"
	if _, err := PlanSwitchover(in, "a", "b", false); err != nil {
		t.Fatalf("switchover to a candidate that measured lag 0: %v", err)
	}
	p := in.Peers["b"]
	p.Status.LagBytes = nil
	in.Peers["b"] = p
	if _, err := PlanSwitchover(in, "a", "b", false); err == nil || !strings.Contains(err.Error(), "exceeds maximum_lag_on_failover") {
		t.Fatalf("without its own measurement: %v, want the lag refusal", err)
	}
	in.Peers["b"] = peer("b", PeerStatus{Role: "replica", State: "streaming", Timeline: 2,
		Position: pos(1000), Received: pos(1000), Replayed: pos(1000), Priority: 1, LagBytes: &zero})
	in.Cluster.Leader = nil
	if _, err := PlanFailover(in, "b", false); err == nil || !strings.Contains(err.Error(), "exceeds maximum_lag_on_failover") {
		t.Fatalf("manual failover: %v, want the lag refusal whatever the candidate reports", err)
	}
}
