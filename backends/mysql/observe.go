package mysql

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stewardha/steward/backends"
)

// serverState is one read of a server's identity and GTID history.
type serverState struct {
	flavor         Flavor
	serverID       uint64
	readOnly       bool
	superReadOnly  bool
	logBin         bool
	logReplUpdates bool
	strict         string // MariaDB gtid_strict_mode, MySQL gtid_mode
	pidFile        string
	dataDir        string
	serverUUID     string
	// history is the canonical GTID history (Position.GTID form): MariaDB
	// gtid_binlog_state ∪ gtid_slave_pos ∪ gtid_current_pos, MySQL
	// gtid_executed.
	history    string
	binlogPos  string // MariaDB gtid_binlog_pos
	slavePos   string // MariaDB gtid_slave_pos
	currentPos string // MariaDB gtid_current_pos
	binlogFile string // MariaDB Binlog_snapshot_file, else SHOW MASTER STATUS
	binlogOff  uint64
}

// writable: read_only (and super_read_only) off.
func (s serverState) writable() bool { return !s.readOnly && !s.superReadOnly }

// ownPosition is the server's own history with its own binlog coordinates.
func (s serverState) ownPosition() backends.Position {
	return backends.Position{LSN: EncodeLSN(s.serverID, s.binlogFile, s.binlogOff), GTID: s.history}
}

// readServerState reads a server's variables, GTID history and binary log
// position (three table-less statements).
func readServerState(ctx context.Context, q querier) (serverState, error) {
	var s serverState
	var version string
	var ro, logBin int64
	var pidFile, dataDir *string
	if err := q.QueryRowContext(ctx, "SELECT @@version, @@server_id, @@global.read_only, @@global.log_bin, @@global.pid_file, @@global.datadir").
		Scan(&version, &s.serverID, &ro, &logBin, &pidFile, &dataDir); err != nil {
		return s, fmt.Errorf("reading the server variables: %w", err)
	}
	f, err := ParseFlavor(version)
	if err != nil {
		return s, err
	}
	s.flavor, s.readOnly, s.logBin = f, ro != 0, logBin != 0
	if pidFile != nil {
		s.pidFile = *pidFile
	}
	if dataDir != nil {
		s.dataDir = *dataDir
	}
	gv, _, err := queryRow(ctx, q, f.GTIDVarsSQL())
	if err != nil {
		return s, fmt.Errorf("reading the GTID variables: %w", err)
	}
	s.superReadOnly = truthy(gv["super_read_only"])
	s.logReplUpdates = truthy(gv["log_replica_updates"])
	s.strict = gv["strict_mode"]
	s.serverUUID = gv["server_uuid"]
	if f.MariaDB {
		s.binlogPos, s.slavePos, s.currentPos = gv["binlog_pos"], gv["slave_pos"], gv["current_pos"]
		st, err := ParseMariaState(gv["binlog_state"])
		if err != nil {
			return s, fmt.Errorf("gtid_binlog_state: %w", err)
		}
		for _, v := range []string{s.slavePos, s.currentPos} {
			p, err := ParseMariaState(v)
			if err != nil {
				return s, err
			}
			st.Merge(p)
		}
		s.history = st.String()
	} else {
		set, err := ParseMySQLSet(gv["binlog_state"])
		if err != nil {
			return s, fmt.Errorf("gtid_executed: %w", err)
		}
		s.history = set.String()
	}
	if s.logBin && f.MariaDB {
		// SHOW MASTER STATUS waits for LOCK_log, which a group of commits
		// waiting for a semi-synchronous acknowledgement holds (found by
		// hand with 10.11: it hung the primary's Observe until the
		// acknowledger came back, and piled up sessions). The position of
		// the last commit written to the binary log is a status variable
		// that never waits.
		st, err := globalStatus(ctx, q, "BINLOG_SNAPSHOT_FILE", "BINLOG_SNAPSHOT_POSITION")
		if err != nil {
			return s, fmt.Errorf("reading the binary log position: %w", err)
		}
		s.binlogFile, s.binlogOff = st["BINLOG_SNAPSHOT_FILE"], atoi(st["BINLOG_SNAPSHOT_POSITION"])
	}
	if s.logBin && (s.binlogFile == "" || s.binlogOff == 0) {
		bs, found, err := queryRow(ctx, q, f.BinlogStatusSQL())
		if err != nil {
			return s, fmt.Errorf("%s: %w", f.BinlogStatusSQL(), err)
		}
		if found {
			s.binlogFile, s.binlogOff = bs["File"], atoi(bs["Position"])
		}
	}
	return s, nil
}

