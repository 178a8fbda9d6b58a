package postgres

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stewardha/steward/backends"
)

// Observe reads the local server's state, bounded by ctx and the query
// timeout. It never returns an error and never panics: what cannot be read
// is reported in State and Reason.
//
//   - no data directory, or an empty one: StateUninitialized
//   - postmaster not running: StateStopped after a clean shutdown (or a
//     fresh base backup / rewind waiting to be started), StateCrashed
//     otherwise
//   - postmaster running: StateStarting until it accepts connections,
//     StateRunning when it answers, StateUnresponsive when it should answer
//     and does not
func (b *Backend) Observe(ctx context.Context) (st backends.Status) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("observe panicked", "panic", r)
			st = backends.Status{State: backends.StateUnresponsive, Reason: fmt.Sprintf("internal error while observing: %v", r)}
		}
		b.log.Debug("observed", "state", st.State, "reason", st.Reason, "in_recovery", st.InRecovery, "writable", st.Writable,
			"timeline", st.Timeline, "position", st.Position.String(), "streaming", st.Streaming, "upstream", st.Upstream,
			"duration", time.Since(start).Round(10*time.Microsecond))
	}()
	ctx, cancel := b.queryCtx(ctx)
	defer cancel()

	if op := b.op.Load(); op != nil && RunningPID(b.dataDir) == 0 {
		return backends.Status{State: op.state, Reason: op.reason}
	}
	ents, err := b.dataDirEntries()
	if err != nil {
		return backends.Status{State: backends.StateCrashed, Reason: fmt.Sprintf("cannot read postgres.data_dir %s: %v", b.dataDir, err)}
	}
	if len(ents) == 0 {
		return backends.Status{State: backends.StateUninitialized, Reason: "data directory is empty or missing"}
	}
	if _, err := os.Stat(filepath.Join(b.dataDir, "PG_VERSION")); err != nil {
		return backends.Status{State: backends.StateUninitialized,
			Reason: fmt.Sprintf("data directory %s is not empty but holds no PostgreSQL cluster (no PG_VERSION); wipe it (steward reinit) to clone", b.dataDir)}
	}

	pf, ok := readPidFile(b.dataDir)
	if !ok || !serverProcess(pf.pid, b.dataDir) {
		return b.observeStopped(ctx)
	}
	st.PID = pf.pid
	switch pf.status {
	case "stopping":
		st.State = backends.StateUnresponsive
		st.Reason = "server is shutting down"
		return st
	case "ready", "standby":
	default: // "starting", or not written yet
		st.State = backends.StateStarting
		st.Reason = "server is starting (recovery in progress, not accepting connections yet)"
		return st
	}
	b.observeRunning(ctx, &st)
	return st
}

// observeStopped reports a data directory without a running server.
func (b *Backend) observeStopped(ctx context.Context) backends.Status {
	st := backends.Status{}
	cd, err := b.controlData(ctx)
	if err != nil {
		st.State = backends.StateCrashed
		st.Reason = fmt.Sprintf("not running, and the control file cannot be read: %v", err)
		return st
	}
	st.SystemID = cd["Database system identifier"]
	if v, err := os.ReadFile(filepath.Join(b.dataDir, "PG_VERSION")); err == nil {
		st.Version = strings.TrimSpace(string(v))
	}
	state := cd.state()
	_, backupLabel := os.Stat(filepath.Join(b.dataDir, "backup_label"))
	switch {
	case cleanShutdown(state):
		st.State = backends.StateStopped
		st.Reason = "not running (" + state + ")"
		// Where its history ends: a primary stopped for a switchover hands
		// over only once the candidate replayed this position (rule 4).
		st.Timeline, st.Position.LSN = b.stoppedEnd(ctx, cd)
	case backupLabel == nil:
		st.State = backends.StateStopped
		st.Reason = "not running: fresh base backup or rewind (backup_label present), ready to start as a replica"
	default:
		st.State = backends.StateCrashed
		st.Reason = fmt.Sprintf("not running and not shut down cleanly (control file: %q); it needs crash recovery on start", state)
	}
	return st
}

