package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/dcs"
)

// bootstrap starts a 3-member cluster, waits for it to be healthy and
// creates the test table.
func bootstrap(t *testing.T, p Profile, setup func(c *Cluster)) (*Cluster, *Member) {
	t.Helper()
	c := NewCluster(t, 3, p)
	if setup != nil {
		setup(c)
	}
	// m1 starts first so that it bootstraps; the others clone from it.
	c.Members[0].Start()
	Eventually(t, 60*time.Second, "m1 bootstraps and leads", func() bool {
		l := c.Leader()
		return l != nil && l.Name == "m1" && l.Status() != nil && l.Status().Writable
	})
	for _, m := range c.Members[1:] {
		m.Start()
	}
	leader := c.WaitHealthy(90 * time.Second)
	if err := leader.Exec("CREATE TABLE IF NOT EXISTS steward_test(id bigint PRIMARY KEY, member text)"); err != nil {
		t.Fatal(err)
	}
	return c, leader
}

func listJSON(t *testing.T, m *Member) map[string]any {
	t.Helper()
	out, code := m.Steward("list", "-o", "json")
	if code != 0 {
		t.Fatalf("steward list -o json exited %d: %s", code, out)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("steward list -o json is not JSON: %v\n%s", err, out)
	}
	return v
}

func listMembers(t *testing.T, m *Member) map[string]map[string]any {
	v := listJSON(t, m)
	out := map[string]map[string]any{}
	list, _ := v["members"].([]any)
	for _, x := range list {
		mm := x.(map[string]any)
		out[mm["name"].(string)] = mm
	}
	return out
}

// Bootstrap: exactly one primary, two streaming replicas; `steward list`
// shows roles, lag and timeline.
func TestBootstrapThreeMembers(t *testing.T) {
	t.Parallel()
	c, leader := bootstrap(t, Fast, nil)
	writable := 0
	for _, m := range c.Members {
		st := m.Status()
		if st == nil {
			t.Fatalf("%s: API not answering", m.Name)
		}
		if st.Writable {
			writable++
		}
	}
	// The leader sees both replicas streaming on their slots. A walsender
	// reports "catchup" until the standby has caught up once, which can
	// trail the standby's own "streaming" that bootstrap waited for.
	EventuallySettles(t, 10*time.Second, "pg_stat_replication on the leader: both replicas streaming, each on its active slot", func() []string {
		var problems []string
		for _, m := range c.Members {
			if m == leader {
				continue
			}
			if n, err := leader.QueryInt("SELECT count(*) FROM pg_stat_replication WHERE application_name=$1 AND state='streaming'", m.Name); err != nil || n != 1 {
				problems = append(problems, fmt.Sprintf("%s is not streaming from the leader (pg_stat_replication: %d, %v)", m.Name, n, err))
			}
			if n, err := leader.QueryInt("SELECT count(*) FROM pg_replication_slots WHERE slot_name=$1 AND active", m.Name); err != nil || n != 1 {
				problems = append(problems, fmt.Sprintf("%s does not use its replication slot on the leader (%d, %v)", m.Name, n, err))
			}
		}
		return problems
	})
	if writable != 1 {
		t.Fatalf("%d writable members, want exactly 1", writable)
	}
	if leader.HTTPCode("/primary") != 200 {
		t.Errorf("leader /primary = %d, want 200", leader.HTTPCode("/primary"))
	}
	// `steward list` of an idle cluster: every replica streaming, eligible,
	// at lag 0. Each member publishes its lag once per loop against the
	// leader's last published position, and the leader commits a heartbeat
	// every loop, so a reading can catch one replica a heartbeat behind:
	// retry for a few loops, as an operator would look twice, and report
	// the last listing if it never settles.
	EventuallySettles(t, 10*time.Second, "steward list shows the leader and two streaming replicas at lag 0 on timeline 1", func() []string {
		var problems []string
		ms := listMembers(t, leader)
		for _, m := range c.Members {
			lm := ms[m.Name]
			switch {
			case lm == nil:
				problems = append(problems, "steward list lacks "+m.Name)
			case lm["timeline"] != float64(1):
				problems = append(problems, fmt.Sprintf("%s timeline %v, want 1", m.Name, lm["timeline"]))
			case m == leader && lm["role"] != "leader":
				problems = append(problems, fmt.Sprintf("%s role %v, want leader", m.Name, lm["role"]))
			case m != leader && (lm["role"] != "replica" || lm["state"] != "streaming" || lm["eligible"] != true || lm["lag_bytes"] != float64(0)):
				problems = append(problems, fmt.Sprintf("%s in list: %v", m.Name, lm))
			}
		}
		return problems
	})
	out, code := leader.Steward("list")
	if code != 0 || !strings.Contains(out, "MEMBER") || !strings.Contains(out, "streaming") || !strings.Contains(out, "Leader: "+leader.Name) {
		t.Fatalf("steward list (table) exit %d:\n%s", code, out)
	}
	t.Logf("steward list:\n%s", out)
}

