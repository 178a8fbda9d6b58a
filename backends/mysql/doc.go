// Package mysql is steward's MySQL/MariaDB backend: it manages one local
// server (MariaDB 10.11 tested; MariaDB 10.5+ and MySQL 8.0/8.4 supported,
// the flavour detected from @@version) for the agent's HA loop, over SQL
// (go-sql-driver/mysql), with GTID replication.
//
// What it guarantees:
//
//   - Nothing received is lost by a promotion. Promote applies the whole
//     relay log before the server becomes writable: the applier is started
//     while the IO thread still exists, the IO thread stopped, the wait
//     function (MASTER_GTID_WAIT / WAIT_FOR_EXECUTED_GTID_SET) run against
//     the received set while the SQL thread is watched, and only then STOP
//     SLAVE and RESET SLAVE ALL. On MariaDB it never starts a thread while
//     both are stopped in GTID mode — that deletes the relay log (research
//     §3.2: a naive promotion lost 321 acknowledged transactions); it
//     switches to file coordinates at the applier's relay-log position
//     first, which keeps the relay log. The same applies before replication
//     is restarted from the same source after a restart.
//   - A member with errant transactions never replicates silently: before
//     replication starts (Start, Follow, Clone), the local GTID history must
//     be contained in the upstream's — MariaDB compares gtid_binlog_state
//     based states per (domain, server_id), never sequence numbers alone;
//     MySQL compares gtid_executed sets. Otherwise replication is configured
//     but not started, and Divergence lists the errant GTIDs. Rewind always
//     fails (MySQL cannot rewind); `steward reinit` re-clones.
//   - Compare never calls a diverged history "ahead" (see Compare); Lag is in
//     bytes of the primary's binary log (see the Position comment in
//     position.go), counts the relay-log backlog, and never relies on
//     Seconds_Behind_Master.
//   - FenceWrites does not depend on a working connection alone: read_only
//     (super_read_only on MySQL) and the end of every client session over a
//     fresh connection, bounded to 2 s; if that fails, SIGKILL of the server
//     process found through /proc and the PID file, waiting until it is
//     gone.
//   - A server is made writable only by Bootstrap, Promote and
//     Start(RolePrimary) — all called by the agent while it holds the leader
//     key. Everything else leaves or makes it read-only.
//   - Nothing of a clone is a local transaction: the copy is loaded with
//     sql_log_bin off and the GTID history is seeded from the copy's
//     position (MariaDB: gtid_binlog_state and gtid_slave_pos; MySQL:
//     gtid_purged).
//   - Observe never blocks past its context or the query timeout, never
//     returns an error and never panics.
//   - External programs (start/stop/clone commands, mariadb-dump, mariadb)
//     run without a shell; passwords reach them through a 0600 option file,
//     never the command line.
//
// What it does not do:
//
//   - It does not decide anything: the agent decides when to promote,
//     follow or re-clone.
//   - It does not install or initialize servers: every member's server must
//     exist (mariadb-install-db / mysqld --initialize) with steward's account
//     (every privilege) and a configuration with GTIDs, log_bin,
//     log_slave_updates, binlog_format=ROW, read_only=ON and
//     skip_slave_start=ON (docs/mysql.md). An empty server is then
//     bootstrapped or cloned into by steward.
//   - It does not configure semi-synchronous replication (so an
//     acknowledged commit that had not reached any replica is lost when the
//     primary dies), nor multi-source replication (only the default
//     connection is managed).
//   - Wipe is logical (databases dropped, binary logs and GTID history
//     reset); it keeps the server and its accounts. It refuses to drop data
//     of a server that is not a member of a steward cluster.
//   - After a restart MariaDB forgets Gtid_IO_Pos until the IO thread
//     connects: a replica restarted while the primary is dead reports only
//     what it applied as received (its relay log is still applied when it
//     is promoted or restarts replication).
package mysql
