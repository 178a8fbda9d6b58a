package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/stewardha/steward/backends"
)

// replicaStatus reads the default replication connection's status
// (found=false: no replication configured).
func replicaStatus(ctx context.Context, q querier, f Flavor) (map[string]string, bool, error) {
	rs, found, err := queryRow(ctx, q, f.ReplicaStatusSQL())
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", f.ReplicaStatusSQL(), err)
	}
	if found && rs["Master_Host"] == "" {
		found = false
	}
	return rs, found, nil
}

// relayBacklog reports whether the relay log holds events the SQL thread
// has not applied: the read and applied coordinates in the primary's
// binary log differ (they survive a restart), or the IO thread's GTID
// position is ahead of the applied one. Replication in file mode (our own
// relay-log apply, interrupted) always counts.
func relayBacklog(f Flavor, rs map[string]string, applied string) bool {
	if f.MariaDB && rs["Using_Gtid"] == "No" {
		return true
	}
	// Nothing was ever read when Master_Log_File is empty (a fresh CHANGE
	// MASTER shows Read_Master_Log_Pos 4, Exec_Master_Log_Pos 0).
	if rs["Master_Log_File"] != "" && (rs["Master_Log_File"] != rs["Relay_Master_Log_File"] || rs["Read_Master_Log_Pos"] != rs["Exec_Master_Log_Pos"]) {
		return true
	}
	recv := receivedTarget(f, rs)
	if recv == "" {
		return false
	}
	a, ok1 := parseGTIDs(applied)
	r, ok2 := parseGTIDs(recv)
	if !ok1 || !ok2 {
		return false
	}
	c, ok := a.contains(r)
	return ok && !c
}

// receivedTarget is what the IO thread has received, in the form the wait
// function takes: MariaDB Gtid_IO_Pos, MySQL Retrieved_Gtid_Set.
func receivedTarget(f Flavor, rs map[string]string) string {
	if f.MariaDB {
		return strings.TrimSpace(rs["Gtid_IO_Pos"])
	}
	return strings.TrimSpace(rs["Retrieved_Gtid_Set"])
}

// appliedGTIDs reads what the local server has applied: MariaDB
// gtid_slave_pos, MySQL gtid_executed.
func appliedGTIDs(ctx context.Context, q querier, f Flavor) (string, error) {
	var v string
	query := "SELECT @@global.gtid_slave_pos"
	if !f.MariaDB {
		query = "SELECT @@global.gtid_executed"
	}
	err := q.QueryRowContext(ctx, query).Scan(&v)
	return strings.TrimSpace(v), err
}

// startApplier makes sure the SQL thread runs without ever losing the relay
// log. On MariaDB in GTID mode, starting any thread while both are stopped
// deletes the relay log and refetches from the primary — lost for good
// when the primary is dead (research/mysql-failover.md §3.2, 321
// acknowledged transactions lost in a verified run). So:
//   - SQL thread running: nothing to do;
//   - IO thread still present (running or connecting): START SQL_THREAD is
//     safe;
//   - both stopped, MariaDB, GTID mode: switch to file coordinates at the SQL
//     thread's relay-log position first (KeepRelayLogSQL keeps the relay
//     log), then START SQL_THREAD;
//   - both stopped in file mode (our own interrupted apply) or on MySQL
//     (which keeps relay logs across START): START SQL_THREAD.
func (b *Backend) startApplier(ctx context.Context, c querier, f Flavor, rs map[string]string) error {
	if rs["Slave_SQL_Running"] == "Yes" {
		return nil
	}
	io := rs["Slave_IO_Running"]
	if f.MariaDB && io != "Yes" && io != "Connecting" && rs["Using_Gtid"] != "No" {
		q, args := f.KeepRelayLogSQL(rs["Relay_Log_File"], atoi(rs["Relay_Log_Pos"]))
		if _, err := c.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("keeping the relay log (%s at %s) while switching to file coordinates: %w", rs["Relay_Log_File"], rs["Relay_Log_Pos"], err)
		}
		b.log.Info("both replication threads were stopped: applying the relay log in file coordinates so that it is not discarded",
			"relay_log_file", rs["Relay_Log_File"], "relay_log_pos", rs["Relay_Log_Pos"])
	}
	if _, err := c.ExecContext(ctx, f.ReplicaThreadSQL(true, "SQL_THREAD")); err != nil {
		return fmt.Errorf("%s: %w", f.ReplicaThreadSQL(true, "SQL_THREAD"), err)
	}
	return nil
}

