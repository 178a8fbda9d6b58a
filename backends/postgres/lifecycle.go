package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stewardha/steward/backends"
)

func closePgConn(c *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = c.Close(ctx)
}

// requireEmptyDataDir fails unless the data directory is absent or empty.
func (b *Backend) requireEmptyDataDir(action string) error {
	ents, err := b.dataDirEntries()
	if err != nil {
		return fmt.Errorf("%s: reading postgres.data_dir %s: %w", action, b.dataDir, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s: postgres.data_dir %s is not empty; wipe it first (steward reinit) if its data is not needed", action, b.dataDir)
	}
	return nil
}

// Bootstrap creates a new cluster: initdb, configuration for a primary,
// start, wait (bounded by ctx) until it accepts connections, create the
// replication role and steward's schema. It returns the system identifier.
// If a step after the start fails, the server is stopped again (immediate)
// so that no half-made primary keeps running.
func (b *Backend) Bootstrap(ctx context.Context) (string, error) {
	start := time.Now()
	defer b.begin(backends.StateUninitialized, "bootstrap in progress (initdb)")()
	id, err := b.bootstrap(ctx)
	if err != nil {
		b.log.Info("bootstrap failed", "data_dir", b.dataDir, "error", err, "duration", time.Since(start).Round(time.Millisecond))
		return "", err
	}
	b.log.Info("bootstrapped a new cluster", "data_dir", b.dataDir, "system_id", id, "duration", time.Since(start).Round(time.Millisecond))
	return id, nil
}

func (b *Backend) bootstrap(ctx context.Context) (string, error) {
	if err := b.requireEmptyDataDir("bootstrap"); err != nil {
		return "", err
	}
	if err := b.ensureDataDir(); err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	b.resetConn(ctx)
	args := []string{"-D", b.dataDir, "-U", b.opts.Superuser.Username, "-E", "UTF8", "--auth-local=trust", "--auth-host=scram-sha-256"}
	if b.opts.Superuser.Password != "" {
		pw, err := os.CreateTemp(filepath.Dir(b.dataDir), ".steward-pwfile-*")
		if err != nil {
			return "", fmt.Errorf("bootstrap: writing the superuser password file: %w", err)
		}
		defer os.Remove(pw.Name())
		_, werr := pw.WriteString(b.opts.Superuser.Password + "\n")
		cerr := pw.Close()
		if err := errors.Join(werr, cerr, os.Chmod(pw.Name(), 0o600), b.chown(pw.Name())); err != nil {
			return "", fmt.Errorf("bootstrap: writing the superuser password file: %w", err)
		}
		args = append(args, "--pwfile="+pw.Name())
	}
	if _, _, err := b.run(ctx, cmdSpec{prog: "initdb", args: args}); err != nil {
		return "", fmt.Errorf("bootstrap: %w (the data directory may hold a partial cluster: wipe it before retrying)", err)
	}
	if err := b.writeConfig(backends.RolePrimary, nil); err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	if err := b.startServer(ctx); err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	id, err := b.initCluster(ctx)
	if err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if serr := b.stop(sctx, backends.StopImmediate); serr != nil {
			b.log.Warn("stopping the half-bootstrapped server failed", "error", serr)
		}
		return "", fmt.Errorf("bootstrap: %w (server stopped; wipe the data directory before retrying)", err)
	}
	return id, nil
}

