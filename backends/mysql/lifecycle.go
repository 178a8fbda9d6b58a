package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stewardha/steward/backends"
)

// ping checks that the local server answers.
func (b *Backend) ping(ctx context.Context) error {
	ctx, cancel := b.queryCtx(ctx)
	defer cancel()
	var one int
	return b.db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// waitConnectable waits until the local server answers, bounded by ctx. It
// gives up early when no server process is left (with a data directory to
// look for one).
func (b *Backend) waitConnectable(ctx context.Context) error {
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := b.ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() == nil && len(b.dirs()) > 0 && b.serverPID() == 0 && !connRefused(err) {
			return fmt.Errorf("the server is not running: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the server does not accept connections yet: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ensureRunning starts the server with the start command when it does not
// answer and no server process exists, then waits (bounded by ctx) until it
// accepts connections.
func (b *Backend) ensureRunning(ctx context.Context) error {
	if b.ping(ctx) == nil {
		return nil
	}
	if b.serverPID() == 0 {
		if err := b.launch(ctx); err != nil {
			return err
		}
	}
	if err := b.waitConnectable(ctx); err != nil {
		if b.serverPID() == 0 && len(b.dirs()) > 0 {
			return fmt.Errorf("%w (start log: %s)", err, b.startLogTail(b.StartLog(), 8))
		}
		return err
	}
	return nil
}

// setReadOnly turns read_only (and super_read_only) on or off.
func (b *Backend) setReadOnly(ctx context.Context, on bool) error {
	c, f, err := b.session(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return execAll(ctx, c, f.ReadOnlySQL(on)...)
}

// newClusterID makes the system identifier of a new cluster: MySQL's
// server_uuid of the first primary, MariaDB "<server_id>-<random>".
func newClusterID(s serverState) string {
	if s.serverUUID != "" {
		return s.serverUUID
	}
	var r [8]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%d-%s", s.serverID, hex.EncodeToString(r[:]))
}

// Bootstrap makes the local server the first primary of a new cluster. The
// server must exist (initialized, with steward's account): it is started
// with the start command when it does not run. Bootstrap refuses a server
// that replicates from someone. It makes the server writable (the caller
// holds the leader key), creates the replication account and steward's
// schema (steward.cluster, steward.heartbeat), and records the cluster's
// system identifier last, so that a failed bootstrap leaves no cluster
// record (Wipe then refuses to drop data steward did not create). A server
// that already holds data is adopted as it is. Returns the system
// identifier.
func (b *Backend) Bootstrap(ctx context.Context) (string, error) {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.gen.Add(1)
	start := time.Now()
	defer b.begin(backends.StateUninitialized, "bootstrap in progress")()
	id, err := b.bootstrap(ctx)
	if err != nil {
		b.log.Info("bootstrap failed", "error", err, "duration", time.Since(start).Round(time.Millisecond))
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	b.log.Info("bootstrapped a new cluster", "system_id", id, "duration", time.Since(start).Round(time.Millisecond))
	return id, nil
}

func (b *Backend) bootstrap(ctx context.Context) (string, error) {
	if err := b.ensureRunning(ctx); err != nil {
		return "", err
	}
	c, f, err := b.session(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := readServerState(ctx, c)
	if err != nil {
		return "", err
	}
	b.rememberServer(s)
	if !s.logBin {
		return "", errors.New("binary logging is off (log_bin): replicas could not follow this server; enable log_bin, log_slave_updates, binlog_format=ROW and GTIDs (see docs/mysql.md)")
	}
	rs, found, err := replicaStatus(ctx, c, f)
	if err != nil {
		return "", err
	}
	if found {
		if rs["Slave_IO_Running"] == "Yes" || rs["Slave_IO_Running"] == "Connecting" || rs["Slave_SQL_Running"] == "Yes" {
			return "", fmt.Errorf("the server replicates from %s:%s; a cluster is bootstrapped on a standalone server (stop replication there first)", rs["Master_Host"], rs["Master_Port"])
		}
		if _, err := c.ExecContext(ctx, f.ResetReplicaAllSQL()); err != nil {
			return "", err
		}
	}
	id, initialized, err := clusterID(ctx, c)
	if err != nil {
		return "", err
	}
	if err := b.applySemiSync(ctx, c, f); err != nil {
		return "", err
	}
	if err := execAll(ctx, c, f.ReadOnlySQL(false)...); err != nil {
		return "", err
	}
	ru, rh, rp := b.opts.Replication.Username, b.opts.ReplicationHost, b.opts.Replication.Password
	for _, st := range []struct {
		q    string
		args []any
	}{
		{"CREATE USER IF NOT EXISTS ?@? IDENTIFIED BY ?", []any{ru, rh, rp}},
		{"ALTER USER ?@? IDENTIFIED BY ?", []any{ru, rh, rp}},
		{"GRANT REPLICATION SLAVE ON *.* TO ?@?", []any{ru, rh}},
		{"CREATE DATABASE IF NOT EXISTS steward", nil},
		{"CREATE TABLE IF NOT EXISTS steward.cluster (id VARCHAR(64) NOT NULL PRIMARY KEY, created DATETIME(6) NOT NULL, created_by VARCHAR(255) NOT NULL) ENGINE=InnoDB", nil},
		{"CREATE TABLE IF NOT EXISTS steward.heartbeat (member VARCHAR(255) NOT NULL PRIMARY KEY, ts DATETIME(6) NOT NULL, n BIGINT NOT NULL) ENGINE=InnoDB", nil},
	} {
		if _, err := c.ExecContext(ctx, st.q, st.args...); err != nil {
			return "", fmt.Errorf("%s: %w", strings.SplitN(st.q, " ?", 2)[0], err)
		}
	}
	if initialized && id != "" {
		return id, nil
	}
	id = newClusterID(s)
	if _, err := c.ExecContext(ctx, "INSERT INTO steward.cluster (id, created, created_by) VALUES (?, UTC_TIMESTAMP(6), ?)", id, b.opts.Member); err != nil {
		return "", fmt.Errorf("recording the cluster identifier: %w", err)
	}
	return id, nil
}

// Start starts the server with the start command when it does not run,
// then sets its role: RolePrimary makes it writable (applying and detaching
// any replication first, as Promote does); RoleReplica keeps it read-only
// and, with up, points it at up with GTID auto-positioning and starts
// replication (configureReplica: errant transactions keep replication
// stopped; a relay log left by a restart is applied first). A server
// without steward's schema (empty, to be cloned) is only made read-only.
//
// The server starts read-only (read_only=ON in its configuration, see
// docs/mysql.md). When it does not accept connections before ctx ends
// (crash recovery), Start returns once the process runs and sets the role
// as soon as it does, in the background, unless another state-changing
// call comes first.
func (b *Backend) Start(ctx context.Context, role backends.Role, up *backends.Upstream) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	gen := b.gen.Add(1)
	start := time.Now()
	upName := ""
	if up != nil {
		upName = up.Name + " (" + hostPort(*up) + ")"
	}
	err := b.start(ctx, gen, role, up)
	if err != nil {
		b.log.Info("start failed", "role", role, "upstream", upName, "error", err)
		return err
	}
	b.log.Info("started", "role", role, "upstream", upName, "pid", b.serverPID(), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) start(ctx context.Context, gen int64, role backends.Role, up *backends.Upstream) error {
	if role != backends.RolePrimary && role != backends.RoleReplica {
		return fmt.Errorf("start: unknown role %q", role)
	}
	if role == backends.RolePrimary {
		up = nil
	}
	if b.ping(ctx) != nil {
		if b.serverPID() == 0 {
			if err := b.launch(ctx); err != nil {
				return fmt.Errorf("start: %w", err)
			}
		}
		wctx := ctx
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			wctx, cancel = context.WithDeadline(ctx, dl.Add(-time.Until(dl)/5))
			defer cancel()
		}
		if err := b.waitConnectable(wctx); err != nil {
			if b.serverPID() == 0 && len(b.dirs()) > 0 {
				return fmt.Errorf("start: %w (start log: %s)", err, b.startLogTail(b.StartLog(), 8))
			}
			b.log.Info("the server runs but does not accept connections yet; its role is set as soon as it does", "role", role, "error", err)
			b.finishStartLater(gen, role, up)
			return nil
		}
	}
	return b.configureRole(ctx, role, up)
}

// configureRole sets the role of a running server.
func (b *Backend) configureRole(ctx context.Context, role backends.Role, up *backends.Upstream) error {
	_, initialized, err := clusterID(ctx, b.db)
	if err != nil {
		return err
	}
	if !initialized {
		return b.setReadOnly(ctx, true)
	}
	if role == backends.RolePrimary {
		return b.promote(ctx)
	}
	if err := b.setReadOnly(ctx, true); err != nil {
		return err
	}
	if up == nil {
		return nil
	}
	return b.configureReplica(ctx, *up, true)
}

// finishStartLater sets the role once the server accepts connections, in
// the background (at most 10 minutes), unless another state-changing call
// happened meanwhile (gen moved) or the server went away.
func (b *Backend) finishStartLater(gen int64, role backends.Role, up *backends.Upstream) {
	var upc *backends.Upstream
	if up != nil {
		u := *up
		upc = &u
	}
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		ctx, cancel := context.WithTimeout(b.closeCtx, 10*time.Minute)
		defer cancel()
		for b.ping(ctx) != nil {
			if b.gen.Load() != gen || b.serverPID() == 0 || ctx.Err() != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		b.opMu.Lock()
		defer b.opMu.Unlock()
		if b.gen.Load() != gen {
			return
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Minute)
		defer ccancel()
		if err := b.configureRole(cctx, role, upc); err != nil {
			b.log.Warn("setting the role after a slow start failed", "role", role, "error", err)
			return
		}
		b.log.Info("the server accepts connections now; role set", "role", role)
	}()
}

// Stop stops the server and waits until it has, bounded by ctx. It does
// nothing when the server does not run.
//
//   - StopImmediate: SIGKILL of the server process (InnoDB crash recovery
//     on the next start; with sync_binlog=1 and
//     innodb_flush_log_at_trx_commit=1 nothing committed is lost). Without a
//     known process it stops like StopFast.
//   - StopFast: read_only on, then the stop command, or the SQL SHUTDOWN
//     (MariaDB: WAIT FOR ALL SLAVES, so connected replicas receive the whole
//     binary log first), then wait for the process to exit.
func (b *Backend) Stop(ctx context.Context, mode backends.StopMode) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.gen.Add(1)
	start := time.Now()
	pid := b.serverPID()
	err := b.stop(ctx, mode, pid)
	if err != nil {
		b.log.Info("stop failed", "mode", mode, "pid", pid, "error", err)
		return err
	}
	b.log.Info("stopped", "mode", mode, "pid", pid, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) stop(ctx context.Context, mode backends.StopMode, pid int) error {
	if mode != backends.StopFast && mode != backends.StopImmediate {
		return fmt.Errorf("stop: unknown mode %q", mode)
	}
	if pid == 0 && b.ping(ctx) != nil {
		return nil
	}
	if mode == backends.StopImmediate && pid != 0 {
		return b.killServer(ctx, pid)
	}
	// Writes stop first (read_only, client sessions ended), then the final
	// position is read: Observe reports it while the server is stopped, as
	// a switchover needs (DESIGN rule 4).
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	final, ferr := b.finalPosition(rctx)
	cancel()
	if ferr != nil {
		b.log.Debug("final position before the stop unknown", "error", ferr)
	}
	if len(b.opts.StopCommand) > 0 {
		if out, err := runCommand(ctx, b.opts.StopCommand, nil); err != nil {
			return fmt.Errorf("mysql.stop_command %q: %w; output: %s", strings.Join(b.opts.StopCommand, " "), err, out)
		}
	} else {
		f, ok := b.Flavor()
		if !ok {
			f = Flavor{MariaDB: true}
		}
		// The connection drops while the server goes down: an error here
		// means nothing until the wait below says it still runs.
		_, err := b.db.ExecContext(ctx, f.ShutdownSQL())
		if err != nil && errno(err) != 0 && errno(err) != erServerShutdown {
			return fmt.Errorf("%s: %w", f.ShutdownSQL(), err)
		}
	}
	defer b.resetPool()
	stopped := func() {
		b.mu.Lock()
		b.stoppedPos = final
		b.mu.Unlock()
	}
	if pid != 0 {
		if !waitGone(ctx, pid) {
			return fmt.Errorf("the server (PID %d) is still running: %w", pid, ctx.Err())
		}
		stopped()
		return nil
	}
	for {
		if err := b.ping(ctx); err != nil && connRefused(err) {
			stopped()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the server still answers: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// finalPosition stops writes (read_only on, client sessions ended) and
// reads where the server's history ends. Writes by accounts that bypass
// read_only (steward's, root, events with such definers) after this point
// would be missed: see docs/mysql.md.
func (b *Backend) finalPosition(ctx context.Context) (backends.Position, error) {
	c, f, err := b.session(ctx)
	if err != nil {
		return backends.Position{}, err
	}
	defer c.Close()
	if err := execAll(ctx, c, f.ReadOnlySQL(true)...); err != nil {
		return backends.Position{}, err
	}
	if _, err := killClientSessions(ctx, c); err != nil {
		return backends.Position{}, err
	}
	s, err := readServerState(ctx, c)
	if err != nil {
		return backends.Position{}, err
	}
	return s.ownPosition(), nil
}

// Promote turns the running replica into a writable primary without losing
// anything it received: the applier is started while the IO thread still
// exists (or the relay log is kept by switching to file coordinates), the
// IO thread stopped, the whole relay log applied (MASTER_GTID_WAIT /
// WAIT_FOR_EXECUTED_GTID_SET against the received set, watching the SQL
// thread), then STOP SLAVE, RESET SLAVE ALL, read_only (and
// super_read_only) off, read back. A server without replication is only
// made writable. It fails, leaving the server read-only, when the relay
// log cannot be applied before ctx ends or the applier stops with an error.
func (b *Backend) Promote(ctx context.Context) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.gen.Add(1)
	start := time.Now()
	if err := b.promote(ctx); err != nil {
		b.log.Info("promote failed", "error", err, "duration", time.Since(start).Round(time.Millisecond))
		return fmt.Errorf("promote: %w", err)
	}
	b.log.Info("promoted", "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) promote(ctx context.Context) error {
	c, f, err := b.session(ctx)
	if err != nil {
		return fmt.Errorf("the server does not answer: %w", err)
	}
	defer c.Close()
	rs, found, err := replicaStatus(ctx, c, f)
	if err != nil {
		return err
	}
	if found {
		if err := b.detach(ctx, c, f, rs); err != nil {
			return err
		}
	}
	// The history as it ends before the first write of this primary: where
	// it forked from the former one (ForkPosition).
	pre, err := readServerState(ctx, c)
	if err != nil {
		return err
	}
	if err := b.applySemiSync(ctx, c, f); err != nil {
		return err
	}
	if err := execAll(ctx, c, f.ReadOnlySQL(false)...); err != nil {
		return err
	}
	b.mu.Lock()
	b.replayErr = nil              // from another term: not this primary's health
	b.forkedAt = pre.ownPosition() // LSN tagged with this server's id: see SinceFork
	b.mu.Unlock()
	s, err := readServerState(ctx, c)
	if err != nil {
		return err
	}
	if !s.writable() {
		return errors.New("read_only is still on after turning it off (is something turning it back on?)")
	}
	b.setRefused("")
	return nil
}

// ForkPosition is the GTID history of the last promotion, read after the
// relay log was applied and before the server became writable: every
// transaction of the former primary it contains is in the new primary's
// history, every later one is not (clients' writes come after it; the
// position read after the promotion may already include some).
func (b *Backend) ForkPosition() backends.Position {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.forkedAt
}

// SinceFork says why pos cannot be promoted after the promotion that
// forked at fork (ForkPosition, recorded in the DCS history): it holds
// transactions that another server than that new primary wrote after the
// fork — the former primary's tail, which that promotion discarded, or a
// replica that received some of it. Promoting such a member would throw
// away what the new primary acknowledged since (each history has what the
// other lacks, so Compare orders neither ahead). "" when pos is compatible,
// or when it cannot be told (MySQL GTID sets: the fork does not say which
// server_uuid the new primary writes with; an unknown position).
func (*Backend) SinceFork(pos, fork backends.Position) string {
	tag, _, _ := DecodeLSN(fork.LSN)
	if tag == 0 || fork.GTID == "" || pos.GTID == "" {
		return ""
	}
	f, err1 := ParseMariaState(fork.GTID)
	p, err2 := ParseMariaState(pos.GTID)
	if err1 != nil || err2 != nil {
		return ""
	}
	others := MariaState{}
	for k, n := range p {
		if uint64(k.Server)%lsnTagMask+1 != tag {
			others[k] = n
		}
	}
	if errant := f.Errant(others); len(errant) > 0 {
		return "holds transactions written after the last promotion's fork point by another server than the new primary (discarded by that promotion; promoting this member would discard what the new primary acknowledged since): " + strings.Join(errant, ", ")
	}
	return ""
}

// Follow points the running read-only replica at up (configureReplica),
// without a restart. With up nil it stops the IO thread only (the applier
// goes on applying what was received; the relay log is kept). It refuses a
// writable server.
func (b *Backend) Follow(ctx context.Context, up *backends.Upstream) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.gen.Add(1)
	upName := ""
	if up != nil {
		upName = up.Name + " (" + hostPort(*up) + ")"
	}
	err := b.follow(ctx, up)
	if err != nil {
		b.log.Info("follow failed", "upstream", upName, "error", err)
		return fmt.Errorf("follow: %w", err)
	}
	b.log.Info("following", "upstream", upName)
	return nil
}

func (b *Backend) follow(ctx context.Context, up *backends.Upstream) error {
	if err := b.ping(ctx); err != nil {
		return fmt.Errorf("the server does not answer (start it as a replica instead): %w", err)
	}
	if up != nil {
		if _, initialized, err := clusterID(ctx, b.db); err != nil {
			return err
		} else if !initialized {
			return errors.New("the server is empty (no steward schema): it is cloned, not pointed at the leader")
		}
		return b.configureReplica(ctx, *up, true)
	}
	c, f, err := b.session(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, found, err := replicaStatus(ctx, c, f); err != nil || !found {
		return err
	}
	_, err = c.ExecContext(ctx, f.ReplicaThreadSQL(false, "IO_THREAD"))
	return err
}

// Divergence compares the local GTID history with up's (DESIGN rule 5):
// diverged when the local server has transactions up never had (errant
// transactions: committed here, never replicated — typically the tail of a
// former primary). MariaDB compares gtid_binlog_state-based states (see
// MariaState), not sequence numbers; MySQL gtid_executed sets. The Reason
// lists the errant GTIDs. The local server must run (its history is only
// readable over SQL); a server of another cluster (another
// steward.cluster identifier) is an error.
func (b *Backend) Divergence(ctx context.Context, up backends.Upstream) (backends.Divergence, error) {
	d, err := b.divergence(ctx, up)
	if err != nil {
		b.log.Debug("divergence check failed", "upstream", up.Name, "error", err)
		return d, fmt.Errorf("divergence: %w", err)
	}
	b.log.Info("divergence checked", "upstream", up.Name, "diverged", d.Diverged, "local_position", d.LocalPosition.String(), "reason", d.Reason)
	return d, nil
}

func (b *Backend) divergence(ctx context.Context, up backends.Upstream) (backends.Divergence, error) {
	ctx, cancel := b.queryCtx(ctx)
	defer cancel()
	local, err := readServerState(ctx, b.db)
	if err != nil {
		return backends.Divergence{}, fmt.Errorf("the local server does not answer (it must run to read its GTID history): %w", err)
	}
	d := backends.Divergence{LocalPosition: backends.Position{GTID: local.history}}
	upState, err := b.upstreamHistory(ctx, up)
	if err != nil {
		return d, err
	}
	if lid, _, err := clusterID(ctx, b.db); err == nil && lid != "" {
		db := b.remoteDB(up.Host, up.Port)
		uid, _, uerr := clusterID(ctx, db)
		db.Close()
		if uerr == nil && uid != "" && uid != lid {
			return d, fmt.Errorf("%s belongs to another cluster (steward.cluster %s, ours %s); it cannot be followed", up.Name, uid, lid)
		}
	}
	errant, err := errantAgainst(local, upState)
	if err != nil {
		return d, err
	}
	d.SwitchPoint = backends.Position{GTID: commonHistory(local, upState)}
	if len(errant) == 0 {
		d.Reason = fmt.Sprintf("the local GTID history (%s) is contained in %s's (%s): no errant transactions", orNone(local.history), up.Name, orNone(upState.history))
		b.mu.Lock()
		b.lastErrant = ""
		b.mu.Unlock()
		return d, nil
	}
	d.Diverged = true
	d.Reason = errantReason(local.flavor, errant, up.Name, b.opts.Member)
	b.mu.Lock()
	b.lastErrant = strings.Join(errant, ", ")
	b.mu.Unlock()
	return d, nil
}

func orNone(s string) string {
	if s == "" {
		return "empty"
	}
	return s
}

// commonHistory is the part of the local history up also has.
func commonHistory(local, up serverState) string {
	if local.flavor.MariaDB {
		l, _ := ParseMariaState(local.history)
		u, _ := ParseMariaState(up.history)
		return l.Common(u).String()
	}
	l, _ := ParseMySQLSet(local.history)
	u, _ := ParseMySQLSet(up.history)
	return l.Subtract(l.Subtract(u)).String()
}

// Rewind always fails: MySQL and MariaDB cannot rewind a server to another
// history. The error names the errant transactions found by the last
// divergence check and the way out (`steward reinit`, a re-clone).
func (b *Backend) Rewind(ctx context.Context, up backends.Upstream) error {
	b.mu.Lock()
	errant := b.lastErrant
	b.mu.Unlock()
	if errant == "" {
		errant = "(run the divergence check to list them)"
	}
	f, _ := b.Flavor()
	err := fmt.Errorf("rewind: %s cannot rewind a server to %s's history: errant transactions %s were found; re-clone this member with `steward reinit %s`",
		flavorName(f), up.Name, errant, b.opts.Member)
	b.log.Info("rewind refused", "upstream", up.Name, "error", err)
	return err
}

func flavorName(f Flavor) string {
	if f.Major == 0 {
		return "MySQL/MariaDB"
	}
	if f.MariaDB {
		return "MariaDB"
	}
	return "MySQL"
}

// Wipe empties the server logically, so that Clone can copy the leader into
// it: replication reset, every database but the system ones dropped, the
// binary logs and the GTID history reset — with sql_log_bin off, read-only
// kept. The server (and its accounts) stays: deleting the data directory
// would also delete steward's account. It starts the server when it does
// not run. It refuses to drop databases of a server that is not a member of
// a steward cluster (no steward.cluster record) — data steward did not
// create, for example after a failed adoption.
func (b *Backend) Wipe(ctx context.Context) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.gen.Add(1)
	defer b.begin(backends.StateUninitialized, "wiping the server (dropping its databases before a re-clone)")()
	dropped, err := b.wipe(ctx)
	if err != nil {
		b.log.Info("wipe failed", "error", err)
		return fmt.Errorf("wipe: %w", err)
	}
	b.log.Info("wiped the server", "dropped", dropped)
	return nil
}

func (b *Backend) wipe(ctx context.Context) ([]string, error) {
	if err := b.ensureRunning(ctx); err != nil {
		return nil, err
	}
	c, f, err := b.session(ctx)
	if err != nil {
		return nil, err
	}
	defer closeDiscard(c)
	dbs, err := userDatabases(ctx, c)
	if err != nil {
		return nil, err
	}
	id, initialized, err := clusterID(ctx, c)
	if err != nil {
		return nil, err
	}
	if (!initialized || id == "") && len(dbs) > 0 && !(len(dbs) == 1 && dbs[0] == "steward") {
		return nil, fmt.Errorf("the server holds databases %s but is not a member of a steward cluster (no steward.cluster record): refusing to drop data steward did not create",
			strings.Join(dbs, ", "))
	}
	if err := execAll(ctx, c, f.ReadOnlySQL(true)...); err != nil {
		return nil, err
	}
	if _, err := c.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
		return nil, err
	}
	if _, found, err := replicaStatus(ctx, c, f); err != nil {
		return nil, err
	} else if found {
		if err := execAll(ctx, c, f.ReplicaThreadSQL(false, ""), f.ResetReplicaAllSQL()); err != nil {
			return nil, err
		}
	}
	if !f.MariaDB {
		// MySQL: super_read_only blocks even steward; read_only stays on.
		if err := execAll(ctx, c, "SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = ON"); err != nil {
			return nil, err
		}
	}
	for _, d := range dbs {
		if _, err := c.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(d)); err != nil {
			return nil, fmt.Errorf("dropping %s: %w", d, err)
		}
	}
	stmts := []string{f.ResetBinlogsSQL()}
	if f.MariaDB {
		stmts = append(stmts, "SET GLOBAL gtid_slave_pos = ''")
	}
	if err := execAll(ctx, c, stmts...); err != nil {
		return dbs, err
	}
	if !f.MariaDB {
		_ = execAll(ctx, c, f.ReadOnlySQL(true)...)
	}
	b.setRefused("")
	return dbs, nil
}

// quoteIdent quotes a database or table name with backticks.
func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// EnsureSlots does nothing: MySQL and MariaDB have no replication slots
// (binary log retention is the server's binlog_expire_logs_seconds /
// expire_logs_days; keep it longer than the longest absence of a member,
// see docs/mysql.md).
func (b *Backend) EnsureSlots(context.Context, []string) error { return nil }

// Heartbeat commits one row in steward.heartbeat (member, UTC time, count)
// on the primary, with a deadline: innodb_lock_wait_timeout and (MariaDB)
// max_statement_time set for the statement, and ctx. It proves the primary
// can commit. The row replicates: a replica's Observe reports the newest
// one as ReplayTime.
//
// The row is written only while the server is writable (the INSERT selects
// from nothing WHERE read_only is off): steward's account may bypass
// read_only (READ ONLY ADMIN, SUPER), and a heartbeat committed on a fenced
// or read-only server would be an errant transaction there. A read-only
// server is an error. (A fence landing between that check and the commit
// could still let one heartbeat through; FenceWrites also ends the
// session.) With semi-synchronous replication the heartbeat is written
// without the binary log while commits wait for an acknowledgement (or no
// acknowledger is connected): max_statement_time does not end a statement
// waiting for one, and the heartbeat must not wait for a standby (strict
// mode waits for one by design; PostgreSQL's heartbeat uses
// synchronous_commit local for the same reason).
func (b *Backend) Heartbeat(ctx context.Context, member string) error {
	timeout := b.opts.QueryTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	secs := max(int64(timeout/time.Second), 1)
	err := func() error {
		c, f, err := b.session(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		guard := "@@global.read_only = 0"
		if !f.MariaDB {
			guard += " AND @@global.super_read_only = 0"
		}
		ins := "INSERT INTO steward.heartbeat (member, ts, n) SELECT ?, UTC_TIMESTAMP(6), 1 FROM DUAL WHERE " + guard +
			" ON DUPLICATE KEY UPDATE ts = UTC_TIMESTAMP(6), n = n + 1"
		var res sql.Result
		if f.MariaDB {
			// Semi-synchronous: the health commit is not binary-logged,
			// so that it never waits for an acknowledgement (semisync.go);
			// the replicated row that gives replicas their replay time is
			// written apart (replayBeat).
			noBinlog := ""
			if ss, err := readSemiSync(ctx, c); err == nil && ss.MasterEnabled {
				noBinlog = "sql_log_bin = 0, "
				why := ""
				if ss.WaitSessions == 0 {
					// (Commits waiting for an acknowledgement hold back
					// every commit behind them, the replicated heartbeat
					// too: that is the standbys' business, not ill health.)
					why = b.replayBeatProblem(ctx, c, timeout)
				}
				b.replayBeat(ins, member)
				if why != "" {
					return errors.New(why)
				}
			}
			res, err = c.ExecContext(ctx, fmt.Sprintf("SET STATEMENT %sinnodb_lock_wait_timeout = %d, max_statement_time = %d FOR ", noBinlog, secs, secs)+ins, member)
		} else {
			defer closeDiscard(c) // the session setting must not outlive this statement
			if _, err := c.ExecContext(ctx, fmt.Sprintf("SET SESSION innodb_lock_wait_timeout = %d", secs)); err != nil {
				return err
			}
			res, err = c.ExecContext(ctx, ins, member)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errors.New("the server is read-only")
		}
		return nil
	}()
	if err != nil {
		err = fmt.Errorf("heartbeat: the primary cannot commit: %w", err)
		b.log.Debug("heartbeat failed", "error", err)
		return err
	}
	b.log.Debug("heartbeat committed", "member", member)
	return nil
}

// replayBeat commits the replicated heartbeat row of a semi-synchronous
// primary (Heartbeat's statement ins, for member + "/replay") in the background, one at a time: its commit
// waits for an acknowledgement, for as long as strict mode waits for a
// standby, and the health check must not. Replicas read the newest row of
// steward.heartbeat as their replay time.
//
// It is also the health check's proof that the binary log can be written
// (the health commit itself is not binary-logged): replayBeatProblem says
// when it failed, or has been pending longer than the health check's
// deadline in any state but waiting for an acknowledgement (a binary log
// on a full disk: MariaDB retries the write once a minute while every
// commit waits; found by make chaos SYNC=quorum SEED=20261214 step 4-5).
func (b *Backend) replayBeat(ins, member string) {
	if !b.replayBeatBusy.CompareAndSwap(false, true) {
		return
	}
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		defer b.replayBeatBusy.Store(false)
		ctx, cancel := context.WithTimeout(b.closeCtx, 10*time.Minute)
		defer cancel()
		err := func() error {
			c, err := b.db.Conn(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			var id int64
			if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
				return err
			}
			b.mu.Lock()
			b.replayPending = replayPending{id: id, since: time.Now()}
			b.mu.Unlock()
			_, err = c.ExecContext(ctx, ins, member+"/replay")
			return err
		}()
		b.mu.Lock()
		b.replayPending = replayPending{}
		b.replayErr = nil
		if err != nil && ctx.Err() == nil {
			b.replayErr = err
		}
		b.mu.Unlock()
		if err != nil {
			b.log.Debug("replicated heartbeat not committed", "error", err)
		}
	}()
}

// replayPending is the replicated heartbeat in progress (id 0: none).
type replayPending struct {
	id    int64
	since time.Time
}

// replayBeatProblem says why the last replicated heartbeat shows that the
// binary log cannot be written ("" when nothing says so): it failed, or it
// has been pending for longer than bound in a state other than waiting
// for an acknowledgement.
func (b *Backend) replayBeatProblem(ctx context.Context, q querier, bound time.Duration) string {
	b.mu.Lock()
	p, lastErr := b.replayPending, b.replayErr
	b.mu.Unlock()
	if lastErr != nil {
		return "the replicated heartbeat failed: " + lastErr.Error()
	}
	if p.id == 0 || time.Since(p.since) < bound {
		return ""
	}
	row, found, err := queryRow(ctx, q, "SELECT STATE AS state FROM information_schema.PROCESSLIST WHERE ID = ?", p.id)
	if err != nil || !found || row["state"] == waitingForAckState {
		return ""
	}
	return fmt.Sprintf("the replicated heartbeat has been committing for %s (state %q): the binary log cannot be written", time.Since(p.since).Round(time.Second), row["state"])
}

// Demote makes the running writable server a read-only replica without a
// restart (an optional capability beyond the agent's Backend interface; the
// agent currently stops and restarts the database instead): read_only on
// (MySQL: super_read_only) and every client session ended over SQL, as
// FenceWrites does — if the server does not answer, FenceWrites kills it and
// Demote fails. Then, with up, replication from up is configured and
// started (configureReplica: a former primary whose history up lacks does
// not replicate; its gtid_slave_pos is seeded from gtid_current_pos). A
// switchover calls it with nil first, reads the final position, waits for
// the candidate (WaitApplied), and points it at the new primary with Follow.
func (b *Backend) Demote(ctx context.Context, up *backends.Upstream) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.gen.Add(1)
	start := time.Now()
	host, port := b.localHostPort()
	fctx, cancel := context.WithTimeout(ctx, fenceSQLBound)
	killed, err := b.fenceSQL(fctx, host, port)
	cancel()
	if err != nil {
		if ferr := b.FenceWrites(ctx); ferr != nil {
			return fmt.Errorf("demote: %w", ferr)
		}
		return fmt.Errorf("demote: the server did not answer (%v); it was killed to stop writes", err)
	}
	b.log.Info("demoted in place: read-only, client sessions ended", "sessions_killed", killed, "duration", time.Since(start).Round(time.Millisecond))
	if up == nil {
		return nil
	}
	if err := b.configureReplica(ctx, *up, true); err != nil {
		return fmt.Errorf("demote: read-only now, but following %s failed: %w", up.Name, err)
	}
	return nil
}

// WaitApplied waits (bounded by ctx) until the local server has applied
// every transaction of pos's GTID history (MASTER_GTID_WAIT /
// WAIT_FOR_EXECUTED_GTID_SET in one-second rounds), checking between rounds
// that the applier still runs. It is what a switchover candidate does
// before it promotes (DESIGN rule 4: the candidate has received and
// replayed P).
func (b *Backend) WaitApplied(ctx context.Context, pos backends.Position) error {
	c, f, err := b.session(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	target := pos.GTID
	if f.MariaDB {
		st, err := ParseMariaState(pos.GTID)
		if err != nil {
			return err
		}
		target = st.Position()
	}
	for {
		local, err := readServerState(ctx, c)
		if err != nil {
			return err
		}
		if Compare(backends.Position{GTID: local.history}, backends.Position{GTID: pos.GTID}) >= 0 {
			return nil
		}
		var r sql.NullInt64
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = c.QueryRowContext(wctx, f.WaitAppliedSQL(), target, 1).Scan(&r)
		cancel()
		if ctx.Err() != nil {
			return fmt.Errorf("waiting until %s is applied: %w", pos.GTID, ctx.Err())
		}
		if err != nil {
			return fmt.Errorf("waiting until %s is applied: %w", pos.GTID, err)
		}
		if r.Valid && r.Int64 == 0 {
			return nil
		}
		if rs, found, err := replicaStatus(ctx, c, f); err == nil && found && rs["Slave_SQL_Running"] != "Yes" {
			return fmt.Errorf("waiting until %s is applied: the applier (SQL thread) is stopped: %s", pos.GTID, orUnknown(rs["Last_SQL_Error"]))
		}
	}
}
