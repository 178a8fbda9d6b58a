package chaos

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

func backendsGTID(g string) backends.Position { return backends.Position{GTID: g} }

const ms = time.Millisecond

// op builds an acknowledged write for the checker tests.
func op(id int64, member string, tl int64, lsn uint64, start, end time.Duration) Op {
	return Op{ID: id, Writer: "direct-" + member, Member: member, Timeline: tl, LSN: lsn, Start: start, End: end}
}

// A clean failover: the old primary's last write was acknowledged before
// the new one's first. Nothing to report.
func TestSplitBrainCheckerPassesACleanFailover(t *testing.T) {
	ops := []Op{
		op(1, "m1", 1, 100, 0, 10*ms),
		op(2, "m1", 1, 200, 20*ms, 30*ms),
		op(3, "m2", 2, 300, 5000*ms, 5010*ms),
		op(4, "m2", 2, 400, 5020*ms, 5030*ms),
	}
	if v := CheckSplitBrain(ops, 0); len(v) != 0 {
		t.Fatalf("violations in a clean history: %v", v)
	}
}

// The old primary acknowledged a write it received after the new primary
// had acknowledged one: split brain, with the members, timelines and the
// overlap in the message.
func TestSplitBrainCheckerCatchesTwoWriters(t *testing.T) {
	ops := []Op{
		op(1, "m1", 1, 100, 0, 10*ms),
		op(3, "m2", 2, 300, 5000*ms, 5010*ms),
		op(2, "m1", 1, 200, 5200*ms, 5210*ms), // after m2's first ack
		op(5, "m1", 1, 250, 5300*ms, 5310*ms),
	}
	v := CheckSplitBrain(ops, 0)
	if len(v) != 1 || v[0].Invariant != 1 {
		t.Fatalf("want one split-brain violation, got %v", v)
	}
	for _, want := range []string{"m1 (timeline 1) acknowledged 2 write(s)", "m2 (timeline 2)", "id 5", "290ms after"} {
		if !strings.Contains(v[0].What, want) {
			t.Errorf("the violation does not say %q: %s", want, v[0].What)
		}
	}
	// Within the bound of a fencing mode that documents a hole, it passes.
	if v := CheckSplitBrain(ops, 500*ms); len(v) != 0 {
		t.Fatalf("violation within a 500ms bound: %v", v)
	}
}

// A write in flight across the failover (sent before the new primary's
// first ack, acknowledged after it) proves nothing: its commit may have
// happened first.
func TestSplitBrainCheckerIgnoresOverlappingWrites(t *testing.T) {
	ops := []Op{
		op(1, "m1", 1, 100, 4990*ms, 5100*ms),
		op(3, "m2", 2, 300, 5000*ms, 5010*ms),
	}
	if v := CheckSplitBrain(ops, 0); len(v) != 0 {
		t.Fatalf("violation for a write in flight: %v", v)
	}
}

// Two members acknowledging on one timeline number means two promotions
// from the same history: a fork, whatever the times.
func TestSplitBrainCheckerCatchesForkedTimelines(t *testing.T) {
	ops := []Op{
		op(1, "m1", 2, 100, 0, 10*ms),
		op(2, "m3", 2, 100, 9000*ms, 9010*ms),
	}
	v := CheckSplitBrain(ops, 0)
	if len(v) != 1 || !strings.Contains(v[0].What, "m1, m3 all acknowledged writes on timeline 2") {
		t.Fatalf("want the fork reported, got %v", v)
	}
}

func TestParseHistory(t *testing.T) {
	l := ParseHistory(3, "1\t0/3000148\tno recovery target specified\n\n2\t0/50000A0\tno recovery target specified\n")
	want := Lineage{Timeline: 3, Ends: map[int64]uint64{1: 0x3000148, 2: 0x50000A0}}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("ParseHistory = %+v, want %+v", l, want)
	}
	if got := formatLSN(parseLSN("16/B374D848")); got != "16/B374D848" {
		t.Fatalf("LSN round trip: %s", got)
	}
}

