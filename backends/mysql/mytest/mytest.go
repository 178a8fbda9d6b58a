// Package mytest helps tests run real MariaDB servers through the mysql
// backend: it finds the programs, makes data directories initialized with
// steward's account (mariadb-install-db), as the unprivileged "mysql" OS
// user when the tests run as root, on free 127.0.0.1 ports in temp
// directories, with backend options whose start_command runs mariadbd in
// the foreground, and cleanups that stop every server they made by PID —
// never leaving one running.
//
// Nothing here skips a test: a missing prerequisite fails it, saying how to
// install it.
package mytest

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/stewardha/steward/backends/mysql"
	"github.com/stewardha/steward/internal/freeport"
)

// Credentials of the servers made here.
const (
	User                = "steward"
	Password            = "steward-test"
	ReplicationUser     = "repl"
	ReplicationPassword = "rep-test"
	// AppUser has every privilege on the app database and none to bypass
	// read_only (MariaDB's READ ONLY ADMIN): an application.
	AppUser     = "app"
	AppPassword = "app-test"
)

// Programs of Debian's mariadb-server.
const (
	Mariadbd  = "/usr/sbin/mariadbd"
	InstallDB = "/usr/bin/mariadb-install-db"
)

// RequireBinaries fails the test when MariaDB's programs are missing.
func RequireBinaries(t testing.TB) {
	t.Helper()
	for _, p := range []string{Mariadbd, InstallDB, "/usr/bin/mariadb-dump", "/usr/bin/mariadb"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("MariaDB program %s not found: install mariadb-server and mariadb-client (make deps)", p)
		}
	}
}

// RunAs is the OS user the servers run as: "mysql" when the test runs as
// root (the test fails when it is missing), "" (ourselves) otherwise.
func RunAs(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	if _, err := user.Lookup("mysql"); err != nil {
		t.Fatalf("running as root, MariaDB runs as the OS user \"mysql\" (%v): install mariadb-server (make deps), which creates it", err)
	}
	return "mysql"
}

