package mysql

import (
	"fmt"
	"strconv"
	"strings"
)

// Flavor is the server family and version, detected from @@version. Every
// statement whose syntax differs between MariaDB and MySQL (or between
// MySQL versions) is generated here, so that the differences are tested in
// one place (flavor_test.go).
type Flavor struct {
	MariaDB             bool
	Major, Minor, Patch int
	// Version is @@version as the server reported it.
	Version string
}

// ParseFlavor reads @@version: "10.11.19-MariaDB-0+deb12u1-log" is MariaDB
// 10.11.19, "8.0.36" or "8.4.0-commercial" is MySQL.
func ParseFlavor(version string) (Flavor, error) {
	f := Flavor{Version: version, MariaDB: strings.Contains(strings.ToLower(version), "mariadb")}
	num := version
	if i := strings.IndexFunc(num, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }); i >= 0 {
		num = num[:i]
	}
	parts := strings.Split(num, ".")
	if len(parts) < 2 {
		return f, fmt.Errorf("cannot read the server version from %q", version)
	}
	var vals [3]int
	for i := 0; i < len(parts) && i < 3; i++ {
		v, err := strconv.Atoi(parts[i])
		if err != nil {
			return f, fmt.Errorf("cannot read the server version from %q", version)
		}
		vals[i] = v
	}
	f.Major, f.Minor, f.Patch = vals[0], vals[1], vals[2]
	// MariaDB 5.5.5-10.x (the old replication-protocol prefix).
	if f.MariaDB && f.Major == 5 && f.Minor == 5 && f.Patch == 5 {
		if rest, ok := strings.CutPrefix(version, "5.5.5-"); ok {
			g, err := ParseFlavor(rest)
			g.Version = version
			return g, err
		}
	}
	return f, nil
}

// AtLeast compares the version.
func (f Flavor) AtLeast(major, minor, patch int) bool {
	if f.Major != major {
		return f.Major > major
	}
	if f.Minor != minor {
		return f.Minor > minor
	}
	return f.Patch >= patch
}

// String is "MariaDB 10.11.19" or "MySQL 8.0.36".
func (f Flavor) String() string {
	n := "MySQL"
	if f.MariaDB {
		n = "MariaDB"
	}
	return fmt.Sprintf("%s %d.%d.%d", n, f.Major, f.Minor, f.Patch)
}

// mysqlReplicaWords: MySQL 8.0.22 renamed SLAVE to REPLICA (8.4 removed the
// old words).
func (f Flavor) mysqlReplicaWords() bool { return !f.MariaDB && f.AtLeast(8, 0, 22) }

// mysqlSourceWords: MySQL 8.0.23 introduced CHANGE REPLICATION SOURCE TO and
// the SOURCE_* options.
func (f Flavor) mysqlSourceWords() bool { return !f.MariaDB && f.AtLeast(8, 0, 23) }

// ReplicaStatusSQL shows the replication state of the default connection.
func (f Flavor) ReplicaStatusSQL() string {
	if f.mysqlReplicaWords() {
		return "SHOW REPLICA STATUS"
	}
	return "SHOW SLAVE STATUS"
}

// ReplicaThreadSQL starts or stops replication: thread is "", "IO_THREAD"
// or "SQL_THREAD".
func (f Flavor) ReplicaThreadSQL(start bool, thread string) string {
	verb := "STOP"
	if start {
		verb = "START"
	}
	word := "SLAVE"
	if f.mysqlReplicaWords() {
		word = "REPLICA"
	}
	q := verb + " " + word
	if thread != "" {
		q += " " + thread
	}
	return q
}

// ResetReplicaAllSQL forgets the replication source (and the relay logs).
func (f Flavor) ResetReplicaAllSQL() string {
	if f.mysqlReplicaWords() {
		return "RESET REPLICA ALL"
	}
	return "RESET SLAVE ALL"
}