// initCluster waits for the new primary and creates steward's objects.
func (b *Backend) initCluster(ctx context.Context) (string, error) {
	var c *pgx.Conn
	for {
		var err error
		qctx, cancel := b.queryCtx(ctx)
		c, err = b.connectLocal(qctx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("the new server did not accept connections in time: %v (server log: %s)", err, b.logTail(5))
		}
		if RunningPID(b.dataDir) == 0 {
			return "", fmt.Errorf("the new server exited: %v (server log: %s)", err, b.logTail(5))
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer c.Close(context.Background())
	var exists bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, b.opts.Replication.Username).Scan(&exists); err != nil {
		return "", fmt.Errorf("checking for the replication role: %w", err)
	}
	if !exists {
		var stmt string
		if b.opts.Replication.Password != "" {
			err := c.QueryRow(ctx, `SELECT format('CREATE ROLE %I LOGIN REPLICATION PASSWORD %L', $1::text, $2::text)`,
				b.opts.Replication.Username, b.opts.Replication.Password).Scan(&stmt)
			if err != nil {
				return "", fmt.Errorf("creating the replication role: %w", err)
			}
		} else if err := c.QueryRow(ctx, `SELECT format('CREATE ROLE %I LOGIN REPLICATION', $1::text)`, b.opts.Replication.Username).Scan(&stmt); err != nil {
			return "", fmt.Errorf("creating the replication role: %w", err)
		}
		if _, err := c.Exec(ctx, stmt, pgx.QueryExecModeSimpleProtocol); err != nil {
			return "", fmt.Errorf("creating the replication role %q: %w", b.opts.Replication.Username, err)
		}
	}
	if _, err := c.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS steward`); err != nil {
		return "", fmt.Errorf("creating schema steward: %w", err)
	}
	if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS steward.heartbeat (member text PRIMARY KEY, ts timestamptz, n bigint)`); err != nil {
		return "", fmt.Errorf("creating steward.heartbeat: %w", err)
	}
	var id string
	if err := c.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&id); err != nil {
		return "", fmt.Errorf("reading the system identifier: %w", err)
	}
	return id, nil
}

