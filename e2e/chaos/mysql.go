package chaos

// MariaDB members (Settings.Backend "mysql"): the same lab, faults and
// invariants as for PostgreSQL, with what differs kept here.
//
// Each member's server: MariaDB 10.11 (Debian's mariadb-server) on the
// member's tmpfs, initialized by mariadb-install-db with steward's account
// and an application account, started and stopped by the agent through
// mysql.start_command, listening on the member's 127.0.0.1:3307 behind the
// delay proxy at IP:3306. The writers use the application account, which
// lacks READ ONLY ADMIN: read_only stops them as it stops applications
// (steward's own account could write through read_only).
//
// MariaDB has no timelines. The invariants order the primaries by "eras"
// instead, taken from the DCS history: every leader change records the new
// leader and its GTID history before its first write (forked_at). A write
// (acknowledged by member X with GTID sequence number s, read from
// @@last_gtid in the writing session) belongs to X's latest era that began
// before s. (The first MariaDB runs used promoted_at, read after the
// promotion: a write the new primary took in between counted in its
// previous era, a false split brain; hence forked_at.) The era's index plays the timeline's part, the sequence number
// the LSN's: era k ended, in the final primary's history, at the smallest
// promotion position of the eras after it, and the writes of era k past
// that point are its discarded tail. Their distance is counted in
// transactions and converted to binary-log bytes with the average size of
// the workload's transactions, measured when the workload starts, to be
// compared with maximum_lag_on_failover.

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/stewardha/steward/backends/mysql/mytest"
	"github.com/stewardha/steward/dcs"
)

const (
	myPort      = 3306 // what others connect to (the member's delay proxy)
	myLocalPort = 3307 // where mariadbd listens, on the member's 127.0.0.1
	myUser      = "steward"
	appUser     = "app"
	appPass     = "chaos-app"
	mariadbd    = "/usr/sbin/mariadbd"
	installDB   = "/usr/bin/mariadb-install-db"
	myRunAs     = "mysql"
)

func init() {
	// The driver logs broken connections to stderr; the faults make many.
	_ = gomysql.SetLogger(nopLogger{})
}

type nopLogger struct{}

func (nopLogger) Print(...any) {}

// IsMySQL reports whether the members run MariaDB.
func (s Settings) IsMySQL() bool { return s.Backend == "mysql" }

// osUser is the OS user the agents and databases run as.
func (s Settings) osUser() string {
	if s.IsMySQL() {
		return myRunAs
	}
	return runAsUser
}

// dbPorts: what others connect to, and where the server listens locally.
func (s Settings) dbPorts() (int, int) {
	if s.IsMySQL() {
		return myPort, myLocalPort
	}
	return pgPort, pgLocalPort
}

// myCnf is the member's my.cnf: its paths, ports and identity, then the
// settings every test member shares (mytest.ReplicationSettings).
func myCnf(m *Member, serverID int) string {
	return fmt.Sprintf(`[mariadbd]
datadir=%[1]s
tmpdir=%[2]s/tmp
socket=%[2]s/mariadb.sock
pid-file=%[1]s/mariadbd.pid
log_error=%[2]s/mariadb.err
port=%[3]d
bind-address=127.0.0.1
skip-name-resolve
server_id=%[4]d
report_host=%[5]s
max_connections=80
`, m.DataDir, m.Mount, myLocalPort, serverID, m.Name) + mytest.ReplicationSettings(m.DataDir)
}

// myInitMember writes the member's my.cnf and initializes its data
// directory with steward's and the application's accounts (nothing of it
// is binary-logged: no GTID). Only the first member's data is used as is;
// the others are cloned by their agents, which empty them first.
func (c *Cluster) myInitMember(m *Member, serverID int) error {
	cnf := filepath.Join(m.Mount, "my.cnf")
	if err := os.WriteFile(cnf, []byte(myCnf(m, serverID)), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(m.Mount, "tmp"), 0o755); err != nil {
		return err
	}
	if err := os.Chown(filepath.Join(m.Mount, "tmp"), c.uid, c.gid); err != nil {
		return err
	}
	setup := filepath.Join(c.Dir, m.Name+".setup.sql")
	sqlText := fmt.Sprintf(`FLUSH PRIVILEGES;
CREATE USER '%[1]s'@'127.0.0.1' IDENTIFIED BY '%[2]s';
GRANT ALL PRIVILEGES ON *.* TO '%[1]s'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER '%[3]s'@'127.0.0.1' IDENTIFIED BY '%[4]s';
GRANT ALL PRIVILEGES ON app.* TO '%[3]s'@'127.0.0.1';
`, myUser, superPass, appUser, appPass)
	if err := os.WriteFile(setup, []byte(sqlText), 0o644); err != nil {
		return err
	}
	out, err := exec.Command(installDB, "--defaults-file="+cnf, "--skip-test-db", "--extra-file="+setup, "--user="+myRunAs).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mariadb-install-db for %s: %v\n%s\n%s", m.Name, err, out, tailFile(filepath.Join(m.Mount, "mariadb.err"), 20))
	}
	return nil
}