// ChangeSourceSQL points replication at host:port with GTID
// auto-positioning: MariaDB MASTER_USE_GTID=slave_pos (the caller seeds
// gtid_slave_pos), MySQL SOURCE_AUTO_POSITION=1 (GET_SOURCE_PUBLIC_KEY=1
// for caching_sha2_password without TLS). Values are bind arguments
// (interpolated by the driver, which knows the server's escaping rules).
func (f Flavor) ChangeSourceSQL(host string, port int, user, password string) (string, []any) {
	args := []any{host, port, user, password}
	switch {
	case f.MariaDB:
		return "CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = ?, MASTER_PASSWORD = ?, " +
			"MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1", args
	case f.mysqlSourceWords():
		return "CHANGE REPLICATION SOURCE TO SOURCE_HOST = ?, SOURCE_PORT = ?, SOURCE_USER = ?, SOURCE_PASSWORD = ?, " +
			"SOURCE_AUTO_POSITION = 1, SOURCE_CONNECT_RETRY = 1, SOURCE_HEARTBEAT_PERIOD = 1, GET_SOURCE_PUBLIC_KEY = 1", args
	}
	return "CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = ?, MASTER_PASSWORD = ?, " +
		"MASTER_AUTO_POSITION = 1, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1, GET_MASTER_PUBLIC_KEY = 1", args
}

// KeepRelayLogSQL (MariaDB) switches replication to file coordinates at
// the SQL thread's relay-log position without deleting the relay log, so
// that START SLAVE SQL_THREAD applies what was received even though both
// threads are stopped. In GTID mode that START would delete the relay log
// and refetch from the (possibly dead) primary: the trap of
// research/mysql-failover.md §3.2 that lost 321 acknowledged transactions.
func (f Flavor) KeepRelayLogSQL(relayFile string, relayPos uint64) (string, []any) {
	return "CHANGE MASTER TO MASTER_USE_GTID = no, RELAY_LOG_FILE = ?, RELAY_LOG_POS = ?", []any{relayFile, relayPos}
}

// GTIDModeSQL (MariaDB) switches back to GTID positioning (deleting the
// relay log, which must have been applied).
func (f Flavor) GTIDModeSQL() string { return "CHANGE MASTER TO MASTER_USE_GTID = slave_pos" }

// WaitAppliedSQL waits (server side, at most secs seconds) until the
// transactions of pos are applied. It returns one integer: success is
// WaitOK.
func (f Flavor) WaitAppliedSQL() string {
	if f.MariaDB {
		return "SELECT MASTER_GTID_WAIT(?, ?)"
	}
	return "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)"
}

// WaitTimedOut is what WaitAppliedSQL returns on timeout: MariaDB -1,
// MySQL 1.
func (f Flavor) WaitTimedOut() int64 {
	if f.MariaDB {
		return -1
	}
	return 1
}

// ReadOnlySQL makes the server read-only (on) or writable. MySQL needs
// super_read_only too (read_only does not stop SUPER users); MariaDB 10.11's
// read_only already stops everyone without READ ONLY ADMIN and has no
// super_read_only.
func (f Flavor) ReadOnlySQL(on bool) []string {
	if f.MariaDB {
		if on {
			return []string{"SET GLOBAL read_only = ON"}
		}
		return []string{"SET GLOBAL read_only = OFF"}
	}
	if on {
		return []string{"SET GLOBAL super_read_only = ON"} // implies read_only
	}
	return []string{"SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"}
}

// BinlogStatusSQL shows the binary log file and position being written.
func (f Flavor) BinlogStatusSQL() string {
	if !f.MariaDB && f.AtLeast(8, 2, 0) {
		return "SHOW BINARY LOG STATUS"
	}
	return "SHOW MASTER STATUS"
}

// ResetBinlogsSQL deletes the binary logs and the GTID history (an empty
// server before a clone).
func (f Flavor) ResetBinlogsSQL() string {
	if !f.MariaDB && f.AtLeast(8, 2, 0) {
		return "RESET BINARY LOGS AND GTIDS"
	}
	return "RESET MASTER"
}