// Clone copies up's data into the empty (or absent) data directory with
// pg_basebackup as the replication user and configures it as a replica of
// up (standby.signal, primary_conninfo, slot). It does not start it.
func (b *Backend) Clone(ctx context.Context, up backends.Upstream) error {
	start := time.Now()
	defer b.begin(backends.StateUninitialized, "cloning from "+up.Name+" ("+hostPort(up)+") in progress")()
	err := b.clone(ctx, up)
	if err != nil {
		b.log.Info("clone failed", "upstream", up.Name, "address", hostPort(up), "error", err, "duration", time.Since(start).Round(time.Millisecond))
		return err
	}
	b.log.Info("cloned from upstream", "upstream", up.Name, "address", hostPort(up), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) clone(ctx context.Context, up backends.Upstream) error {
	if err := b.requireEmptyDataDir("clone"); err != nil {
		return err
	}
	if err := b.ensureDataDir(); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	b.resetConn(ctx)
	env := []string{"PGCONNECT_TIMEOUT=5"}
	if b.opts.Replication.Password != "" {
		env = append(env, "PGPASSWORD="+b.opts.Replication.Password)
	}
	_, _, err := b.run(ctx, cmdSpec{prog: "pg_basebackup", env: env, args: []string{
		"-D", b.dataDir, "-X", "stream", "-c", "fast", "-h", up.Host, "-p", strconv.Itoa(up.Port),
		"-U", b.opts.Replication.Username, "--no-password"}})
	if err != nil {
		// pg_basebackup removes what it wrote; make sure nothing half-made
		// is left that could be started.
		b.clearDataDir()
		return fmt.Errorf("clone from %s (%s): %w; check that it runs, that pg_hba.conf there allows replication connections from this host as %s, and the password",
			up.Name, hostPort(up), err, b.opts.Replication.Username)
	}
	if err := b.chownTree(); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	if err := b.writeConfig(backends.RoleReplica, &up); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	return nil
}

// chownTree makes sure the data directory is owned by the run-as user (the
// programs already ran as that user; this catches anything else).
func (b *Backend) chownTree() error {
	if b.runAs == nil {
		return nil
	}
	return b.chown(b.dataDir)
}

func hostPort(up backends.Upstream) string { return up.Host + ":" + strconv.Itoa(up.Port) }

// Start writes the configuration for the role (a replica follows up, or
// nobody when up is nil) and starts the server with pg_ctl. It returns once
// the postmaster runs (postmaster.pid written); it does not wait for it to
// accept connections. It fails when the server already runs.
func (b *Backend) Start(ctx context.Context, role backends.Role, up *backends.Upstream) error {
	start := time.Now()
	upName := ""
	if up != nil {
		upName = up.Name + " (" + hostPort(*up) + ")"
	}
	err := b.start(ctx, role, up)
	if err != nil {
		b.log.Info("start failed", "role", role, "upstream", upName, "error", err)
		return err
	}
	b.log.Info("started", "role", role, "upstream", upName, "pid", RunningPID(b.dataDir), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) start(ctx context.Context, role backends.Role, up *backends.Upstream) error {
	if role != backends.RolePrimary && role != backends.RoleReplica {
		return fmt.Errorf("start: unknown role %q", role)
	}
	if pid := RunningPID(b.dataDir); pid != 0 {
		return fmt.Errorf("start: the server already runs (PID %d); stop it first", pid)
	}
	if _, err := os.Stat(filepath.Join(b.dataDir, "PG_VERSION")); err != nil {
		return fmt.Errorf("start: postgres.data_dir %s holds no cluster (no PG_VERSION): bootstrap or clone first", b.dataDir)
	}
	if role == backends.RolePrimary {
		up = nil
	}
	if err := b.clearPeerFence(); err != nil {
		return fmt.Errorf("start: removing fencing settings from postgresql.auto.conf: %w", err)
	}
	if err := b.writeConfig(role, up); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	return b.startServer(ctx)
}

// startServer runs pg_ctl start -W and waits until the postmaster has
// written its status line (sockets open), or has died.
func (b *Backend) startServer(ctx context.Context) error {
	// A stale postmaster.pid naming a PID that is a zombie (a killed
	// postmaster nobody reaped) or now used by another process makes the
	// postmaster refuse to start. Without it the postmaster still finds
	// and removes the old server's shared memory (its key derives from the
	// data directory).
	if _, ok := readPidFile(b.dataDir); ok && RunningPID(b.dataDir) == 0 {
		_ = os.Remove(filepath.Join(b.dataDir, "postmaster.pid"))
	}
	if err := b.ensureLogFile(); err != nil {
		return err
	}
	b.resetConn(ctx)
	if _, _, err := b.run(ctx, cmdSpec{prog: "pg_ctl", args: []string{"start", "-D", b.dataDir, "-l", b.LogFile(), "-W"}}); err != nil {
		return fmt.Errorf("pg_ctl start: %w (server log: %s)", err, b.logTail(5))
	}
	deadline := time.Now().Add(30 * time.Second)
	seen := 0
	for {
		pf, ok := readPidFile(b.dataDir)
		if ok && serverProcess(pf.pid, b.dataDir) {
			seen = pf.pid
			if pf.status != "" {
				return nil
			}
		} else if seen != 0 {
			return fmt.Errorf("the server (PID %d) exited during startup; server log: %s", seen, b.logTail(8))
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			if seen != 0 {
				return nil // launched; still setting up
			}
			return fmt.Errorf("no postmaster appeared after pg_ctl start; server log: %s", b.logTail(8))
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop stops the server (pg_ctl stop -m fast|immediate) and waits until it
// has, bounded by ctx. It does nothing when the server does not run.
func (b *Backend) Stop(ctx context.Context, mode backends.StopMode) error {
	start := time.Now()
	pid := RunningPID(b.dataDir)
	if pid == 0 {
		b.log.Debug("stop: not running")
		return nil
	}
	err := b.stop(ctx, mode)
	if err != nil {
		b.log.Info("stop failed", "mode", mode, "pid", pid, "error", err)
		return err
	}
	b.log.Info("stopped", "mode", mode, "pid", pid, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) stop(ctx context.Context, mode backends.StopMode) error {
	if mode != backends.StopFast && mode != backends.StopImmediate {
		return fmt.Errorf("stop: unknown mode %q", mode)
	}
	if RunningPID(b.dataDir) == 0 {
		return nil
	}
	dl, ok := ctx.Deadline()
	secs := secondsLeft(dl, ok, 60)
	_, _, err := b.run(ctx, cmdSpec{prog: "pg_ctl", args: []string{"stop", "-D", b.dataDir, "-m", string(mode), "-w", "-t", strconv.Itoa(secs)}})
	if err != nil {
		if RunningPID(b.dataDir) == 0 {
			return nil // it stopped after all (or was stopped by someone else)
		}
		return fmt.Errorf("pg_ctl stop -m %s: %w", mode, err)
	}
	b.resetConn(ctx)
	return nil
}

// Promote turns the running replica into a primary: pg_promote (waiting
// until recovery has ended, bounded by ctx), a check that it left recovery,
// then postgresql.conf for a primary and a reload.
func (b *Backend) Promote(ctx context.Context) error {
	start := time.Now()
	err := b.promote(ctx)
	if err != nil {
		b.log.Info("promote failed", "error", err, "duration", time.Since(start).Round(time.Millisecond))
		return err
	}
	b.log.Info("promoted", "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) promote(ctx context.Context) error {
	if RunningPID(b.dataDir) == 0 {
		return errors.New("promote: the server does not run; start it as a replica first")
	}
	dl, ok := ctx.Deadline()
	secs := secondsLeft(dl, ok, 60)
	err := b.withConn(ctx, func(c *pgx.Conn) error {
		var inRecovery bool
		if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
			return err
		}
		if !inRecovery {
			return nil // already a primary
		}
		// pg_promote(wait => false) only signals the startup process; we
		// poll for the end of recovery ourselves every 5 ms. pg_promote's
		// own wait polls every 100 ms, which added ~100 ms to every
		// failover and switchover.
		var signalled bool
		if err := c.QueryRow(ctx, `SELECT pg_promote(false)`).Scan(&signalled); err != nil {
			return fmt.Errorf("pg_promote: %w", err)
		}
		if !signalled {
			return errors.New("pg_promote: the server did not accept the promotion request (see its log)")
		}
		giveUp := time.Now().Add(time.Duration(secs) * time.Second)
		for {
			if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
				return err
			}
			if !inRecovery {
				return nil
			}
			if time.Now().After(giveUp) {
				return fmt.Errorf("pg_promote: recovery did not end within %d s", secs)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("still in recovery after pg_promote: %w", ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if err := b.writeConfig(backends.RolePrimary, nil); err != nil {
		return fmt.Errorf("promote: promoted, but rewriting the configuration failed: %w", err)
	}
	if err := b.reload(ctx); err != nil {
		return fmt.Errorf("promote: promoted, but %w", err)
	}
	go b.checkpointAfterPromote()
	return nil
}

// checkpointAfterPromote runs an immediate CHECKPOINT on the new primary.
// After a fast promotion PostgreSQL's own checkpoint is spread over
// minutes, and until one completes the control file names the previous
// timeline. Were this primary to die meanwhile, pg_rewind (which reads the
// target's timeline from its control file) would find the fork on the wrong
// timeline and refuse to rewind it. Patroni does the same after promoting.
func (b *Backend) checkpointAfterPromote() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := b.connectLocal(ctx)
	if err == nil {
		_, err = c.Exec(ctx, "CHECKPOINT")
		c.Close(context.Background())
	}
	if err != nil {
		b.log.Warn("checkpoint after promotion failed; a rewind of this member before its next checkpoint may fail", "error", err)
		return
	}
	b.log.Info("checkpoint after promotion done", "duration", time.Since(start).Round(time.Millisecond))
}

// reload runs pg_reload_conf().
func (b *Backend) reload(ctx context.Context) error {
	return b.withConn(ctx, func(c *pgx.Conn) error {
		if _, err := c.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
			return fmt.Errorf("reloading the configuration: %w", err)
		}
		return nil
	})
}

// Follow points the running replica at up (nil: no upstream) by rewriting
// primary_conninfo/primary_slot_name and reloading; PostgreSQL 13+ restarts
// the WAL receiver without a server restart.
func (b *Backend) Follow(ctx context.Context, up *backends.Upstream) error {
	upName := ""
	if up != nil {
		upName = up.Name + " (" + hostPort(*up) + ")"
	}
	err := b.follow(ctx, up)
	if err != nil {
		b.log.Info("follow failed", "upstream", upName, "error", err)
		return err
	}
	b.log.Info("following", "upstream", upName)
	return nil
}

func (b *Backend) follow(ctx context.Context, up *backends.Upstream) error {
	if RunningPID(b.dataDir) == 0 {
		return errors.New("follow: the server does not run; start it as a replica instead")
	}
	var inRecovery bool
	if err := b.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery)
	}); err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	if !inRecovery {
		return errors.New("follow: the server is a primary; it must be stopped and started as a replica (demote) instead")
	}
	if err := b.writeConfig(backends.RoleReplica, up); err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	if err := b.reload(ctx); err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	return nil
}

// Rewind runs pg_rewind against up (the server must be stopped cleanly)
// and configures the data directory as a replica of up. It does not start
// it.
func (b *Backend) Rewind(ctx context.Context, up backends.Upstream) error {
	start := time.Now()
	defer b.begin(backends.StateStopped, "pg_rewind from "+up.Name+" ("+hostPort(up)+") in progress")()
	err := b.rewind(ctx, up)
	if err != nil {
		b.log.Info("rewind failed", "upstream", up.Name, "address", hostPort(up), "error", err, "duration", time.Since(start).Round(time.Millisecond))
		return err
	}
	b.log.Info("rewound", "upstream", up.Name, "address", hostPort(up), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) rewind(ctx context.Context, up backends.Upstream) error {
	if !b.opts.UsePgRewind {
		return errors.New("rewind is disabled by postgres.use_pg_rewind; re-clone the member (steward reinit) or enable it")
	}
	if pid := RunningPID(b.dataDir); pid != 0 {
		return fmt.Errorf("rewind: the server runs (PID %d); stop it (fast) first", pid)
	}
	cd, err := b.controlData(ctx)
	if err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	if !cleanShutdown(cd.state()) {
		return fmt.Errorf("rewind: the server was not shut down cleanly (control file: %q); start it as a replica (crash recovery) and stop it with mode fast first", cd.state())
	}
	if err := b.checkpointSource(ctx, up); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	src := conninfo("host", up.Host, "port", strconv.Itoa(up.Port), "user", b.opts.Superuser.Username,
		"dbname", "postgres", "connect_timeout", "5", "application_name", "steward_rewind")
	env := []string{}
	if b.opts.Superuser.Password != "" {
		env = append(env, "PGPASSWORD="+b.opts.Superuser.Password)
	}
	b.resetConn(ctx)
	stdout, stderr, err := b.run(ctx, cmdSpec{prog: "pg_rewind", env: env, cLocale: true, args: []string{
		"--target-pgdata=" + b.dataDir, "--source-server=" + src}})
	if out := joinOutput(stdout, stderr); out != "" {
		b.log.Info("pg_rewind output", "output", out)
	}
	if err != nil {
		return fmt.Errorf("rewind from %s (%s): %w", up.Name, hostPort(up), err)
	}
	if err := b.chownTree(); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	if err := b.writeConfig(backends.RoleReplica, &up); err != nil {
		return fmt.Errorf("rewind: rewound, but writing the configuration failed: %w", err)
	}
	return nil
}

// checkpointSource makes sure up's control file names its current
// timeline: pg_rewind compares the control files' timelines, and a freshly
// promoted server keeps the old one there until its first checkpoint
// ("source and target cluster are on the same timeline ... no rewind
// required" would be wrong). It runs CHECKPOINT on up when needed.
func (b *Backend) checkpointSource(ctx context.Context, up backends.Upstream) error {
	cfg, err := pgx.ParseConfig(connString(up.Host, up.Port, b.opts.Superuser.Username, "postgres", "prefer", b.opts.QueryTimeout))
	if err != nil {
		return err
	}
	cfg.Password = b.opts.Superuser.Password
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting to %s (%s) as %s: %w; pg_rewind needs a superuser connection to it (pg_hba.conf there)",
			up.Name, hostPort(up), b.opts.Superuser.Username, err)
	}
	defer c.Close(context.Background())
	var inRecovery bool
	var ckptTLI int64
	var walfile string
	if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint()),
		CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END`).Scan(&inRecovery, &ckptTLI, &walfile); err != nil {
		return fmt.Errorf("reading %s's timeline: %w", up.Name, err)
	}
	if inRecovery {
		return nil // a standby source: pg_rewind reads its minimum recovery point
	}
	tli, err := timelineFromWalfile(walfile)
	if err != nil || tli <= ckptTLI {
		return nil
	}
	b.log.Info("checkpoint on the rewind source: its control file still names the previous timeline", "upstream", up.Name, "checkpoint_timeline", ckptTLI, "timeline", tli)
	if _, err := c.Exec(ctx, `CHECKPOINT`); err != nil {
		return fmt.Errorf("CHECKPOINT on %s (needed after its promotion before pg_rewind): %w", up.Name, err)
	}
	return nil
}

func joinOutput(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "\n" + b
}

// Wipe removes the data directory's contents (keeping the directory). It
// refuses while the server runs.
func (b *Backend) Wipe(ctx context.Context) error {
	if pid := RunningPID(b.dataDir); pid != 0 {
		err := fmt.Errorf("wipe: the server runs (PID %d); stop it first", pid)
		b.log.Info("wipe refused", "error", err)
		return err
	}
	defer b.begin(backends.StateUninitialized, "wiping the data directory")()
	b.resetConn(ctx)
	if err := b.clearDataDir(); err != nil {
		b.log.Info("wipe failed", "data_dir", b.dataDir, "error", err)
		return fmt.Errorf("wipe: %w", err)
	}
	b.log.Info("wiped the data directory", "data_dir", b.dataDir)
	return nil
}

func (b *Backend) clearDataDir() error {
	ents, err := b.dataDirEntries()
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(b.dataDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// EnsureSlots creates a physical replication slot (reserving WAL at once)
// for each member that has none, except this member. It only creates,
// never drops. It fails on a server in recovery.
func (b *Backend) EnsureSlots(ctx context.Context, members []string) error {
	self := SlotName(b.opts.Member)
	var created []string
	err := b.withConn(ctx, func(c *pgx.Conn) error {
		var inRecovery bool
		if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
			return err
		}
		if inRecovery {
			return errors.New("the server is a replica; slots are created on the primary")
		}
		for _, m := range members {
			slot := SlotName(m)
			if slot == "" || slot == self {
				continue
			}
			var made bool
			err := c.QueryRow(ctx, `SELECT count(pg_create_physical_replication_slot($1, true)) > 0
				WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&made)
			if err != nil && sqlState(err) != "42710" { // duplicate_object: created meanwhile
				return fmt.Errorf("creating slot %s for %s: %w", slot, m, err)
			}
			if made {
				created = append(created, slot)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ensure slots: %w", err)
	}
	if len(created) > 0 {
		b.log.Info("created replication slots", "slots", created)
	} else {
		b.log.Debug("replication slots present", "members", members)
	}
	return nil
}

// DropMemberSlots drops, on a standby, the inactive physical replication
// slots named after the given members: the slots a former primary created
// for its peers while it led. On a standby they never advance and would
// retain all WAL from the demotion on. Other slots (an operator's, a
// backup tool's) are left alone, and so is anything on a primary.
func (b *Backend) DropMemberSlots(ctx context.Context, members []string) error {
	self := SlotName(b.opts.Member)
	var dropped []string
	err := b.withConn(ctx, func(c *pgx.Conn) error {
		var inRecovery bool
		if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
			return err
		}
		if !inRecovery {
			return nil
		}
		for _, m := range members {
			slot := SlotName(m)
			if slot == "" || slot == self {
				continue
			}
			var n int
			err := c.QueryRow(ctx, `SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots
				WHERE slot_name = $1 AND slot_type = 'physical' AND NOT active`, slot).Scan(&n)
			if err != nil && sqlState(err) != "42704" { // undefined_object: dropped meanwhile
				return fmt.Errorf("dropping slot %s of %s: %w", slot, m, err)
			}
			if n > 0 {
				dropped = append(dropped, slot)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("drop member slots: %w", err)
	}
	if len(dropped) > 0 {
		b.log.Info("dropped the replication slots kept from when this member led (a replica's slots never advance and would retain WAL)", "slots", dropped)
	}
	return nil
}

// Heartbeat commits one row in steward.heartbeat (synchronous_commit
// local, statement_timeout from ctx): proof that the primary can write.
func (b *Backend) Heartbeat(ctx context.Context, member string) error {
	timeout := b.opts.QueryTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	ms := max(int64(timeout/time.Millisecond), 1)
	err := b.withConn(ctx, func(c *pgx.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			_ = tx.Rollback(rctx) // after Commit: a no-op
			cancel()
		}()
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit TO local`, pgx.QueryExecModeSimpleProtocol); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL statement_timeout = %d`, ms), pgx.QueryExecModeSimpleProtocol); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO steward.heartbeat (member, ts, n) VALUES ($1, now(), 1)
			ON CONFLICT (member) DO UPDATE SET ts = now(), n = steward.heartbeat.n + 1`, member); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
	if err != nil {
		err = fmt.Errorf("heartbeat: the primary cannot commit: %w", err)
		b.log.Debug("heartbeat failed", "error", err)
		return err
	}
	// A commit of one small row can succeed on a full disk: the heartbeat
	// row is updated in place (HOT) and the current WAL segment is already
	// allocated, while every client write that needs a new page fails with
	// "could not extend file" and the next WAL segment switch PANICs the
	// server. So a leader whose data or WAL filesystem is (nearly) full is
	// unhealthy too.
	if err := b.checkFreeSpace(); err != nil {
		b.log.Debug("heartbeat failed", "error", err)
		return err
	}
	b.log.Debug("heartbeat committed", "member", member)
	return nil
}

// minFreeSpace is the free space below which the primary's filesystem
// counts as full: PostgreSQL extends relations by 8 kB pages (in bulk under
// concurrency) and needs a whole WAL segment (16 MB by default) whenever no
// recycled one is left, so below 1 MiB client writes are already failing.
const minFreeSpace = 1 << 20

// checkFreeSpace fails when the filesystem of the data directory or of
// pg_wal (often a symlink to another volume) has less than minFreeSpace
// available to the server's user.
func (b *Backend) checkFreeSpace() error {
	p, free, total, low := b.lowestFreeSpace(minFreeSpace)
	if low {
		return fmt.Errorf("heartbeat: no space left on the filesystem of %s: %d bytes free of %d; writes that need new space fail (free space or move the data, then the primary is healthy again)",
			p, free, total)
	}
	return nil
}

// checkPromoteSpace fails when a standby could not be promoted for lack of
// space: promotion starts the new timeline in a new WAL segment
// (wal_segment_size, 16 MB by default, written in full) and the first writes
// need room beyond it. A standby whose WAL disk filled up otherwise still
// looks like the best candidate, takes the leader key, fails to promote and
// takes it again after its backoff, while the others wait for it because it
// is ahead (found by the fault-injection suite, docs/reliability.md).
func (b *Backend) checkPromoteSpace(walSegment int64) error {
	if walSegment <= 0 {
		walSegment = 16 << 20
	}
	need := walSegment + minFreeSpace
	p, free, _, low := b.lowestFreeSpace(need)
	if low {
		return fmt.Errorf("not enough disk space to promote: %s free on the filesystem of %s, promotion needs %s (one WAL segment and 1 MB); free space there",
			humanBytes(free), p, humanBytes(need))
	}
	return nil
}

// lowestFreeSpace returns the first of the data directory's and pg_wal's
// filesystems with less than need bytes available to the server's user.
// A path that cannot be examined is skipped: the database itself is then
// the only judge.
func (b *Backend) lowestFreeSpace(need int64) (path string, free, total int64, low bool) {
	for _, p := range []string{b.dataDir, filepath.Join(b.dataDir, "pg_wal")} {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(p, &fs); err != nil {
			continue
		}
		free = int64(fs.Bavail) * int64(fs.Bsize)
		if free < need {
			return p, free, int64(fs.Blocks) * int64(fs.Bsize), true
		}
	}
	return "", 0, 0, false
}

// humanBytes renders a byte count as operators read it ("256.0 kB").
func humanBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d bytes", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
}