// myConfigSection is the member's mysql section. A primary cut off from
// everyone keeps acknowledging writes until its lease deadline; after the
// failover they are errant on it, and without reclone_on_divergence it
// would stay out until an operator runs `steward reinit` (found by the
// suite's first MariaDB run: invariant 3 failed after partition-then-crash).
func (c *Cluster) myConfigSection(m *Member) string {
	return fmt.Sprintf(`mysql:
  address: 127.0.0.1:%d
  connect_address: %s:%d
  user: %s
  password: %s
  replication: {username: repl, password: rep-%s}
  data_dir: %s
  start_command: [%s, "--defaults-file=%s"]
  reclone_on_divergence: true
`, myLocalPort, m.Host.IP, myPort, myUser, superPass, superPass, m.DataDir, mariadbd, filepath.Join(m.Mount, "my.cnf"))
}

// myFenceHookScript powers a MariaDB member "off": kill -9 of mariadbd.
// $1 = run directory, $2 = target.
const myFenceHookScript = `#!/bin/sh
pidfile="$1/$2/data/mariadbd.pid"
pid=$(head -n 1 "$pidfile" 2>/dev/null) || { echo "no mariadbd for $2: nothing to fence"; exit 0; }
[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { echo "mariadbd $pid of $2 is gone: nothing to fence"; exit 0; }
kill -9 "$pid"
echo "fenced $2: killed mariadbd $pid"
`

// myDSN is a go-sql-driver DSN to host:port as user.
func myDSN(user, pass, addr string) string {
	return fmt.Sprintf("%s:%s@tcp(%s)/?timeout=2s&readTimeout=3s&writeTimeout=3s&interpolateParams=true", user, pass, addr)
}

// myQueryRow runs one query returning one row on a new connection.
func myQueryRow(ctx context.Context, dsn, q string, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.QueryRowContext(ctx, q).Scan(dest...)
}

func myExec(dsn, q string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, q)
	return err
}

// myHealth is the database side of invariant 3 for MariaDB: the leader
// writable, every other member read-only and replicating from it with both
// threads running, and a write through HAProxy reaching the leader.
func (c *Cluster) myHealth(leader *Member) string {
	ctx := context.Background()
	for _, m := range c.Members {
		var ro int
		if err := m.Query(ctx, "SELECT @@read_only", &ro); err != nil {
			return fmt.Sprintf("%s: %v", m.Name, err)
		}
		if (ro == 0) != (m == leader) {
			return fmt.Sprintf("%s: read_only = %d", m.Name, ro)
		}
		if m == leader {
			continue
		}
		st, err := m.mySlaveStatus(ctx)
		if err != nil {
			return fmt.Sprintf("%s: SHOW ALL SLAVES STATUS: %v", m.Name, err)
		}
		if st["Slave_IO_Running"] != "Yes" || st["Slave_SQL_Running"] != "Yes" || st["Master_Host"] != leader.Host.IP {
			return fmt.Sprintf("%s: replication IO %q SQL %q from %q, want both running from %s (%s)", m.Name,
				st["Slave_IO_Running"], st["Slave_SQL_Running"], st["Master_Host"], leader.Host.IP, st["Last_IO_Error"]+st["Last_SQL_Error"])
		}
	}
	var via string
	var ro int
	if err := myQueryRow(ctx, c.HAProxyDSN(), "SELECT @@report_host, @@read_only", &via, &ro); err != nil || via != leader.Name || ro != 0 {
		return fmt.Sprintf("a connection through HAProxy's write port went to %q (read_only %d, %v), not to the leader %s", via, ro, err, leader.Name)
	}
	return ""
}

// mySlaveStatus is the member's one replication connection (nil map: none).
func (m *Member) mySlaveStatus(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	db, err := sql.Open("mysql", m.DSN())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SHOW ALL SLAVES STATUS")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	n := 0
	for rows.Next() {
		n++
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, col := range cols {
			out[col] = vals[i].String
		}
	}
	if n > 1 {
		return nil, fmt.Errorf("%d replication connections, want 1", n)
	}
	return out, rows.Err()
}