// The loss checker: the final primary is on timeline 3, which forked from
// 2 at 0/5000000 and 2 from 1 at 0/3000000.
func TestLossChecker(t *testing.T) {
	lin := Lineage{Timeline: 3, Ends: map[int64]uint64{1: 0x3000000, 2: 0x5000000}}
	ops := []Op{
		op(1, "m1", 1, 0x2000000, 0, 10*ms),
		op(2, "m2", 2, 0x4000000, 20*ms, 30*ms),
		op(3, "m3", 3, 0x6000000, 40*ms, 50*ms),
		op(4, "m2", 2, 0x5000100, 60*ms, 70*ms), // on the discarded tail of timeline 2, 256 bytes past its end
	}
	all := map[int64]bool{1: true, 2: true, 3: true, 4: true}
	tailLost := map[int64]bool{1: true, 2: true, 3: true}

	t.Run("nothing lost", func(t *testing.T) {
		for _, mode := range []string{"off", "on"} {
			if l, v := CheckLoss(ops, all, lin, mode, 1<<20); l.Lost != 0 || len(v) != 0 {
				t.Fatalf("%s: %+v %v", mode, l, v)
			}
		}
	})
	t.Run("async loss within maximum_lag_on_failover", func(t *testing.T) {
		l, v := CheckLoss(ops, tailLost, lin, "off", 1<<20)
		if l.Lost != 1 || l.MaxBytes != 256 || len(v) != 0 {
			t.Fatalf("got %+v %v, want 1 lost write of 256 bytes and no violation", l, v)
		}
	})
	t.Run("async loss beyond maximum_lag_on_failover", func(t *testing.T) {
		_, v := CheckLoss(ops, tailLost, lin, "off", 100)
		if len(v) != 1 || v[0].Invariant != 2 || !strings.Contains(v[0].What, "more than maximum_lag_on_failover (100)") {
			t.Fatalf("got %v", v)
		}
	})
	t.Run("synchronous mode loses nothing", func(t *testing.T) {
		_, v := CheckLoss(ops, tailLost, lin, "on", 1<<20)
		if len(v) != 1 || !strings.Contains(v[0].What, "synchronous_mode on") || !strings.Contains(v[0].What, "id 4") {
			t.Fatalf("got %v", v)
		}
	})
	t.Run("missing below the switch point", func(t *testing.T) {
		_, v := CheckLoss(ops, map[int64]bool{2: true, 3: true, 4: true}, lin, "off", 1<<20)
		if len(v) != 1 || !strings.Contains(v[0].What, "before its switch point 0/3000000") {
			t.Fatalf("got %v", v)
		}
	})
	t.Run("missing on the current timeline", func(t *testing.T) {
		_, v := CheckLoss(ops, map[int64]bool{1: true, 2: true, 4: true}, lin, "off", 1<<20)
		if len(v) != 1 || !strings.Contains(v[0].What, "current timeline 3") {
			t.Fatalf("got %v", v)
		}
	})
	t.Run("a discarded timeline", func(t *testing.T) {
		o := append(ops, op(9, "m1", 7, 0x100, 80*ms, 90*ms))
		_, v := CheckLoss(o, all, lin, "off", 1<<20)
		if len(v) != 1 || !strings.Contains(v[0].What, "timeline 7, which is not in the final primary's history") {
			t.Fatalf("got %v", v)
		}
	})
}

// A seed gives one schedule; every kind comes once per round.
func TestScheduleIsReproducible(t *testing.T) {
	a := Schedule(42, 2*len(AllKinds), AllKinds, 5*time.Second)
	b := Schedule(42, 2*len(AllKinds), AllKinds, 5*time.Second)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two schedules")
	}
	if reflect.DeepEqual(a, Schedule(43, 2*len(AllKinds), AllKinds, 5*time.Second)) {
		t.Fatal("two seeds gave the same schedule")
	}
	count := map[string]int{}
	for _, s := range a {
		count[s.Kind]++
		if s.Hold < 5*time.Second || s.Hold > 15*time.Second {
			t.Errorf("%s: hold %v outside [ttl, 3 ttl]", s, s.Hold)
		}
	}
	for _, k := range AllKinds {
		if count[k] != 2 {
			t.Errorf("%s came %d times in two rounds, want 2", k, count[k])
		}
	}
	if _, err := ParseKinds("kill-agent,nope"); err == nil {
		t.Error("ParseKinds accepted an unknown kind")
	}
}

// The audit check: every primary that took writes is in the history, and
// with fencing required every failover was fenced first.
func TestAuditChecker(t *testing.T) {
	ops := []Op{op(1, "m1", 1, 100, 0, 10*ms), op(2, "m2", 2, 200, 20*ms, 30*ms)}
	good := []dcs.HistoryRecord{
		{Index: 1, Kind: "bootstrap", NewLeader: "m1", Term: 10},
		{Index: 2, Kind: "fencing", OldLeader: "m1", NewLeader: "m2", Term: 20, Reason: "fencing m1 before promotion (fencing.mode required): confirmed by a hook; ..."},
		{Index: 3, Kind: "failover", OldLeader: "m1", NewLeader: "m2", Term: 20, Timeline: 2},
	}
	if v := CheckAudit(ops, good, "required"); len(v) != 0 {
		t.Fatalf("violations for a complete history: %v", v)
	}
	if v := CheckAudit(ops, good[:1], "off"); len(v) != 1 || !strings.Contains(v[0].What, "m2 acknowledged writes on timeline 2") {
		t.Fatalf("a primary missing from the history: %v", v)
	}
	unfenced := []dcs.HistoryRecord{good[0], {Index: 2, Kind: "fencing", NewLeader: "m2", Term: 20, Reason: "fencing m1: not confirmed by any hook"}, good[2]}
	if v := CheckAudit(ops, unfenced, "required"); len(v) != 1 || !strings.Contains(v[0].What, "without a confirmed fencing of m1") {
		t.Fatalf("a failover without confirmed fencing: %v", v)
	}
	if v := CheckAudit(ops, unfenced, "best-effort"); len(v) != 0 {
		t.Fatalf("best-effort does not require confirmation: %v", v)
	}
}

