package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/dcs"
)

// Semi-synchronous replication end to end with MariaDB members (issue 7,
// DESIGN rule 6, docs/mysql.md#synchronous-replication): real MariaDB
// 10.11, real etcd, agents as separate processes.

// mySync reads the sync key (nil: none).
func mySync(c *MyCluster) *dcs.SyncState {
	cl := c.LoadCluster()
	if cl == nil || cl.Sync == nil {
		return nil
	}
	s := cl.Sync.Value
	return &s
}

// mySemiSyncMaster reads a server's rpl_semi_sync_master_enabled and
// Rpl_semi_sync_master_clients.
func mySemiSyncMaster(t testing.TB, m *MyMember) (bool, int64) {
	t.Helper()
	en, err := m.QueryInt("SELECT @@global.rpl_semi_sync_master_enabled")
	if err != nil {
		t.Fatalf("%s: %v", m.Name, err)
	}
	n, err := m.QueryInt("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS'")
	if err != nil {
		t.Fatalf("%s: %v", m.Name, err)
	}
	return en != 0, n
}

// myKillUnderWrites writes every 5 ms to whichever member accepts, kills
// the primary old (agent and server, kill -9) once 300 writes were
// acknowledged, and waits for a new primary to acknowledge one. It returns
// that primary, the time from the kill to its first write, and how many of
// old's acknowledged writes there are and how many of them it lacks.
func myKillUnderWrites(t *testing.T, c *MyCluster, old *MyMember) (newLeader *MyMember, took time.Duration, acked, lost int) {
	t.Helper()
	w := StartMyWriter(c.Members, 5*time.Millisecond, 1)
	defer w.Stop()
	Eventually(t, 15*time.Second, "writes acknowledged", func() bool { return len(w.Snapshot()) > 300 })
	killedAt := time.Now()
	old.Crash()
	Eventually(t, c.Profile.TTL+15*time.Second, "a new primary acknowledges a write", func() bool {
		for _, a := range w.Snapshot() {
			if a.At.After(killedAt) && a.Member != old.Name {
				newLeader = c.Member(a.Member)
				return true
			}
		}
		return false
	})
	took = time.Since(killedAt)
	w.Stop()
	for _, a := range w.Snapshot() {
		if a.Member != old.Name {
			continue
		}
		acked++
		n, err := newLeader.QueryInt("SELECT COUNT(*) FROM app.steward_test WHERE id = ?", a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			lost++
		}
	}
	return newLeader, took, acked, lost
}

// waitMyAcknowledger waits until the sync key of leader in mode names one
// synchronous member that is also the only listed acknowledger and reports
// itself connected as one, and returns it.
func waitMyAcknowledger(t *testing.T, c *MyCluster, leader, mode string, within time.Duration) string {
	t.Helper()
	var name, last string
	Eventually(t, within, "a confirmed semi-synchronous standby in the sync key (mode "+mode+")", func() bool {
		cl := c.LoadCluster()
		if cl == nil || cl.Sync == nil {
			return false
		}
		s := cl.Sync.Value
		last = fmt.Sprintf("%+v", s)
		if s.Leader != leader || s.Mode != mode || len(s.Members) != 1 || s.Quorum != 1 || !slices.Equal(s.Acknowledgers, s.Members) {
			return false
		}
		m, ok := cl.Members[s.Members[0]]
		if !ok || m.SemiSync == nil || !m.SemiSync.Active || m.SemiSync.Epoch != s.AckEpoch {
			return false
		}
		name = s.Members[0]
		return true
	})
	t.Logf("sync key: %s", last)
	return name
}