// ReplicaHostsSQL lists replicas registered with this server.
func (f Flavor) ReplicaHostsSQL() string {
	if f.mysqlReplicaWords() {
		return "SHOW REPLICAS"
	}
	return "SHOW SLAVE HOSTS"
}

// ShutdownSQL stops the server. MariaDB first lets every connected replica
// receive the whole binary log (like PostgreSQL's fast shutdown).
func (f Flavor) ShutdownSQL() string {
	if f.MariaDB && f.AtLeast(10, 4, 4) {
		return "SHUTDOWN WAIT FOR ALL SLAVES"
	}
	return "SHUTDOWN"
}

// GTIDVarsSQL reads the GTID variables, in one table-less SELECT (a SELECT
// mixing @@read_only with an InnoDB table returned a stale read_only on
// MariaDB 10.11, research §1.1). Columns: see gtidVars.
func (f Flavor) GTIDVarsSQL() string {
	if f.MariaDB {
		return "SELECT @@global.gtid_binlog_state AS binlog_state, @@global.gtid_slave_pos AS slave_pos, " +
			"@@global.gtid_current_pos AS current_pos, @@global.gtid_binlog_pos AS binlog_pos, " +
			"@@global.log_slave_updates AS log_replica_updates, @@global.gtid_strict_mode AS strict_mode, " +
			"0 AS super_read_only, '' AS server_uuid"
	}
	lru := "@@global.log_slave_updates"
	if f.AtLeast(8, 0, 26) {
		lru = "@@global.log_replica_updates"
	}
	return "SELECT @@global.gtid_executed AS binlog_state, '' AS slave_pos, '' AS current_pos, '' AS binlog_pos, " +
		lru + " AS log_replica_updates, @@global.gtid_mode AS strict_mode, @@global.super_read_only AS super_read_only, " +
		"@@global.server_uuid AS server_uuid"
}

// SetGTIDHistorySQL seeds an empty server (after ResetBinlogsSQL) with the
// GTID history of the copy it received, so that it continues the source's
// history: MariaDB gtid_binlog_state (the next local transaction then gets
// the next seq_no instead of restarting at 1) and gtid_slave_pos; MySQL
// gtid_purged.
func (f Flavor) SetGTIDHistorySQL() []string {
	if f.MariaDB {
		return []string{"SET GLOBAL gtid_binlog_state = ?", "SET GLOBAL gtid_slave_pos = ?"}
	}
	return []string{"SET GLOBAL gtid_purged = ?"}
}

// ClientPrograms are the dump and load programs, preferred first.
func (f Flavor) ClientPrograms() (dump, load []string) {
	if f.MariaDB {
		return []string{"mariadb-dump", "mysqldump"}, []string{"mariadb", "mysql"}
	}
	return []string{"mysqldump"}, []string{"mysql"}
}

// DumpArgs are the dump program's arguments (after --defaults-file) for a
// consistent logical copy of databases on host:port with the GTID
// position: MariaDB writes it as a comment "-- SET GLOBAL
// gtid_slave_pos='…'" (--gtid --master-data=2); MySQL writes SET
// @@GLOBAL.GTID_PURGED (executed by the load, on a server whose GTID
// history was reset). Accounts are copied separately (copyAccounts).
func (f Flavor) DumpArgs(host string, port int, databases []string) []string {
	args := []string{"--host=" + host, "--port=" + strconv.Itoa(port), "--protocol=tcp",
		"--single-transaction", "--routines", "--events", "--triggers", "--hex-blob"}
	if f.MariaDB {
		args = append(args, "--gtid", "--master-data=2")
	} else {
		src := "--master-data=2"
		if f.AtLeast(8, 0, 26) {
			src = "--source-data=2"
		}
		args = append(args, "--set-gtid-purged=ON", src)
	}
	return append(append(args, "--databases"), databases...)
}