// rememberServer caches what the local server told about itself.
func (b *Backend) rememberServer(s serverState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := s.flavor
	b.flavor = &f
	b.serverID = s.serverID
	if s.pidFile != "" {
		p := s.pidFile
		if !filepath.IsAbs(p) && s.dataDir != "" {
			p = filepath.Join(s.dataDir, p)
		}
		b.pidFile = p
	}
	if s.dataDir != "" {
		b.seenDataDir = s.dataDir
	}
}

// systemDatabases are never copied, dropped or counted as user data.
var systemDatabases = map[string]bool{"mysql": true, "information_schema": true, "performance_schema": true, "sys": true}

// userDatabases lists the databases that are not the server's own.
func userDatabases(ctx context.Context, q querier) ([]string, error) {
	rows, err := queryRows(ctx, q, "SELECT schema_name AS name FROM information_schema.schemata")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rows {
		if n := r["name"]; !systemDatabases[strings.ToLower(n)] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// clusterID reads steward's cluster identifier (the system id);
// initialized=false when the steward schema is absent.
func clusterID(ctx context.Context, q querier) (id string, initialized bool, err error) {
	err = q.QueryRowContext(ctx, "SELECT id FROM steward.cluster ORDER BY created LIMIT 1").Scan(&id)
	switch {
	case err == nil:
		return id, true, nil
	case errno(err) == erNoSuchTable || errno(err) == erBadDB:
		return "", false, nil
	case strings.Contains(err.Error(), "no rows"):
		return "", true, nil
	}
	return "", false, err
}

// Observe reads the local server's state, bounded by ctx and the query
// timeout. It never returns an error and never panics: what cannot be read
// is reported in State and Reason.
//
//   - the server answers: StateRunning, or StateUninitialized when it has no
//     steward schema yet (an empty server to bootstrap or clone into, or one
//     steward does not manage yet); InRecovery = read-only (a replica);
//     Writable = read_only (and super_read_only) off
//   - no server process: StateUninitialized for an empty or missing data
//     directory, StateCrashed when a PID file was left behind (it did not
//     shut down cleanly), StateStopped otherwise
//   - a server process that does not answer: StateStarting while it
//     refuses connections (it opens the port after crash recovery),
//     StateUnresponsive when it accepts them but queries fail or time out
func (b *Backend) Observe(ctx context.Context) (st backends.Status) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("observe panicked", "panic", r)
			st = backends.Status{State: backends.StateUnresponsive, Reason: fmt.Sprintf("internal error while observing: %v", r)}
		}
		b.log.Debug("observed", "state", st.State, "reason", st.Reason, "writable", st.Writable, "position", st.Position.String(),
			"streaming", st.Streaming, "upstream", st.Upstream, "duration", time.Since(start).Round(10*time.Microsecond))
	}()
	ctx, cancel := b.queryCtx(ctx)
	defer cancel()

	pid := b.serverPID()
	if op := b.op.Load(); op != nil {
		return backends.Status{State: op.state, Reason: op.reason, PID: pid}
	}
	s, err := readServerState(ctx, b.db)
	if err != nil {
		return b.observeUnreachable(pid, err)
	}
	b.rememberServer(s)
	if pid == 0 {
		pid = b.serverPID()
	}
	st.PID = pid
	st.Version = s.flavor.Version
	id, initialized, err := clusterID(ctx, b.db)
	if err != nil {
		return backends.Status{State: backends.StateUnresponsive, PID: pid, Reason: "reading steward.cluster: " + err.Error()}
	}
	if !initialized {
		st.State = backends.StateUninitialized
		dbs, err := userDatabases(ctx, b.db)
		switch {
		case err != nil:
			st.Reason = "no steward schema; listing databases failed: " + err.Error()
		case len(dbs) == 0:
			st.Reason = "empty server (no steward schema, no databases): ready to be bootstrapped or cloned into"
		default:
			st.Reason = fmt.Sprintf("no steward schema, but databases %s: steward does not manage this server yet; the first member of a new cluster adopts its data (bootstrap), a replica must be empty to be cloned into (steward reinit)",
				strings.Join(dbs, ", "))
		}
		return st
	}
	st.State = backends.StateRunning
	st.SystemID = id
	if s.flavor.MariaDB {
		if ss, err := readSemiSync(ctx, b.db); err == nil {
			st.SemiSync = ss
		}
	}
	st.Writable = s.writable()
	st.InRecovery = !st.Writable
	var notes []string
	if !s.logBin {
		notes = append(notes, "binary logging is off (log_bin): this server cannot be a primary others replicate from")
	} else if !s.logReplUpdates {
		notes = append(notes, "log_slave_updates (log_replica_updates) is off: replicated transactions are not in this server's binary log, so it cannot be promoted safely")
	}
	rs, found, err := queryRow(ctx, b.db, s.flavor.ReplicaStatusSQL())
	if err != nil {
		return backends.Status{State: backends.StateUnresponsive, PID: pid, Version: st.Version,
			Reason: s.flavor.ReplicaStatusSQL() + ": " + err.Error()}
	}
	if st.Writable {
		st.Position = s.ownPosition()
		st.Replicas = b.readReplicas(ctx, s.flavor)
		if found && rs["Master_Host"] != "" {
			notes = append(notes, "replication from "+net.JoinHostPort(rs["Master_Host"], rs["Master_Port"])+" is configured on this writable server")
		}
		st.Reason = strings.Join(notes, "; ")
		return st
	}
	if !found || rs["Master_Host"] == "" {
		// Read-only without a source: its own history, in its own
		// coordinates.
		st.Position = s.ownPosition()
		st.Received, st.Replayed = st.Position, st.Position
		st.ReceiverState = "stopped"
		notes = append([]string{"read-only, no replication source configured"}, notes...)
		st.Reason = strings.Join(notes, "; ")
		return st
	}
	b.fillReplica(&st, s, rs, &notes)
	if ts, ok := lastHeartbeat(ctx, b.db); ok {
		st.ReplayTime = ts
	}
	st.Reason = strings.Join(notes, "; ")
	return st
}