// kill -9 of the primary's agent and postgres: a new primary accepts writes
// within ttl + 3 s; the old primary, restarted, streams from the new leader
// within 2 s of its restart (its slot already exists there).
func TestFailoverAndRejoin(t *testing.T) {
	t.Parallel()
	c, old := bootstrap(t, Fast, func(c *Cluster) { c.Extra = callbackConfig(t, c) })
	w := StartWriter(t, c.Members, 20*time.Millisecond)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Snapshot()) > 10 })

	killedAt := time.Now()
	old.Crash()
	var newLeader *Member
	failover := Eventually(t, c.Profile.TTL+3*time.Second, "a new primary acknowledges a write", func() bool {
		for _, a := range w.Snapshot() {
			if a.At.After(killedAt) && a.Member != old.Name {
				newLeader = c.Member(a.Member)
				return true
			}
		}
		return false
	})
	t.Logf("MEASURED failover (ttl %v, loop_wait %v): kill -9 of primary agent+postgres -> first write acknowledged by the new primary %s: %v",
		c.Profile.TTL, c.Profile.LoopWait, newLeader.Name, failover.Round(time.Millisecond))
	if l := c.Leader(); l == nil || l.Name != newLeader.Name {
		t.Fatalf("leader key = %v, want %s", l, newLeader.Name)
	}
	// The slot for the old primary exists on the new leader right after the
	// promotion, long before a crashed host could come back.
	Eventually(t, time.Second, "a replication slot for the old primary on the new leader", func() bool {
		n, err := newLeader.QueryInt("SELECT count(*) FROM pg_replication_slots WHERE slot_name=$1", old.Name)
		return err == nil && n == 1
	})

	restart := time.Now()
	old.Start()
	rejoin := Eventually(t, 30*time.Second, "the old primary streams from the new leader", func() bool {
		n, err := newLeader.QueryInt("SELECT count(*) FROM pg_stat_replication WHERE application_name=$1 AND state='streaming'", old.Name)
		return err == nil && n == 1
	})
	// callbacks.on_role_change ran on the new primary with its new role,
	// and on the restarted old primary (on_start: the first role its new
	// agent learned).
	Eventually(t, 10*time.Second, "the new primary's on_role_change callback", func() bool {
		return callbackRan(newLeader, "on_role_change", "primary")
	})
	Eventually(t, 10*time.Second, "the restarted old primary's on_start callback", func() bool {
		return callbackRan(old, "on_start", "replica")
	})
	t.Logf("MEASURED rejoin (plain path): old primary restarted -> streaming from the new leader: %v", rejoin.Round(time.Millisecond))
	if rejoin > 2*time.Second {
		t.Errorf("old primary streamed %v after its restart, want <= 2s", rejoin)
	}
	_ = restart
	c.WaitHealthy(30 * time.Second)
	w.Stop()
	// Every acknowledged write made before the kill on the old primary was
	// replicated (the plain path: nothing diverged), and every write on the
	// new primary is there.
	n, err := newLeader.QueryInt("SELECT count(*) FROM steward_test")
	if err != nil {
		t.Fatal(err)
	}
	acked := w.Snapshot()
	if int(n) < len(acked)-5 {
		t.Errorf("new primary has %d rows for %d acknowledged writes", n, len(acked))
	}
	hist := history(t, c)
	last := hist[len(hist)-1]
	if last.Kind != "failover" || last.NewLeader != newLeader.Name || last.OldLeader != old.Name || len(last.Candidates) == 0 {
		t.Fatalf("last history record = %+v, want a failover %s -> %s with candidates", last, old.Name, newLeader.Name)
	}
	for _, m := range c.Members {
		if m.Name != newLeader.Name && m.Status().Writable {
			t.Fatalf("%s is writable after the failover", m.Name)
		}
	}
	// The old primary, now a replica, dropped the slots it had created for
	// its peers: nobody streams from it, so they would never advance and
	// would keep all its WAL from now on (found by the chaos suite).
	// (backends/postgres TestDropMemberSlotsOnStandby: other slots stay.)
	Eventually(t, 10*time.Second, "the rejoined old primary keeps no member slots", func() bool {
		n, err := old.QueryInt("SELECT count(*) FROM pg_replication_slots")
		return err == nil && n == 0
	})
}

