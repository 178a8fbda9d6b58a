package mysql_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/backends/mysql"
	"github.com/stewardha/steward/backends/mysql/mytest"
)

// insertWithin commits one row on m and reports whether the commit was
// acknowledged within d.
func insertWithin(t *testing.T, m *member, d time.Duration) (bool, time.Duration) {
	t.Helper()
	db := mytest.Open(m.addr(), mytest.User, mytest.Password)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	t0 := time.Now()
	_, err := db.ExecContext(ctx, "INSERT INTO app.t (v) VALUES ('semi-sync')")
	return err == nil, time.Since(t0)
}

// Semi-synchronous replication on real MariaDB servers, as the agent drives
// it: the primary waits for one acknowledgement and never falls back on its
// own; only a replica whose flag its agent turned on acknowledges, and
// turning it off takes effect at once; the heartbeat never waits; the
// decision survives a crash of the primary.
func TestSemiSyncAcknowledgements(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	r1 := cloneMember(t, dir, "r1", 2, p)
	r2 := cloneMember(t, dir, "r2", 3, p)
	if why := p.b.SyncUnsupported(); why != "" {
		t.Fatalf("MariaDB: SyncUnsupported = %q", why)
	}
	if ok, _ := insertWithin(t, p, 2*time.Second); !ok {
		t.Fatal("asynchronous commit not acknowledged")
	}

	cfg := backends.SyncConfig{Method: backends.SyncAny, Num: 1, Names: []string{"r1"}}
	pos, err := p.b.SetSync(tctx(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatalf("SetSync(%s): %v", cfg, err)
	}
	if pos.IsZero() {
		t.Fatal("SetSync returned no position")
	}
	// No replica acknowledges yet: a commit waits, past MariaDB's default
	// 10 s fallback too would take long to show; 1.5 s shows it waits.
	if ok, d := insertWithin(t, p, 1500*time.Millisecond); ok {
		t.Fatalf("a commit was acknowledged after %v with no acknowledger connected", d)
	}
	st := observe(t, p)
	if st.SemiSync == nil || !st.SemiSync.MasterEnabled || st.SemiSync.WaitSessions < 1 {
		t.Fatalf("primary's semi-sync state while a commit waits: %+v", st.SemiSync)
	}
	// The heartbeat proves the server commits; it must not wait for a
	// standby.
	t0 := time.Now()
	if err := p.b.Heartbeat(tctx(t, 5*time.Second), "p"); err != nil {
		t.Fatalf("heartbeat while commits wait for an acknowledgement: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("heartbeat took %v while commits wait", d)
	}

	// ReleaseWaiters ends the wait only for a position holding everything
	// the primary wrote (here r1's, an asynchronous replica that received
	// the waiting commits).
	if n, err := p.b.ReleaseWaiters(tctx(t, 5*time.Second), backends.Position{GTID: "0-1-1"}); err != nil || n != 0 {
		t.Fatalf("ReleaseWaiters with a position that lacks the waiting commits released %d (%v)", n, err)
	}
	if st := observe(t, p); st.SemiSync == nil || st.SemiSync.WaitSessions < 1 {
		t.Fatalf("a refused ReleaseWaiters released the waiting commits: %+v", st.SemiSync)
	}
	waitFor(t, 10*time.Second, "the waiting commits released once r1 holds them", func() (bool, string) {
		held := observe(t, r1).Received
		n, err := p.b.ReleaseWaiters(tctx(t, 5*time.Second), held)
		return err == nil && n > 0, fmt.Sprintf("released %d (%v), r1 received %s", n, err, held)
	})
	// Released is not asynchronous: the next commit waits again.
	if ok, d := insertWithin(t, p, 1500*time.Millisecond); ok {
		t.Fatalf("a new commit was acknowledged after %v with still no acknowledger", d)
	}

	// r1 becomes an acknowledger: commits go through.
	ss, err := r1.b.SetAcknowledger(tctx(t, 10*time.Second), true)
	if err != nil || ss == nil || !ss.SlaveEnabled || !ss.SlaveActive {
		t.Fatalf("SetAcknowledger(r1, on) = %+v, %v", ss, err)
	}
	// The commits waiting since before r1 acknowledged may never be
	// acknowledged (r1 received them as an asynchronous replica): the
	// agent releases them once r1 holds them (ReleaseWaiters, tested
	// above). Commits then go through.
	waitFor(t, 10*time.Second, "a commit acknowledged with r1 acknowledging", func() (bool, string) {
		if ok, _ := insertWithin(t, p, time.Second); ok {
			return true, ""
		}
		n, err := p.b.ReleaseWaiters(tctx(t, 5*time.Second), observe(t, r1).Received)
		return false, fmt.Sprintf("not acknowledged; released %d stuck commits (%v)", n, err)
	})
	waitFor(t, 5*time.Second, "the primary counts one acknowledger, nothing waits", func() (bool, string) {
		st := observe(t, p)
		return st.SemiSync != nil && st.SemiSync.Clients == 1 && st.SemiSync.WaitSessions == 0, statusString(st)
	})
	if rs := observe(t, r1); rs.SemiSync == nil || !rs.SemiSync.SlaveActive || !rs.Streaming {
		t.Fatalf("r1 after SetAcknowledger: semi_sync %+v streaming %v", rs.SemiSync, rs.Streaming)
	}
	if rs := observe(t, r2); rs.SemiSync == nil || rs.SemiSync.SlaveEnabled || rs.SemiSync.SlaveActive {
		t.Fatalf("r2 was never made an acknowledger but reports %+v", rs.SemiSync)
	}

	// Off takes effect at once (the IO thread reconnects; without that,
	// MariaDB keeps acknowledging): commits wait again, and r1 still
	// replicates.
	ss, err = r1.b.SetAcknowledger(tctx(t, 10*time.Second), false)
	if err != nil || ss == nil || ss.SlaveEnabled || ss.SlaveActive {
		t.Fatalf("SetAcknowledger(r1, off) = %+v, %v", ss, err)
	}
	if ok, d := insertWithin(t, p, 1500*time.Millisecond); ok {
		t.Fatalf("a commit was acknowledged after %v although r1 stopped acknowledging", d)
	}
	waitStreaming(t, r1, p, 10*time.Second)

	// Asynchronous again: the waiting commits are released.
	if _, err := p.b.SetSync(tctx(t, 10*time.Second), backends.SyncConfig{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "no commit waits after SetSync(async)", func() (bool, string) {
		st := observe(t, p)
		return st.SemiSync != nil && !st.SemiSync.MasterEnabled && st.SemiSync.WaitSessions == 0, statusString(st)
	})
	if ok, d := insertWithin(t, p, 2*time.Second); !ok {
		t.Fatalf("asynchronous commit not acknowledged (%v)", d)
	}
	waitCaughtUp(t, r1, p, 20*time.Second)
	waitCaughtUp(t, r2, p, 20*time.Second)

	// The decision survives a crash: the primary restarted by Start waits
	// for an acknowledgement before it accepts a write.
	if _, err := p.b.SetSync(tctx(t, 10*time.Second), cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := r1.b.SetAcknowledger(tctx(t, 10*time.Second), true); err != nil {
		t.Fatal(err)
	}
	mytest.Kill(p.srv.DataDir)
	p.b.Close()
	nb, err := mysql.New(p.opts) // a new agent process: nothing in memory
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nb.Close() })
	restarted := &member{name: "p", opts: p.opts, srv: p.srv, b: nb}
	if err := restarted.b.Start(tctx(t, 60*time.Second), backends.RolePrimary, nil); err != nil {
		t.Fatalf("restart of the primary: %v", err)
	}
	st = observe(t, restarted)
	if !st.Writable || st.SemiSync == nil || !st.SemiSync.MasterEnabled {
		t.Fatalf("restarted primary: writable %v semi_sync %+v: it must wait for an acknowledgement again before it takes writes", st.Writable, st.SemiSync)
	}
}

// Fencing a semi-synchronous primary whose commits wait for an
// acknowledgement (its acknowledger died): the waiting client receives an
// error, never OK — its commit is on no replica, and OK would be a lie the
// failover then makes true data loss.
func TestFenceWritesNeverAcknowledgesAWaitingCommit(t *testing.T) {
	t.Parallel()
	dir := mytest.Dir(t)
	p := bootstrapMember(t, dir, "p", 1)
	_ = cloneMember(t, dir, "r", 2, p)
	if _, err := p.b.SetSync(tctx(t, 10*time.Second), backends.SyncConfig{Method: backends.SyncAny, Num: 1, Names: []string{"r"}}); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		db := mytest.Open(p.addr(), mytest.AppUser, mytest.AppPassword)
		defer db.Close()
		_, err := db.ExecContext(context.Background(), "INSERT INTO app.t (v) VALUES ('waits')")
		res <- err
	}()
	waitFor(t, 5*time.Second, "a commit waits for an acknowledgement", func() (bool, string) {
		st := observe(t, p)
		return st.SemiSync != nil && st.SemiSync.WaitSessions > 0, statusString(st)
	})
	if err := p.b.FenceWrites(tctx(t, 10*time.Second)); err != nil {
		t.Fatalf("FenceWrites: %v", err)
	}
	select {
	case err := <-res:
		if err == nil {
			t.Fatal("the client of a commit no replica acknowledged received OK when the primary was fenced")
		}
		t.Logf("the waiting client received: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting client got no answer within 10s of the fence")
	}
}
