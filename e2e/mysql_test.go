package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/backends/mysql"
)

// myBootstrap starts a 3-member MariaDB cluster (m1 first, so that it
// bootstraps; the others clone from it), waits until it is healthy and
// creates the test table.
func myBootstrap(t testing.TB, p Profile, setup func(c *MyCluster)) (*MyCluster, *MyMember) {
	t.Helper()
	c := NewMyCluster(t, 3, p)
	if setup != nil {
		setup(c)
	}
	c.Members[0].Start()
	Eventually(t, 60*time.Second, "m1 bootstraps and leads", func() bool {
		l := c.Leader()
		return l != nil && l.Name == "m1" && l.Status() != nil && l.Status().Writable
	})
	for _, m := range c.Members[1:] {
		m.Start()
	}
	leader := c.WaitHealthy(120 * time.Second)
	if err := leader.Exec("CREATE DATABASE IF NOT EXISTS app",
		"CREATE TABLE IF NOT EXISTS app.steward_test (id BIGINT PRIMARY KEY, member VARCHAR(64)) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	// Tests write to replicas behind the applier's back (conflicts, errant
	// transactions): the table must have replicated first.
	for _, m := range c.Members {
		if m == leader {
			continue
		}
		Eventually(t, 30*time.Second, m.Name+" has applied app.steward_test", func() bool {
			n, err := m.QueryInt("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'steward_test'")
			return err == nil && n == 1
		})
	}
	return c, leader
}

func myListMembers(t *testing.T, m *MyMember) map[string]map[string]any {
	t.Helper()
	out, code := m.Steward("list", "-o", "json")
	if code != 0 {
		t.Fatalf("steward list -o json exited %d: %s", code, out)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("steward list -o json is not JSON: %v\n%s", err, out)
	}
	res := map[string]map[string]any{}
	list, _ := v["members"].([]any)
	for _, x := range list {
		mm := x.(map[string]any)
		res[mm["name"].(string)] = mm
	}
	return res
}

// gtidPos reads a GTID variable of a member.
func gtidPos(t *testing.T, m *MyMember, v string) string {
	t.Helper()
	s, err := m.QueryString("SELECT @@" + v)
	if err != nil {
		t.Fatalf("%s: @@%s: %v", m.Name, v, err)
	}
	return s
}

// gtidContains: the MariaDB GTID position have holds every transaction of
// want. The primary's heartbeat commits keep positions moving, so a poll
// for equality can miss the moment a replica passes want.
func gtidContains(have, want string) bool {
	h, err1 := mysql.ParseMariaState(have)
	w, err2 := mysql.ParseMariaState(want)
	return err1 == nil && err2 == nil && h.Contains(w)
}

// Bootstrap: exactly one writable primary, two read-only replicas
// replicating with GTID; list, health endpoints and history say so.
func TestMySQLBootstrapThreeMembers(t *testing.T) {
	t.Parallel()
	c, leader := myBootstrap(t, Fast, nil)
	writable := 0
	sysIDs := map[string]bool{}
	for _, m := range c.Members {
		st := m.Status()
		if st == nil {
			t.Fatalf("%s: API not answering", m.Name)
		}
		if st.Writable {
			writable++
		}
		ro, err := m.QueryInt("SELECT @@global.read_only")
		if err != nil {
			t.Fatal(err)
		}
		id, err := m.QueryString("SELECT id FROM steward.cluster")
		if err != nil {
			t.Fatal(err)
		}
		sysIDs[id] = true
		if m == leader {
			if ro != 0 || len(m.SlaveStatus()) != 0 {
				t.Errorf("leader %s: read_only %d, replication %v", m.Name, ro, m.SlaveStatus())
			}
			continue
		}
		ss := m.SlaveStatus()
		if ro != 1 || ss["Using_Gtid"] != "Slave_Pos" || ss["Slave_IO_Running"] != "Yes" || ss["Slave_SQL_Running"] != "Yes" ||
			ss["Master_Port"] != fmt.Sprint(leader.Server.Port) {
			t.Errorf("replica %s: read_only %d, Using_Gtid %s, IO %s, SQL %s, master port %s", m.Name, ro, ss["Using_Gtid"],
				ss["Slave_IO_Running"], ss["Slave_SQL_Running"], ss["Master_Port"])
		}
		if code := m.HTTPCode("/replica"); code != 200 {
			t.Errorf("%s /replica = %d", m.Name, code)
		}
		if code := m.HTTPCode("/primary"); code != 503 {
			t.Errorf("%s /primary = %d", m.Name, code)
		}
	}
	if writable != 1 || len(sysIDs) != 1 {
		t.Fatalf("%d writable members (want 1), system ids %v (want one)", writable, sysIDs)
	}
	if code := leader.HTTPCode("/primary"); code != 200 {
		t.Errorf("leader /primary = %d", code)
	}
	// Replication works end to end with GTIDs.
	if err := leader.Exec("INSERT INTO app.steward_test VALUES (1, 'm1')"); err != nil {
		t.Fatal(err)
	}
	pos := gtidPos(t, leader, "gtid_binlog_pos")
	for _, m := range c.Members {
		if m != leader {
			Eventually(t, 10*time.Second, m.Name+" applied "+pos, func() bool {
				s, _ := m.QueryString("SELECT @@gtid_slave_pos")
				return gtidContains(s, pos)
			})
		}
	}
	ms := myListMembers(t, leader)
	for _, m := range c.Members {
		lm := ms[m.Name]
		if lm == nil {
			t.Fatalf("steward list lacks %s", m.Name)
		}
		if m == leader {
			if lm["role"] != "leader" {
				t.Errorf("%s role %v", m.Name, lm["role"])
			}
			continue
		}
		if lm["role"] != "replica" || lm["state"] != "streaming" || lm["eligible"] != true {
			t.Errorf("%s in list: %v", m.Name, lm)
		}
	}
	Eventually(t, 10*time.Second, "replicas show lag 0", func() bool {
		ms := myListMembers(t, leader)
		for _, m := range c.Members {
			if m != leader && ms[m.Name]["lag_bytes"].(float64) != 0 {
				return false
			}
		}
		return true
	})
	out, code := leader.Steward("list")
	if code != 0 || !strings.Contains(out, "streaming") || !strings.Contains(out, "Leader: "+leader.Name) {
		t.Fatalf("steward list exit %d:\n%s", code, out)
	}
	t.Logf("steward list:\n%s", out)
	if h := c.History(); len(h) != 1 || h[0].Kind != "bootstrap" || h[0].NewLeader != "m1" {
		t.Fatalf("history %+v", h)
	}
}

// kill -9 of the primary's agent and mariadbd, with one replica (m3) behind
// the other (its receiver stopped): the most advanced replica (m2) is
// promoted within ttl + 3 s, m3 follows it and gets everything, and the old
// primary — clean — rejoins as a replica.
func TestMySQLFailoverMostAdvancedAndRejoin(t *testing.T) {
	t.Parallel()
	c, old := myBootstrap(t, Fast, nil)
	m2, m3 := c.Members[1], c.Members[2]
	w := StartMyWriter(c.Members, 20*time.Millisecond, 1)
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Snapshot()) > 20 })
	// Maintenance mode while m3's receiver is stopped by hand: otherwise
	// its agent restarts it (rule 7), as it restarts any stopped receiver.
	c.Pause()
	if err := m3.Exec("STOP SLAVE IO_THREAD"); err != nil {
		t.Fatal(err)
	}
	n := len(w.Snapshot())
	Eventually(t, 10*time.Second, "more writes that m3 does not receive", func() bool { return len(w.Snapshot()) > n+30 })
	w.Stop()
	acked := w.Snapshot()
	target := gtidPos(t, old, "gtid_binlog_pos")
	Eventually(t, 10*time.Second, "m2 received everything", func() bool { return gtidContains(m2.SlaveStatus()["Gtid_IO_Pos"], target) })
	m3pos := m3.SlaveStatus()["Gtid_IO_Pos"]

	killedAt := time.Now()
	old.Crash()
	c.SetDynamic("paused", "false")
	w2 := StartMyWriter([]*MyMember{m2, m3}, 20*time.Millisecond, acked[len(acked)-1].ID+1)
	defer w2.Stop()
	var newLeader *MyMember
	failover := Eventually(t, c.Profile.TTL+3*time.Second, "a new primary acknowledges a write", func() bool {
		for _, a := range w2.Snapshot() {
			if a.At.After(killedAt) {
				newLeader = c.Member(a.Member)
				return true
			}
		}
		return false
	})
	t.Logf("MEASURED MySQL failover (ttl %v, loop_wait %v): kill -9 of primary agent+mariadbd -> first write acknowledged by the new primary %s: %v",
		c.Profile.TTL, c.Profile.LoopWait, newLeader.Name, failover.Round(time.Millisecond))
	if newLeader != m2 {
		t.Fatalf("%s was promoted; m2 received more (%s) than m3 (%s)", newLeader.Name, target, m3pos)
	}
	// m3 follows m2 and gets what it had missed.
	Eventually(t, 20*time.Second, "m3 streams from m2", func() bool {
		ss := m3.SlaveStatus()
		return ss["Master_Port"] == fmt.Sprint(m2.Server.Port) && ss["Slave_IO_Running"] == "Yes"
	})
	hist := c.History()
	last := hist[len(hist)-1]
	if last.Kind != "failover" || last.NewLeader != "m2" || last.OldLeader != "m1" || len(last.Candidates) == 0 {
		t.Fatalf("last history record %+v", last)
	}
	for _, cd := range last.Candidates {
		t.Logf("candidate %s: eligible=%v position=%s reasons=%v", cd.Name, cd.Eligible, cd.Position, cd.Reasons)
	}
	// forked_at: m2's history before its first write holds all of m1's
	// transactions it received and nothing of its own.
	fork, err1 := mysql.ParseMariaState(last.Forked.GTID)
	sent, err2 := mysql.ParseMariaState(target)
	if last.Forked.GTID == "" || err1 != nil || err2 != nil || fork.Seq(0, 2) != 0 || fork.Seq(0, 1) < sent.Seq(0, 1) {
		t.Fatalf("forked_at %q (%v, %v): want every transaction m2 received from m1 (at least %s) and none of its own", last.Forked.GTID, err1, err2, target)
	}
	t.Logf("history: forked_at %s, promoted_at %s", last.Forked, last.Promoted)

	// The old primary restarts: its history is contained in m2's, it
	// rejoins as a replica.
	restart := time.Now()
	old.Start()
	Eventually(t, 30*time.Second, "the old primary streams from m2", func() bool {
		cl := c.LoadCluster()
		mm, ok := cl.Members[old.Name]
		return ok && mm.State == agent.StateStreaming && mm.Following == "m2"
	})
	t.Logf("MEASURED rejoin of the clean old primary (agent and mariadbd restarted -> streaming from the new primary): %v",
		time.Since(restart).Round(time.Millisecond))
	c.WaitHealthy(30 * time.Second)
	w2.Stop()
	all := append(acked, w2.Snapshot()...)
	for _, m := range c.Members {
		Eventually(t, 20*time.Second, m.Name+" has every acknowledged write", func() bool {
			n, err := m.QueryInt("SELECT COUNT(*) FROM app.steward_test")
			return err == nil && int(n) == len(all)
		})
	}
	writable := 0
	for _, m := range c.Members {
		if st := m.Status(); st != nil && st.Writable {
			writable++
		}
	}
	if writable != 1 {
		t.Fatalf("%d writable members", writable)
	}
}