// waitApplied waits until the SQL thread has applied everything received:
// the wait function against target (Gtid_IO_Pos / Retrieved_Gtid_Set) in
// one-second rounds, checking between rounds that the SQL thread still runs
// (MASTER_GTID_WAIT keeps waiting when it died). Without a target (unknown
// after a restart), or when the last received transaction was incomplete
// (the primary died while sending it), the applier having read all of the
// relay log with the applied position stable across a round ends the wait.
func (b *Backend) waitApplied(ctx context.Context, c querier, f Flavor, target string) (string, error) {
	var last string
	idleRounds := 0
	for {
		if target != "" {
			var r sql.NullInt64
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := c.QueryRowContext(wctx, f.WaitAppliedSQL(), target, 1).Scan(&r)
			cancel()
			if err != nil && ctx.Err() == nil {
				return "", fmt.Errorf("waiting for %s to be applied: %w", target, err)
			}
			if err == nil && r.Valid && r.Int64 == 0 {
				applied, _ := appliedGTIDs(ctx, c, f)
				return applied, nil
			}
		} else {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			applied, _ := appliedGTIDs(context.Background(), c, f)
			return applied, fmt.Errorf("the relay log was not applied in time (applied %s, received %s): %w", applied, orUnknown(target), ctx.Err())
		}
		rs, found, err := replicaStatus(ctx, c, f)
		if err != nil {
			return "", err
		}
		if !found {
			return "", errors.New("replication was reset while the relay log was being applied")
		}
		if rs["Slave_SQL_Running"] != "Yes" {
			return "", &applierStopped{errno: rs["Last_SQL_Errno"], msg: orUnknown(rs["Last_SQL_Error"])}
		}
		applied, err := appliedGTIDs(ctx, c, f)
		if err != nil {
			return "", err
		}
		if strings.Contains(rs["Slave_SQL_Running_State"], "read all relay log") && applied == last {
			idleRounds++
			if idleRounds >= 2 || target == "" {
				if target != "" {
					b.log.Warn("the applier read the whole relay log but the last received transaction is not applied: it was incomplete (the primary died while sending it); promoting with what was applied",
						"received", target, "applied", applied)
				}
				return applied, nil
			}
		} else {
			idleRounds = 0
		}
		last = applied
	}
}

// applierStopped: the SQL thread stopped with an error while a relay log
// was being applied.
type applierStopped struct{ errno, msg string }

func (e *applierStopped) Error() string {
	return fmt.Sprintf("the applier (SQL thread) stopped before the relay log was applied: error %s: %s", e.errno, e.msg)
}

