package mysql_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/backends/mysql"
	"github.com/stewardha/steward/backends/mysql/mytest"
)

// Bootstrap of an initialized, stopped server; clone of an empty one;
// replication with GTID; what Observe reports on both.
func TestBootstrapCloneReplicate(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := newMember(t, dir, "p", 1)
	if st := observe(t, p); st.State != backends.StateStopped {
		t.Fatalf("before bootstrap: %s", statusString(st))
	}
	t0 := time.Now()
	id, err := p.b.Bootstrap(tctx(t, 60*time.Second))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	t.Logf("MEASURED bootstrap (start + setup): %v", time.Since(t0).Round(time.Millisecond))
	if !strings.HasPrefix(id, "1-") {
		t.Errorf("system id %q", id)
	}
	st := observe(t, p)
	if st.State != backends.StateRunning || !st.Writable || st.InRecovery || st.SystemID != id || st.Position.GTID == "" || st.Position.LSN == 0 ||
		st.PID == 0 || st.PID != mytest.ServerPID(p.srv.DataDir) || !strings.Contains(st.Version, "MariaDB") {
		t.Fatalf("after bootstrap: %s (system id %q, version %q)", statusString(st), st.SystemID, st.Version)
	}
	if f, ok := p.b.Flavor(); !ok || !f.MariaDB {
		t.Errorf("flavour %+v", f)
	}
	for range 2 {
		if err := p.b.Heartbeat(tctx(t, 5*time.Second), "p"); err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
	}
	if n := mytest.QueryValue(t, p.addr(), "SELECT n FROM steward.heartbeat WHERE member = 'p'"); n != "2" {
		t.Errorf("heartbeat n = %q", n)
	}
	if g := mytest.QueryValue(t, p.addr(), "SELECT COUNT(*) FROM mysql.user WHERE user = ?", mytest.ReplicationUser); g != "1" {
		t.Errorf("replication account: %s", g)
	}
	// Bootstrap again (adoption of its own data) keeps the identifier.
	if id2, err := p.b.Bootstrap(tctx(t, 30*time.Second)); err != nil || id2 != id {
		t.Errorf("second Bootstrap: %q %v", id2, err)
	}
	mytest.Exec(t, p.addr(), "CREATE DATABASE app", "CREATE TABLE app.t (id BIGINT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(255)) ENGINE=InnoDB")
	insertRows(t, p, 100, "before-clone")

	r := newMember(t, dir, "r", 2)
	if err := r.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, p.upPtr()); err != nil {
		t.Fatalf("Start of the empty server: %v", err)
	}
	if st := observe(t, r); st.State != backends.StateUninitialized || !strings.Contains(st.Reason, "empty server") {
		t.Fatalf("empty server: %s", statusString(st))
	}
	t0 = time.Now()
	if err := r.b.Clone(tctx(t, 120*time.Second), p.upstream()); err != nil {
		t.Fatalf("Clone: %v", err)
	}
	t.Logf("MEASURED clone (logical dump of 100 rows + steward schema): %v", time.Since(t0).Round(time.Millisecond))
	// Nothing of the copy is a local transaction: no GTID of server 2.
	if bs := mytest.QueryValue(t, r.addr(), "SELECT @@gtid_binlog_state"); strings.Contains(bs, "-2-") {
		t.Fatalf("the clone wrote local transactions: gtid_binlog_state %s", bs)
	}
	if err := r.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, p.upPtr()); err != nil {
		t.Fatalf("Start replica: %v", err)
	}
	rs := waitStreaming(t, r, p, 20*time.Second)
	if rs.Writable || !rs.InRecovery || rs.SystemID != id || rs.ReceiverState != "streaming" {
		t.Fatalf("replica: %s", statusString(rs))
	}
	if ss := slaveStatus(t, r); ss["Using_Gtid"] != "Slave_Pos" {
		t.Errorf("replication does not use GTID: %v", ss["Using_Gtid"])
	}
	insertRows(t, p, 50, "after-clone")
	_ = p.b.Heartbeat(tctx(t, 5*time.Second), "p")
	waitCaughtUp(t, r, p, 20*time.Second)
	if n := count(t, r, "SELECT COUNT(*) FROM app.t"); n != 150 {
		t.Errorf("replica has %d rows, want 150", n)
	}
	ps, rs := observe(t, p), observe(t, r)
	if lag := r.b.Lag(ps.Position, rs.Replayed); lag != 0 {
		t.Errorf("lag after catch-up %d (%s vs %s)", lag, ps.Position, rs.Replayed)
	}
	if r.b.Compare(rs.Position, ps.Position) != 0 {
		t.Errorf("caught-up replica not equal to the primary: %s vs %s", rs.Position, ps.Position)
	}
	if rs.ReplayTime.IsZero() || time.Since(rs.ReplayTime) > time.Minute {
		t.Errorf("replay time %v", rs.ReplayTime)
	}
	found := false
	for _, rc := range ps.Replicas {
		found = found || rc.Name == "r"
	}
	if !found {
		t.Errorf("the primary does not list r: %+v", ps.Replicas)
	}
	// Observe is cheap enough for every loop.
	for _, m := range []*member{p, r} {
		t0 := time.Now()
		for range 20 {
			if st := observe(t, m); st.State != backends.StateRunning {
				t.Fatalf("%s: %s", m.name, statusString(st))
			}
		}
		t.Logf("MEASURED Observe on %s: %v per call", m.name, (time.Since(t0) / 20).Round(10*time.Microsecond))
	}
	// A replica cannot be cloned into again, nor heartbeat.
	if err := r.b.Clone(tctx(t, 30*time.Second), p.upstream()); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Clone into a used server: %v", err)
	}
	// A heartbeat on a read-only server would be an errant transaction:
	// refused, and nothing written.
	before := mytest.QueryValue(t, r.addr(), "SELECT @@gtid_binlog_state")
	if err := r.b.Heartbeat(tctx(t, 5*time.Second), "r"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("Heartbeat on a replica: %v", err)
	}
	if after := mytest.QueryValue(t, r.addr(), "SELECT @@gtid_binlog_state"); after != before {
		t.Errorf("a refused heartbeat changed the GTID state: %s -> %s", before, after)
	}
	// A fresh clone promoted continues the sequence numbers (its
	// gtid_binlog_state was seeded): the next GTID is 0-2-<max+1>.
	pm, _ := mysql.ParseMariaState(observe(t, p).Position.GTID)
	if err := r.b.Promote(tctx(t, 30*time.Second)); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	insertRows(t, r, 1, "on-promoted-clone")
	pos := mytest.QueryValue(t, r.addr(), "SELECT @@gtid_binlog_pos")
	if want := fmt.Sprintf("0-2-%d", pm.DomainMax(0)+1); pos != want {
		t.Errorf("first transaction of the promoted clone: %s, want %s", pos, want)
	}
}

