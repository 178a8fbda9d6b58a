package postgres_test

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/backends/postgres"
	"github.com/stewardha/steward/backends/postgres/pgtest"
)

func TestBootstrapPrimary(t *testing.T) {
	t.Parallel()
	m := newMember(t, "db1")
	if st := observe(t, m); st.State != backends.StateUninitialized {
		t.Fatalf("before bootstrap: %s", statusString(st))
	}
	t0 := time.Now()
	id, err := m.b.Bootstrap(tctx(t, 120*time.Second))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	t.Logf("MEASURED bootstrap (initdb + start + setup): %v", time.Since(t0).Round(time.Millisecond))
	if id == "" {
		t.Fatal("Bootstrap returned no system identifier")
	}
	st := observe(t, m)
	if st.State != backends.StateRunning || !st.Writable || st.InRecovery || st.Timeline != 1 || st.Position.IsZero() {
		t.Fatalf("after bootstrap: %s", statusString(st))
	}
	if st.SystemID != id || st.Version == "" || st.PID == 0 || st.PID != postgres.RunningPID(m.opts.DataDir) {
		t.Fatalf("system id %q (want %q), version %q, pid %d", st.SystemID, id, st.Version, st.PID)
	}
	for range 2 {
		if err := m.b.Heartbeat(tctx(t, 5*time.Second), "db1"); err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
	}
	if n := pgtest.QueryValue(t, m.addr(), `SELECT n FROM steward.heartbeat WHERE member = 'db1'`); n != "2" {
		t.Fatalf("heartbeat n = %q, want 2", n)
	}
	// The replication role exists and can log in for replication.
	if v := pgtest.QueryValue(t, m.addr(), `SELECT rolreplication FROM pg_roles WHERE rolname = $1`, pgtest.ReplicationUser); v != "true" {
		t.Fatalf("replication role: rolreplication = %q", v)
	}
	// Files belong to the run-as user, the data directory is private.
	fi, err := os.Stat(m.opts.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
	}
	for _, f := range []string{"postgresql.conf", "pg_hba.conf"} {
		fi, err := os.Stat(filepath.Join(m.opts.DataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
		if m.opts.RunAs != "" {
			u, _ := user.Lookup(m.opts.RunAs)
			if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != u.Uid {
				t.Errorf("%s owned by uid %s, want %s (%s)", f, uid, u.Uid, m.opts.RunAs)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(m.opts.DataDir, "standby.signal")); !os.IsNotExist(err) {
		t.Errorf("a primary has standby.signal (%v)", err)
	}
	// A second bootstrap must refuse the non-empty data directory.
	if _, err := m.b.Bootstrap(tctx(t, 10*time.Second)); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("second Bootstrap: %v, want a not-empty error", err)
	}
	// Start refuses a running server.
	if err := m.b.Start(tctx(t, 10*time.Second), backends.RolePrimary, nil); err == nil || !strings.Contains(err.Error(), "already runs") {
		t.Errorf("Start of a running server: %v", err)
	}
	// Slots: none for ourselves, one per other member, idempotent.
	for range 2 {
		if err := m.b.EnsureSlots(tctx(t, 5*time.Second), []string{"db1", "Other-Member"}); err != nil {
			t.Fatalf("EnsureSlots: %v", err)
		}
	}
	if got := pgtest.QueryValue(t, m.addr(), `SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots`); got != "other_member" {
		t.Errorf("slots %q, want other_member", got)
	}
}

func TestCloneStreamAndSlots(t *testing.T) {
	t.Parallel()
	// A password that needs quoting in primary_conninfo and postgresql.conf.
	const pw = `re'p \q"uo'te\`
	setPW := func(o *postgres.Options) { o.Replication.Password = pw }
	p := bootstrapMember(t, "prim", setPW)
	p.b.Heartbeat(tctx(t, 5*time.Second), "prim")
	pgtest.Exec(t, p.addr(), `CREATE TABLE t (id int primary key, v text)`)

	r := newMember(t, "Rep-1", setPW)
	if err := p.b.EnsureSlots(tctx(t, 5*time.Second), []string{"prim", "Rep-1"}); err != nil {
		t.Fatalf("EnsureSlots: %v", err)
	}
	if err := r.b.Clone(tctx(t, 120*time.Second), p.upstream()); err != nil {
		t.Fatalf("Clone: %v", err)
	}
	if st := observe(t, r); st.State != backends.StateStopped {
		t.Fatalf("after clone: %s", statusString(st))
	}
	if _, err := os.Stat(filepath.Join(r.opts.DataDir, "standby.signal")); err != nil {
		t.Fatalf("clone left no standby.signal: %v", err)
	}
	t0 := time.Now()
	if err := r.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, p.upPtr()); err != nil {
		t.Fatalf("Start replica: %v", err)
	}
	st := waitStreaming(t, r, p, 10*time.Second)
	t.Logf("MEASURED fresh clone: Start -> streaming %v", time.Since(t0).Round(time.Millisecond))
	if !st.InRecovery || st.Writable || st.Timeline != 1 || st.ReceiverState != "streaming" || st.SystemID != observe(t, p).SystemID {
		t.Fatalf("replica: %s", statusString(st))
	}
	if got := pgtest.QueryValue(t, r.addr(), `SHOW primary_slot_name`); got != "rep_1" {
		t.Errorf("primary_slot_name %q, want rep_1", got)
	}

	// Writes on the primary reach the replica.
	before := st.Position
	pgtest.Exec(t, p.addr(), `INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g`)
	waitCaughtUp(t, r, p, 10*time.Second)
	ps, rs := observe(t, p), observe(t, r)
	if rs.Position.LSN <= before.LSN {
		t.Fatalf("replica position did not advance: %s -> %s", before, rs.Position)
	}
	lag := r.b.Lag(ps.Position, rs.Position)
	t.Logf("MEASURED lag after catch-up: %d bytes", lag)
	if lag < 0 || lag > 1<<20 {
		t.Errorf("lag %d", lag)
	}
	if n := pgtest.QueryValue(t, r.addr(), `SELECT count(*) FROM t`); n != "1000" {
		t.Errorf("replica has %s rows, want 1000", n)
	}
	// The slot exists on the primary and the replica uses it.
	waitFor(t, 5*time.Second, "slot rep_1 active", func() (bool, string) {
		v := pgtest.QueryValue(t, p.addr(), `SELECT active FROM pg_replication_slots WHERE slot_name = 'rep_1'`)
		return v == "true", v
	})
	var found bool
	for _, rc := range ps.Replicas {
		if rc.Name == "Rep-1" && rc.State == "streaming" && !rc.Flushed.IsZero() {
			found = true
		}
	}
	if !found {
		t.Errorf("primary does not list Rep-1 as a streaming replica: %+v", ps.Replicas)
	}
	// Observe is cheap enough for every loop.
	for _, m := range []*member{p, r} {
		t0 := time.Now()
		for range 20 {
			if st := observe(t, m); st.State != backends.StateRunning {
				t.Fatalf("%s: %s", m.name, statusString(st))
			}
		}
		t.Logf("MEASURED Observe on the %s: %v per call", map[bool]string{true: "primary", false: "streaming replica"}[m == p], (time.Since(t0) / 20).Round(10*time.Microsecond))
	}
	// A replica cannot heartbeat nor create slots.
	if err := r.b.Heartbeat(tctx(t, 5*time.Second), "Rep-1"); err == nil {
		t.Error("Heartbeat on a replica succeeded")
	}
	if err := r.b.EnsureSlots(tctx(t, 5*time.Second), []string{"prim"}); err == nil {
		t.Error("EnsureSlots on a replica succeeded")
	}
	// Clone into a non-empty directory is refused.
	if err := r.b.Clone(tctx(t, 10*time.Second), p.upstream()); err == nil {
		t.Error("Clone into a used data directory succeeded")
	}
}

func TestPromoteAndRejoinWithoutRewind(t *testing.T) {
	t.Parallel()
	a := bootstrapMember(t, "a")
	b := cloneMember(t, "b", a)
	pgtest.Exec(t, a.addr(), `CREATE TABLE t (id int)`)
	pgtest.Exec(t, a.addr(), `INSERT INTO t VALUES (1)`)
	// b must have everything a wrote before a stops.
	target := observe(t, a).Position
	waitFor(t, 10*time.Second, "b received everything", func() (bool, string) {
		st := observe(t, b)
		return st.Received.LSN >= target.LSN && st.Replayed.LSN >= target.LSN, statusString(st)
	})
	if err := a.b.Stop(tctx(t, 30*time.Second), backends.StopImmediate); err != nil {
		t.Fatalf("Stop immediate: %v", err)
	}
	if st := observe(t, a); st.State != backends.StateCrashed {
		t.Fatalf("after immediate stop: %s", statusString(st))
	}
	t0 := time.Now()
	if err := b.b.Promote(tctx(t, 30*time.Second)); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	t.Logf("MEASURED promote: %v", time.Since(t0).Round(time.Millisecond))
	st := observe(t, b)
	if st.State != backends.StateRunning || !st.Writable || st.InRecovery || st.Timeline != 2 {
		t.Fatalf("after promote: %s", statusString(st))
	}
	if err := b.b.Heartbeat(tctx(t, 5*time.Second), "b"); err != nil {
		t.Fatalf("Heartbeat on the new primary: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b.opts.DataDir, "standby.signal")); !os.IsNotExist(err) {
		t.Errorf("promoted server still has standby.signal")
	}
	if v := pgtest.QueryValue(t, b.addr(), `SHOW primary_conninfo`); v != "" {
		t.Errorf("promoted server still has primary_conninfo %q", v)
	}
	if err := b.b.EnsureSlots(tctx(t, 5*time.Second), []string{"a", "b"}); err != nil {
		t.Fatalf("EnsureSlots on the new primary: %v", err)
	}

	// The old primary had no WAL the new one lacks: it rejoins as is.
	t0 = time.Now()
	if err := a.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, b.upPtr()); err != nil {
		t.Fatalf("Start old primary as replica: %v", err)
	}
	st = waitStreaming(t, a, b, 10*time.Second)
	took := time.Since(t0)
	t.Logf("MEASURED rejoin of the old primary (crash recovery, slot present): Start -> streaming %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("rejoin took %v, want < 2s", took)
	}
	d, err := a.b.Divergence(tctx(t, 10*time.Second), b.upstream())
	if err != nil {
		t.Fatalf("Divergence: %v", err)
	}
	t.Logf("divergence: %+v", d)
	if d.Diverged || d.UpstreamTimeline != 2 {
		t.Fatalf("Divergence = %+v, want not diverged", d)
	}
	pgtest.Exec(t, b.addr(), `INSERT INTO t VALUES (2)`)
	waitCaughtUp(t, a, b, 10*time.Second)
	if n := pgtest.QueryValue(t, a.addr(), `SELECT count(*) FROM t`); n != "2" {
		t.Errorf("old primary has %s rows, want 2", n)
	}
	waitFor(t, 5*time.Second, "a on timeline 2", func() (bool, string) {
		st := observe(t, a)
		return st.Timeline == 2, statusString(st)
	})
}

// A primary stopped cleanly (fast) whose replica received its shutdown
// checkpoint and was promoted has not diverged — checked while stopped.
func TestDivergenceOfCleanlyStoppedPrimary(t *testing.T) {
	t.Parallel()
	a := bootstrapMember(t, "a")
	b := cloneMember(t, "b", a)
	pgtest.Exec(t, a.addr(), `CREATE TABLE t (id int)`)
	if err := a.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatalf("Stop fast: %v", err)
	}
	if st := observe(t, a); st.State != backends.StateStopped {
		t.Fatalf("after fast stop: %s", statusString(st))
	}
	if err := b.b.Promote(tctx(t, 30*time.Second)); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	d, err := a.b.Divergence(tctx(t, 10*time.Second), b.upstream())
	if err != nil {
		t.Fatalf("Divergence of a stopped primary: %v", err)
	}
	t.Logf("divergence: %+v", d)
	if d.Diverged || d.LocalTimeline != 1 || d.UpstreamTimeline != 2 || d.SwitchPoint != d.LocalPosition {
		t.Fatalf("Divergence = %+v, want not diverged with the switch point at the local end", d)
	}
	if err := b.b.EnsureSlots(tctx(t, 5*time.Second), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := a.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, b.upPtr()); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, a, b, 10*time.Second)
	t.Logf("MEASURED rejoin of a cleanly stopped primary: Start -> streaming %v", time.Since(t0).Round(time.Millisecond))
}

func TestDivergenceAndRewind(t *testing.T) {
	t.Parallel()
	a := bootstrapMember(t, "a")
	b := cloneMember(t, "b", a)
	pgtest.Exec(t, a.addr(), `CREATE TABLE t (id int, v text)`)
	pgtest.Exec(t, a.addr(), `INSERT INTO t VALUES (1, 'common')`)
	waitCaughtUp(t, b, a, 10*time.Second)

	// b stops receiving; a commits rows b never sees; a dies.
	if err := b.b.Follow(tctx(t, 10*time.Second), nil); err != nil {
		t.Fatalf("Follow(nil): %v", err)
	}
	waitFor(t, 10*time.Second, "b's receiver stopped", func() (bool, string) {
		st := observe(t, b)
		return !st.Streaming && st.Upstream == "", statusString(st)
	})
	pgtest.Exec(t, a.addr(), `INSERT INTO t SELECT g, 'extra' FROM generate_series(100, 199) g`)
	if err := a.b.FenceWrites(tctx(t, 10*time.Second)); err != nil {
		t.Fatalf("FenceWrites: %v", err)
	}
	if err := b.b.Promote(tctx(t, 30*time.Second)); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	pgtest.Exec(t, b.addr(), `INSERT INTO t VALUES (2, 'new')`)
	if err := b.b.EnsureSlots(tctx(t, 5*time.Second), []string{"a"}); err != nil {
		t.Fatal(err)
	}

	// a comes back as a replica of b: it cannot stream, and the check says why.
	if err := a.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, b.upPtr()); err != nil {
		t.Fatalf("Start a as replica: %v", err)
	}
	waitRunning(t, a, 30*time.Second)
	var d backends.Divergence
	waitFor(t, 10*time.Second, "divergence detected", func() (bool, string) {
		var err error
		d, err = a.b.Divergence(tctx(t, 10*time.Second), b.upstream())
		if err != nil {
			return false, err.Error()
		}
		return d.Diverged, d.Reason
	})
	t.Logf("divergence (running): %+v", d)
	if d.Discarded <= 0 || d.SwitchPoint.IsZero() || d.LocalTimeline != 1 || d.UpstreamTimeline != 2 ||
		int64(d.LocalPosition.LSN-d.SwitchPoint.LSN) != d.Discarded || !strings.Contains(d.Reason, backends.FormatLSN(d.SwitchPoint.LSN)) {
		t.Fatalf("divergence %+v", d)
	}
	if st := observe(t, a); st.Streaming {
		t.Fatalf("a diverged replica streams: %s", statusString(st))
	} else {
		t.Logf("diverged replica: %s", statusString(st))
	}
	if err := a.b.Rewind(tctx(t, 10*time.Second), b.upstream()); err == nil || !strings.Contains(err.Error(), "runs") {
		t.Fatalf("Rewind of a running server: %v", err)
	}
	if err := a.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatalf("Stop fast: %v", err)
	}
	d2, err := a.b.Divergence(tctx(t, 10*time.Second), b.upstream())
	if err != nil {
		t.Fatalf("Divergence (stopped): %v", err)
	}
	t.Logf("divergence (stopped): %+v", d2)
	if !d2.Diverged {
		t.Fatalf("stopped diverged standby reported as not diverged: %+v", d2)
	}
	t0 := time.Now()
	if err := a.b.Rewind(tctx(t, 120*time.Second), b.upstream()); err != nil {
		t.Fatalf("Rewind: %v", err)
	}
	t.Logf("MEASURED pg_rewind: %v", time.Since(t0).Round(time.Millisecond))
	if st := observe(t, a); st.State != backends.StateStopped {
		t.Fatalf("after rewind: %s", statusString(st))
	}
	if err := a.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, b.upPtr()); err != nil {
		t.Fatalf("Start after rewind: %v", err)
	}
	waitStreaming(t, a, b, 30*time.Second)
	t.Logf("MEASURED rewind + start -> streaming: %v", time.Since(t0).Round(time.Millisecond))
	waitCaughtUp(t, a, b, 10*time.Second)
	if got := pgtest.QueryValue(t, a.addr(), `SELECT string_agg(v, ',' ORDER BY id) FROM t`); got != "common,new" {
		t.Fatalf("rows on the rewound member: %q, want common,new", got)
	}
	d3, err := a.b.Divergence(tctx(t, 10*time.Second), b.upstream())
	if err != nil || d3.Diverged {
		t.Fatalf("after rewind: %+v %v", d3, err)
	}
}

func TestRewindDisabled(t *testing.T) {
	t.Parallel()
	m := newMember(t, "norewind", func(o *postgres.Options) { o.UsePgRewind = false })
	err := m.b.Rewind(tctx(t, 5*time.Second), backends.Upstream{Name: "x", Host: "127.0.0.1", Port: 1})
	if err == nil || !strings.Contains(err.Error(), "postgres.use_pg_rewind") {
		t.Fatalf("Rewind with use_pg_rewind off: %v", err)
	}
}

func TestFenceWrites(t *testing.T) {
	t.Parallel()
	t.Run("write loop and open transaction", func(t *testing.T) {
		t.Parallel()
		m := bootstrapMember(t, "f1")
		pgtest.Exec(t, m.addr(), `CREATE TABLE w (id bigserial, at timestamptz default clock_timestamp())`)
		// A client in the middle of a transaction.
		tx := pgtest.Connect(t, m.addr())
		if _, err := tx.Exec(context.Background(), `BEGIN; INSERT INTO w DEFAULT VALUES`); err != nil {
			t.Fatal(err)
		}
		// A write loop.
		stop := make(chan struct{})
		done := make(chan int)
		c := pgtest.Connect(t, m.addr())
		go func() {
			ok := 0
			for {
				select {
				case <-stop:
					done <- ok
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if _, err := c.Exec(ctx, `INSERT INTO w DEFAULT VALUES`); err == nil {
					ok++
				}
				cancel()
			}
		}()
		time.Sleep(300 * time.Millisecond)
		t0 := time.Now()
		if err := m.b.FenceWrites(tctx(t, 10*time.Second)); err != nil {
			t.Fatalf("FenceWrites: %v", err)
		}
		t.Logf("MEASURED FenceWrites (SIGQUIT path, write loop running): %v", time.Since(t0).Round(time.Millisecond))
		close(stop)
		if n := <-done; n == 0 {
			t.Fatal("the write loop never wrote")
		}
		if pid := postgres.RunningPID(m.opts.DataDir); pid != 0 {
			t.Fatalf("postmaster %d still runs", pid)
		}
		ctx := tctx(t, 3*time.Second)
		if err := pgtest.TryExec(ctx, m.addr(), `INSERT INTO w DEFAULT VALUES`); err == nil {
			t.Fatal("a write succeeded after FenceWrites")
		}
		if _, err := tx.Exec(ctx, `COMMIT`); err == nil {
			t.Fatal("the open transaction committed after FenceWrites")
		}
		if err := m.b.FenceWrites(tctx(t, 10*time.Second)); err != nil {
			t.Fatalf("FenceWrites again: %v", err)
		}
		if st := observe(t, m); st.State != backends.StateCrashed || !strings.Contains(st.Reason, "in production") {
			t.Fatalf("after FenceWrites: %s", statusString(st))
		}
	})
	t.Run("hung postmaster", func(t *testing.T) {
		t.Parallel()
		m := bootstrapMember(t, "f2")
		pgtest.Exec(t, m.addr(), `CREATE TABLE w (id int)`)
		c := pgtest.Connect(t, m.addr()) // its backend keeps running while the postmaster hangs
		pid := postgres.RunningPID(m.opts.DataDir)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
		if _, err := c.Exec(tctx(t, 3*time.Second), `INSERT INTO w VALUES (1)`); err != nil {
			t.Fatalf("write through an existing session while the postmaster hangs: %v", err)
		}
		// A short deadline (the lease timer's) still ends in SIGKILL in time.
		t0 := time.Now()
		if err := m.b.FenceWrites(tctx(t, 1500*time.Millisecond)); err != nil {
			t.Fatalf("FenceWrites: %v", err)
		}
		took := time.Since(t0)
		t.Logf("MEASURED FenceWrites (hung postmaster, SIGKILL path, 1.5s deadline): %v", took.Round(time.Millisecond))
		if took > 1500*time.Millisecond {
			t.Errorf("FenceWrites took %v", took)
		}
		if _, err := c.Exec(tctx(t, 3*time.Second), `INSERT INTO w VALUES (2)`); err == nil {
			t.Fatal("the existing session still writes after FenceWrites")
		}
		if st := observe(t, m); st.State != backends.StateCrashed {
			t.Fatalf("after FenceWrites: %s", statusString(st))
		}
		// The server starts again after a SIGKILL (crash recovery).
		if err := m.b.Start(tctx(t, 30*time.Second), backends.RolePrimary, nil); err != nil {
			t.Fatalf("Start after SIGKILL: %v", err)
		}
		waitRunning(t, m, 30*time.Second)
		if n := pgtest.QueryValue(t, m.addr(), `SELECT count(*) FROM w`); n != "1" {
			t.Errorf("rows after crash recovery: %s, want 1", n)
		}
	})
	t.Run("nothing running", func(t *testing.T) {
		t.Parallel()
		m := newMember(t, "f3")
		if err := m.b.FenceWrites(tctx(t, 5*time.Second)); err != nil {
			t.Fatalf("FenceWrites without a server: %v", err)
		}
	})
}

func TestObserveStates(t *testing.T) {
	t.Parallel()
	m := newMember(t, "obs", func(o *postgres.Options) { o.QueryTimeout = time.Second })
	if st := observe(t, m); st.State != backends.StateUninitialized {
		t.Fatalf("missing dir: %s", statusString(st))
	}
	if err := os.MkdirAll(m.opts.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, m); st.State != backends.StateUninitialized {
		t.Fatalf("empty dir: %s", statusString(st))
	}
	id, err := m.b.Bootstrap(tctx(t, 120*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatal(err)
	}
	st := observe(t, m)
	if st.State != backends.StateStopped || st.SystemID != id {
		t.Fatalf("stopped: %s (system id %q)", statusString(st), st.SystemID)
	}
	if err := m.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatalf("Stop when stopped: %v", err)
	}
	if err := m.b.Follow(tctx(t, 5*time.Second), nil); err == nil {
		t.Error("Follow of a stopped server succeeded")
	}
	if err := m.b.Promote(tctx(t, 5*time.Second)); err == nil {
		t.Error("Promote of a stopped server succeeded")
	}

	// A standby that cannot accept connections (hot_standby off) stays
	// "starting".
	cold := m.opts
	cold.Parameters = map[string]string{"hot_standby": "off"}
	cb, err := postgres.New(cold)
	if err != nil {
		t.Fatal(err)
	}
	if err := cb.Start(tctx(t, 30*time.Second), backends.RoleReplica, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if st := cb.Observe(tctx(t, 5*time.Second)); st.State != backends.StateStarting || st.PID == 0 {
		t.Fatalf("cold standby: %s", statusString(st))
	}
	if err := cb.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatal(err)
	}

	// Start as a primary; right after Start it is starting or running.
	if err := m.b.Start(tctx(t, 30*time.Second), backends.RolePrimary, nil); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, m); st.State != backends.StateStarting && st.State != backends.StateRunning {
		t.Fatalf("just started: %s", statusString(st))
	}
	st = waitRunning(t, m, 30*time.Second)
	if !st.Writable {
		t.Fatalf("primary: %s", statusString(st))
	}

	// All server processes hang: Observe is bounded and says unresponsive.
	pid := postgres.RunningPID(m.opts.DataDir)
	procs := append(childPIDs(pid), pid)
	for _, p := range procs {
		_ = syscall.Kill(p, syscall.SIGSTOP)
	}
	cont := func() {
		for _, p := range procs {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
	}
	t.Cleanup(cont)
	t0 := time.Now()
	st = m.b.Observe(tctx(t, 10*time.Second))
	took := time.Since(t0)
	cont()
	t.Logf("MEASURED Observe of a hung server: %v (query timeout 1s)", took.Round(time.Millisecond))
	if st.State != backends.StateUnresponsive || took > 3*time.Second {
		t.Fatalf("hung server after %v: %s", took, statusString(st))
	}
	waitRunning(t, m, 10*time.Second)

	// Wipe refuses a running server; crashed after FenceWrites; wiped.
	if err := m.b.Wipe(tctx(t, 5*time.Second)); err == nil {
		t.Fatal("Wipe of a running server succeeded")
	}
	if err := m.b.FenceWrites(tctx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, m); st.State != backends.StateCrashed {
		t.Fatalf("after FenceWrites: %s", statusString(st))
	}
	if d, err := m.b.Divergence(tctx(t, 5*time.Second), backends.Upstream{Name: "x", Host: "127.0.0.1", Port: 1}); err == nil {
		t.Fatalf("Divergence of a crashed server: %+v", d)
	}
	if err := m.b.Wipe(tctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, m); st.State != backends.StateUninitialized {
		t.Fatalf("after Wipe: %s", statusString(st))
	}
	if _, err := os.Stat(m.opts.DataDir); err != nil {
		t.Fatalf("Wipe removed the data directory itself: %v", err)
	}
}

func childPIDs(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(data)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
				pid, _ := strconv.Atoi(e.Name())
				out = append(out, pid)
			}
		}
	}
	return out
}

func TestFollowRepoint(t *testing.T) {
	t.Parallel()
	a := bootstrapMember(t, "a")
	b := cloneMember(t, "b", a)
	c := cloneMember(t, "c", a)
	pid := observe(t, c).PID

	// b has no slot for c yet: c cannot stream, and says why.
	if err := c.b.Follow(tctx(t, 10*time.Second), b.upPtr()); err != nil {
		t.Fatalf("Follow(b): %v", err)
	}
	waitFor(t, 10*time.Second, "c explains the missing slot", func() (bool, string) {
		st := observe(t, c)
		return !st.Streaming && st.Upstream == b.addr() && strings.Contains(st.Reason, `replication slot "c" does not exist`), statusString(st)
	})
	// c's slot on b (a standby: EnsureSlots is for primaries).
	t0 := time.Now()
	pgtest.Exec(t, b.addr(), `SELECT pg_create_physical_replication_slot('c', true)`)
	waitStreaming(t, c, b, 10*time.Second)
	t.Logf("MEASURED Follow a -> b: streaming %v after b got c's slot (receiver retries every wal_retrieve_retry_interval = 1s)", time.Since(t0).Round(time.Millisecond))
	pgtest.Exec(t, a.addr(), `CREATE TABLE t (id int)`)
	waitCaughtUp(t, c, a, 10*time.Second)

	t0 = time.Now()
	if err := c.b.Follow(tctx(t, 10*time.Second), a.upPtr()); err != nil {
		t.Fatalf("Follow(a): %v", err)
	}
	waitStreaming(t, c, a, 10*time.Second)
	t.Logf("MEASURED Follow b -> a: streaming after %v", time.Since(t0).Round(time.Millisecond))

	if err := c.b.Follow(tctx(t, 10*time.Second), nil); err != nil {
		t.Fatalf("Follow(nil): %v", err)
	}
	waitFor(t, 10*time.Second, "c follows nobody", func() (bool, string) {
		st := observe(t, c)
		return !st.Streaming && st.Upstream == "" && st.State == backends.StateRunning, statusString(st)
	})
	if got := observe(t, c).PID; got != pid {
		t.Fatalf("postmaster PID changed %d -> %d: Follow restarted the server", pid, got)
	}
	if err := a.b.Follow(tctx(t, 10*time.Second), b.upPtr()); err == nil {
		t.Fatal("Follow on a primary succeeded")
	}
}

// SetSync: once it returns, commits wait for the named standby (none is
// acknowledged while it is away), a waiting commit is released when the
// primary is told to wait for another standby that has it, and the setting
// survives a restart in place by a new Backend (a restarted agent).
func TestSetSyncStandbys(t *testing.T) {
	t.Parallel()
	p := bootstrapMember(t, "sp")
	pgtest.Exec(t, p.addr(), `CREATE TABLE t (id int primary key)`)
	s1 := cloneMember(t, "s-1", p)
	s2 := cloneMember(t, "s2", p)

	want := backends.SyncConfig{Method: backends.SyncFirst, Num: 1, Names: []string{"s-1"}}
	t0 := time.Now()
	flush, err := p.b.SetSync(tctx(t, 10*time.Second), want)
	if err != nil {
		t.Fatalf("SetSync: %v", err)
	}
	t.Logf("MEASURED SetSync (rewrite, reload, in effect everywhere): %v", time.Since(t0).Round(time.Millisecond))
	if flush.IsZero() {
		t.Fatal("SetSync on a primary returned no flushed position")
	}
	st := observe(t, p)
	if !st.Sync.Equal(want) {
		t.Fatalf("the primary reports %s, want %s", st.Sync, want)
	}
	waitFor(t, 5*time.Second, "s-1 synchronous", func() (bool, string) {
		v := pgtest.QueryValue(t, p.addr(), `SELECT sync_state FROM pg_stat_replication WHERE application_name = 's-1'`)
		return v == "sync", v
	})
	pgtest.Exec(t, p.addr(), `INSERT INTO t VALUES (1)`)

	// s-1 goes away: the next commit is not acknowledged.
	if err := s1.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pgtest.TryExec(context.Background(), p.addr(), `INSERT INTO t VALUES (2)`) }()
	select {
	case err := <-done:
		t.Fatalf("a commit was acknowledged with the synchronous standby away (err %v)", err)
	case <-time.After(time.Second):
	}
	// Waiting for s2 instead releases it at once: s2 has it.
	released := time.Now()
	if _, err := p.b.SetSync(tctx(t, 10*time.Second), backends.SyncConfig{Method: backends.SyncFirst, Num: 1, Names: []string{"s2"}}); err != nil {
		t.Fatalf("SetSync s2: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the waiting commit failed: %v", err)
		}
		t.Logf("MEASURED waiting commit released %v after SetSync(s2) began", time.Since(released).Round(time.Millisecond))
		if d := time.Since(released); d > 2*time.Second {
			t.Errorf("the waiting commit was released only %v after the switch to s2", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting commit was not released once s2 is the synchronous standby")
	}
	if n := pgtest.QueryValue(t, s2.addr(), `SELECT count(*) FROM t`); n != "2" {
		t.Fatalf("s2 has %s rows, want 2", n)
	}

	// A restart in place, by a Backend that never called SetSync, keeps it.
	if err := p.b.Stop(tctx(t, 30*time.Second), backends.StopFast); err != nil {
		t.Fatal(err)
	}
	p2 := newMember(t, "sp", func(o *postgres.Options) { *o = p.opts })
	if err := p2.b.Start(tctx(t, 30*time.Second), backends.RolePrimary, nil); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, p2, 30*time.Second)
	if v := pgtest.QueryValue(t, p2.addr(), `SHOW synchronous_standby_names`); v != `FIRST 1 ("s2")` {
		t.Fatalf("after a restart by a new backend: synchronous_standby_names = %q", v)
	}
	// Asynchronous again.
	if _, err := p2.b.SetSync(tctx(t, 10*time.Second), backends.SyncConfig{}); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, p2); !st.Sync.Async() {
		t.Fatalf("after SetSync(async) the primary waits for %s", st.Sync)
	}
}

// A standby drops the slots named after members (those a former primary
// created for its peers) and keeps any other slot; a primary drops nothing.
func TestDropMemberSlotsOnStandby(t *testing.T) {
	t.Parallel()
	p := bootstrapMember(t, "dsp")
	r := cloneMember(t, "dsr", p)
	for _, s := range []string{"m2", "m3", "operator_backup"} {
		pgtest.Exec(t, r.addr(), `SELECT pg_create_physical_replication_slot($1, true)`, s)
	}
	if err := r.b.DropMemberSlots(tctx(t, 10*time.Second), []string{"m2", "m3", "m4", "dsr"}); err != nil {
		t.Fatalf("DropMemberSlots on the standby: %v", err)
	}
	if got := pgtest.QueryValue(t, r.addr(), `SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots`); got != "operator_backup" {
		t.Fatalf("slots left on the standby: %q, want only operator_backup", got)
	}
	before := pgtest.QueryValue(t, p.addr(), `SELECT count(*) FROM pg_replication_slots`)
	if err := p.b.DropMemberSlots(tctx(t, 10*time.Second), []string{"dsr"}); err != nil {
		t.Fatalf("DropMemberSlots on the primary: %v", err)
	}
	if after := pgtest.QueryValue(t, p.addr(), `SELECT count(*) FROM pg_replication_slots`); after != before || before == "0" {
		t.Fatalf("the primary's slots: %s before, %s after (want unchanged, not 0)", before, after)
	}
}