// observeRunning queries a server whose postmaster says it accepts
// connections.
func (b *Backend) observeRunning(ctx context.Context, st *backends.Status) {
	var conninfo string
	var receivedTLI int64
	err := b.withConn(ctx, func(c *pgx.Conn) error {
		if err := b.loadStatic(ctx, c); err != nil {
			return err
		}
		var readOnly string
		if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only'),
			coalesce((SELECT bool_or(pending_restart) FROM pg_settings), false)`).Scan(&st.InRecovery, &readOnly, &st.PendingRestart); err != nil {
			return fmt.Errorf("reading the recovery state: %w", err)
		}
		if !st.InRecovery {
			var flush, walfile, ssn string
			if err := c.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text, pg_walfile_name(pg_current_wal_lsn()),
				current_setting('synchronous_standby_names')`).Scan(&flush, &walfile, &ssn); err != nil {
				return fmt.Errorf("reading the WAL position: %w", err)
			}
			st.Sync = syncConfigOf(ssn)
			lsn, err := parseLSN(flush)
			if err != nil {
				return err
			}
			st.Position.LSN = lsn
			if tli, err := timelineFromWalfile(walfile); err == nil {
				st.Timeline = tli
			}
			st.Writable = readOnly == "off"
			if !st.Sync.Async() {
				// A session in COMMIT waiting for the standbys has been in
				// its current state since the statement started.
				var wait float64
				if err := c.QueryRow(ctx, `SELECT coalesce(extract(epoch FROM max(clock_timestamp() - state_change)), 0)::float8
					FROM pg_stat_activity WHERE wait_event = 'SyncRep'`).Scan(&wait); err != nil {
					return fmt.Errorf("reading commits waiting for synchronous standbys: %w", err)
				}
				st.SyncWait = time.Duration(wait * float64(time.Second))
			}
			return b.readReplicas(ctx, c, st)
		}
		var recv, replay string
		var ts *time.Time
		if err := c.QueryRow(ctx, `SELECT coalesce(pg_last_wal_receive_lsn()::text, ''), coalesce(pg_last_wal_replay_lsn()::text, ''),
			pg_is_wal_replay_paused(), pg_last_xact_replay_timestamp(), current_setting('primary_conninfo')`).Scan(&recv, &replay, &st.ReplayPaused, &ts, &conninfo); err != nil {
			return fmt.Errorf("reading the replay state: %w", err)
		}
		r, err := parseLSN(recv)
		if err != nil {
			return err
		}
		p, err := parseLSN(replay)
		if err != nil {
			return err
		}
		st.Received.LSN, st.Replayed.LSN = r, p
		st.Position.LSN = max(r, p)
		if ts != nil {
			st.ReplayTime = *ts
		}
		st.Upstream = configuredUpstream(conninfo)
		rows, err := c.Query(ctx, `SELECT status, coalesce(sender_host, ''), coalesce(sender_port, 0), coalesce(received_tli, 0) FROM pg_stat_wal_receiver`)
		if err != nil {
			return fmt.Errorf("reading pg_stat_wal_receiver: %w", err)
		}
		var status, host string
		var port int
		found := false
		for rows.Next() {
			if err := rows.Scan(&status, &host, &port, &receivedTLI); err != nil {
				rows.Close()
				return fmt.Errorf("reading pg_stat_wal_receiver: %w", err)
			}
			found = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading pg_stat_wal_receiver: %w", err)
		}
		switch {
		case !found && st.Upstream == "":
			st.ReceiverState = "stopped"
			st.Reason = "replica without an upstream (no primary_conninfo)"
		case !found:
			st.ReceiverState = "stopped"
			st.Reason = "WAL receiver not running: cannot connect to " + st.Upstream + " or it refused streaming"
			if p := b.lastLogProblem(); p != "" {
				st.Reason += "; server log: " + p
			}
		default:
			st.ReceiverState = status
			sender := ""
			if host != "" && port != 0 {
				sender = net.JoinHostPort(host, strconv.Itoa(port))
			}
			if st.Upstream == "" {
				st.Upstream = sender
			}
			st.Streaming = status == "streaming" && (sender == "" || sender == st.Upstream)
			if !st.Streaming {
				st.Reason = "WAL receiver " + status
				if sender != "" && sender != st.Upstream {
					st.Reason += " (still connected to " + sender + ")"
				}
				if p := b.lastLogProblem(); p != "" {
					st.Reason += "; server log: " + p
				}
			}
		}
		return nil
	})
	if err != nil {
		if sqlState(err) == "57P03" { // cannot_connect_now: starting up / shutting down
			st.State = backends.StateStarting
			st.Reason = "server is not accepting connections yet: " + err.Error()
			return
		}
		*st = backends.Status{PID: st.PID, State: backends.StateUnresponsive,
			Reason: fmt.Sprintf("server process %d runs but does not answer: %v", st.PID, err)}
		return
	}
	st.State = backends.StateRunning
	b.staticMu.Lock()
	st.SystemID, st.Version = b.sysID, b.version
	seg := b.walSeg
	b.staticMu.Unlock()
	if st.InRecovery {
		st.Timeline = b.replicaTimeline(ctx, receivedTLI)
		if err := b.checkPromoteSpace(seg); err != nil {
			st.CannotPromote = err.Error()
		}
	}
}