// myErrantFormerPrimary: the primary (m1) commits transactions that never
// replicate, then dies; another member takes over and commits. The former
// primary is left stopped, with its errant transactions.
func myErrantFormerPrimary(t *testing.T) (c *MyCluster, old, newLeader *MyMember, replicas []*MyMember, errantPos string) {
	t.Helper()
	c, old = myBootstrap(t, Fast, nil)
	if err := old.Exec("INSERT INTO app.steward_test VALUES (1, 'before')"); err != nil {
		t.Fatal(err)
	}
	replicas = []*MyMember{c.Members[1], c.Members[2]}
	pos := gtidPos(t, old, "gtid_binlog_pos")
	for _, r := range replicas {
		Eventually(t, 10*time.Second, r.Name+" caught up", func() bool {
			s, _ := r.QueryString("SELECT @@gtid_slave_pos")
			return gtidContains(s, pos)
		})
	}
	// Maintenance mode so that the agents leave replication alone while we
	// cut it (rule 7); then commit rows only the old primary has.
	c.Pause()
	for _, r := range replicas {
		if err := r.Exec("STOP SLAVE IO_THREAD"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1001; i <= 1005; i++ {
		if err := old.Exec(fmt.Sprintf("INSERT INTO app.steward_test VALUES (%d, 'lost')", i)); err != nil {
			t.Fatal(err)
		}
	}
	errantPos = gtidPos(t, old, "gtid_binlog_pos")
	old.Crash()
	for _, r := range replicas {
		if err := r.Exec("START SLAVE IO_THREAD"); err != nil {
			t.Fatal(err)
		}
	}
	c.SetDynamic("paused", "false")
	Eventually(t, c.Profile.TTL+10*time.Second, "a new leader", func() bool {
		newLeader = c.Leader()
		return newLeader != nil && newLeader != old && newLeader.Status() != nil && newLeader.Status().Writable
	})
	if err := newLeader.Exec("INSERT INTO app.steward_test VALUES (2001, 'after')"); err != nil {
		t.Fatal(err)
	}
	return c, old, newLeader, replicas, errantPos
}

// The old primary committed transactions that never replicated, then
// died: after the failover it is refused — it stays out, and `steward list`
// shows why with the errant GTIDs — instead of replicating on top of them.
func TestMySQLErrantRejoinRefused(t *testing.T) {
	t.Parallel()
	_, old, newLeader, replicas, errantPos := myErrantFormerPrimary(t)
	old.Start()
	var reason string
	Eventually(t, 30*time.Second, "list shows the old primary refused with its errant GTIDs", func() bool {
		mm := myListMembers(t, newLeader)[old.Name]
		if mm == nil {
			return false
		}
		reason = fmt.Sprint(mm["reason"])
		return mm["state"] == agent.StateFailed && strings.Contains(reason, "errant transactions") && strings.Contains(reason, "steward reinit m1")
	})
	t.Logf("list reason for %s: %s", old.Name, reason)
	// The errant GTIDs are named: the old primary's transactions after the
	// last one of server 1 the new leader has (the 5 inserts, and the
	// heartbeats the paused leader kept committing) up to its last.
	ep, _ := mysql.ParseMariaState(errantPos)
	ls, _ := mysql.ParseMariaState(gtidPos(t, newLeader, "gtid_binlog_state"))
	last, have := ep.Seq(0, 1), ls.Seq(0, 1)
	if last-have < 5 {
		t.Fatalf("the old primary has only %d transactions the new leader lacks", last-have)
	}
	if want := fmt.Sprintf("0-1-%d..0-1-%d", have+1, last); !strings.Contains(reason, want) {
		t.Fatalf("reason does not name the errant GTIDs %s: %s", want, reason)
	}
	out, _ := newLeader.Steward("list")
	t.Logf("steward list:\n%s", out)
	// It does not replicate, is not writable, and kept its rows (nothing
	// was thrown away behind the operator's back).
	ss := old.SlaveStatus()
	if ss["Slave_IO_Running"] == "Yes" || ss["Slave_SQL_Running"] == "Yes" {
		t.Fatalf("the errant member replicates: %v", ss)
	}
	if st := old.Status(); st == nil || st.Writable {
		t.Fatalf("errant member status %+v", st)
	}
	if n, err := old.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE member = 'lost'"); err != nil || n != 5 {
		t.Fatalf("errant rows on the old primary: %d %v", n, err)
	}
	if len(grepLines(old.Log(), "errant")) == 0 {
		t.Fatal("the agent log does not mention the errant transactions")
	}
	// The other replica follows the new leader.
	for _, r := range replicas {
		if r != newLeader {
			Eventually(t, 20*time.Second, r.Name+" streams from "+newLeader.Name, func() bool {
				ss := r.SlaveStatus()
				return ss["Master_Port"] == fmt.Sprint(newLeader.Server.Port) && ss["Slave_IO_Running"] == "Yes"
			})
		}
	}
	// The operator follows the advice: `steward reinit m1` re-clones it from
	// the new leader; it then replicates, and the errant rows are gone.
	if err := newLeader.Exec("INSERT INTO app.steward_test (id, member) VALUES (900001, 'after-failover')"); err != nil {
		t.Fatal(err)
	}
	out, code := newLeader.Steward("reinit", old.Name, "--force", "--timeout", "3m")
	t.Logf("steward reinit %s (exit %d):\n%s", old.Name, code, out)
	if code != 0 {
		t.Fatalf("steward reinit %s exited %d", old.Name, code)
	}
	Eventually(t, 60*time.Second, old.Name+" replicates from "+newLeader.Name+" after the reinit", func() bool {
		ss := old.SlaveStatus()
		return ss["Master_Port"] == fmt.Sprint(newLeader.Server.Port) && ss["Slave_IO_Running"] == "Yes" && ss["Slave_SQL_Running"] == "Yes"
	})
	Eventually(t, 30*time.Second, old.Name+" has the new leader's rows and not its errant ones", func() bool {
		lost, err1 := old.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE member = 'lost'")
		after, err2 := old.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE id = 900001")
		return err1 == nil && err2 == nil && lost == 0 && after == 1
	})
	if st := old.Status(); st == nil || st.Writable || st.State == agent.StateFailed {
		t.Fatalf("after the reinit: %+v", st)
	}
}

// The same errant former primary, refused at first; the operator turns
// mysql.reclone_on_divergence on and reloads (SIGHUP, no restart): the
// agent re-clones it from the new leader by itself, discarding the errant
// rows, and it replicates again.
func TestMySQLErrantRecloneOnDivergence(t *testing.T) {
	t.Parallel()
	c, old, newLeader, _, _ := myErrantFormerPrimary(t)
	old.Start()
	Eventually(t, 30*time.Second, "the old primary refused (errant transactions)", func() bool {
		st := old.Status()
		return st != nil && st.State == agent.StateFailed
	})
	if n, err := old.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE member = 'lost'"); err != nil || n != 5 {
		t.Fatalf("errant rows on the refused member: %d %v", n, err)
	}
	old.MySQLExtra = "  reclone_on_divergence: true\n"
	old.Reload()
	Eventually(t, 90*time.Second, old.Name+" re-cloned: replicating from "+newLeader.Name+" with the new leader's rows and not its errant ones", func() bool {
		ss := old.SlaveStatus()
		if ss["Master_Port"] != fmt.Sprint(newLeader.Server.Port) || ss["Slave_IO_Running"] != "Yes" || ss["Slave_SQL_Running"] != "Yes" {
			return false
		}
		lost, err1 := old.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE member = 'lost'")
		after, err2 := old.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE id = 2001")
		return err1 == nil && err2 == nil && lost == 0 && after == 1
	})
	if len(grepLines(old.Log(), "mysql.reclone_on_divergence")) == 0 {
		t.Fatal("the agent log does not say why it re-cloned (mysql.reclone_on_divergence)")
	}
	found := false
	for _, h := range c.History() {
		found = found || (h.Kind == "reinit" && h.Member == old.Name)
	}
	if !found {
		t.Fatalf("no reinit record for %s in the history", old.Name)
	}
}