// The best candidate has received everything but applied little (its
// applier is blocked by a lock on the table it applies to) when the primary
// is killed: Promote applies the whole relay log first; no received
// transaction is lost. The other replica then follows the new primary.
func TestPromoteWithRelayLogBacklog(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	r := cloneMember(t, dir, "r", 2, p)
	o := cloneMember(t, dir, "o", 3, p)
	insertRows(t, p, 10, "base")
	waitCaughtUp(t, r, p, 20*time.Second)

	// Block r's applier: a session holding a write lock on app.t.
	lockDB := mytest.Open(r.addr(), "", "")
	defer lockDB.Close()
	lockConn, err := lockDB.Conn(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer lockConn.Close()
	if _, err := lockConn.ExecContext(tctx(t, 10*time.Second), "LOCK TABLES app.t WRITE"); err != nil {
		t.Fatal(err)
	}
	// 300 single-row transactions and one 100,000-row transaction.
	insertRows(t, p, 300, "backlog")
	mytest.Exec(t, p.addr(), "INSERT INTO app.t (v) SELECT CONCAT('big-', seq) FROM app.seq_1_to_100000")
	insertRows(t, p, 20, "tail")
	want := count(t, p, "SELECT COUNT(*) FROM app.t")
	target := mytest.QueryValue(t, p.addr(), "SELECT @@gtid_binlog_pos")
	waitFor(t, 20*time.Second, "r received everything", func() (bool, string) {
		ss := slaveStatus(t, r)
		return ss["Gtid_IO_Pos"] == target, ss["Gtid_IO_Pos"]
	})
	st := observe(t, r)
	backlog, _ := mysql.TransactionLag(st.Received, st.Replayed)
	if backlog < 300 || !strings.Contains(st.Reason, "relay-log backlog") {
		t.Fatalf("no relay-log backlog to apply (%d transactions): %s", backlog, statusString(st))
	}
	mytest.Kill(p.srv.DataDir)
	t.Logf("primary killed with %d received transactions not applied on r (%d bytes of relay log)", backlog, mysql.Lag(st.Received, st.Replayed))

	// Release the lock a second into the promotion.
	go func() {
		time.Sleep(time.Second)
		_, _ = lockConn.ExecContext(context.Background(), "UNLOCK TABLES")
	}()
	t0 := time.Now()
	if err := r.b.Promote(tctx(t, 60*time.Second)); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	t.Logf("MEASURED promote with a relay-log backlog of %d transactions (100,320 rows; applier blocked for the first 1 s): %v",
		backlog, time.Since(t0).Round(time.Millisecond))
	if n := count(t, r, "SELECT COUNT(*) FROM app.t"); n != want {
		t.Fatalf("the promoted replica has %d rows, the primary had %d: received transactions were lost", n, want)
	}
	t.Logf("MEASURED preserved: all %d received transactions (%d rows) applied before the promotion", backlog, want)
	ps := observe(t, r)
	if !ps.Writable || ps.InRecovery || len(slaveStatus(t, r)) != 0 {
		t.Fatalf("after promote: %s", statusString(ps))
	}
	if e := mysql.Compare(ps.Position, backends.Position{GTID: target}); e < 0 {
		t.Fatalf("new primary %s does not contain the old primary's %s", ps.Position, target)
	}
	insertRows(t, r, 5, "new-primary")

	// The other replica follows the new primary (GTID auto-positioning).
	if err := o.b.Follow(tctx(t, 30*time.Second), r.upPtr()); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	waitStreaming(t, o, r, 20*time.Second)
	waitCaughtUp(t, o, r, 30*time.Second)
	if n, m := count(t, o, "SELECT COUNT(*) FROM app.t"), count(t, r, "SELECT COUNT(*) FROM app.t"); n != m {
		t.Fatalf("follower has %d rows, new primary %d", n, m)
	}
}

// The trap of research §3.2: the candidate's applier was stopped, then its
// IO thread, then the primary died. START SLAVE in GTID mode would discard
// the relay log (321 transactions lost in the verified naive run); Promote
// keeps it by switching to file coordinates. The same holds for a replica
// restarted with the backlog (Start with the dead primary as upstream).
func TestPromoteBothThreadsStopped(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	r := cloneMember(t, dir, "r", 2, p)
	r2 := cloneMember(t, dir, "r2", 3, p)
	insertRows(t, p, 10, "base")
	waitCaughtUp(t, r, p, 20*time.Second)
	waitCaughtUp(t, r2, p, 20*time.Second)
	for _, m := range []*member{r, r2} {
		mytest.Exec(t, m.addr(), "STOP SLAVE SQL_THREAD")
	}
	insertRows(t, p, 300, "backlog")
	mytest.Exec(t, p.addr(), "INSERT INTO app.t (v) SELECT CONCAT('big-', seq) FROM app.seq_1_to_200000")
	insertRows(t, p, 20, "tail")
	want := count(t, p, "SELECT COUNT(*) FROM app.t")
	target := mytest.QueryValue(t, p.addr(), "SELECT @@gtid_binlog_pos")
	for _, m := range []*member{r, r2} {
		waitFor(t, 20*time.Second, m.name+" received everything", func() (bool, string) {
			ss := slaveStatus(t, m)
			return ss["Gtid_IO_Pos"] == target, ss["Gtid_IO_Pos"]
		})
		mytest.Exec(t, m.addr(), "STOP SLAVE IO_THREAD")
	}
	mytest.Kill(p.srv.DataDir)

	// r: promoted straight away.
	t0 := time.Now()
	if err := r.b.Promote(tctx(t, 60*time.Second)); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	if n := count(t, r, "SELECT COUNT(*) FROM app.t"); n != want {
		t.Fatalf("promoted with both threads stopped: %d rows, want %d (the relay log was discarded)", n, want)
	}
	t.Logf("MEASURED promote with both threads stopped and 321 transactions (200,320 rows) in the relay log: %v, all applied", time.Since(t0).Round(time.Millisecond))

	// r2: restarted (skip_slave_start: both threads stopped, Gtid_IO_Pos
	// forgotten), then started as a replica of the dead primary: the relay
	// log is applied before replication restarts.
	if err := r2.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatal(err)
	}
	if err := r2.b.Start(tctx(t, 60*time.Second), backends.RoleReplica, p.upPtr()); err != nil {
		t.Fatalf("Start after restart: %v", err)
	}
	if n := count(t, r2, "SELECT COUNT(*) FROM app.t"); n != want {
		t.Fatalf("restarted replica has %d rows, want %d (the relay log was discarded)", n, want)
	}
	ss := slaveStatus(t, r2)
	if ss["Using_Gtid"] != "Slave_Pos" || ss["Slave_SQL_Running"] != "Yes" {
		t.Fatalf("replication after the relay-log apply: Using_Gtid %s, SQL %s", ss["Using_Gtid"], ss["Slave_SQL_Running"])
	}
	// And it follows the new primary.
	if err := r2.b.Follow(tctx(t, 30*time.Second), r.upPtr()); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, r2, r, 20*time.Second)
}