// timelineCacheTTL bounds how long a standby's replay timeline is reused
// without asking the server again.
const timelineCacheTTL = 5 * time.Second

// loadStatic caches the system identifier and server version.
func (b *Backend) loadStatic(ctx context.Context, c *pgx.Conn) error {
	b.staticMu.Lock()
	have := b.sysID != ""
	b.staticMu.Unlock()
	if have {
		return nil
	}
	var id, ver string
	var seg int64
	if err := c.QueryRow(ctx, `SELECT system_identifier::text, current_setting('server_version'),
		(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') FROM pg_control_system()`).Scan(&id, &ver, &seg); err != nil {
		return fmt.Errorf("reading the system identifier: %w", err)
	}
	b.staticMu.Lock()
	b.sysID, b.version, b.walSeg = id, ver, seg
	b.staticMu.Unlock()
	return nil
}

// readReplicas fills st.Replicas from pg_stat_replication.
func (b *Backend) readReplicas(ctx context.Context, c *pgx.Conn, st *backends.Status) error {
	rows, err := c.Query(ctx, `SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
		coalesce(flush_lsn::text, ''), coalesce(replay_lsn::text, ''),
		CASE WHEN flush_lsn IS NULL OR flush_lsn < pg_current_wal_flush_lsn()
			THEN coalesce(extract(epoch FROM clock_timestamp() - reply_time), 0)::float8 ELSE 0 END
		FROM pg_stat_replication ORDER BY application_name`)
	if err != nil {
		return fmt.Errorf("reading pg_stat_replication: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r backends.ReplicaConn
		var flush, replay string
		var unconfirmed float64
		if err := rows.Scan(&r.Name, &r.State, &r.SyncState, &flush, &replay, &unconfirmed); err != nil {
			return fmt.Errorf("reading pg_stat_replication: %w", err)
		}
		r.Flushed.LSN, _ = parseLSN(flush)
		r.Replayed.LSN, _ = parseLSN(replay)
		r.Unconfirmed = time.Duration(max(unconfirmed, 0) * float64(time.Second))
		st.Replicas = append(st.Replicas, r)
	}
	return rows.Err()
}

// replicaTimeline is the timeline a standby replays: IDENTIFY_SYSTEM over a
// local replication connection, falling back to the last restartpoint's
// timeline (which lags behind a timeline switch until the next
// restartpoint). The answer is cached while the WAL receiver's timeline
// (receivedTLI, 0 when none) agrees with it, for up to 5 s.
func (b *Backend) replicaTimeline(ctx context.Context, receivedTLI int64) int64 {
	b.staticMu.Lock()
	tli, at := b.tli, b.tliAt
	b.staticMu.Unlock()
	if tli != 0 && time.Since(at) < timelineCacheTTL && (receivedTLI == 0 || receivedTLI == tli) {
		return tli
	}
	if id, err := b.identifyLocal(ctx); err == nil {
		b.staticMu.Lock()
		b.tli, b.tliAt = id.timeline, time.Now()
		b.staticMu.Unlock()
		return id.timeline
	} else {
		b.log.Debug("IDENTIFY_SYSTEM on the local standby failed; using pg_control_checkpoint()", "error", err)
	}
	var ckptTLI int64
	_ = b.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT timeline_id FROM pg_control_checkpoint()`).Scan(&ckptTLI)
	})
	return max(ckptTLI, tli)
}

// identifyLocal runs IDENTIFY_SYSTEM on the local server.
func (b *Backend) identifyLocal(ctx context.Context) (identifySystem, error) {
	host, port := b.localHostPort()
	c, err := b.replConn(ctx, host, port, "disable")
	if err != nil {
		return identifySystem{}, err
	}
	defer closePgConn(c)
	return runIdentifySystem(ctx, c)
}

// stoppedEnd returns the timeline and end of WAL of a cleanly stopped server
// (0, 0 when unknown), cached per checkpoint location.
func (b *Backend) stoppedEnd(ctx context.Context, cd controlData) (int64, uint64) {
	ckpt := cd.lsn("Latest checkpoint location")
	b.staticMu.Lock()
	if ckpt != 0 && ckpt == b.stoppedCkpt {
		tli, end := b.stoppedTLI, b.stoppedPos
		b.staticMu.Unlock()
		return tli, end
	}
	b.staticMu.Unlock()
	h, err := b.readLocalHistory(ctx)
	if err != nil {
		b.log.Debug("end of WAL of the stopped server unknown", "error", err)
		return 0, 0
	}
	b.staticMu.Lock()
	b.stoppedCkpt, b.stoppedTLI, b.stoppedPos = ckpt, h.timeline, h.position
	b.staticMu.Unlock()
	return h.timeline, h.position
}
