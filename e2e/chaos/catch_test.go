package chaos

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The checkers against a real cluster whose agent is made to break the
// rules, to show they fail when a rule is broken (and not otherwise).
//
// The primary is cut off from the other members, etcd and HAProxy while
// the test's writers still reach it, with its HA loop stuck on a database
// call that never returns (fault point hang-observe), and fencing off so
// that no hook kills it:
//
//   - control: the lease deadline timer still stops its writes before a
//     replica can take the key, so the split-brain checker finds nothing;
//   - with the fault point skip-self-fence, the deadline timer does not
//     fence: the isolated primary keeps acknowledging writes after the new
//     primary's first, and the split-brain checker must say so; the writes
//     it took are then discarded by the rewind, which the loss checker
//     must flag under synchronous_mode rules and under a 0-byte lag bound;
//   - a replica's agent frozen for longer than ttl drops out of steward
//     list: the recovery check (3) and the explanation check (4) must fail.
func TestChaosCheckersCatchRealViolations(t *testing.T) {
	s := DefaultSettings()
	s.FencingMode = "off"
	log := testLogger(t)
	c, err := NewCluster(s, binaryPath, runDir(t, "catch"), log)
	if err != nil {
		t.Fatalf("building the chaos cluster: %v", err)
	}
	t.Cleanup(c.Close)
	r, err := NewRunner(c, Bounds{Recovery: 60 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	r.SaveDir = filepath.Join(outDir(), "catch")
	t.Cleanup(func() {
		if t.Failed() {
			r.saveLogs("end")
		}
	})
	defer r.Stop()
	faults := func(names ...string) {
		r.OnInject = func(m *Member) {
			for _, f := range names {
				if err := m.Fault(f, true); err != nil {
					t.Fatal(err)
				}
			}
		}
		r.OnHeal = func(m *Member) {
			for _, f := range names {
				_ = m.Fault(f, false)
			}
		}
	}
	step := Step{Kind: PartitionPrimary, Target: "primary", Hold: 3 * s.TTL}

	faults("hang-observe")
	res := r.Run(step)
	t.Logf("control (loop stuck, deadline timer on): %s -> %s, violations %v", res.LeaderBefore, res.LeaderAfter, res.Violations)
	if len(res.Violations) != 0 {
		t.Fatalf("the control step (rules kept) reported violations: %v", res.Violations)
	}
	if res.LeaderAfter == res.LeaderBefore {
		t.Fatalf("the control step did not fail over (leader stayed %s): the scenario is not the one meant", res.LeaderAfter)
	}

	step.N = 1
	faults("hang-observe", "skip-self-fence")
	res = r.Run(step)
	t.Logf("broken rule (no self-fencing): %s -> %s, violations %v", res.LeaderBefore, res.LeaderAfter, res.Violations)
	var split bool
	for _, v := range res.Violations {
		split = split || (v.Invariant == 1 && strings.Contains(v.What, "split brain: "+res.LeaderBefore))
	}
	if !split {
		t.Fatalf("the split-brain checker did not catch the primary that skipped its self-fencing: %v", res.Violations)
	}
	if !strings.Contains(tailFile(c.Member(res.LeaderBefore).LogPath, 2000), "FAULT INJECTED: not fencing at the lease deadline") {
		t.Fatal("the agent log does not show the injected fault")
	}
	// The writes the isolated primary took were rewound away.
	leader := c.Member(res.LeaderAfter)
	ops := r.W.Ops()
	ids := make([]int64, len(ops))
	for i, o := range ops {
		ids[i] = o.ID
	}
	present, err := leader.PresentIDs(ids)
	if err != nil {
		t.Fatal(err)
	}
	lin, err := leader.Lineage()
	if err != nil {
		t.Fatal(err)
	}
	loss, vs := CheckLoss(ops, present, lin, "off", s.MaxLag)
	t.Logf("writes acknowledged by the isolated primary and rewound away: %d (%d bytes past the switch point); async violations: %v", loss.Lost, loss.MaxBytes, vs)
	if loss.Lost == 0 {
		t.Fatal("no acknowledged write was lost although two primaries took writes")
	}
	if _, vs := CheckLoss(ops, present, lin, "on", s.MaxLag); len(vs) == 0 {
		t.Fatal("the loss checker, under synchronous_mode rules, passed a history with lost acknowledged writes")
	}
	if _, vs := CheckLoss(ops, present, lin, "off", 0); len(vs) == 0 {
		t.Fatal("the loss checker, with a 0-byte maximum_lag_on_failover, passed a history with lost writes")
	}

	// Invariants 3 and 4: a replica whose agent is frozen past ttl.
	var replica *Member
	for _, m := range c.Members {
		if m != leader {
			replica = m
			break
		}
	}
	replica.SignalAgent(syscall.SIGSTOP)
	defer replica.SignalAgent(syscall.SIGCONT)
	// Its member key expires with its lease after ttl.
	if err := waitFor(3*s.TTL, func() bool {
		cl := c.Load()
		if cl == nil {
			return false
		}
		_, ok := cl.Members[replica.Name]
		return !ok
	}); err != nil {
		t.Fatalf("the frozen replica's member key did not expire: %v", err)
	}
	if _, err := c.WaitHealthy(5 * time.Second); err == nil {
		t.Fatal("the recovery check passed with a replica's agent frozen")
	} else {
		t.Logf("recovery check with %s frozen: %v", replica.Name, err)
	}
	if vs := c.CheckExplained(); len(vs) == 0 || !strings.Contains(vs[0].What, replica.Name) {
		t.Fatalf("the explanation check passed with %s gone from steward list: %v", replica.Name, vs)
	}
	replica.SignalAgent(syscall.SIGCONT)
	if _, err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatalf("after thawing %s: %v", replica.Name, err)
	}
}