// A former primary with transactions that never replicated: replication is
// not started, Divergence names the errant GTIDs, Rewind refuses and says
// `steward reinit`; Wipe + Clone bring it back. A clean former primary
// rejoins directly.
func TestErrantTransactionsAndReinit(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	r := cloneMember(t, dir, "r", 2, p)
	c := cloneMember(t, dir, "c", 3, p)
	insertRows(t, p, 10, "base")
	waitCaughtUp(t, r, p, 20*time.Second)
	waitCaughtUp(t, c, p, 20*time.Second)

	// c: a clean former primary (simulated: promoted, nothing written,
	// demoted by read_only) rejoins r.
	// p: commits 3 transactions r never receives, then dies.
	mytest.Exec(t, r.addr(), "STOP SLAVE IO_THREAD")
	mytest.Exec(t, c.addr(), "STOP SLAVE IO_THREAD")
	insertRows(t, p, 3, "errant")
	mytest.Kill(p.srv.DataDir)
	if err := r.b.Promote(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	insertRows(t, r, 2, "new-primary")

	// The old primary restarts as a replica of r.
	if err := p.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, r.upPtr()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	st := observe(t, p)
	if st.Streaming || st.Upstream != r.addr() || !contains(st.Reason, "replication not started", "errant transactions", "0-1-") {
		t.Fatalf("old primary with errant transactions: %s", statusString(st))
	}
	if ss := slaveStatus(t, p); ss["Slave_IO_Running"] == "Yes" || ss["Slave_SQL_Running"] == "Yes" {
		t.Fatal("replication started despite errant transactions")
	}
	d, err := p.b.Divergence(tctx(t, 10*time.Second), r.upstream())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("divergence: %s", d.Reason)
	pm, _ := mysql.ParseMariaState(d.LocalPosition.GTID)
	last := pm.DomainMax(0)
	wantErrant := fmt.Sprintf("0-1-%d..0-1-%d", last-2, last)
	if !d.Diverged || !contains(d.Reason, wantErrant, "steward reinit p") {
		t.Fatalf("divergence: %+v (want errant %s)", d, wantErrant)
	}
	if err := p.b.Rewind(tctx(t, 5*time.Second), r.upstream()); err == nil || !contains(err.Error(), wantErrant, "steward reinit p") {
		t.Fatalf("Rewind: %v", err)
	}
	// c is clean: it follows r.
	if d, err := c.b.Divergence(tctx(t, 10*time.Second), r.upstream()); err != nil || d.Diverged {
		t.Fatalf("clean member diverged: %+v %v", d, err)
	}
	if err := c.b.Follow(tctx(t, 30*time.Second), r.upPtr()); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, c, r, 20*time.Second)

	// reinit: stop, wipe, clone, start.
	if err := p.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatal(err)
	}
	if err := p.b.Wipe(tctx(t, 60*time.Second)); err != nil {
		t.Fatalf("Wipe: %v", err)
	}
	if st := observe(t, p); st.State != backends.StateUninitialized {
		t.Fatalf("after wipe: %s", statusString(st))
	}
	if err := p.b.Clone(tctx(t, 120*time.Second), r.upstream()); err != nil {
		t.Fatalf("Clone: %v", err)
	}
	if err := p.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, r.upPtr()); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, r, 20*time.Second)
	waitCaughtUp(t, p, r, 20*time.Second)
	if n := count(t, p, "SELECT COUNT(*) FROM app.t WHERE v = 'errant'"); n != 0 {
		t.Fatalf("re-cloned member still has %d errant rows", n)
	}
	if n, m := count(t, p, "SELECT COUNT(*) FROM app.t"), count(t, r, "SELECT COUNT(*) FROM app.t"); n != m {
		t.Fatalf("re-cloned member has %d rows, primary %d", n, m)
	}
	if d, err := p.b.Divergence(tctx(t, 10*time.Second), r.upstream()); err != nil || d.Diverged {
		t.Fatalf("after reinit: %+v %v", d, err)
	}
}