// erGTIDOutOfOrder (MariaDB 1950): gtid_strict_mode refused to apply a
// transaction whose sequence number is behind what the server has.
const erGTIDOutOfOrder = "1950"

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// applyRelayLog applies the local relay log to its end with the IO thread
// stopped, then leaves the SQL thread stopped and (MariaDB) replication in
// GTID mode again. Used before restarting replication from the same
// source after both threads were stopped (a restart with
// skip_slave_start): START SLAVE in GTID mode would discard it.
func (b *Backend) applyRelayLog(ctx context.Context, c querier, f Flavor, rs map[string]string) error {
	start := time.Now()
	if err := b.startApplier(ctx, c, f, rs); err != nil {
		return err
	}
	applied, err := b.waitApplied(ctx, c, f, receivedTarget(f, rs))
	if err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, f.ReplicaThreadSQL(false, "SQL_THREAD")); err != nil {
		return err
	}
	if f.MariaDB {
		if cur, _, err := replicaStatus(ctx, c, f); err == nil && cur["Using_Gtid"] == "No" {
			if _, err := c.ExecContext(ctx, f.GTIDModeSQL()); err != nil {
				return fmt.Errorf("switching back to GTID positioning: %w", err)
			}
		}
	}
	b.log.Info("applied the relay log before restarting replication", "applied", applied, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// detach is the replica half of a promotion: apply everything received,
// then forget the source. The order matters (research §3.1): the applier
// is started while the IO thread still exists (or the relay log is kept by
// switching to file coordinates), then the IO thread is stopped so nothing
// more arrives, then the whole relay log is applied (waitApplied), and only
// then STOP SLAVE and RESET SLAVE ALL (which deletes the relay log).
func (b *Backend) detach(ctx context.Context, c querier, f Flavor, rs map[string]string) error {
	if err := b.startApplier(ctx, c, f, rs); err != nil {
		return err
	}
	if io := rs["Slave_IO_Running"]; io == "Yes" || io == "Connecting" {
		if _, err := c.ExecContext(ctx, f.ReplicaThreadSQL(false, "IO_THREAD")); err != nil {
			return fmt.Errorf("%s: %w", f.ReplicaThreadSQL(false, "IO_THREAD"), err)
		}
	}
	rs, found, err := replicaStatus(ctx, c, f)
	if err != nil {
		return err
	}
	if !found {
		return errors.New("replication was reset while promoting")
	}
	target := receivedTarget(f, rs)
	t0 := time.Now()
	applied, err := b.waitApplied(ctx, c, f, target)
	if err != nil {
		return err
	}
	b.log.Info("applied the whole relay log", "received", orUnknown(target), "applied", applied, "duration", time.Since(t0).Round(time.Millisecond))
	if err := execAll(ctx, c, f.ReplicaThreadSQL(false, ""), f.ResetReplicaAllSQL()); err != nil {
		return err
	}
	return nil
}

// upstreamHistory reads up's GTID history over a new connection.
func (b *Backend) upstreamHistory(ctx context.Context, up backends.Upstream) (serverState, error) {
	db := b.remoteDB(up.Host, up.Port)
	defer db.Close()
	s, err := readServerState(ctx, db)
	if err != nil {
		return s, fmt.Errorf("reading the GTID history of %s (%s): %w", up.Name, hostPort(up), err)
	}
	return s, nil
}

// errantAgainst lists the local transactions up's history lacks (nil:
// none). It returns an error when either history cannot be read.
func errantAgainst(local, upstream serverState) ([]string, error) {
	if local.flavor.MariaDB != upstream.flavor.MariaDB {
		return nil, fmt.Errorf("the local server is %s and the upstream %s: they cannot replicate GTIDs between them", local.flavor, upstream.flavor)
	}
	if local.flavor.MariaDB {
		l, err := ParseMariaState(local.history)
		if err != nil {
			return nil, err
		}
		u, err := ParseMariaState(upstream.history)
		if err != nil {
			return nil, err
		}
		return u.Errant(l), nil
	}
	l, err := ParseMySQLSet(local.history)
	if err != nil {
		return nil, err
	}
	u, err := ParseMySQLSet(upstream.history)
	if err != nil {
		return nil, err
	}
	if e := l.Subtract(u); len(e) > 0 {
		return []string{e.String()}, nil
	}
	return nil, nil
}

// configureReplica points the local read-only server at up with GTID
// auto-positioning and (start) starts replication:
//   - already replicating from up with both threads running: nothing;
//   - first, when up answers, the local GTID history must be contained in
//     up's: otherwise replication is configured but not started, and the
//     errant transactions are remembered for Observe and Divergence (the
//     agent then keeps the member out; see Divergence);
//   - the same source with both threads stopped and a relay-log backlog
//     (a restart): the relay log is applied first (applyRelayLog), then
//     replication started;
//   - another source: STOP SLAVE, (MariaDB) gtid_slave_pos seeded with
//     gtid_current_pos — which for a former primary is its own binlog
//     position — then CHANGE MASTER TO up and START SLAVE. The old source's
//     unapplied relay log is discarded on purpose: the new primary was
//     chosen as the member that received the most, and applying what it
//     does not have would make this member errant.
func (b *Backend) configureReplica(ctx context.Context, up backends.Upstream, start bool) error {
	c, f, err := b.session(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rs, found, err := replicaStatus(ctx, c, f)
	if err != nil {
		return err
	}
	want := hostPort(up)
	same := found && net.JoinHostPort(rs["Master_Host"], rs["Master_Port"]) == want
	gtidMode := f.MariaDB && (rs["Using_Gtid"] == "Slave_Pos" || rs["Using_Gtid"] == "Current_Pos") || !f.MariaDB && rs["Auto_Position"] == "1"
	if same && gtidMode && rs["Slave_IO_Running"] == "Yes" && rs["Slave_SQL_Running"] == "Yes" {
		b.setRefused("")
		return nil
	}
	local, err := readServerState(ctx, c)
	if err != nil {
		return err
	}
	if local.writable() {
		return errors.New("the server is writable (a primary): it must be demoted (made read-only) before it follows another member")
	}
	if f.MariaDB {
		// A former semi-synchronous primary stops waiting for
		// acknowledgements, but never while a commit waits for one:
		// releasing it would acknowledge a write no replica has
		// (fencing and demotion end the client sessions first).
		// A replica's recorded decision is "not waiting": a later
		// promotion sets its own (SetSync before Promote).
		if d := b.lastSemiSync(); d != nil && d.Enabled {
			if err := b.saveSemiSync(semiSyncDecision{At: time.Now().UTC()}); err != nil {
				return err
			}
		}
		if ss, err := readSemiSync(ctx, c); err == nil && ss.MasterEnabled && ss.WaitSessions == 0 {
			if err := execAll(ctx, c, masterSemiSyncSQL(false)...); err != nil {
				return err
			}
		}
	}
	uctx, cancel := b.queryCtx(ctx)
	upState, uerr := b.upstreamHistory(uctx, up)
	cancel()
	var errant []string
	if uerr == nil {
		if errant, err = errantAgainst(local, upState); err != nil {
			return err
		}
	} else {
		b.log.Info("cannot check the local history against the upstream before replicating; the upstream checks it when the replica connects", "upstream", up.Name, "error", uerr)
	}
	if len(errant) > 0 {
		start = false
	}
	if same && (gtidMode || f.MariaDB && rs["Using_Gtid"] == "No") {
		if start && f.MariaDB && rs["Slave_IO_Running"] != "Yes" && rs["Slave_IO_Running"] != "Connecting" {
			applied, _ := appliedGTIDs(ctx, c, f)
			if relayBacklog(f, rs, applied) {
				err := b.applyRelayLog(ctx, c, f, rs)
				var as *applierStopped
				if errors.As(err, &as) && as.errno == erGTIDOutOfOrder && uerr == nil && f.MariaDB {
					// The relay log's stored position is behind what was
					// applied (a crash can leave relay-log.info behind
					// gtid_slave_pos, which is crash-safe), so the relay
					// log replays transactions the server has, and strict
					// mode refuses them. Found by the fault-injection suite
					// (a replica's host crash): replication never restarted.
					// The upstream answers and sent that relay log: restart
					// in GTID mode from gtid_slave_pos, which fetches what
					// was not applied again (START SLAVE drops the relay
					// log). Nothing is applied twice or lost.
					b.log.Warn("the relay log replays transactions already applied (its position is stale after a crash); restarting replication from gtid_slave_pos instead", "upstream", up.Name, "error", err)
					if err = execAll(ctx, c, f.ReplicaThreadSQL(false, ""), f.GTIDModeSQL()); err != nil {
						return fmt.Errorf("switching back to GTID positioning after a stale relay log: %w", err)
					}
				}
				if err != nil {
					return fmt.Errorf("applying the relay log received from %s before restarting replication: %w", up.Name, err)
				}
			}
		}
	} else {
		if found {
			if _, err := c.ExecContext(ctx, f.ReplicaThreadSQL(false, "")); err != nil {
				return fmt.Errorf("%s: %w", f.ReplicaThreadSQL(false, ""), err)
			}
		}
		if f.MariaDB && local.currentPos != local.slavePos {
			// A former primary's gtid_slave_pos is stale (or empty): start
			// from what it has, its own binlog included. Errant
			// transactions there make the upstream refuse the connection
			// (error 1236) instead of being silently skipped.
			if _, err := c.ExecContext(ctx, "SET GLOBAL gtid_slave_pos = ?", local.currentPos); err != nil {
				return fmt.Errorf("seeding gtid_slave_pos with gtid_current_pos (%s): %w", local.currentPos, err)
			}
		}
		q, args := f.ChangeSourceSQL(up.Host, up.Port, b.opts.Replication.Username, b.opts.Replication.Password)
		_, err := c.ExecContext(ctx, q, args...)
		if errno(err) == erMasterInfo {
			// The stored replication configuration of a server that was
			// killed while writing it cannot be read, and every CHANGE
			// MASTER fails on it (found by the fault-injection suite: a
			// former primary fenced with kill -9 never rejoined). Forget it
			// and its relay logs, then point again: this member changes
			// upstream, and GTID auto-positioning fetches from the new one
			// whatever it has not applied.
			b.log.Warn("the stored replication configuration is unreadable; resetting it before pointing at the new upstream", "upstream", up.Name, "error", err)
			if rerr := execAll(ctx, c, f.ResetReplicaAllSQL()); rerr != nil {
				return fmt.Errorf("pointing replication at %s (%s): %w; resetting the unreadable replication configuration failed too: %v", up.Name, want, err, rerr)
			}
			_, err = c.ExecContext(ctx, q, args...)
		}
		if err != nil {
			return fmt.Errorf("pointing replication at %s (%s): %w", up.Name, want, err)
		}
	}
	if len(errant) > 0 {
		why := errantReason(f, errant, up.Name, b.opts.Member)
		b.setRefused(why)
		b.mu.Lock()
		b.lastErrant = strings.Join(errant, ", ")
		b.mu.Unlock()
		b.log.Warn("not replicating: the local history has transactions the upstream never had", "upstream", up.Name, "errant", errant)
		return nil
	}
	b.setRefused("")
	if start {
		if _, err := c.ExecContext(ctx, f.ReplicaThreadSQL(true, "")); err != nil {
			return fmt.Errorf("%s: %w", f.ReplicaThreadSQL(true, ""), err)
		}
	}
	return nil
}

func (b *Backend) setRefused(why string) {
	b.mu.Lock()
	b.refused = why
	b.mu.Unlock()
}

// errantReason explains errant transactions to an operator.
func errantReason(f Flavor, errant []string, upstream, member string) string {
	what := "GTIDs"
	if f.MariaDB {
		what = "MariaDB GTIDs"
	}
	return fmt.Sprintf("errant transactions: %s %s were committed on this member and are not in the history of %s; a MySQL/MariaDB member cannot be rewound: re-clone it with `steward reinit %s` (the errant transactions are then discarded)",
		what, strings.Join(errant, ", "), upstream, member)
}