// The deposed primary with errant transactions is running (refused, read
// only) when the new primary dies: MariaDB's histories then diverge — the
// deposed one has its tail, the remaining replica has the new primary's
// writes — so neither is "ahead" and both would race. The history's
// forked_at rules the deposed one out: the replica that holds the new
// primary's acknowledged writes is promoted, and they survive.
func TestMySQLDeposedPrimaryNeverWinsAfterTheNextFailure(t *testing.T) {
	t.Parallel()
	c, old, newLeader, replicas, _ := myErrantFormerPrimary(t)
	var other *MyMember
	for _, r := range replicas {
		if r != newLeader {
			other = r
		}
	}
	Eventually(t, 20*time.Second, other.Name+" has the new primary's write", func() bool {
		n, err := other.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE id = 2001")
		return err == nil && n == 1
	})
	old.Start()
	var why []string
	Eventually(t, 30*time.Second, old.Name+" running, refused, and not eligible because of its tail", func() bool {
		st := old.Status()
		if st == nil || st.State != agent.StateFailed || st.Writable {
			return false
		}
		why = st.Reasons
		return strings.Contains(strings.Join(st.Reasons, "; "), "after the last promotion's fork point")
	})
	t.Logf("%s not eligible: %s", old.Name, strings.Join(why, "; "))
	newLeader.Crash()
	var next *MyMember
	Eventually(t, c.Profile.TTL+15*time.Second, "a new primary after "+newLeader.Name, func() bool {
		next = c.Leader()
		return next != nil && next != newLeader && next.Status() != nil && next.Status().Writable
	})
	if next != other {
		t.Fatalf("%s was promoted: the deposed primary's history won over %s, which had %s's acknowledged writes", next.Name, other.Name, newLeader.Name)
	}
	if n, err := next.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE id = 2001"); err != nil || n != 1 {
		t.Fatalf("the write %s acknowledged is missing on %s: %d %v", newLeader.Name, next.Name, n, err)
	}
	for _, h := range c.History() {
		if h.NewLeader == newLeader.Name && h.Kind == "failover" && h.Forked.IsZero() {
			t.Fatalf("%s's failover record has no forked_at: %+v", newLeader.Name, h)
		}
	}
}