// LoadArgs are the client's arguments (after --defaults-file) to load a
// dump into the local server without writing it to the local binary log
// (those would be transactions of this server: errant).
func (f Flavor) LoadArgs(host string, port int) []string {
	return []string{"--host=" + host, "--port=" + strconv.Itoa(port), "--protocol=tcp",
		"--init-command=SET SESSION sql_log_bin = 0", "--skip-reconnect", "--binary-mode", "--max-allowed-packet=1073741824"}
}

// dumpGTIDComment is the line of a MariaDB dump (--gtid --master-data=2)
// that carries the dump's GTID position.
const dumpGTIDComment = "-- SET GLOBAL gtid_slave_pos="

// mysqlDumpGTIDPrefix starts the line of a MySQL dump that sets
// gtid_purged.
const mysqlDumpGTIDPrefix = "SET @@GLOBAL.GTID_PURGED="

// parseDumpGTIDLine extracts the GTID text from a dump line ("" when the
// line carries none).
func parseDumpGTIDLine(line string) string {
	line = strings.TrimSpace(line)
	var rest string
	switch {
	case strings.HasPrefix(line, dumpGTIDComment):
		rest = strings.TrimPrefix(line, dumpGTIDComment)
	case strings.HasPrefix(line, mysqlDumpGTIDPrefix):
		rest = strings.TrimPrefix(line, mysqlDumpGTIDPrefix)
		if i := strings.Index(rest, "*/"); i >= 0 { // /*!80000 '+'*/ '…'
			rest = rest[i+2:]
		}
	default:
		return ""
	}
	rest = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), ";"))
	rest = strings.Trim(rest, "'\" ")
	return strings.ReplaceAll(strings.ReplaceAll(rest, "\\n", ""), "\n", "")
}

// statusColumn maps MySQL 8.0.22+ replica-status column names to the
// classic ones (Replica_IO_Running → Slave_IO_Running, Source_Host →
// Master_Host, Read_Source_Log_Pos → Read_Master_Log_Pos, ...), so the rest
// of the code reads one set of names. MariaDB keeps the classic names even
// for SHOW REPLICA STATUS.
func statusColumn(name string) string {
	name = strings.ReplaceAll(name, "Replica", "Slave")
	return strings.ReplaceAll(name, "Source", "Master")
}

// replicationCommands are the processlist commands of replication threads:
// fencing never kills them.
var replicationCommands = map[string]bool{
	"Binlog Dump": true, "Binlog Dump GTID": true, "Slave_IO": true, "Slave_SQL": true, "Slave_worker": true,
	"Daemon": true, "Killed": true,
}

// systemUsers run server threads (replication, event scheduler).
var systemUsers = map[string]bool{"system user": true, "event_scheduler": true, "": true}

// isClientSession reports whether a processlist row is a client session
// that fencing ends.
func isClientSession(user, command string) bool {
	return !systemUsers[user] && !replicationCommands[command]
}

// AccountsSQL lists the accounts and roles (columns user, host, is_role).
func (f Flavor) AccountsSQL() string {
	if f.MariaDB {
		return "SELECT user AS user, host AS host, is_role AS is_role FROM mysql.user"
	}
	return "SELECT user AS user, host AS host, 'N' AS is_role FROM mysql.user"
}

// systemAccounts are the server's own accounts, never copied by a clone.
var systemAccounts = map[string]bool{"": true, "root": true, "mysql": true, "mariadb.sys": true,
	"mysql.sys": true, "mysql.session": true, "mysql.infoschema": true, "PUBLIC": true}

// createIfNotExists turns SHOW CREATE USER's statement into one that keeps
// an existing account.
func createIfNotExists(stmt string) string {
	if rest, ok := strings.CutPrefix(stmt, "CREATE USER "); ok && !strings.HasPrefix(rest, "IF NOT EXISTS") {
		return "CREATE USER IF NOT EXISTS " + rest
	}
	return stmt
}
