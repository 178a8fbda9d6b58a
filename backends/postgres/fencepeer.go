package postgres

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stewardha/steward/backends"
)

// fenceMarker is the synchronous standby name FencePeer sets on a former
// primary: no standby ever has it, so with synchronous_commit on every
// commit waits forever and none is acknowledged.
const fenceMarker = "steward_fenced"

// FencePeer makes another member's database stop acknowledging writes
// through SQL: the first, cheap step of fencing a former primary whose
// database still answers (its agent may be frozen). It sets, with ALTER
// SYSTEM and a reload, a synchronous standby that cannot exist (commits
// then wait instead of being acknowledged), synchronous_commit on and
// default_transaction_read_only on, and ends every client session.
//
// It is best effort, not a guarantee: a client that overrides
// synchronous_commit and transaction_read_only in its own session can still
// commit. Only a hook that stops the server or its host (STONITH), or the
// server's own agent, makes that impossible. A server that is already in
// recovery (a standby) is left alone.
func (b *Backend) FencePeer(ctx context.Context, up backends.Upstream) error {
	cfg, err := pgx.ParseConfig(connString(up.Host, up.Port, b.opts.Superuser.Username, "postgres", "prefer", b.opts.QueryTimeout))
	if err != nil {
		return err
	}
	cfg.Password = b.opts.Superuser.Password
	cfg.RuntimeParams["application_name"] = "steward_fence"
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting to %s (%s): %w", up.Name, hostPort(up), err)
	}
	defer c.Close(context.Background())
	var inRecovery bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("reading %s's role: %w", up.Name, err)
	}
	if inRecovery {
		return nil
	}
	start := time.Now()
	for _, q := range []string{
		"ALTER SYSTEM SET synchronous_standby_names = '" + fenceMarker + "'",
		"ALTER SYSTEM SET synchronous_commit = 'on'",
		"ALTER SYSTEM SET default_transaction_read_only = 'on'",
		"SELECT pg_reload_conf()",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			return fmt.Errorf("fencing %s: %s: %w", up.Name, q, err)
		}
	}
	b.log.Info("fenced a former primary through SQL: commits there now wait for a standby that cannot exist", "target", up.Name,
		"address", hostPort(up), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// clearPeerFence removes FencePeer's settings from postgresql.auto.conf
// before this server starts again (as a replica after the failover, or as a
// primary later): left in place they would block every commit.
func (b *Backend) clearPeerFence() error {
	p := filepath.Join(b.dataDir, "postgresql.auto.conf")
	data, err := os.ReadFile(p)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	if !strings.Contains(string(data), fenceMarker) {
		return nil
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		k, _, _ := strings.Cut(strings.TrimSpace(l), "=")
		switch strings.TrimSpace(k) {
		case "synchronous_standby_names", "synchronous_commit", "default_transaction_read_only":
			continue
		}
		keep = append(keep, l)
	}
	if err := os.WriteFile(p, []byte(strings.Join(keep, "\n")), 0o600); err != nil {
		return err
	}
	b.log.Info("removed the fencing settings a new leader had set on this server", "file", p)
	return b.chown(p)
}

// Checkpoint runs CHECKPOINT: before a planned stop it moves most of the
// shutdown checkpoint's work out of the switchover pause.
func (b *Backend) Checkpoint(ctx context.Context) error {
	return b.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, "CHECKPOINT")
		return err
	})
}