// callbackConfig sets callbacks.on_role_change to a script that prints
// what it was called with; the agent logs its output.
func callbackConfig(t *testing.T, c *Cluster) func(m *Member) string {
	p := filepath.Join(c.dir, "role-change.sh")
	script := "#!/bin/sh\necho \"callback $STEWARD_MEMBER $STEWARD_CALLBACK_ACTION $STEWARD_ROLE: $*\"\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return func(m *Member) string {
		return fmt.Sprintf("callbacks: {on_role_change: [/bin/sh, %s, --test]}\n", p)
	}
}

// callbackRan: m's agent log has a successful run of the role change
// callback for action and role, with the arguments and environment the
// docs promise.
func callbackRan(m *Member, action, role string) bool {
	b, err := os.ReadFile(m.LogPath)
	if err != nil {
		return false
	}
	out := fmt.Sprintf("callback %s %s %s: --test %s %s %s", m.Name, action, role, action, role, m.c.Name)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `msg="role change callback ran"`) && strings.Contains(l, "action="+action+" role="+role) &&
			strings.Contains(l, "result=success") && strings.Contains(l, out) {
			return true
		}
	}
	return false
}

func history(t *testing.T, c *Cluster) []dcs.HistoryRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := c.Store().History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) == 0 {
		t.Fatal("history is empty")
	}
	return h
}