// FenceWrites under a write load: read_only on and every application
// session ended over SQL; no write is acknowledged after it returned. When
// the server does not answer (SIGSTOP), it is killed.
func TestFenceUnderLoad(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	var acked atomic.Int64
	var lastAck atomic.Int64 // unix nanos of the last acknowledged write
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := mytest.Open(p.addr(), mytest.AppUser, mytest.AppPassword)
			defer db.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := db.ExecContext(ctx, "INSERT INTO app.t (v) VALUES (?)", fmt.Sprint("w", w))
				cancel()
				if err == nil {
					acked.Add(1)
					lastAck.Store(time.Now().UnixNano())
				} else {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, "writes acknowledged", func() (bool, string) { return acked.Load() > 200, fmt.Sprint(acked.Load()) })
	t0 := time.Now()
	if err := p.b.FenceWrites(tctx(t, 10*time.Second)); err != nil {
		t.Fatalf("FenceWrites: %v", err)
	}
	fenced := time.Now()
	t.Logf("MEASURED FenceWrites (SQL) under 4 writers: %v", fenced.Sub(t0).Round(time.Millisecond))
	rows := count(t, p, "SELECT COUNT(*) FROM app.t")
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if last := time.Unix(0, lastAck.Load()); last.After(fenced) {
		t.Fatalf("a write was acknowledged %v after FenceWrites returned", last.Sub(fenced))
	}
	if n := count(t, p, "SELECT COUNT(*) FROM app.t"); n != rows {
		t.Fatalf("rows grew from %d to %d after fencing", rows, n)
	}
	st := observe(t, p)
	if st.Writable || st.State != backends.StateRunning {
		t.Fatalf("after fencing: %s", statusString(st))
	}
	t.Logf("%d writes acknowledged before the fence, none after", acked.Load())

	// A server that does not answer is killed.
	pid := mytest.ServerPID(p.srv.DataDir)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if err := p.b.FenceWrites(tctx(t, 10*time.Second)); err != nil {
		_ = syscall.Kill(pid, syscall.SIGCONT)
		t.Fatalf("FenceWrites of a frozen server: %v", err)
	}
	t.Logf("MEASURED FenceWrites of a frozen (SIGSTOPped) server: %v (SIGKILL)", time.Since(t0).Round(time.Millisecond))
	if mytest.ServerPID(p.srv.DataDir) != 0 {
		t.Fatal("the frozen server still runs")
	}
	if st := observe(t, p); st.State != backends.StateCrashed {
		t.Fatalf("after the kill: %s", statusString(st))
	}
	// Nothing runs: fencing again is a no-op.
	if err := p.b.FenceWrites(tctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// States: stopped, crashed (kill -9), started again; Start(RolePrimary)
// makes it writable; StopImmediate kills; an empty data directory is
// uninitialized; FencePeer fences another server through SQL.
func TestStatesAndFencePeer(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	insertRows(t, p, 3, "x")
	running := observe(t, p).Position
	if err := p.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatal(err)
	}
	// A cleanly stopped server reports where its history ends (what a
	// switchover hands over at).
	if st := observe(t, p); st.State != backends.StateStopped || st.Position.GTID != running.GTID || st.Position.LSN == 0 {
		t.Fatalf("after a fast stop: %s (running at %s)", statusString(st), running)
	}
	if err := p.b.Stop(tctx(t, 5*time.Second), backends.StopFast); err != nil {
		t.Fatalf("stopping a stopped server: %v", err)
	}
	if err := p.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, nil); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, p); st.State != backends.StateRunning || st.Writable {
		t.Fatalf("started read-only: %s", statusString(st))
	}
	mytest.Kill(p.srv.DataDir)
	if st := observe(t, p); st.State != backends.StateCrashed || !st.Position.IsZero() {
		t.Fatalf("after kill -9: %s", statusString(st))
	}
	if err := p.b.Start(tctx(t, 30*time.Second), backends.RolePrimary, nil); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, p); st.State != backends.StateRunning || !st.Writable {
		t.Fatalf("restarted as primary: %s", statusString(st))
	}
	// Another member fences p through SQL.
	q := newMember(t, dir, "q", 2)
	if err := q.b.FencePeer(tctx(t, 5*time.Second), p.upstream()); err != nil {
		t.Fatalf("FencePeer: %v", err)
	}
	if st := observe(t, p); st.Writable {
		t.Fatalf("after FencePeer: %s", statusString(st))
	}
	if err := p.b.Stop(tctx(t, 10*time.Second), backends.StopImmediate); err != nil {
		t.Fatal(err)
	}
	if mytest.ServerPID(p.srv.DataDir) != 0 {
		t.Fatal("StopImmediate left the server running")
	}
	// An empty data directory.
	e := newMember(t, dir, "e", 3)
	if err := os.RemoveAll(e.srv.DataDir); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, e); st.State != backends.StateUninitialized || !strings.Contains(st.Reason, "mariadb-install-db") {
		t.Fatalf("missing data directory: %s", statusString(st))
	}
	// Wipe refuses data steward did not create (no steward.cluster).
	w := newMember(t, dir, "w", 4)
	if err := w.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, nil); err != nil {
		t.Fatal(err)
	}
	mytest.Exec(t, w.addr(), "SET SESSION sql_log_bin = 0", "CREATE DATABASE precious")
	if st := observe(t, w); st.State != backends.StateUninitialized || !strings.Contains(st.Reason, "precious") {
		t.Fatalf("unmanaged server with data: %s", statusString(st))
	}
	if err := w.b.Wipe(tctx(t, 30*time.Second)); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("Wipe of data steward did not create: %v", err)
	}
	if n := mytest.QueryValue(t, w.addr(), "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'precious'"); n != "1" {
		t.Fatal("Wipe dropped a database steward did not create")
	}
}

