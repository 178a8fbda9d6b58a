package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// lockConn takes the connection lock, or gives up when ctx ends.
func (b *Backend) lockConn(ctx context.Context) error {
	select {
	case b.connSem <- struct{}{}:
		return nil
	default:
	}
	select {
	case b.connSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for steward's database connection (another query holds it): %w", ctx.Err())
	}
}

func (b *Backend) unlockConn() { <-b.connSem }

// connString renders a keyword/value connection string without a password
// (it is set on the parsed config).
func connString(host string, port int, user, dbname, sslmode string, timeout time.Duration) string {
	kv := []string{"host", host, "port", strconv.Itoa(port), "user", user, "sslmode", sslmode,
		"application_name", "steward"}
	if dbname != "" {
		kv = append(kv, "dbname", dbname)
	}
	if timeout > 0 {
		secs := int((timeout + time.Second - 1) / time.Second)
		kv = append(kv, "connect_timeout", strconv.Itoa(secs))
	}
	return conninfo(kv...)
}

// connectLocal opens a superuser connection to the local server (TCP to
// Listen, database postgres).
func (b *Backend) connectLocal(ctx context.Context) (*pgx.Conn, error) {
	host, port := b.localHostPort()
	cfg, err := pgx.ParseConfig(connString(host, port, b.opts.Superuser.Username, "postgres", "disable", b.opts.QueryTimeout))
	if err != nil {
		return nil, fmt.Errorf("building the connection config: %w", err)
	}
	cfg.Password = b.opts.Superuser.Password
	return pgx.ConnectConfig(ctx, cfg)
}

// withConn runs f with steward's connection to the local server, opening
// it when needed. When f fails on a connection opened earlier (the server
// restarted), it reconnects once and retries. The connection is dropped
// after any error, so the next call starts afresh.
func (b *Backend) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	if err := b.lockConn(ctx); err != nil {
		return err
	}
	defer b.unlockConn()
	pid := RunningPID(b.dataDir)
	if b.conn != nil && (b.conn.IsClosed() || (pid != 0 && pid != b.connPID)) {
		b.closeConnLocked()
	}
	reused := b.conn != nil
	for attempt := 0; ; attempt++ {
		if b.conn == nil {
			c, err := b.connectLocal(ctx)
			if err != nil {
				return fmt.Errorf("connecting to the local server at %s as %s: %w", b.opts.Listen, b.opts.Superuser.Username, err)
			}
			b.conn, b.connPID = c, pid
		}
		err := f(b.conn)
		if err == nil {
			return nil
		}
		b.closeConnLocked()
		if reused && attempt == 0 && ctx.Err() == nil && !isServerError(err) {
			continue
		}
		return err
	}
}

// isServerError: the server answered with an error (the connection works).
func isServerError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}

func (b *Backend) closeConnLocked() {
	if b.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_ = b.conn.Close(ctx)
	cancel()
	b.conn = nil
}

// resetConn drops the cached connection and static values (after the data
// directory was replaced).
func (b *Backend) resetConn(ctx context.Context) {
	if b.lockConn(ctx) == nil {
		b.closeConnLocked()
		b.unlockConn()
	}
	b.staticMu.Lock()
	b.sysID, b.version, b.tli = "", "", 0
	b.staticMu.Unlock()
}

// sqlState returns the SQLSTATE of err ("" when none).
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// replConn opens a physical replication connection (replication=true) as
// the replication user; sslmode "disable" for the local server, "prefer"
// for others.
func (b *Backend) replConn(ctx context.Context, host string, port int, sslmode string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(connString(host, port, b.opts.Replication.Username, "", sslmode, b.opts.QueryTimeout))
	if err != nil {
		return nil, fmt.Errorf("building the replication connection config: %w", err)
	}
	cfg.Password = b.opts.Replication.Password
	cfg.RuntimeParams["replication"] = "true"
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replication connection to %s:%d as %s: %w", host, port, b.opts.Replication.Username, err)
	}
	return c, nil
}

// identifySystem is IDENTIFY_SYSTEM's answer.
type identifySystem struct {
	systemID string
	timeline int64
	xlogpos  uint64
}

func runIdentifySystem(ctx context.Context, c *pgconn.PgConn) (identifySystem, error) {
	res, err := c.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return identifySystem{}, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 || len(res[0].Rows[0]) < 3 {
		return identifySystem{}, errors.New("IDENTIFY_SYSTEM returned no row")
	}
	row := res[0].Rows[0]
	tli, err := strconv.ParseInt(string(row[1]), 10, 64)
	if err != nil {
		return identifySystem{}, fmt.Errorf("IDENTIFY_SYSTEM timeline %q: %w", row[1], err)
	}
	pos, err := parseLSN(string(row[2]))
	if err != nil {
		return identifySystem{}, fmt.Errorf("IDENTIFY_SYSTEM xlogpos: %w", err)
	}
	return identifySystem{systemID: string(row[0]), timeline: tli, xlogpos: pos}, nil
}

// timelineHistory runs TIMELINE_HISTORY tli and returns the file content.
func timelineHistory(ctx context.Context, c *pgconn.PgConn, tli int64) (string, error) {
	res, err := c.Exec(ctx, "TIMELINE_HISTORY "+strconv.FormatInt(tli, 10)).ReadAll()
	if err != nil {
		return "", fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 || len(res[0].Rows[0]) < 2 {
		return "", fmt.Errorf("TIMELINE_HISTORY %d returned no row", tli)
	}
	return string(res[0].Rows[0][1]), nil
}