// myPresentIDs reads every id of the member's chaos table.
func (m *Member) myPresentIDs() (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("mysql", m.DSN())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT id FROM app.chaos")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// myCalibrate creates the test table and measures the binary-log bytes of
// one workload transaction on the leader: 200 inserts by the application
// account, the binlog position and the GTID sequence number read before
// and after (the agents' heartbeats in between count too, as they do in a
// lost tail).
func (c *Cluster) myCalibrate(leader *Member) (float64, error) {
	if err := myExec(leader.DSN(), "CREATE DATABASE IF NOT EXISTS app"); err != nil {
		return 0, err
	}
	if err := myExec(leader.DSN(), "CREATE TABLE IF NOT EXISTS app.chaos(id BIGINT PRIMARY KEY, writer VARCHAR(64), at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := sql.Open("mysql", leader.DSN())
	if err != nil {
		return 0, err
	}
	defer db.Close()
	read := func() (int64, uint64, error) {
		var file, doDB, ignoreDB, gtid string
		var pos int64
		if err := db.QueryRowContext(ctx, "SHOW MASTER STATUS").Scan(&file, &pos, &doDB, &ignoreDB); err != nil {
			return 0, 0, err
		}
		if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
			return 0, 0, err
		}
		return pos, gtidSeq(gtid), nil
	}
	p0, s0, err := read()
	if err != nil {
		return 0, err
	}
	app, err := sql.Open("mysql", myDSN(appUser, appPass, fmt.Sprintf("%s:%d", leader.Host.IP, myPort)))
	if err != nil {
		return 0, err
	}
	defer app.Close()
	for i := range 200 {
		if _, err := app.ExecContext(ctx, "INSERT INTO app.chaos(id, writer) VALUES (?, 'calibration')", -1-int64(i)); err != nil {
			return 0, err
		}
	}
	p1, s1, err := read()
	if err != nil {
		return 0, err
	}
	if s1 <= s0 || p1 <= p0 {
		return 0, fmt.Errorf("calibration: binlog %d -> %d, GTID sequence %d -> %d", p0, p1, s0, s1)
	}
	return float64(p1-p0) / float64(s1-s0), nil
}

// gtidSeq is the largest sequence number of domain 0 in a MariaDB GTID
// position ("0-1-532" or "0-1-532,1-3-7").
func gtidSeq(pos string) uint64 {
	var best uint64
	for _, g := range strings.Split(pos, ",") {
		f := strings.Split(strings.TrimSpace(g), "-")
		if len(f) != 3 || f[0] != "0" {
			continue
		}
		if n, err := strconv.ParseUint(f[2], 10, 64); err == nil && n > best {
			best = n
		}
	}
	return best
}

// myInsert is one MariaDB write of the workload: the row, then in the same
// session the GTID the commit got and the server that gave it.
func myInsert(ctx context.Context, conn *sql.Conn, id int64, writer string) (member string, seq uint64, err error) {
	if _, err := conn.ExecContext(ctx, "INSERT INTO app.chaos(id, writer) VALUES (?, ?)", id, writer); err != nil {
		return "", 0, err
	}
	var gtid string
	if err := conn.QueryRowContext(ctx, "SELECT @@report_host, @@last_gtid").Scan(&member, &gtid); err != nil {
		// Committed, but which server and where is unknown: the write is
		// not counted as acknowledged (a client that lost the answer).
		return "", 0, err
	}
	return member, gtidSeq(gtid), nil
}

// leaderKinds are the history records that start a primary's era.
var leaderKinds = map[string]bool{"bootstrap": true, "failover": true, "switchover": true, "manual-failover": true, "reacquire": true}

type era struct {
	member string
	start  uint64 // the GTID sequence number the member had when it promoted
	index  int64
}

// MyEras assigns every write to its primary's era (Op.Timeline, 1-based)
// and returns the final era's lineage (where each earlier era ended, as
// the first sequence number not in the final history). Writes by a member
// that no history record names leader are a violation of invariant 5.
func MyEras(ops []Op, hist []dcs.HistoryRecord) ([]Op, Lineage, []Violation) {
	var eras []era
	for _, h := range hist {
		if !leaderKinds[h.Kind] || h.NewLeader == "" {
			continue
		}
		// forked_at: the history before the new leader's first write.
		// promoted_at (read after the promotion) may already hold writes
		// of the new era; it is the fallback for records without it.
		at := h.Forked
		if at.IsZero() {
			at = h.Promoted
		}
		eras = append(eras, era{member: h.NewLeader, start: gtidSeq(at.GTID), index: int64(len(eras) + 1)})
	}
	lin := Lineage{Timeline: int64(len(eras)), Ends: map[int64]uint64{}}
	for k := range eras {
		if k == len(eras)-1 {
			break
		}
		end := eras[k+1].start
		for _, e := range eras[k+1:] {
			end = min(end, e.start)
		}
		lin.Ends[eras[k].index] = end + 1
	}
	out := make([]Op, len(ops))
	var vs []Violation
	unknown := map[string]Op{}
	for i, o := range ops {
		o.Timeline = 0
		for _, e := range eras {
			if e.member != o.Member {
				continue
			}
			if o.Timeline == 0 || e.start < o.LSN {
				o.Timeline = e.index
			}
		}
		if o.Timeline == 0 {
			if _, seen := unknown[o.Member]; !seen {
				unknown[o.Member] = o
			}
		}
		out[i] = o
	}
	names := make([]string, 0, len(unknown))
	for n := range unknown {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		o := unknown[n]
		vs = append(vs, Violation{5, fmt.Sprintf("%s acknowledged writes (first: id %d at %v, GTID sequence %d) but no history record names it leader", n, o.ID, fmtOffset(o.End), o.LSN)})
	}
	return out, lin, vs
}
