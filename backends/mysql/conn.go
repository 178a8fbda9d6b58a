package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// querier is what *sql.DB and *sql.Conn share.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// driverLogger sends the driver's own messages ("unexpected EOF", ...) to
// the backend's log at Debug instead of stderr.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Debug("mysql driver", "msg", fmt.Sprint(v...)) }

// connector returns a connector to host:port as steward's account. A
// readTimeout of 0 leaves reads bounded by the context only.
func (b *Backend) connector(host string, port int, readTimeout time.Duration) driver.Connector {
	cfg := gomysql.NewConfig()
	cfg.User = b.opts.User
	cfg.Passwd = b.opts.Password
	cfg.Net = "tcp"
	cfg.Addr = net.JoinHostPort(host, strconv.Itoa(port))
	cfg.Timeout = min(b.opts.QueryTimeout, 5*time.Second)
	cfg.ReadTimeout = readTimeout
	cfg.WriteTimeout = readTimeout
	// Statements such as CHANGE MASTER TO cannot be prepared: the driver
	// interpolates the arguments itself, escaping them for the server's
	// sql_mode (it honours NO_BACKSLASH_ESCAPES).
	cfg.InterpolateParams = true
	cfg.Logger = driverLogger{b.log}
	c, err := gomysql.NewConnector(cfg)
	if err != nil {
		// Only an invalid configuration fails here, and ours is built in
		// code: report it on first use.
		return errConnector{err}
	}
	return c
}

type errConnector struct{ err error }

func (e errConnector) Connect(context.Context) (driver.Conn, error) { return nil, e.err }
func (e errConnector) Driver() driver.Driver                        { return gomysql.MySQLDriver{} }

// remoteDB opens a one-connection pool to another member's server. The
// caller closes it.
func (b *Backend) remoteDB(host string, port int) *sql.DB {
	db := sql.OpenDB(b.connector(host, port, 0))
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	return db
}

// session returns a dedicated connection to the local server (for
// session-scoped settings such as sql_log_bin) with the server's flavour.
func (b *Backend) session(ctx context.Context) (*sql.Conn, Flavor, error) {
	c, err := b.db.Conn(ctx)
	if err != nil {
		return nil, Flavor{}, err
	}
	f, err := b.detectFlavor(ctx, c)
	if err != nil {
		c.Close()
		return nil, Flavor{}, err
	}
	return c, f, nil
}

// detectFlavor reads @@version and @@server_id (cached for the local
// server when q is the local pool or a local session).
func (b *Backend) detectFlavor(ctx context.Context, q querier) (Flavor, error) {
	var version string
	var serverID uint64
	if err := q.QueryRowContext(ctx, "SELECT @@version, @@server_id").Scan(&version, &serverID); err != nil {
		return Flavor{}, err
	}
	f, err := ParseFlavor(version)
	if err != nil {
		return f, err
	}
	b.mu.Lock()
	b.flavor = &f
	b.serverID = serverID
	b.mu.Unlock()
	return f, nil
}

// remoteFlavor reads another server's flavour (not cached).
func remoteFlavor(ctx context.Context, q querier) (Flavor, error) {
	var version string
	if err := q.QueryRowContext(ctx, "SELECT @@version").Scan(&version); err != nil {
		return Flavor{}, err
	}
	return ParseFlavor(version)
}

// queryRows runs a query and returns every row as column name → text
// (NULL is ""). Replica-status column names are normalised (statusColumn).
func queryRows(ctx context.Context, q querier, query string, args ...any) ([]map[string]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	for i, c := range cols {
		cols[i] = statusColumn(c)
	}
	var out []map[string]string
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := make(map[string]string, len(cols))
		for i, c := range cols {
			m[c] = string(vals[i])
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// globalStatus reads server status variables (upper-case names, as
// information_schema.GLOBAL_STATUS spells them) without SHOW, which some
// statements' locks can block: name → value, absent when unknown.
func globalStatus(ctx context.Context, q querier, names ...string) (map[string]string, error) {
	args := make([]any, len(names))
	marks := make([]string, len(names))
	for i, n := range names {
		args[i], marks[i] = n, "?"
	}
	rows, err := queryRows(ctx, q, "SELECT VARIABLE_NAME AS name, VARIABLE_VALUE AS value FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ("+strings.Join(marks, ", ")+")", args...)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(rows))
	for _, r := range rows {
		out[r["name"]] = r["value"]
	}
	return out, nil
}

// queryRow is queryRows for at most one row; found=false when none.
func queryRow(ctx context.Context, q querier, query string, args ...any) (map[string]string, bool, error) {
	rows, err := queryRows(ctx, q, query, args...)
	if err != nil || len(rows) == 0 {
		return nil, false, err
	}
	return rows[0], true, nil
}

// execAll runs statements in order, stopping at the first error.
func execAll(ctx context.Context, q querier, stmts ...string) error {
	for _, s := range stmts {
		if _, err := q.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// errno is the server's error number (0: not a server error).
func errno(err error) uint16 {
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// Server error numbers steward acts on.
const (
	erAccessDenied      = 1045
	erBadDB             = 1049
	erServerShutdown    = 1053
	erNoSuchThread      = 1094
	erNoSuchTable       = 1146
	erServerIsStarting  = 1927 // MariaDB: "Connection was killed" / starting
	erOptionPreventsRun = 1290
	// erMasterInfo: "Could not initialize master info structure" — the
	// stored replication configuration (master.info, relay-log.info) is
	// unreadable, e.g. after a kill -9 while it was being written.
	erMasterInfo = 1201
)

// connRefused reports a connection attempt that nothing answered (the
// server does not listen).
func connRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection refused")
}

// atoi parses an unsigned integer column ("" and junk are 0).
func atoi(s string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	return n
}

// truthy reads a boolean variable (1/ON/YES/TRUE).
func truthy(s string) bool {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

// closeDiscard closes a session whose settings (sql_log_bin = 0, ...) must
// not leak into the pool: the connection is discarded, not reused.
func closeDiscard(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	_ = c.Close()
}
