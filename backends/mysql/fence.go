package mysql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stewardha/steward/backends"
)

// fenceSQLBound is the most FenceWrites waits for the server to answer
// before it kills the process.
const fenceSQLBound = 2 * time.Second

// FenceWrites makes the local server stop accepting writes now:
//
//  1. over a new connection of its own (never the shared pool, which may be
//     stuck), read_only ON (MySQL: super_read_only ON), every client
//     session ended (replication and system threads are kept), and
//     read_only read back — all within 2 s (or half of what ctx leaves);
//  2. if that did not succeed, SIGKILL of the server process (found without
//     a connection: see proc.go), waiting until it is gone.
//
// It returns nil once writes are stopped either way (or nothing runs), and
// an error when ctx ends before that could be confirmed. MariaDB 10.11's
// read_only stops every account without READ ONLY ADMIN; an account that
// has it (steward's own, root) could still write: give applications
// neither READ ONLY ADMIN nor ALL PRIVILEGES ON *.*.
func (b *Backend) FenceWrites(ctx context.Context) error {
	start := time.Now()
	bound := fenceSQLBound
	if dl, ok := ctx.Deadline(); ok {
		bound = min(bound, time.Until(dl)/2)
	}
	sctx, cancel := context.WithTimeout(ctx, bound)
	host, port := b.localHostPort()
	killed, sqlErr := b.fenceSQL(sctx, host, port)
	cancel()
	if sqlErr == nil {
		b.log.Info("fenced writes", "method", "read_only + client sessions ended", "sessions_killed", killed,
			"duration", time.Since(start).Round(time.Millisecond))
		return nil
	}
	pid := b.serverPID()
	if pid == 0 {
		if connRefused(sqlErr) {
			b.log.Info("fenced writes", "method", "none running", "duration", time.Since(start).Round(time.Millisecond))
			return nil
		}
		err := fmt.Errorf("fencing: the server did not become read-only (%v) and its process cannot be found (set mysql.data_dir): writes are NOT confirmed stopped", sqlErr)
		b.log.Error("fence writes failed", "error", err)
		return err
	}
	kctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var c context.CancelFunc
		kctx, c = context.WithTimeout(ctx, 10*time.Second)
		defer c()
	}
	if err := b.killServer(kctx, pid); err != nil {
		err = fmt.Errorf("fencing: read_only failed (%v) and %w; writes are NOT confirmed stopped", sqlErr, err)
		b.log.Error("fence writes failed", "error", err)
		return err
	}
	b.log.Info("fenced writes", "method", "SIGKILL", "pid", pid, "sql_error", sqlErr, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// fenceSQL makes the server at host:port read-only and ends its client
// sessions over a new connection; it reads read_only back.
func (b *Backend) fenceSQL(ctx context.Context, host string, port int) (int, error) {
	db := b.remoteDB(host, port)
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	f, err := remoteFlavor(ctx, c)
	if err != nil {
		return 0, err
	}
	if err := execAll(ctx, c, f.ReadOnlySQL(true)...); err != nil {
		return 0, err
	}
	killed, err := killClientSessions(ctx, c)
	if err != nil {
		return killed, err
	}
	var ro, sro int64
	q := "SELECT @@global.read_only, 0"
	if !f.MariaDB {
		q = "SELECT @@global.read_only, @@global.super_read_only"
	}
	if err := c.QueryRowContext(ctx, q).Scan(&ro, &sro); err != nil {
		return killed, err
	}
	if ro == 0 || (!f.MariaDB && sro == 0) {
		return killed, errors.New("read_only did not stay on")
	}
	return killed, nil
}

// killClientSessions ends every client session except this one
// (replication, event scheduler and other system threads are kept). It
// repeats until none is left (sessions may connect meanwhile), at most
// three rounds.
func killClientSessions(ctx context.Context, q querier) (int, error) {
	var self uint64
	if err := q.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&self); err != nil {
		return 0, err
	}
	killed := 0
	for round := 0; round < 3; round++ {
		rows, err := queryRows(ctx, q, "SELECT ID AS id, USER AS user, COMMAND AS command FROM information_schema.PROCESSLIST")
		if err != nil {
			return killed, err
		}
		n := 0
		for _, r := range rows {
			id := atoi(r["id"])
			if id == self || !isClientSession(r["user"], r["command"]) {
				continue
			}
			if _, err := q.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err != nil && errno(err) != erNoSuchThread {
				return killed, fmt.Errorf("KILL CONNECTION %d: %w", id, err)
			}
			n++
		}
		killed += n
		if n == 0 {
			break
		}
	}
	return killed, nil
}

// FencePeer makes another member's server stop taking writes through SQL:
// the first, cheap step of fencing a former primary whose server still
// answers (its agent may be frozen): read_only ON (MySQL: super_read_only)
// and every client session ended. It is best effort: accounts with READ
// ONLY ADMIN (MariaDB) or whoever turns read_only off again can still write;
// only a hook that stops the server or its host (STONITH), or its own
// agent, makes that impossible.
func (b *Backend) FencePeer(ctx context.Context, up backends.Upstream) error {
	start := time.Now()
	killed, err := b.fenceSQL(ctx, up.Host, up.Port)
	if err != nil {
		return fmt.Errorf("fencing %s (%s) through SQL: %w", up.Name, hostPort(up), err)
	}
	b.log.Info("fenced a former primary through SQL: read_only on, client sessions ended", "target", up.Name,
		"address", hostPort(up), "sessions_killed", killed, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}