// A switchover with the backend's pieces, under a write load: Demote the
// primary in place (read-only, sessions ended), read its final position,
// WaitApplied on the candidate, Promote it, point the old primary at it.
// No acknowledged write is lost; the write pause is measured.
func TestSwitchoverPiecesUnderLoad(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	r := cloneMember(t, dir, "r", 2, p)
	var mu sync.Mutex
	var acked []int64
	var lastOld, firstNew time.Time
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		dbs := map[*member]*sqlDB{p: openApp(p), r: openApp(r)}
		defer dbs[p].Close()
		defer dbs[r].Close()
		for id := int64(1); ; id++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for _, m := range []*member{p, r} {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				_, err := dbs[m].ExecContext(ctx, "INSERT INTO app.t (id, v) VALUES (?, ?)", 1_000_000+id, m.name)
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, 1_000_000+id)
					if m == p {
						lastOld = time.Now()
					} else if firstNew.IsZero() {
						firstNew = time.Now()
					}
					mu.Unlock()
					break
				}
			}
		}
	}()
	waitFor(t, 10*time.Second, "writes", func() (bool, string) { mu.Lock(); defer mu.Unlock(); return len(acked) > 100, "" })
	t0 := time.Now()
	if err := p.b.Demote(tctx(t, 10*time.Second), nil); err != nil {
		t.Fatalf("Demote: %v", err)
	}
	final := observe(t, p).Position
	if err := r.b.WaitApplied(tctx(t, 10*time.Second), final); err != nil {
		t.Fatalf("WaitApplied: %v", err)
	}
	if err := r.b.Promote(tctx(t, 10*time.Second)); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	t.Logf("MEASURED switchover steps (demote in place, wait for the candidate, promote): %v", time.Since(t0).Round(time.Millisecond))
	if err := p.b.Follow(tctx(t, 10*time.Second), r.upPtr()); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	waitStreaming(t, p, r, 10*time.Second)
	waitFor(t, 10*time.Second, "writes on the new primary", func() (bool, string) { mu.Lock(); defer mu.Unlock(); return !firstNew.IsZero(), "" })
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	t.Logf("MEASURED write pause during the switchover: %v (last write on the old primary -> first on the new)", firstNew.Sub(lastOld).Round(time.Millisecond))
	present := map[int64]bool{}
	for _, row := range mytest.Query(t, r.addr(), "SELECT id FROM app.t WHERE id > 1000000") {
		present[int64(mustAtoi(t, row["id"]))] = true
	}
	for _, id := range acked {
		if !present[id] {
			t.Fatalf("acknowledged write %d lost in the switchover", id)
		}
	}
	t.Logf("all %d acknowledged writes present on the new primary", len(acked))
	if d, err := p.b.Divergence(tctx(t, 10*time.Second), r.upstream()); err != nil || d.Diverged {
		t.Fatalf("old primary after the switchover: %+v %v", d, err)
	}
}