// Replication stopped under the leader (STOP SLAVE by hand, or a replica
// restarted with skip_slave_start before it knew the leader — found by the
// fault-injection suite after a whole-cluster crash) does not restart by
// itself on MySQL: the agent restarts it, and the replica catches up.
// (In maintenance mode it would leave it alone: see
// TestMySQLErrantRejoinRefused, which stops receivers while paused.)
func TestMySQLStoppedReplicationRestarted(t *testing.T) {
	t.Parallel()
	c, leader := myBootstrap(t, Fast, nil)
	r := c.Members[1]
	if err := r.Exec("STOP SLAVE"); err != nil {
		t.Fatal(err)
	}
	if err := leader.Exec("INSERT INTO app.steward_test VALUES (3001, 'while stopped')"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	Eventually(t, 20*time.Second, r.Name+" replicating again with the row written meanwhile", func() bool {
		ss := r.SlaveStatus()
		n, err := r.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE id = 3001")
		return ss["Slave_IO_Running"] == "Yes" && ss["Slave_SQL_Running"] == "Yes" && err == nil && n == 1
	})
	t.Logf("replication restarted and caught up %v after STOP SLAVE", time.Since(stopped).Round(10*time.Millisecond))
	if len(grepLines(r.Log(), "replication was stopped under the leader: restarting it")) == 0 {
		t.Fatal("the agent log does not say it restarted replication")
	}
}

// The applier stopped by an error (here a conflicting row; in the
// fault-injection suite a full disk) does not restart by itself once the
// cause is gone: the agent retries it every few seconds, and the replica
// catches up as soon as the cause is removed.
func TestMySQLApplierStoppedByAnErrorRestarted(t *testing.T) {
	t.Parallel()
	c, leader := myBootstrap(t, Fast, nil)
	r := c.Members[1]
	if err := r.Exec("SET SESSION sql_log_bin = 0", "INSERT INTO app.steward_test VALUES (4001, 'conflict')"); err != nil {
		t.Fatal(err)
	}
	if err := leader.Exec("INSERT INTO app.steward_test VALUES (4001, 'from the primary')"); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 20*time.Second, r.Name+"'s applier stopped by the duplicate key", func() bool {
		return r.SlaveStatus()["Last_SQL_Errno"] == "1062"
	})
	Eventually(t, 20*time.Second, "the agent retried it", func() bool {
		return len(grepLines(r.Log(), "the applier stopped (error 1062")) >= 2
	})
	if err := r.Exec("SET SESSION sql_log_bin = 0", "DELETE FROM app.steward_test WHERE id = 4001"); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	Eventually(t, 20*time.Second, r.Name+" applying again, with the primary's row", func() bool {
		ss := r.SlaveStatus()
		v, err := r.QueryString("SELECT member FROM app.steward_test WHERE id = 4001")
		return ss["Slave_SQL_Running"] == "Yes" && err == nil && v == "from the primary"
	})
	t.Logf("applier running again %v after the conflicting row was removed", time.Since(removed).Round(10*time.Millisecond))
}

