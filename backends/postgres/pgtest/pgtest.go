// Package pgtest helps tests run real PostgreSQL servers through the
// postgres backend: it finds the binaries, picks the OS user PostgreSQL
// runs as, makes data directories that user can use, free ports, ready
// backend options, and cleanups that never leave a server running.
//
// Nothing here skips a test: a missing prerequisite fails it, saying how to
// install it.
package pgtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stewardha/steward/backends/postgres"
	"github.com/stewardha/steward/internal/freeport"
)

// Credentials the servers made from Options use.
const (
	Superuser           = "postgres"
	SuperuserPassword   = "steward-test"
	ReplicationUser     = "replicator"
	ReplicationPassword = "rep-test"
)

// DefaultBinDir is where Debian's postgresql-15 package installs the
// server programs. STEWARD_PG_BIN_DIR overrides it.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// RequireBinaries returns the PostgreSQL bin directory, failing the test
// when the programs are missing.
func RequireBinaries(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("STEWARD_PG_BIN_DIR")
	if dir == "" {
		dir = DefaultBinDir
	}
	for _, p := range []string{"pg_ctl", "postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata", "pg_waldump"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("PostgreSQL program %s not found in %s: install postgresql-15 (make deps)", p, dir)
		}
	}
	return dir
}

// RunAs is the OS user PostgreSQL runs as in tests: "postgres" when the
// test runs as root (the test fails if that user is missing), "" otherwise.
func RunAs(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Fatalf("running as root, PostgreSQL needs the OS user \"postgres\" (%v): install postgresql-15 (make deps), which creates it", err)
	}
	return "postgres"
}

// Dir returns a fresh, short temporary directory in which the RunAs user
// can create data directories (its parents are traversable, it is owned by
// that user). It is removed when the test ends.
func Dir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 40 || !traversable(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "stw-pg-")
	if err != nil {
		t.Fatalf("creating a temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("chmod %s: %v", dir, err)
	}
	if name := RunAs(t); name != "" {
		u, err := user.Lookup(name)
		if err != nil {
			t.Fatalf("looking up %s: %v", name, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("chown %s to %s: %v", dir, name, err)
		}
	}
	return dir
}

// traversable: every directory from / to dir lets others search it.
func traversable(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" || d == "." {
			return true
		}
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

// PgHba allows the test users from 127.0.0.1 with passwords, for normal
// and replication connections (and trust over the Unix socket, for
// debugging with psql -h <data dir>).
var PgHba = []string{
	"local all all trust",
	"host all all 127.0.0.1/32 scram-sha-256",
	"host replication all 127.0.0.1/32 scram-sha-256",
}

// Options returns backend options for member: a fresh data directory
// under Dir, a free port on 127.0.0.1, the test credentials, PgHba,
// pg_rewind enabled, small memory settings (shared_buffers 16MB,
// max_connections 30, so that many servers fit on one host), and a logger
// writing to t.Log. A server started from
// the data directory is stopped when the test ends (StopAtCleanup).
func Options(t testing.TB, member string) postgres.Options {
	t.Helper()
	bin := RequireBinaries(t)
	dir := Dir(t)
	dataDir := filepath.Join(dir, member)
	StopAtCleanup(t, dataDir)
	addr := "127.0.0.1:" + strconv.Itoa(FreePort(t))
	return postgres.Options{
		Member:         member,
		DataDir:        dataDir,
		BinDir:         bin,
		Listen:         addr,
		ConnectAddress: addr,
		Superuser:      postgres.Credentials{Username: Superuser, Password: SuperuserPassword},
		Replication:    postgres.Credentials{Username: ReplicationUser, Password: ReplicationPassword},
		Parameters:     map[string]string{"shared_buffers": "16MB", "max_connections": "30"},
		PgHba:          append([]string(nil), PgHba...),
		UsePgRewind:    true,
		RunAs:          RunAs(t),
		Logger:         Logger(t, member),
		QueryTimeout:   3 * time.Second,
	}
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

// StopAtCleanup registers a cleanup that kills the server running from
// dataDir, if any: SIGQUIT to the postmaster named in postmaster.pid, then
// SIGKILL to it and its remaining processes after 5 s.
func StopAtCleanup(t testing.TB, dataDir string) {
	t.Cleanup(func() { Kill(dataDir, 5*time.Second) })
}

// Kill stops the server running from dataDir (SIGQUIT, then SIGKILL of the
// postmaster and its children after grace) and waits for it to go.
func Kill(dataDir string, grace time.Duration) {
	pid := postgres.RunningPID(dataDir)
	if pid == 0 {
		return
	}
	children := childrenOf(pid)
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if postgres.RunningPID(dataDir) != pid {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for _, c := range append(children, childrenOf(pid)...) {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && postgres.RunningPID(dataDir) == pid {
		time.Sleep(20 * time.Millisecond)
	}
}

func childrenOf(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(data)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// Connect opens a superuser connection (database postgres) to addr
// (host:port), closed when the test ends.
func Connect(t testing.TB, addr string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := TryConnect(ctx, addr)
	if err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// TryConnect opens a superuser connection to addr; the caller closes it.
func TryConnect(ctx context.Context, addr string) (*pgx.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=disable connect_timeout=5", host, port, Superuser))
	if err != nil {
		return nil, err
	}
	cfg.Password = SuperuserPassword
	return pgx.ConnectConfig(ctx, cfg)
}

// TryExec runs sql as the superuser on a new connection to addr.
func TryExec(ctx context.Context, addr, sql string, args ...any) error {
	c, err := TryConnect(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql, args...)
	return err
}

// Exec runs sql as the superuser against addr, failing the test on error.
func Exec(t testing.TB, addr, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := TryExec(ctx, addr, sql, args...); err != nil {
		t.Fatalf("on %s: %s: %v", addr, sql, err)
	}
}

// Query runs sql as the superuser against addr and returns every row's
// values as text (NULL is ""), failing the test on error.
func Query(t testing.TB, addr, sql string, args ...any) [][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := TryConnect(ctx, addr)
	if err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("on %s: %s: %v", addr, sql, err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatalf("on %s: %s: %v", addr, sql, err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = fmt.Sprint(v)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("on %s: %s: %v", addr, sql, err)
	}
	return out
}

// QueryValue returns the first column of the first row of sql ("" when no
// row or NULL).
func QueryValue(t testing.TB, addr, sql string, args ...any) string {
	t.Helper()
	rows := Query(t, addr, sql, args...)
	if len(rows) == 0 || len(rows[0]) == 0 {
		return ""
	}
	return rows[0][0]
}