// MariaDB: the history's promotion positions order the primaries into eras
// (MyEras), after which the same checkers find a split brain, a discarded
// tail within the bound, a lost write before the switch point, and writes
// by a member the history never named leader.
func TestMariaDBErasFeedTheCheckers(t *testing.T) {
	hist := []dcs.HistoryRecord{
		{Index: 1, Kind: "bootstrap", NewLeader: "m1", Term: 1},
		{Index: 2, Kind: "fencing", NewLeader: "m2", Member: "m1", Term: 2, Reason: "confirmed by a hook"},
		{Index: 3, Kind: "failover", OldLeader: "m1", NewLeader: "m2", Term: 2, Promoted: backendsGTID("0-1-120")},
		// promoted_at read after m1's first writes of era 3; forked_at is
		// where era 2 ended.
		{Index: 4, Kind: "switchover", OldLeader: "m2", NewLeader: "m1", Term: 3, Promoted: backendsGTID("0-1-203,0-2-200"), Forked: backendsGTID("0-1-120,0-2-200")},
	}
	my := func(id int64, member string, seq uint64, start, end time.Duration) Op {
		return Op{ID: id, Writer: "direct-" + member, Member: member, LSN: seq, Start: start, End: end}
	}
	ops := []Op{
		my(1, "m1", 100, 0, 10*ms),
		my(2, "m1", 125, 100*ms, 110*ms),   // m1's tail after m2 promoted at 120
		my(3, "m2", 121, 5000*ms, 5010*ms), // era 2
		my(4, "m1", 201, 9000*ms, 9010*ms), // era 3 (m1 again, after 200)
		my(5, "m2", 150, 6000*ms, 6010*ms), // era 2
		my(6, "m1", 126, 5200*ms, 5210*ms), // m1 in era 1, sent after m2's first ack: split brain
	}
	got, lin, audit := MyEras(ops, hist)
	if len(audit) != 0 {
		t.Fatalf("audit: %v", audit)
	}
	wantTL := map[int64]int64{1: 1, 2: 1, 3: 2, 4: 3, 5: 2, 6: 1}
	for _, o := range got {
		if o.Timeline != wantTL[o.ID] {
			t.Errorf("write %d (%s, seq %d): era %d, want %d", o.ID, o.Member, o.LSN, o.Timeline, wantTL[o.ID])
		}
	}
	if lin.Timeline != 3 || lin.Ends[1] != 121 || lin.Ends[2] != 201 {
		t.Errorf("lineage %+v, want final era 3, era 1 ending at 121 and era 2 at 201", lin)
	}
	if v := CheckSplitBrain(got, 0); len(v) != 1 || !strings.Contains(v[0].What, "m1 (timeline 1)") {
		t.Errorf("split brain: %v, want m1's era-1 write after m2's first ack", v)
	}
	// Write 2 and 6 (seq 125, 126) are era 1's discarded tail: within 10
	// transactions of its end, beyond 3.
	present := map[int64]bool{1: true, 3: true, 4: true, 5: true}
	if l, v := CheckLoss(got, present, lin, "off", 10); len(v) != 0 || l.Lost != 2 || l.MaxBytes != 5 {
		t.Errorf("loss within the bound: %+v %v, want 2 lost, 5 transactions past the switch point, no violation", l, v)
	}
	if _, v := CheckLoss(got, present, lin, "off", 3); len(v) == 0 || v[0].Invariant != 2 {
		t.Errorf("loss beyond the bound: %v, want a violation of invariant 2", v)
	}
	// Write 1 (seq 100) is before era 1's end: it must survive.
	delete(present, 1)
	if _, v := CheckLoss(got, present, lin, "off", 10); len(v) != 1 || !strings.Contains(v[0].What, "before its switch point") {
		t.Errorf("a write before the switch point missing: %v", v)
	}
	// A member no history record names leader.
	_, _, audit = MyEras(append(ops, my(7, "m3", 300, 9500*ms, 9510*ms)), hist)
	if len(audit) != 1 || !strings.Contains(audit[0].What, "m3 acknowledged writes") {
		t.Errorf("writes by m3, never leader: %v", audit)
	}
}