// The old primary committed WAL that never reached the replicas: after the
// failover it must be rewound (pg_rewind) before it follows; its extra
// commits are gone and the history says so.
func TestFailoverRewind(t *testing.T) {
	t.Parallel()
	c, old := bootstrap(t, Fast, nil)
	if err := old.Exec("INSERT INTO steward_test SELECT g, 'before' FROM generate_series(1, 100) g"); err != nil {
		t.Fatal(err)
	}
	var replicas []*Member
	for _, m := range c.Members {
		if m != old {
			replicas = append(replicas, m)
		}
	}
	Eventually(t, 10*time.Second, "rows replicated", func() bool {
		for _, r := range replicas {
			if n, _ := r.QueryInt("SELECT count(*) FROM steward_test"); n != 100 {
				return false
			}
		}
		return true
	})
	// Maintenance mode so that the agents leave replication alone while we
	// cut it (rule 7), then commit rows only the old primary has.
	c.SetDynamic("paused", "true")
	Eventually(t, 10*time.Second, "agents paused", func() bool {
		for _, m := range c.Members {
			if st := m.Status(); st == nil || !st.Paused {
				return false
			}
		}
		return true
	})
	for _, r := range replicas {
		if err := r.Exec("ALTER SYSTEM SET primary_conninfo = ''"); err != nil {
			t.Fatal(err)
		}
		if err := r.Exec("SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 10*time.Second, "replicas disconnected", func() bool {
		n, err := old.QueryInt("SELECT count(*) FROM pg_stat_replication")
		return err == nil && n == 0
	})
	if err := old.Exec("INSERT INTO steward_test SELECT g, 'lost' FROM generate_series(1001, 1500) g"); err != nil {
		t.Fatal(err)
	}
	old.Crash()
	for _, r := range replicas {
		if err := r.Exec("ALTER SYSTEM RESET primary_conninfo"); err != nil {
			t.Fatal(err)
		}
		if err := r.Exec("SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	c.SetDynamic("paused", "false")
	var newLeader *Member
	Eventually(t, c.Profile.TTL+10*time.Second, "a new leader", func() bool {
		newLeader = c.Leader()
		return newLeader != nil && newLeader != old && newLeader.Status() != nil && newLeader.Status().Writable
	})
	if err := newLeader.Exec("INSERT INTO steward_test SELECT g, 'after' FROM generate_series(2001, 2010) g"); err != nil {
		t.Fatal(err)
	}
	restart := time.Now()
	old.Start()
	Eventually(t, 60*time.Second, "the rewound old primary streams from the new leader", func() bool {
		n, err := newLeader.QueryInt("SELECT count(*) FROM pg_stat_replication WHERE application_name=$1 AND state='streaming'", old.Name)
		return err == nil && n == 1
	})
	t.Logf("MEASURED rejoin with pg_rewind: old primary restarted -> streaming from the new leader: %v", time.Since(restart).Round(time.Millisecond))
	Eventually(t, 10*time.Second, "the old primary has the new leader's rows", func() bool {
		n, _ := old.QueryInt("SELECT count(*) FROM steward_test WHERE member='after'")
		return n == 10
	})
	if n, err := old.QueryInt("SELECT count(*) FROM steward_test WHERE member='lost'"); err != nil || n != 0 {
		t.Fatalf("the old primary still has %d of its diverged rows (%v)", n, err)
	}
	var rewind *dcs.HistoryRecord
	for _, h := range history(t, c) {
		if h.Kind == "rewind" && h.Member == old.Name {
			h := h
			rewind = &h
		}
	}
	if rewind == nil || rewind.Discarded <= 0 || !strings.Contains(rewind.Reason, "discarding") {
		t.Fatalf("history has no rewind record for %s saying what was discarded: %+v", old.Name, rewind)
	}
	t.Logf("history: %s", rewind.Reason)
}

// A lagging replica (replay paused) and a nofailover member are never
// promoted; `steward list` shows why before the failure, and after it.
func TestNoEligibleReplicaNoPromotion(t *testing.T) {
	t.Parallel()
	c, old := bootstrap(t, Fast, func(c *Cluster) { c.Members[2].Tags = "{nofailover: true}" })
	lag, nof := c.Members[1], c.Members[2]
	if err := lag.Exec("SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	if err := old.Exec("INSERT INTO steward_test SELECT g, repeat('x', 1000) FROM generate_series(1, 4000) g"); err != nil {
		t.Fatal(err)
	}
	// Before any failure, list says nobody could take over and why.
	Eventually(t, 15*time.Second, "list shows the lagging replica as not eligible", func() bool {
		ms := listMembers(t, old)
		r := fmt.Sprint(ms[lag.Name]["ineligible_reasons"])
		return ms[lag.Name]["eligible"] == false && strings.Contains(r, "replay lag") && ms[lag.Name]["lag_bytes"].(float64) > 1<<20
	})
	ms := listMembers(t, old)
	if ms[nof.Name]["eligible"] != false || !strings.Contains(fmt.Sprint(ms[nof.Name]["ineligible_reasons"]), "nofailover") {
		t.Fatalf("nofailover member in list: %v", ms[nof.Name])
	}
	out, _ := old.Steward("list")
	t.Logf("steward list before the failure:\n%s", out)

	old.Crash()
	deadline := time.Now().Add(c.Profile.TTL + 6*time.Second)
	for time.Now().Before(deadline) {
		for _, m := range []*Member{lag, nof} {
			if st := m.Status(); st != nil && st.Writable {
				t.Fatalf("%s was promoted although it is not eligible", m.Name)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l := c.Leader(); l != nil {
		t.Fatalf("leader key held by %s", l.Name)
	}
	ms = listMembers(t, lag)
	if !strings.Contains(fmt.Sprint(ms[lag.Name]["ineligible_reasons"]), "replay lag") ||
		!strings.Contains(fmt.Sprint(ms[nof.Name]["ineligible_reasons"]), "nofailover") {
		t.Fatalf("list after the failure does not say why nobody took over: %v", ms)
	}
	if len(grepLines(lag.Log(), "not eligible")) == 0 {
		t.Fatalf("the lagging member's log does not say why it did not take over")
	}
}

// The primary loses etcd while its postgres is healthy: it stops accepting
// writes before its leader key expires at etcd, and a replica takes over.
func TestPrimaryLosesEtcd(t *testing.T) {
	t.Parallel()
	c, old := bootstrap(t, Fast, nil)
	keyGone := make(chan time.Time, 1)
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := c.Store().WatchLeader(wctx)
	w := StartWriter(t, []*Member{old}, 10*time.Millisecond)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Snapshot()) > 10 })
	cutAt := time.Now()
	old.Proxy.Cut()
	go func() {
		for ev := range events {
			if ev.Leader == nil && !ev.Resync {
				keyGone <- time.Now()
				return
			}
		}
	}()
	var gone time.Time
	select {
	case gone = <-keyGone:
	case <-time.After(c.Profile.TTL + 5*time.Second):
		t.Fatal("the old primary's leader key did not expire")
	}
	time.Sleep(500 * time.Millisecond)
	w.Stop()
	acks := w.Snapshot()
	lastAck := acks[len(acks)-1].At
	margin := gone.Sub(lastAck)
	t.Logf("MEASURED primary cut off from etcd (ttl %v): last write acknowledged %v after the cut, leader key expired %v after the cut: margin %v",
		c.Profile.TTL, lastAck.Sub(cutAt).Round(time.Millisecond), gone.Sub(cutAt).Round(time.Millisecond), margin.Round(time.Millisecond))
	if !lastAck.Before(gone) {
		t.Fatalf("the old primary acknowledged a write %v after its leader key expired", -margin)
	}
	Eventually(t, 15*time.Second, "a replica takes over", func() bool {
		l := c.Leader()
		return l != nil && l != old && l.Status() != nil && l.Status().Writable
	})
	if st := old.Status(); st == nil || st.Writable {
		t.Fatalf("the cut-off old primary is writable: %+v", st)
	}
	// The partition heals: the old primary rejoins as a replica.
	old.Proxy.Restore()
	c.WaitHealthy(60 * time.Second)
}

// Paused cluster: kill the primary, nobody promotes; resume, a replica does.
func TestPausedNoPromotion(t *testing.T) {
	t.Parallel()
	c, old := bootstrap(t, Fast, nil)
	c.SetDynamic("paused", "true")
	Eventually(t, 10*time.Second, "agents paused", func() bool {
		for _, m := range c.Members {
			if st := m.Status(); st == nil || !st.Paused {
				return false
			}
		}
		return true
	})
	old.Crash()
	end := time.Now().Add(c.Profile.TTL + 5*time.Second)
	for time.Now().Before(end) {
		for _, m := range c.Members {
			if m != old {
				if st := m.Status(); st != nil && st.Writable {
					t.Fatalf("%s promoted while the cluster was paused", m.Name)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.SetDynamic("paused", "false")
	Eventually(t, c.Profile.TTL+10*time.Second, "failover after resume", func() bool {
		l := c.Leader()
		return l != nil && l != old && l.Status() != nil && l.Status().Writable
	})
}

// kill -9 of the agent on a healthy primary and a restart: postgres is not
// restarted and no failover happens.
func TestAgentRestartKeepsPrimary(t *testing.T) {
	t.Parallel()
	c, leader := bootstrap(t, Fast, nil)
	pid := leader.PostmasterPID()
	before := c.LoadCluster().Leader
	leader.Kill()
	time.Sleep(time.Second)
	leader.Start()
	time.Sleep(3 * c.Profile.TTL)
	after := c.LoadCluster().Leader
	if after == nil || after.Name != before.Name || after.Term != before.Term {
		t.Fatalf("leader changed across an agent restart: before %+v, after %+v", before, after)
	}
	if p := leader.PostmasterPID(); p != pid {
		t.Fatalf("postgres was restarted (postmaster pid %d -> %d)", pid, p)
	}
	if err := leader.Exec("INSERT INTO steward_test VALUES (1, 'still')"); err != nil {
		t.Fatalf("the primary does not take writes after its agent restarted: %v", err)
	}
	if n := len(history(t, c)); n != 1 {
		t.Fatalf("history has %d records, want only the bootstrap", n)
	}
	st := leader.Status()
	if st == nil || !st.Leader || st.State != agent.StateRunning {
		t.Fatalf("status after restart: %+v", st)
	}
}
