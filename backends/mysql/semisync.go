package mysql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/stewardha/steward/backends"
)

// Semi-synchronous replication (MariaDB; docs/mysql.md#synchronous-replication).
//
// A MariaDB primary with rpl_semi_sync_master_enabled waits, before it
// acknowledges a commit, for one acknowledgement from any replica connected
// with rpl_semi_sync_slave_enabled. Which replicas acknowledge is therefore
// decided on the replicas: the leader's agent lists the allowed ones in the
// DCS sync key and each replica's agent turns its own flag on or off
// (SetAcknowledger, agent/ack.go). This file is the server side of it:
//
//   - SetSync (on the primary): AFTER_SYNC (a commit is visible to other
//     sessions only once a replica has it), wait_no_slave ON and a timeout
//     of 49 days, so that the server never falls back to asynchronous on its
//     own: only the leader decides that, after it told the DCS (rule 6).
//     The decision is also written to DataDir/steward-semisync.json and
//     applied again whenever this backend makes the server writable, so a
//     primary restarted after a crash does not acknowledge a commit without
//     a replica before its agent catches up.
//   - SetAcknowledger (on a replica): the flag, and a restart of the IO
//     thread, without which the change does not take effect (found by hand
//     with 10.11: a replica whose flag was turned off keeps acknowledging
//     until its IO thread reconnects).
//   - Heartbeat does not wait for an acknowledgement (sql_log_bin=0 while a
//     commit already waits): a statement waiting for one is not ended by
//     max_statement_time, and a heartbeat must not hang the agent's loop
//     or pile up sessions while strict mode waits for a standby.
//
// MySQL 8 needs the rpl_semi_sync_source/replica plugins and other variable
// names; it is not supported yet (SyncUnsupported).

// semiSyncTimeoutMS is rpl_semi_sync_master_timeout while steward manages
// semi-synchronous replication: 2^32-1 ms (49.7 days), i.e. never.
const semiSyncTimeoutMS = 4294967295

// semiSyncFile is where SetSync records its last decision (in DataDir).
const semiSyncFile = "steward-semisync.json"

type semiSyncDecision struct {
	Enabled bool                `json:"enabled"`
	Config  backends.SyncConfig `json:"config"`
	At      time.Time           `json:"at"`
}

// SyncUnsupported says why this server cannot run steward's synchronous
// modes ("" when it can: MariaDB).
func (b *Backend) SyncUnsupported() string {
	b.mu.Lock()
	f := b.flavor
	b.mu.Unlock()
	switch {
	case f == nil:
		return "the server's flavor is not known yet (it has not answered)"
	case !f.MariaDB:
		return "semi-synchronous replication is implemented for MariaDB only; MySQL " + f.Version + " needs the rpl_semi_sync_source plugin, which steward does not manage yet"
	}
	return ""
}

// masterSemiSyncSQL turns the primary's waiting on or off.
func masterSemiSyncSQL(on bool) []string {
	if !on {
		return []string{"SET GLOBAL rpl_semi_sync_master_enabled = OFF"}
	}
	return []string{
		"SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'",
		"SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON",
		"SET GLOBAL rpl_semi_sync_master_timeout = " + strconv.FormatUint(semiSyncTimeoutMS, 10),
		"SET GLOBAL rpl_semi_sync_master_enabled = ON",
	}
}

// SetSync makes the server wait for one acknowledgement before it
// acknowledges a commit (cfg not asynchronous) or not (asynchronous). Which
// replicas may acknowledge (cfg.Names) is up to their agents; at most one
// acknowledgement is waited for (MariaDB has no count). It returns the
// server's GTID position read after the change.
func (b *Backend) SetSync(ctx context.Context, cfg backends.SyncConfig) (backends.Position, error) {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	c, f, err := b.session(ctx)
	if err != nil {
		return backends.Position{}, err
	}
	defer c.Close()
	if !f.MariaDB {
		return backends.Position{}, errors.New(b.SyncUnsupported())
	}
	on := !cfg.Async()
	if err := b.saveSemiSync(semiSyncDecision{Enabled: on, Config: cfg, At: time.Now().UTC()}); err != nil {
		return backends.Position{}, err
	}
	if err := execAll(ctx, c, masterSemiSyncSQL(on)...); err != nil {
		return backends.Position{}, fmt.Errorf("setting semi-synchronous replication: %w", err)
	}
	s, err := readServerState(ctx, c)
	if err != nil {
		return backends.Position{}, err
	}
	b.log.Info("semi-synchronous replication set", "waits_for_an_acknowledgement", on, "acknowledgers", cfg.Names, "position", s.ownPosition().String())
	return s.ownPosition(), nil
}