// fillReplica sets a replica's positions and receiver state from its
// replica status row.
func (b *Backend) fillReplica(st *backends.Status, s serverState, rs map[string]string, notes *[]string) {
	f := s.flavor
	up := net.JoinHostPort(rs["Master_Host"], rs["Master_Port"])
	st.Upstream = up
	masterID := atoi(rs["Master_Server_Id"])
	b.mu.Lock()
	if masterID != 0 {
		b.masterIDs[up] = masterID
	} else {
		masterID = b.masterIDs[up] // after a restart, until the IO thread connects
	}
	refused := b.refused
	b.mu.Unlock()

	st.Replayed = backends.Position{LSN: EncodeLSN(masterID, rs["Relay_Master_Log_File"], atoi(rs["Exec_Master_Log_Pos"])), GTID: s.history}
	st.Received = backends.Position{LSN: EncodeLSN(masterID, rs["Master_Log_File"], atoi(rs["Read_Master_Log_Pos"]))}
	if f.MariaDB {
		recv, _ := ParseMariaState(s.history)
		if io, err := ParseMariaState(rs["Gtid_IO_Pos"]); err == nil {
			recv.Merge(io)
		}
		st.Received.GTID = recv.String()
	} else {
		recv, _ := ParseMySQLSet(s.history)
		if rt, err := ParseMySQLSet(rs["Retrieved_Gtid_Set"]); err == nil {
			recv.Union(rt)
		}
		st.Received.GTID = recv.String()
	}
	// After a restart (or while a relay log is applied in file mode) the
	// read coordinates can be unknown or behind the applied ones.
	if d, ok := lsnDistance(st.Replayed.LSN, st.Received.LSN); st.Received.LSN == 0 || (ok && d > 0) {
		st.Received.LSN = st.Replayed.LSN
	}
	st.Position = st.Received

	io, sqlRunning := rs["Slave_IO_Running"], rs["Slave_SQL_Running"] == "Yes"
	switch io {
	case "Yes":
		st.ReceiverState = "streaming"
	case "Connecting":
		st.ReceiverState = "connecting"
	default:
		st.ReceiverState = "stopped"
	}
	st.Streaming = io == "Yes"
	st.ReplayPaused = !sqlRunning
	if refused != "" && !st.Streaming {
		*notes = append(*notes, "replication not started: "+refused)
	}
	if e := rs["Last_IO_Error"]; e != "" {
		*notes = append(*notes, fmt.Sprintf("receiver error %s: %s", rs["Last_IO_Errno"], e))
	}
	if !sqlRunning {
		if e := rs["Last_SQL_Error"]; e != "" {
			st.ApplierError = fmt.Sprintf("error %s: %s", rs["Last_SQL_Errno"], e)
			*notes = append(*notes, fmt.Sprintf("applier stopped by error %s: %s", rs["Last_SQL_Errno"], e))
		} else {
			*notes = append(*notes, "applier (SQL thread) stopped")
		}
	}
	if f.MariaDB && rs["Using_Gtid"] == "No" {
		*notes = append(*notes, "replication uses file coordinates, not GTID (steward applies a relay log this way; otherwise re-point it)")
	}
	if d, ok := lsnDistance(st.Received.LSN, st.Replayed.LSN); ok && d > 0 {
		*notes = append(*notes, fmt.Sprintf("relay-log backlog %d bytes (received, not yet applied)", d))
	}
}