// Start with too little time for the server to accept connections (crash
// recovery on a big server): it returns once the process runs and sets the
// role when the server answers — the replica streams without another call.
func TestSlowStartFinishesRole(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	r := cloneMember(t, dir, "r", 2, p)
	mytest.Kill(r.srv.DataDir) // both threads stopped after the restart (skip_slave_start)
	insertRows(t, p, 20, "while-down")
	if err := r.b.Start(tctx(t, 40*time.Millisecond), backends.RoleReplica, p.upPtr()); err != nil {
		t.Fatalf("Start with a short deadline: %v", err)
	}
	waitStreaming(t, r, p, 30*time.Second)
	waitCaughtUp(t, r, p, 20*time.Second)
	if n, m := count(t, r, "SELECT COUNT(*) FROM app.t"), count(t, p, "SELECT COUNT(*) FROM app.t"); n != m {
		t.Fatalf("replica %d rows, primary %d", n, m)
	}
}

// A replica killed while it wrote its replication configuration comes back
// with a master.info MariaDB cannot read ("Error reading master
// configuration"), and every CHANGE MASTER then fails with error 1201 (the
// fault-injection suite found a fenced former primary stuck like this).
// Pointing it at an upstream resets the unreadable configuration and
// replicates.
func TestUnreadableReplicationConfigIsReset(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	r := cloneMember(t, dir, "r", 2, p)
	insertRows(t, p, 10, "before")
	waitCaughtUp(t, r, p, 20*time.Second)
	mytest.Kill(r.srv.DataDir)
	if err := os.WriteFile(filepath.Join(r.srv.DataDir, "master.info"), []byte("x\n"), 0o660); err != nil {
		t.Fatal(err)
	}
	insertRows(t, p, 10, "after")
	if err := r.b.Start(tctx(t, 60*time.Second), backends.RoleReplica, p.upPtr()); err != nil {
		t.Fatalf("Start as a replica with an unreadable master.info: %v", err)
	}
	waitStreaming(t, r, p, 30*time.Second)
	waitCaughtUp(t, r, p, 20*time.Second)
	if n, want := count(t, r, "SELECT COUNT(*) FROM app.t"), count(t, p, "SELECT COUNT(*) FROM app.t"); n != want {
		t.Fatalf("replica has %d rows, the primary %d", n, want)
	}
}