// saveSemiSync records the decision in memory and, with a data directory,
// on disk (written to a temporary file and renamed).
func (b *Backend) saveSemiSync(d semiSyncDecision) error {
	b.mu.Lock()
	b.semiSync = &d
	b.mu.Unlock()
	if b.dataDir == "" {
		return nil
	}
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	path := filepath.Join(b.dataDir, semiSyncFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("recording the semi-synchronous decision in %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// lastSemiSync is the last decision of SetSync (memory, else the file; nil
// when none is known).
func (b *Backend) lastSemiSync() *semiSyncDecision {
	b.mu.Lock()
	d := b.semiSync
	b.mu.Unlock()
	if d != nil || b.dataDir == "" {
		return d
	}
	data, err := os.ReadFile(filepath.Join(b.dataDir, semiSyncFile))
	if err != nil {
		return nil
	}
	var fd semiSyncDecision
	if json.Unmarshal(data, &fd) != nil {
		return nil
	}
	b.mu.Lock()
	b.semiSync = &fd
	b.mu.Unlock()
	return &fd
}

// applySemiSync re-applies the last decision before the server is made
// writable (a restart forgets SET GLOBAL).
func (b *Backend) applySemiSync(ctx context.Context, q querier, f Flavor) error {
	d := b.lastSemiSync()
	if d == nil || !f.MariaDB {
		return nil
	}
	if err := execAll(ctx, q, masterSemiSyncSQL(d.Enabled)...); err != nil {
		return fmt.Errorf("re-applying semi-synchronous replication (%s) before accepting writes: %w", d.Config, err)
	}
	return nil
}

// SetAcknowledger turns this replica's acknowledgements on or off, and
// restarts its IO thread when it runs so that the change takes effect now.
// Only the IO thread is restarted: the relay log and the applier stay.
// It returns the state read afterwards: with the IO thread restarted, once
// Rpl_semi_sync_slave_status follows (within 2 s).
func (b *Backend) SetAcknowledger(ctx context.Context, on bool) (*backends.SemiSync, error) {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	c, f, err := b.session(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if !f.MariaDB {
		return nil, errors.New(b.SyncUnsupported())
	}
	v := "OFF"
	if on {
		v = "ON"
	}
	if _, err := c.ExecContext(ctx, "SET GLOBAL rpl_semi_sync_slave_enabled = "+v); err != nil {
		return nil, err
	}
	rs, found, err := replicaStatus(ctx, c, f)
	if err != nil {
		return nil, err
	}
	restarted := false
	if found && (rs["Slave_IO_Running"] == "Yes" || rs["Slave_IO_Running"] == "Connecting") {
		if err := execAll(ctx, c, "STOP SLAVE IO_THREAD", "START SLAVE IO_THREAD"); err != nil {
			return nil, fmt.Errorf("restarting the IO thread for rpl_semi_sync_slave_enabled=%s: %w", v, err)
		}
		restarted = true
	}
	ss, err := readSemiSync(ctx, c)
	for end := time.Now().Add(2 * time.Second); err == nil && restarted && ss.SlaveActive != on && time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return ss, nil
		case <-time.After(20 * time.Millisecond):
		}
		ss, err = readSemiSync(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	b.log.Info("semi-synchronous acknowledgements set", "acknowledging", on, "io_thread_restarted", restarted, "connected_as_acknowledger", ss.SlaveActive)
	return ss, nil
}

// readSemiSync reads the server's semi-synchronous state (MariaDB).
func readSemiSync(ctx context.Context, q querier) (*backends.SemiSync, error) {
	var master, slave int64
	if err := q.QueryRowContext(ctx, "SELECT @@global.rpl_semi_sync_master_enabled, @@global.rpl_semi_sync_slave_enabled").Scan(&master, &slave); err != nil {
		return nil, err
	}
	st, err := globalStatus(ctx, q, "RPL_SEMI_SYNC_MASTER_CLIENTS", "RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS", "RPL_SEMI_SYNC_SLAVE_STATUS")
	if err != nil {
		return nil, err
	}
	s := &backends.SemiSync{MasterEnabled: master != 0, SlaveEnabled: slave != 0,
		Clients:      int(atoi(st["RPL_SEMI_SYNC_MASTER_CLIENTS"])),
		WaitSessions: int(atoi(st["RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS"])),
		SlaveActive:  truthy(st["RPL_SEMI_SYNC_SLAVE_STATUS"])}
	return s, nil
}

// waitingForAckState is the PROCESSLIST state of a commit waiting for a
// semi-synchronous acknowledgement.
const waitingForAckState = "Waiting for semi-sync ACK from slave"

// ReleaseWaiters ends the wait of the commits waiting for an
// acknowledgement, but only when held (an acknowledger's received
// position) contains the server's whole GTID history, read here: then every
// waiting commit is on that acknowledger already, as if it had
// acknowledged it. It returns how many sessions it released.
//
// Why (found by hand with 10.11): a replica that received a transaction
// before it became an acknowledger (or just before it reconnected) never
// acknowledges it; the commit waits forever and, holding the binary log
// lock, makes every later commit wait behind it. KILL QUERY of the waiting
// session ends the wait and its client receives OK — which is why the
// position check comes first: it makes that OK true.
func (b *Backend) ReleaseWaiters(ctx context.Context, held backends.Position) (int, error) {
	c, f, err := b.session(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if !f.MariaDB {
		return 0, errors.New(b.SyncUnsupported())
	}
	rows, err := queryRows(ctx, c, "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE STATE = ?", waitingForAckState)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	s, err := readServerState(ctx, c)
	if err != nil {
		return 0, err
	}
	have, err1 := ParseMariaState(held.GTID)
	mine, err2 := ParseMariaState(s.history)
	if err1 != nil || err2 != nil || held.GTID == "" {
		return 0, fmt.Errorf("comparing GTID positions %q and %q: %v %v", held.GTID, s.history, err1, err2)
	}
	if !have.Contains(mine) {
		return 0, nil
	}
	n := 0
	for _, r := range rows {
		if _, err := c.ExecContext(ctx, "KILL QUERY "+r["id"]); err == nil {
			n++
		}
	}
	b.log.Info("released commits waiting for an acknowledgement that the acknowledger already holds", "sessions", n, "server_history", s.history, "acknowledger_received", held.GTID)
	return n, nil
}