// Dir returns a fresh, short temporary directory owned by the RunAs user
// (traversable by it), removed when the test ends.
func Dir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "stw-my-")
	if err != nil {
		t.Fatalf("creating a temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	Chown(t, dir)
	return dir
}

// Chown gives path to the RunAs user (when running as root).
func Chown(t testing.TB, path string) {
	t.Helper()
	name := RunAs(t)
	if name == "" {
		return
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatalf("chown %s: %v", path, err)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// outside the kernel's ephemeral range (see internal/freeport).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freeport.Free()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Server is one MariaDB server's files and address.
type Server struct {
	Name     string
	Dir      string // holds my.cnf, the data directory and the error log
	DataDir  string
	Cnf      string
	Port     int
	ServerID int
}

// Addr is 127.0.0.1:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// StartCommand runs the server in the foreground (the backend detaches it).
func (s *Server) StartCommand() []string { return []string{Mariadbd, "--defaults-file=" + s.Cnf} }

// ErrorLog is the server's error log.
func (s *Server) ErrorLog() string { return filepath.Join(s.Dir, s.Name+".err") }

// Config is the my.cnf of a test server: production settings for
// replication and durability (research/mysql-failover.md §0, §7), small
// memory, fast shutdown.
func (s *Server) Config(runAs string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[mariadbd]\n")
	if runAs != "" {
		fmt.Fprintf(&b, "user=%s\n", runAs)
	}
	fmt.Fprintf(&b, `datadir=%[1]s
tmpdir=%[2]s
socket=%[2]s/%[3]s.sock
pid-file=%[1]s/mariadbd.pid
log_error=%[4]s
port=%[5]d
bind-address=127.0.0.1
skip-name-resolve
server_id=%[6]d
report_host=%[3]s
report_port=%[5]d
max_connections=60
`, s.DataDir, s.Dir, s.Name, s.ErrorLog(), s.Port, s.ServerID)
	b.WriteString(ReplicationSettings(s.DataDir))
	return b.String()
}

// ReplicationSettings are the my.cnf lines of a test member besides its
// paths, port and identity: what docs/mysql.md asks for (GTID strict mode,
// binary log with replica updates, durable commits, read_only and no
// replication at startup) and small memory. The binary and relay logs go
// in dataDir. Shared with the fault-injection suite's members.
func ReplicationSettings(dataDir string) string {
	return fmt.Sprintf(`log_bin=%[1]s/binlog
relay_log=%[1]s/relay-bin
binlog_format=ROW
log_slave_updates=ON
gtid_domain_id=0
gtid_strict_mode=ON
sync_binlog=1
innodb_flush_log_at_trx_commit=1
read_only=ON
skip_slave_start=ON
slave_net_timeout=10
innodb_buffer_pool_size=32M
innodb_log_file_size=16M
innodb_buffer_pool_dump_at_shutdown=OFF
innodb_buffer_pool_load_at_startup=OFF
performance_schema=OFF
`, dataDir)
}

// setupSQL creates steward's account and an application account at
// initialization (bootstrap mode: nothing is binary-logged, so no GTID).
func setupSQL() string {
	return fmt.Sprintf(`FLUSH PRIVILEGES;
CREATE USER '%[1]s'@'127.0.0.1' IDENTIFIED BY '%[2]s';
GRANT ALL PRIVILEGES ON *.* TO '%[1]s'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER '%[3]s'@'127.0.0.1' IDENTIFIED BY '%[4]s';
GRANT ALL PRIVILEGES ON app.* TO '%[3]s'@'127.0.0.1';
`, User, Password, AppUser, AppPassword)
}

var installMu sync.Mutex // mariadb-install-db runs are heavy: one at a time

// NewServer makes an initialized data directory (mariadb-install-db with
// steward's account) for a server named name with serverID, on a free
// port, in a new directory under parent (Dir(t) when ""). It does not
// start it. Any server started from it is stopped when the test ends.
func NewServer(t testing.TB, parent, name string, serverID int) *Server {
	t.Helper()
	RequireBinaries(t)
	if parent == "" {
		parent = Dir(t)
	}
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	Chown(t, dir)
	s := &Server{Name: name, Dir: dir, DataDir: filepath.Join(dir, "data"), Cnf: filepath.Join(dir, "my.cnf"), Port: FreePort(t), ServerID: serverID}
	runAs := RunAs(t)
	if err := os.WriteFile(s.Cnf, []byte(s.Config(runAs)), 0o644); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(dir, "setup.sql")
	if err := os.WriteFile(extra, []byte(setupSQL()), 0o644); err != nil {
		t.Fatal(err)
	}
	StopAtCleanup(t, s.DataDir)
	installMu.Lock()
	t0 := time.Now()
	args := []string{"--defaults-file=" + s.Cnf, "--skip-test-db", "--extra-file=" + extra}
	if runAs != "" {
		args = append(args, "--user="+runAs)
	}
	out, err := exec.Command(InstallDB, args...).CombinedOutput()
	installMu.Unlock()
	if err != nil {
		log, _ := os.ReadFile(s.ErrorLog())
		t.Fatalf("mariadb-install-db for %s: %v\n%s\n%s", name, err, out, log)
	}
	t.Logf("initialized %s (port %d, server_id %d) in %v", name, s.Port, serverID, time.Since(t0).Round(time.Millisecond))
	return s
}

// Options returns backend options for member on a new initialized server
// (server_id serverID): start_command runs mariadbd in the foreground, the
// test credentials, a debug logger writing to t.Log.
func Options(t testing.TB, parent, member string, serverID int) (mysql.Options, *Server) {
	t.Helper()
	s := NewServer(t, parent, member, serverID)
	return mysql.Options{
		Member:       member,
		Address:      s.Addr(),
		User:         User,
		Password:     Password,
		Replication:  mysql.Credentials{Username: ReplicationUser, Password: ReplicationPassword},
		DataDir:      s.DataDir,
		StartCommand: s.StartCommand(),
		Logger:       Logger(t, member),
		QueryTimeout: 3 * time.Second,
	}, s
}

// Logger returns a debug-level slog logger writing to t.Log, tagged with
// member. It stops writing once the test has finished.
func Logger(t testing.TB, member string) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("member", member)
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// ServerPID returns the PID of the mariadbd running from dataDir (0: none):
// the PID file, checked against /proc.
func ServerPID(dataDir string) int {
	data, err := os.ReadFile(filepath.Join(dataDir, "mariadbd.pid"))
	if err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && isMariadbd(pid) {
			return pid
		}
	}
	// A server that has not written its PID file yet: its working
	// directory is the data directory.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isMariadbd(pid) {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && (cwd == dataDir || cwd == resolved(dataDir)) {
			return pid
		}
	}
	return 0
}