// A replica whose applier is stopped (SQL thread), lagging beyond
// maximum_lag_on_failover, is never promoted: `list` says why before the
// failure, the eligible replica takes over, the history records why the
// lagging one was rejected, and it then follows the new primary.
func TestMySQLLaggingReplicaNeverPromoted(t *testing.T) {
	t.Parallel()
	c, old := myBootstrap(t, Fast, nil)
	lag, good := c.Members[1], c.Members[2]
	if err := lag.Exec("STOP SLAVE SQL_THREAD"); err != nil {
		t.Fatal(err)
	}
	if err := old.Exec("CREATE TABLE app.big (id INT PRIMARY KEY, pad VARCHAR(1000)) ENGINE=InnoDB",
		"INSERT INTO app.big SELECT seq, REPEAT('x', 1000) FROM app.seq_1_to_4000"); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 15*time.Second, "list shows the lagging replica as not eligible", func() bool {
		ms := myListMembers(t, old)
		r := fmt.Sprint(ms[lag.Name]["ineligible_reasons"])
		lb, _ := ms[lag.Name]["lag_bytes"].(float64)
		return ms[lag.Name]["eligible"] == false && strings.Contains(r, "replay lag") && lb > 1<<20 && ms[good.Name]["eligible"] == true
	})
	out, _ := old.Steward("list")
	t.Logf("steward list before the failure:\n%s", out)
	// The lagging replica received everything (its receiver runs): it is
	// "ahead or equal" by received GTIDs, and must still not be promoted.
	old.Crash()
	deadline := time.Now().Add(c.Profile.TTL + 6*time.Second)
	promoted := false
	for time.Now().Before(deadline) {
		if st := lag.Status(); st != nil && st.Writable {
			t.Fatalf("%s was promoted although it lags beyond maximum_lag_on_failover", lag.Name)
		}
		if st := good.Status(); st != nil && st.Writable {
			promoted = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !promoted {
		t.Fatalf("the eligible replica %s was not promoted", good.Name)
	}
	hist := c.History()
	lastRec := hist[len(hist)-1]
	found := false
	for _, cd := range lastRec.Candidates {
		if cd.Name == lag.Name && !cd.Eligible && strings.Contains(strings.Join(cd.Reasons, ";"), "replay lag") {
			found = true
		}
	}
	if lastRec.NewLeader != good.Name || !found {
		t.Fatalf("history %+v does not record %s rejected for its replay lag", lastRec, lag.Name)
	}
	// The lagging replica follows the new primary and catches up.
	Eventually(t, 30*time.Second, "the lagging replica follows and catches up", func() bool {
		n, err := lag.QueryInt("SELECT COUNT(*) FROM app.big")
		ss := lag.SlaveStatus()
		return err == nil && n == 4000 && ss["Master_Port"] == fmt.Sprint(good.Server.Port) && ss["Slave_SQL_Running"] == "Yes"
	})
}

// The only candidate (m3 is tagged nofailover) has a relay-log backlog when
// the primary is killed under writes: its applier is blocked by a lock on
// the table it applies to. It is promoted only after applying everything it
// had received: no acknowledged write that reached it is lost.
func TestMySQLRelayLogBacklogAtFailover(t *testing.T) {
	t.Parallel()
	p := Fast
	p.MaxLag = "64MB"
	c, old := myBootstrap(t, p, func(c *MyCluster) { c.Members[2].Tags = "{nofailover: true}" })
	cand := c.Members[1]
	w := StartMyWriter(c.Members, 10*time.Millisecond, 1)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Snapshot()) > 20 })
	db := cand.DB()
	defer db.Close()
	lockCtx, cancelLock := context.WithCancel(context.Background())
	defer cancelLock()
	lock, err := db.Conn(lockCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(lockCtx, "LOCK TABLES app.steward_test WRITE"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the writes pile up in cand's relay log
	killedAt := time.Now()
	old.Crash()
	ackedBeforeKill := 0
	for _, a := range w.Snapshot() {
		if a.Member == old.Name {
			ackedBeforeKill++
		}
	}
	time.Sleep(200 * time.Millisecond)
	ss := cand.SlaveStatus()
	received := ss["Gtid_IO_Pos"]
	applied := gtidPos(t, cand, "gtid_slave_pos")
	backlog, _ := mysql.TransactionLag(backends.Position{GTID: received}, backends.Position{GTID: applied})
	if backlog < 50 {
		t.Fatalf("no real backlog at the kill: received %s, applied %s", received, applied)
	}
	t.Logf("at the kill: %s received %s, applied %s: %d transactions in the relay log", cand.Name, received, applied, backlog)
	// Keep the applier blocked until cand has taken the leader key and is
	// promoting, then one more second: Promote must wait for the relay log.
	unlocked := make(chan time.Time, 1)
	go func() {
		end := time.Now().Add(30 * time.Second)
		for time.Now().Before(end) && len(grepLines(cand.Log(), "acquired the leader key")) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Second)
		if st := cand.Status(); st != nil && st.Writable {
			t.Errorf("%s became writable while its applier was still blocked", cand.Name)
		}
		_, _ = lock.ExecContext(context.Background(), "UNLOCK TABLES")
		unlocked <- time.Now()
	}()
	var promotedAt time.Time
	Eventually(t, c.Profile.TTL+15*time.Second, cand.Name+" promoted", func() bool {
		if st := cand.Status(); st != nil && st.Writable {
			promotedAt = time.Now()
			return true
		}
		return false
	})
	unlockAt := <-unlocked
	if promotedAt.Before(unlockAt) {
		t.Fatalf("%s was writable before its applier could apply the relay log", cand.Name)
	}
	t.Logf("MEASURED failover with a relay-log backlog of %d transactions (applier blocked until 1 s after the key was taken): kill -> %s writable: %v (%v after the applier was unblocked)",
		backlog, cand.Name, promotedAt.Sub(killedAt).Round(time.Millisecond), promotedAt.Sub(unlockAt).Round(time.Millisecond))
	w.Stop()
	// Everything it had received is applied.
	exec := gtidPos(t, cand, "gtid_binlog_state")
	if mysql.Compare(backends.Position{GTID: exec}, backends.Position{GTID: received}) < 0 {
		t.Fatalf("the promoted replica's history %s lacks what it had received (%s)", exec, received)
	}
	// Every write the old primary acknowledged is there, except possibly a
	// tail that never reached the replica (asynchronous replication).
	var ids []int64
	for _, a := range w.Snapshot() {
		if a.Member == old.Name {
			ids = append(ids, a.ID)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	present := map[int64]bool{}
	rows, err := db.QueryContext(context.Background(), "SELECT id FROM app.steward_test")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		_ = rows.Scan(&id)
		present[id] = true
	}
	rows.Close()
	lost, seenMissing := 0, false
	for _, id := range ids {
		if !present[id] {
			lost++
			seenMissing = true
		} else if seenMissing {
			t.Fatalf("acknowledged write %d is present but an earlier one is missing: a hole, not a tail", id)
		}
	}
	t.Logf("MEASURED relay-log backlog failover: %d writes acknowledged by the old primary, %d present on the new primary (%d from the relay-log backlog), %d lost (never received)",
		len(ids), len(ids)-lost, backlog, lost)
	if lost > 2 {
		t.Fatalf("%d acknowledged writes lost", lost)
	}
	if len(ids) < ackedBeforeKill {
		t.Fatalf("acknowledged writes went missing from the writer's record")
	}
}

// `steward demo --backend mysql`: three MariaDB members come up, the
// scripted failover completes, and Ctrl-C leaves no process, port or
// directory behind.
func TestMySQLDemo(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binaryPath, "demo", "--backend", "mysql", "--kill-primary-after", "2s", "--ttl", "4s", "--loop-wait", "500ms")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out strings.Builder
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("demo output:\n%s", out.String())
			mu.Unlock()
		}
	}()
	want := []string{"started my1: MariaDB on", "cluster is up", "MEMBER", "FAILOVER: killing the primary", "detected:", "took the leader key", "promoted:", "candidates considered", "rejoined:"}
	deadline := time.After(180 * time.Second)
	for _, w := range want {
	wait:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the demo exited before printing %q", w)
				}
				if strings.Contains(l, w) {
					break wait
				}
			case <-deadline:
				t.Fatalf("the demo did not print %q in time", w)
			}
		}
	}
	mu.Lock()
	text := out.String()
	mu.Unlock()
	t.Logf("demo output:\n%s", text)
	dir := regexp.MustCompile(`demo directory: (\S+)`).FindStringSubmatch(text)
	ports := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(text, -1)
	if dir == nil || len(ports) < 6 {
		t.Fatalf("the demo did not say where it runs:\n%s", text)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	go func() {
		for range lines {
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the demo exited with %v after Ctrl-C", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the demo did not stop within 90s of Ctrl-C")
	}
	if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
		t.Errorf("the demo left its directory %s behind", dir[1])
	}
	for _, p := range ports {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+p[1], 200*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("port %s still answers after the demo stopped", p[1])
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), dir[1]) {
			t.Errorf("a process of the demo still runs: %s %s", e.Name(), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

// Switchovers under continuous writes (the agent's switchover: writes
// stopped and the primary stopped cleanly, its final GTID position read,
// the candidate waited for, the key handed over, the old primary restarted
// as a replica): no acknowledged write is lost; the write pause is measured.
func TestMySQLSwitchoversUnderWrites(t *testing.T) {
	for _, mode := range []string{"off", "on"} {
		t.Run("synchronous_mode "+mode, func(t *testing.T) {
			t.Parallel()
			mySwitchoversUnderWrites(t, mode)
		})
	}
}

// mySwitchoversUnderWrites: three switchovers under writes; with
// synchronous_mode on each goes to the acknowledger the sync key names.
func mySwitchoversUnderWrites(t *testing.T, mode string) {
	c, first := myBootstrap(t, Fast, nil)
	if mode != "off" {
		c.SetDynamic("synchronous_mode", mode)
		waitMyAcknowledger(t, c, first.Name, mode, 30*time.Second)
	}
	w := StartMyWriter(c.Members, 5*time.Millisecond, 1)
	defer w.Stop()
	client := api.NewClient(nil, "", "")
	var pauses []time.Duration
	for i := 0; i < 3; i++ {
		leader := c.WaitHealthy(60 * time.Second)
		var cand *MyMember
		for _, m := range c.Members {
			if m != leader && (cand == nil || (i%2 == 0) == (m.Name < cand.Name)) {
				cand = m
			}
		}
		if mode != "off" {
			cand = c.Member(waitMyAcknowledger(t, c, leader.Name, mode, 30*time.Second))
		}
		before := len(w.Snapshot())
		Eventually(t, 5*time.Second, "writes flow", func() bool { return len(w.Snapshot()) > before+20 })
		requested := time.Now()
		var res api.ActionResult
		var code int
		var err error
		// Under a fully loaded make test the leader has (rarely) refused the
		// first switchover with "replay position unknown" (the candidate's
		// live answer had no comparable replay position); that refusal is
		// safe and changes nothing. Not reproduced alone (6 of 6 runs
		// passed): log what the candidate reported, retry for up to 5 s.
		for try := 0; ; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			res, code, err = client.Switchover(ctx, fmt.Sprintf("http://127.0.0.1:%d", leader.APIPort),
				api.SwitchoverBody{Leader: leader.Name, Candidate: cand.Name}, false, true)
			cancel()
			if err == nil && code == 412 && strings.Contains(res.Error, "replay position unknown") && try < 10 {
				cl := c.LoadCluster()
				ss := cand.SlaveStatus()
				t.Logf("switchover %d refused (%s): status key %+v; %s's member key %+v; its SHOW SLAVE STATUS: Relay_Master_Log_File=%q Exec_Master_Log_Pos=%q Master_Server_Id=%q Gtid_IO_Pos=%q; retrying",
					i, res.Error, cl.Status, cand.Name, cl.Members[cand.Name], ss["Relay_Master_Log_File"], ss["Exec_Master_Log_Pos"], ss["Master_Server_Id"], ss["Gtid_IO_Pos"])
				time.Sleep(500 * time.Millisecond)
				continue
			}
			break
		}
		if err != nil || code != 200 {
			t.Fatalf("switchover %d %s -> %s: %d %+v %v", i, leader.Name, cand.Name, code, res, err)
		}
		Eventually(t, 30*time.Second, "the old primary streams from the new leader", func() bool {
			ss := leader.SlaveStatus()
			return ss["Master_Port"] == fmt.Sprint(cand.Server.Port) && ss["Slave_IO_Running"] == "Yes"
		})
		c.WaitHealthy(30 * time.Second)
		if mode != "off" {
			// The former primary no longer waits for acknowledgements: as a
			// replica it applies what it receives.
			Eventually(t, 10*time.Second, "the former primary stopped waiting for acknowledgements", func() bool {
				en, _ := mySemiSyncMaster(t, leader)
				return !en
			})
		}
		time.Sleep(300 * time.Millisecond)
		acks := w.Snapshot()
		var gap time.Duration
		for j := 1; j < len(acks); j++ {
			if acks[j].At.After(requested) && acks[j-1].At.After(requested.Add(-time.Second)) {
				if d := acks[j].At.Sub(acks[j-1].At); d > gap {
					gap = d
				}
			}
		}
		pauses = append(pauses, gap)
	}
	w.Stop()
	leader := c.WaitHealthy(30 * time.Second)
	acks := w.Snapshot()
	present := map[int64]bool{}
	db := leader.DB()
	defer db.Close()
	rows, err := db.QueryContext(context.Background(), "SELECT id FROM app.steward_test")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		_ = rows.Scan(&id)
		present[id] = true
	}
	rows.Close()
	lost := 0
	for _, a := range acks {
		if !present[a.ID] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost in the switchovers", lost, len(acks))
	}
	sort.Slice(pauses, func(i, j int) bool { return pauses[i] < pauses[j] })
	t.Logf("MEASURED 3 MySQL switchovers under writes (ttl %v, synchronous_mode %s): write pause min %v median %v max %v; %d acknowledged writes, 0 lost",
		c.Profile.TTL, mode, pauses[0].Round(time.Millisecond), pauses[1].Round(time.Millisecond), pauses[2].Round(time.Millisecond), len(acks))
}