// A replica killed (kill -9) with a relay-log backlog, its applier running
// (blocked by a table lock), restarts as a replica of the same primary:
// the relay log is applied from where the applier was, then replication
// restarts in GTID mode; every row arrives once.
func TestReplicaCrashWithRelayBacklog(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	r := cloneMember(t, dir, "r", 2, p)
	insertRows(t, p, 300, "before")
	waitCaughtUp(t, r, p, 30*time.Second)
	// A relay-log backlog at the crash, the applier still running (blocked
	// by a table lock), so that the restart applies the relay log from the
	// position relay-log.info holds.
	db := mytest.Open(r.addr(), "", "")
	defer db.Close()
	lock, err := db.Conn(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(tctx(t, 10*time.Second), "LOCK TABLES app.t WRITE"); err != nil {
		t.Fatal(err)
	}
	insertRows(t, p, 50, "received")
	target := mytest.QueryValue(t, p.addr(), "SELECT @@gtid_binlog_pos")
	waitFor(t, 20*time.Second, "r received everything", func() (bool, string) {
		ss := slaveStatus(t, r)
		return ss["Gtid_IO_Pos"] == target, ss["Gtid_IO_Pos"]
	})
	mytest.Kill(r.srv.DataDir)
	insertRows(t, p, 10, "after")
	if err := r.b.Start(tctx(t, 60*time.Second), backends.RoleReplica, p.upPtr()); err != nil {
		t.Fatalf("Start as a replica after a crash: %v", err)
	}
	waitStreaming(t, r, p, 30*time.Second)
	waitCaughtUp(t, r, p, 30*time.Second)
	if n, want := count(t, r, "SELECT COUNT(*) FROM app.t"), count(t, p, "SELECT COUNT(*) FROM app.t"); n != want {
		t.Fatalf("replica has %d rows, the primary %d", n, want)
	}
	if ss := slaveStatus(t, r); ss["Slave_SQL_Running"] != "Yes" || ss["Using_Gtid"] != "Slave_Pos" {
		t.Fatalf("replication after the restart: SQL %s, Using_Gtid %s, %s", ss["Slave_SQL_Running"], ss["Using_Gtid"], ss["Last_SQL_Error"])
	}
}