// The leader makes one replica its acknowledger and records it in the sync
// key before relying on it; the other replica may not be promoted. A kill
// -9 of the primary under load promotes the acknowledger and loses no
// acknowledged write. In strict mode, with its standby gone, the primary
// acknowledges nothing until one is back; off turns everything back.
func TestMySQLSemiSyncFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	t.Parallel()
	// The replica outside the sync set can have received the primary's
	// last transaction while the acknowledger had not (never acknowledged
	// to its client): after the failover its history has diverged from the
	// new leader's (seen once in 14 full-suite runs; docs/mysql.md). It
	// must be re-cloned before it can acknowledge for the new leader.
	c, old := myBootstrap(t, Fast, func(c *MyCluster) {
		for _, m := range c.Members {
			m.MySQLExtra = "  reclone_on_divergence: true\n"
		}
	})
	c.SetDynamic("synchronous_mode", "on")
	ack := waitMyAcknowledger(t, c, old.Name, "on", 30*time.Second)
	other := ""
	for _, m := range c.Members {
		if m != old && m.Name != ack {
			other = m.Name
		}
	}
	// MariaDB counts a semi-sync client only once its binlog dump thread
	// notices the master side was enabled (up to ~300 ms after, measured by
	// hand; the replica may connect first: "Semi-sync will be activated when
	// master enables it"), so the count is polled.
	EventuallySettles(t, 5*time.Second, "the primary waits for one acknowledger (rpl_semi_sync_master_enabled, Rpl_semi_sync_master_clients 1)", func() []string {
		if en, clients := mySemiSyncMaster(t, old); !en || clients != 1 {
			return []string{fmt.Sprintf("primary: rpl_semi_sync_master_enabled %v, Rpl_semi_sync_master_clients %d", en, clients)}
		}
		return nil
	})
	Eventually(t, 10*time.Second, other+" is not a failover candidate (not in the sync set)", func() bool {
		mm, ok := c.LoadCluster().Members[other]
		return ok && !mm.Eligible && strings.Contains(strings.Join(mm.IneligibleReason, ";"), "not in sync set")
	})
	if out, code := old.Steward("list"); code == 0 {
		t.Logf("steward list (synchronous_mode on):\n%s", out)
	}

	newLeader, took, acked, lost := myKillUnderWrites(t, c, old)
	t.Logf("MEASURED MariaDB semi-sync failover (ttl %v, loop_wait %v): kill -9 of the primary -> first write acknowledged by the new primary %s: %v",
		c.Profile.TTL, c.Profile.LoopWait, newLeader.Name, took.Round(time.Millisecond))
	if newLeader.Name != ack {
		t.Fatalf("%s was promoted; only the acknowledger %s holds every acknowledged write", newLeader.Name, ack)
	}
	t.Logf("MEASURED MariaDB semi-sync on: %d writes acknowledged by %s before the kill, %d lost", acked, old.Name, lost)
	if lost > 0 {
		t.Fatalf("%d writes acknowledged by the old primary are missing on %s", lost, newLeader.Name)
	}
	hist := c.History()
	last := hist[len(hist)-1]
	for _, cd := range last.Candidates {
		t.Logf("candidate %s: eligible=%v reasons=%v", cd.Name, cd.Eligible, cd.Reasons)
		if cd.Name == other && cd.Eligible {
			t.Fatalf("the history says the asynchronous %s was eligible: %+v", other, cd)
		}
	}

	// The new leader makes the remaining replica its acknowledger (after
	// re-cloning it if it was ahead, above).
	ack2 := waitMyAcknowledger(t, c, newLeader.Name, "on", 60*time.Second)
	if n := len(grepLines(c.Member(other).Log(), "re-clon")); n > 0 {
		t.Logf("%s held a transaction the acknowledger never received and was re-cloned (%d log lines)", other, n)
	}
	if ack2 != other {
		t.Fatalf("the new leader's acknowledger is %s, want %s (the only replica left)", ack2, other)
	}

	// Strict: with its only standby gone the primary acknowledges nothing.
	c.SetDynamic("synchronous_mode", "strict")
	waitMyAcknowledger(t, c, newLeader.Name, "strict", 30*time.Second)
	standby := c.Member(other)
	standby.Crash()
	time.Sleep(c.Profile.TTL) // the leader had time to react, and must not fall back
	w2 := StartMyWriter([]*MyMember{newLeader}, 20*time.Millisecond, 1_000_000)
	time.Sleep(3 * time.Second)
	if n := len(w2.Snapshot()); n > 0 {
		t.Fatalf("strict mode without a standby: %d writes acknowledged", n)
	}
	if s := mySync(c); s == nil || s.Mode != "strict" || s.Leader != newLeader.Name {
		t.Fatalf("sync key in strict mode without a standby: %+v", s)
	}
	restarted := time.Now()
	standby.Start()
	Eventually(t, 60*time.Second, "writes acknowledged again once the standby is back", func() bool { return len(w2.Snapshot()) > 0 })
	t.Logf("MEASURED strict mode: the standby's agent and server restarted -> first write acknowledged: %v", time.Since(restarted).Round(time.Millisecond))
	w2.Stop()

	// Off: the primary stops waiting and no replica acknowledges.
	c.SetDynamic("synchronous_mode", "off")
	Eventually(t, 30*time.Second, "asynchronous again: no acknowledger listed or reporting, the primary does not wait", func() bool {
		cl := c.LoadCluster()
		if cl == nil || cl.Sync == nil || cl.Sync.Value.Mode != "off" || len(cl.Sync.Value.Acknowledgers) != 0 {
			return false
		}
		if m, ok := cl.Members[other]; !ok || m.State != agent.StateStreaming || m.SemiSync == nil || m.SemiSync.Acking {
			return false
		}
		en, _ := mySemiSyncMaster(t, newLeader)
		return !en
	})
}

// Quorum mode with MariaDB members: every available replica may
// acknowledge (ANY 1 of them), the key counts both with quorum 1, and a
// failover promotes the most advanced of them after reaching both.
func TestMySQLSemiSyncQuorum(t *testing.T) {
	t.Parallel()
	c, old := myBootstrap(t, Fast, nil)
	c.SetDynamic("synchronous_mode", "quorum")
	var key dcs.SyncState
	Eventually(t, 30*time.Second, "both replicas acknowledge and the key counts them, quorum 1", func() bool {
		cl := c.LoadCluster()
		if cl == nil || cl.Sync == nil {
			return false
		}
		key = cl.Sync.Value
		if key.Leader != old.Name || key.Mode != "quorum" || len(key.Members) != 2 || key.Quorum != 1 || len(key.Acknowledgers) != 2 {
			return false
		}
		for _, n := range key.Members {
			if m, ok := cl.Members[n]; !ok || m.SemiSync == nil || !m.SemiSync.Active {
				return false
			}
		}
		return true
	})
	t.Logf("sync key: %+v", key)
	newLeader, took, acked, lost := myKillUnderWrites(t, c, old)
	t.Logf("MEASURED MariaDB semi-sync quorum: kill -9 of the primary -> %s promoted after %v; %d writes acknowledged before, %d lost",
		newLeader.Name, took.Round(time.Millisecond), acked, lost)
	if lost > 0 {
		t.Fatalf("%d acknowledged writes missing on the new primary %s", lost, newLeader.Name)
	}
	hist := c.History()
	last := hist[len(hist)-1]
	if last.NewLeader != newLeader.Name || last.OldLeader != old.Name {
		t.Fatalf("last history record %+v", last)
	}
	t.Logf("history: %s", last.Reason)
	for _, cd := range last.Candidates {
		t.Logf("candidate %s: eligible=%v reasons=%v", cd.Name, cd.Eligible, cd.Reasons)
		if cd.Name == newLeader.Name && !cd.Eligible {
			t.Fatalf("the history says the new leader %s was not eligible: %+v", cd.Name, cd)
		}
	}
}
