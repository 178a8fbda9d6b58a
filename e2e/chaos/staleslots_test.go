package chaos

import (
	"context"
	"testing"
	"time"
)

// Reproduces a bug the chaos suite found (docs/reliability.md): a former
// primary that rejoins as a replica keeps the physical replication slots
// it created for its peers while it led. Nobody streams from a replica, so
// those slots never advance, and the replica keeps every WAL segment from
// its demotion on: its WAL disk fills after enough WAL (or, with little
// traffic, enough failovers, each leaving a copy of the current segment).
//
// Fixed: a streaming replica drops the member slots it kept
// (agent replicaChores, postgres DropMemberSlots). This stays as the
// regression test, in the lab where the bug was found.
func TestFormerPrimaryKeepsNoSlots(t *testing.T) {
	s := DefaultSettings()
	log := testLogger(t)
	c, err := NewCluster(s, binaryPath, runDir(t, "staleslots"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	leader, err := c.WaitHealthy(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	old := c.Member(leader)
	old.KillAgent()
	old.KillPostgres()
	if err := waitFor(3*s.TTL+20*time.Second, func() bool {
		cl := c.Load()
		return cl != nil && cl.Leader != nil && cl.Leader.Name != leader
	}); err != nil {
		t.Fatalf("no failover after %s crashed: %v", leader, err)
	}
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	newLeader, err := c.WaitHealthy(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The cluster moves on: a few WAL segments' worth of switches.
	nl := c.Member(newLeader)
	for i := 0; i < 5; i++ {
		if err := nl.Exec("SELECT pg_switch_wal()"); err != nil {
			t.Fatal(err)
		}
		_ = nl.Exec("SELECT txid_current()")
	}
	time.Sleep(2 * time.Second)
	var slots int64
	var pinned string
	q := `SELECT count(*), coalesce(pg_size_pretty(max(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), restart_lsn))), '-')
		FROM pg_replication_slots WHERE NOT active`
	if err := old.Query(context.Background(), q, &slots, &pinned); err != nil {
		t.Fatal(err)
	}
	out, _ := c.Steward("list")
	t.Logf("steward list:\n%s", out)
	if slots > 0 {
		t.Fatalf("%s, now a replica of %s, keeps %d inactive replication slot(s) from when it led; the oldest pins %s of WAL and grows with every segment the cluster writes",
			old.Name, newLeader, slots, pinned)
	}
	t.Logf("%s keeps no inactive slot", old.Name)
}