// lastHeartbeat is the time of the newest replicated heartbeat row (the
// primary's clock, UTC).
func lastHeartbeat(ctx context.Context, q querier) (time.Time, bool) {
	var ts *string
	if err := q.QueryRowContext(ctx, "SELECT DATE_FORMAT(MAX(ts), '%Y-%m-%dT%H:%i:%s.%fZ') FROM steward.heartbeat").Scan(&ts); err != nil || ts == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, *ts)
	return t, err == nil
}

// readReplicas lists the replicas registered with this primary (SHOW SLAVE
// HOSTS: report_host, or "server_id N" without one), or, when none
// registered, the binlog dump threads' client hosts.
func (b *Backend) readReplicas(ctx context.Context, f Flavor) []backends.ReplicaConn {
	var out []backends.ReplicaConn
	hosts, err := queryRows(ctx, b.db, f.ReplicaHostsSQL())
	if err == nil {
		for _, h := range hosts {
			name := h["Host"]
			if name == "" {
				name = "server_id " + firstNonEmpty(h["Server_id"], h["Server_Id"])
			}
			out = append(out, backends.ReplicaConn{Name: name, State: "streaming", SyncState: "async"})
		}
	}
	if len(out) > 0 {
		return out
	}
	rows, err := queryRows(ctx, b.db, "SELECT HOST AS host FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
	if err != nil {
		return nil
	}
	for _, r := range rows {
		h := r["host"]
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		out = append(out, backends.ReplicaConn{Name: h, State: "streaming", SyncState: "async"})
	}
	return out
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// observeUnreachable reports a server that did not answer.
func (b *Backend) observeUnreachable(pid int, err error) backends.Status {
	if pid == 0 && errno(err) != 0 {
		// The server answered with an error: it runs (as a user whose
		// process steward cannot see, or without a data directory).
		if errno(err) == erAccessDenied {
			return backends.Status{State: backends.StateUnresponsive,
				Reason: fmt.Sprintf("the server refuses steward's account %q: %v (create it with every privilege, see docs/mysql.md)", b.opts.User, err)}
		}
		return backends.Status{State: backends.StateUnresponsive, Reason: fmt.Sprintf("the server on %s answers with an error: %v", b.opts.Address, err)}
	}
	if pid != 0 {
		switch {
		case connRefused(err):
			return backends.Status{State: backends.StateStarting, PID: pid, Reason: "server process runs but does not accept connections yet (starting, or crash recovery)"}
		case errno(err) == erAccessDenied:
			return backends.Status{State: backends.StateUnresponsive, PID: pid,
				Reason: fmt.Sprintf("the server refuses steward's account %q: %v (create it with every privilege, see docs/mysql.md)", b.opts.User, err)}
		case errno(err) == erServerShutdown:
			return backends.Status{State: backends.StateUnresponsive, PID: pid, Reason: "server is shutting down"}
		}
		return backends.Status{State: backends.StateUnresponsive, PID: pid, Reason: fmt.Sprintf("server process %d runs but does not answer: %v", pid, err)}
	}
	if b.dataDir == "" {
		if connRefused(err) {
			return backends.Status{State: backends.StateStopped, Reason: "nothing answers on " + b.opts.Address + " (mysql.data_dir is not set, so steward cannot tell more)"}
		}
		return backends.Status{State: backends.StateUnresponsive, Reason: fmt.Sprintf("the server on %s does not answer: %v", b.opts.Address, err)}
	}
	ents, derr := os.ReadDir(b.dataDir)
	switch {
	case derr != nil && os.IsNotExist(derr), derr == nil && len(ents) == 0:
		return backends.Status{State: backends.StateUninitialized,
			Reason: fmt.Sprintf("data directory %s is missing or empty: initialize it (mariadb-install-db / mysqld --initialize) and create steward's account, see docs/mysql.md", b.dataDir)}
	case derr != nil:
		return backends.Status{State: backends.StateCrashed, Reason: fmt.Sprintf("cannot read mysql.data_dir %s: %v", b.dataDir, derr)}
	}
	if _, err := os.Stat(filepath.Join(b.dataDir, "mysql")); err != nil {
		return backends.Status{State: backends.StateUninitialized,
			Reason: fmt.Sprintf("data directory %s holds no server (no mysql system schema): initialize it, see docs/mysql.md", b.dataDir)}
	}
	if f, stale := b.stalePIDFile(); stale {
		return backends.Status{State: backends.StateCrashed, Reason: fmt.Sprintf("not running and not shut down cleanly (stale PID file %s); InnoDB crash recovery runs on the next start", f)}
	}
	// A clean stop by this backend recorded where the history ends (what a
	// switchover hands over at); unknown after a crash or an outside stop.
	b.mu.Lock()
	st := backends.Status{State: backends.StateStopped, Reason: "not running", Position: b.stoppedPos}
	b.mu.Unlock()
	if !connRefused(err) {
		st.Reason = "no server process: " + err.Error()
	}
	return st
}