func resolved(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

func isMariadbd(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i || j+3 > len(s) {
		return false
	}
	state := strings.TrimSpace(s[j+1:])
	return (s[i+1:j] == "mariadbd" || s[i+1:j] == "mysqld") && state != "" && state[0] != 'Z'
}

// StopAtCleanup registers a cleanup that stops the server running from
// dataDir, if any (SIGTERM, SIGKILL after 10 s).
func StopAtCleanup(t testing.TB, dataDir string) {
	t.Cleanup(func() { Stop(dataDir, 10*time.Second) })
}

// Stop stops the server running from dataDir: SIGTERM, then SIGKILL after
// grace; it waits until it is gone.
func Stop(dataDir string, grace time.Duration) {
	pid := ServerPID(dataDir)
	if pid == 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !isMariadbd(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 250 && isMariadbd(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill SIGKILLs the server running from dataDir (a crash) and waits until
// it is gone. It returns the PID killed (0: none ran).
func Kill(dataDir string) int {
	pid := ServerPID(dataDir)
	if pid == 0 {
		return 0
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 500 && isMariadbd(pid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	return pid
}

// Open returns a pool to addr as user (steward's account when "").
func Open(addr, user, password string) *sql.DB {
	if user == "" {
		user, password = User, Password
	}
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = user, password, "tcp", addr
	cfg.Timeout = 3 * time.Second
	cfg.InterpolateParams = true
	cfg.Logger = nopLogger{}
	c, _ := gomysql.NewConnector(cfg)
	return sql.OpenDB(c)
}

type nopLogger struct{}

func (nopLogger) Print(...any) {}

// TryExec runs statements (one per call) on a new connection to addr as
// steward's account.
func TryExec(ctx context.Context, addr string, stmts ...string) error {
	db := Open(addr, "", "")
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// Exec runs statements on one connection to addr, failing the test on
// error.
func Exec(t testing.TB, addr string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := TryExec(ctx, addr, stmts...); err != nil {
		t.Fatalf("on %s: %v", addr, err)
	}
}

// Query returns every row of query on addr as column name → text (NULL is
// ""), failing the test on error.
func Query(t testing.TB, addr, query string, args ...any) []map[string]string {
	t.Helper()
	rows, err := TryQuery(addr, query, args...)
	if err != nil {
		t.Fatalf("on %s: %s: %v", addr, query, err)
	}
	return rows
}

// TryQuery returns every row of query on addr as column name → text.
func TryQuery(addr, query string, args ...any) ([]map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := Open(addr, "", "")
	defer db.Close()
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []map[string]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := map[string]string{}
		for i, c := range cols {
			m[c] = vals[i].String
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// QueryValue returns the first column of the first row ("" when none).
func QueryValue(t testing.TB, addr, query string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := Open(addr, "", "")
	defer db.Close()
	var v sql.NullString
	err := db.QueryRowContext(ctx, query, args...).Scan(&v)
	if err == sql.ErrNoRows {
		return ""
	}
	if err != nil {
		t.Fatalf("on %s: %s: %v", addr, query, err)
	}
	return v.String
}
