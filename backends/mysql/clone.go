package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stewardha/steward/backends"
)

// Clone copies up's data into the local server, which must be empty (no
// steward schema and no databases; it is started with the start command
// when it does not run), and configures it as a replica of up (CHANGE
// MASTER TO with GTID auto-positioning, not started: Start does that).
//
// Default, a logical copy streamed from up: mariadb-dump/mysqldump
// --single-transaction of every non-system database piped into the local
// client with sql_log_bin off, so nothing of the copy becomes a local
// transaction (errant), and the accounts and roles (SHOW CREATE USER /
// SHOW GRANTS, read before the copy; the server's own accounts and
// steward's are skipped) recreated the same way. The
// copy's GTID position (MariaDB: gtid_slave_pos from the dump; MySQL:
// gtid_purged, set by the dump itself on a server whose GTID history was
// reset) then becomes the local history: on MariaDB gtid_binlog_state is
// seeded with up's state as of the copy, so that a clone promoted later
// continues the sequence numbers and keeps the history other members are
// checked against.
//
// With mysql.clone_command set, the server is stopped and the command run
// instead (placeholders {upstream_host} {upstream_port} {upstream_name}
// {data_dir} {member}; STEWARD_MYSQL_USER and STEWARD_MYSQL_PASSWORD in its
// environment); it must leave a data directory that starts, and a
// xtrabackup_binlog_info or mariadb_backup_binlog_info file whose third
// field is the GTID position (mariadb-backup and xtrabackup write one).
func (b *Backend) Clone(ctx context.Context, up backends.Upstream) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.gen.Add(1)
	start := time.Now()
	defer b.begin(backends.StateUninitialized, "cloning from "+up.Name+" ("+hostPort(up)+") in progress")()
	pos, err := b.clone(ctx, up)
	if err != nil {
		b.log.Info("clone failed", "upstream", up.Name, "address", hostPort(up), "error", err, "duration", time.Since(start).Round(time.Millisecond))
		return fmt.Errorf("clone from %s (%s): %w", up.Name, hostPort(up), err)
	}
	b.log.Info("cloned from upstream", "upstream", up.Name, "address", hostPort(up), "gtid", pos, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *Backend) clone(ctx context.Context, up backends.Upstream) (string, error) {
	if err := b.ensureRunning(ctx); err != nil {
		return "", err
	}
	if err := b.requireEmpty(ctx); err != nil {
		return "", err
	}
	var pos string
	var err error
	if len(b.opts.CloneCommand) > 0 {
		pos, err = b.cloneWithCommand(ctx, up)
	} else {
		pos, err = b.cloneLogical(ctx, up)
	}
	if err != nil {
		return "", err
	}
	if err := b.configureReplica(ctx, up, false); err != nil {
		return pos, fmt.Errorf("the copy is in place, but configuring replication failed: %w", err)
	}
	return pos, nil
}

// requireEmpty fails unless the local server holds no steward schema and
// no databases.
func (b *Backend) requireEmpty(ctx context.Context) error {
	_, initialized, err := clusterID(ctx, b.db)
	if err != nil {
		return err
	}
	dbs, err := userDatabases(ctx, b.db)
	if err != nil {
		return err
	}
	if initialized || len(dbs) > 0 {
		return fmt.Errorf("the local server is not empty (databases: %s); wipe it first (steward reinit) if its data is not needed", strings.Join(dbs, ", "))
	}
	return nil
}

// optionFile writes a client option file with steward's credentials (mode
// 0600, removed by the returned func): passwords never appear on a command
// line.
func (b *Backend) optionFile() (string, func(), error) {
	f, err := os.CreateTemp("", "steward-mysql-*.cnf")
	if err != nil {
		return "", nil, err
	}
	name := f.Name()
	cleanup := func() { _ = os.Remove(name) }
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	_, werr := fmt.Fprintf(f, "[client]\nuser=\"%s\"\npassword=\"%s\"\n", esc.Replace(b.opts.User), esc.Replace(b.opts.Password))
	if err := errors.Join(werr, f.Chmod(0o600), f.Close()); err != nil {
		cleanup()
		return "", nil, err
	}
	return name, cleanup, nil
}

// lookPrograms returns the first program found in PATH.
func lookPrograms(names []string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %s found in PATH: install the client programs (Debian: mariadb-client or mysql-client)", strings.Join(names, ", "))
}

// cloneLogical streams a dump of up into the local server and seeds the
// local GTID history. It returns the copy's GTID position.
func (b *Backend) cloneLogical(ctx context.Context, up backends.Upstream) (string, error) {
	c, f, err := b.session(ctx)
	if err != nil {
		return "", err
	}
	defer closeDiscard(c)
	// Up's databases and (MariaDB) GTID state before the copy: the state
	// only grows, so every entry is at or before the copy's position.
	udb := b.remoteDB(up.Host, up.Port)
	defer udb.Close()
	qctx, cancel := b.queryCtx(ctx)
	upState, err := readServerState(qctx, udb)
	if err == nil && upState.flavor.MariaDB != f.MariaDB {
		err = fmt.Errorf("the upstream is %s and the local server %s", upState.flavor, f)
	}
	var dbs []string
	if err == nil {
		dbs, err = userDatabases(qctx, udb)
	}
	cancel()
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", up.Name, err)
	}
	if len(dbs) == 0 {
		return "", fmt.Errorf("%s holds no databases (not even steward's): it is not a bootstrapped member", up.Name)
	}
	// The accounts, before the copy: an account created after this replicates
	// (copying it too would make that CREATE USER fail on the replica).
	accounts, err := b.readAccounts(ctx, udb, upState.flavor)
	if err != nil {
		return "", fmt.Errorf("reading the accounts of %s: %w", up.Name, err)
	}
	// Empty the local replication state and history; keep read-only. On
	// MySQL, super_read_only would stop the load (steward has SUPER;
	// read_only alone stops applications).
	reset := []string{"SET SESSION sql_log_bin = 0"}
	reset = append(reset, f.ReadOnlySQL(true)...)
	if _, found, err := replicaStatus(ctx, c, f); err != nil {
		return "", err
	} else if found {
		reset = append(reset, f.ReplicaThreadSQL(false, ""), f.ResetReplicaAllSQL())
	}
	reset = append(reset, f.ResetBinlogsSQL())
	if f.MariaDB {
		reset = append(reset, "SET GLOBAL gtid_slave_pos = ''")
	} else {
		reset = append(reset, "SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = ON")
	}
	if err := execAll(ctx, c, reset...); err != nil {
		return "", err
	}
	if !f.MariaDB {
		defer func() { _ = execAll(context.WithoutCancel(ctx), c, f.ReadOnlySQL(true)...) }()
	}

	pos, err := b.dumpAndLoad(ctx, f, up, dbs)
	if err != nil {
		// The server was empty: drop what a partial load left, so that the
		// next attempt finds it empty again (not logged).
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		for _, d := range dbs {
			_, _ = c.ExecContext(cctx, "DROP DATABASE IF EXISTS "+quoteIdent(d))
		}
		_ = execAll(cctx, c, f.ResetBinlogsSQL())
		cancel()
		return "", err
	}
	if pos == "" {
		return "", errors.New("the dump carried no GTID position (is binary logging with GTIDs on at the upstream?)")
	}
	if f.MariaDB {
		dumpPos, err := ParseMariaState(pos)
		if err != nil {
			return "", fmt.Errorf("the dump's GTID position: %w", err)
		}
		state, _ := ParseMariaState(upState.history)
		for k, n := range state {
			if n > dumpPos.DomainMax(k.Domain) {
				delete(state, k)
			}
		}
		state.Merge(dumpPos)
		stmts := f.SetGTIDHistorySQL()
		if err := execAll(ctx, c, f.ResetBinlogsSQL()); err != nil {
			return "", err
		}
		if _, err := c.ExecContext(ctx, stmts[0], state.String()); err != nil {
			return "", fmt.Errorf("seeding gtid_binlog_state with %s: %w", state, err)
		}
		if _, err := c.ExecContext(ctx, stmts[1], dumpPos.Position()); err != nil {
			return "", fmt.Errorf("setting gtid_slave_pos to %s: %w", dumpPos.Position(), err)
		}
	}
	// The accounts (not logged: the upstream has them), and replication's
	// whatever happened.
	for _, st := range accounts {
		if _, err := c.ExecContext(ctx, st); err != nil {
			return "", fmt.Errorf("copying the accounts: %s: %w", st, err)
		}
	}
	ru, rh, rp := b.opts.Replication.Username, b.opts.ReplicationHost, b.opts.Replication.Password
	if _, err := c.ExecContext(ctx, "CREATE USER IF NOT EXISTS ?@? IDENTIFIED BY ?", ru, rh, rp); err != nil {
		return "", fmt.Errorf("creating the replication account: %w", err)
	}
	if _, err := c.ExecContext(ctx, "GRANT REPLICATION SLAVE ON *.* TO ?@?", ru, rh); err != nil {
		return "", fmt.Errorf("granting the replication account: %w", err)
	}
	return pos, nil
}

// dumpAndLoad runs dump | load and returns the GTID position found in the
// dump.
func (b *Backend) dumpAndLoad(ctx context.Context, f Flavor, up backends.Upstream, dbs []string) (string, error) {
	dumps, loads := f.ClientPrograms()
	dumpProg, err := lookPrograms(dumps)
	if err != nil {
		return "", err
	}
	loadProg, err := lookPrograms(loads)
	if err != nil {
		return "", err
	}
	cnf, cleanup, err := b.optionFile()
	if err != nil {
		return "", fmt.Errorf("writing the client option file: %w", err)
	}
	defer cleanup()
	host, port := b.localHostPort()
	dump := exec.CommandContext(ctx, dumpProg, append([]string{"--defaults-file=" + cnf}, f.DumpArgs(up.Host, up.Port, dbs)...)...)
	load := exec.CommandContext(ctx, loadProg, append([]string{"--defaults-file=" + cnf}, f.LoadArgs(host, port)...)...)
	dump.WaitDelay, load.WaitDelay = 5*time.Second, 5*time.Second
	var dumpErr, loadErr limitedBuffer
	dumpErr.max, loadErr.max = 4<<10, 4<<10
	dump.Stderr, load.Stderr = &dumpErr, &loadErr
	load.Stdout = io.Discard
	out, err := dump.StdoutPipe()
	if err != nil {
		return "", err
	}
	in, err := load.StdinPipe()
	if err != nil {
		return "", err
	}
	if err := load.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", loadProg, err)
	}
	if err := dump.Start(); err != nil {
		in.Close()
		_ = load.Wait()
		return "", fmt.Errorf("%s: %w", dumpProg, err)
	}
	scan := &gtidScanner{}
	var copied int64
	var copyErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copied, copyErr = io.Copy(io.MultiWriter(in, scan), out)
		in.Close()
	}()
	wg.Wait()
	derr := dump.Wait()
	lerr := load.Wait()
	switch {
	case derr != nil:
		return "", fmt.Errorf("%s from %s failed: %v: %s", filepath.Base(dumpProg), up.Name, derr, strings.TrimSpace(dumpErr.String()))
	case lerr != nil:
		return "", fmt.Errorf("loading the copy with %s failed: %v: %s", filepath.Base(loadProg), lerr, strings.TrimSpace(loadErr.String()))
	case copyErr != nil:
		return "", fmt.Errorf("streaming the copy: %w", copyErr)
	}
	b.log.Info("copied the upstream's databases", "upstream", up.Name, "databases", dbs, "bytes", copied, "gtid", scan.gtid)
	return scan.gtid, nil
}

// gtidScanner watches a dump stream for the line carrying its GTID
// position, keeping only short lines that could be it (dumps have
// megabyte-long INSERT lines).
type gtidScanner struct {
	line    []byte
	skip    bool // the current line is too long or cannot match
	started bool // the current line has at least one byte
	gtid    string
}

func (g *gtidScanner) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\n' {
			if !g.skip && g.started {
				if v := parseDumpGTIDLine(string(g.line)); v != "" {
					g.gtid = v
				}
			}
			g.line, g.skip, g.started = g.line[:0], false, false
			continue
		}
		if g.skip {
			continue
		}
		if !g.started {
			g.started = true
			if c != '-' && c != 'S' {
				g.skip = true
				continue
			}
		}
		if len(g.line) >= 64<<10 {
			g.skip = true
			continue
		}
		g.line = append(g.line, c)
	}
	return len(p), nil
}

// expandPlaceholders fills a clone command's placeholders.
func expandPlaceholders(argv []string, vals map[string]string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		for k, v := range vals {
			a = strings.ReplaceAll(a, "{"+k+"}", v)
		}
		out[i] = a
	}
	return out
}

// cloneWithCommand stops the server, runs mysql.clone_command, starts the
// server again and seeds the GTID history from the backup's binlog info.
func (b *Backend) cloneWithCommand(ctx context.Context, up backends.Upstream) (string, error) {
	if len(b.opts.StartCommand) == 0 {
		return "", errors.New("mysql.clone_command needs mysql.start_command (the server is stopped for the copy and started again)")
	}
	if err := b.stop(ctx, backends.StopFast, b.serverPID()); err != nil {
		return "", fmt.Errorf("stopping the server for the copy: %w", err)
	}
	argv := expandPlaceholders(b.opts.CloneCommand, map[string]string{
		"upstream_host": up.Host, "upstream_port": strconv.Itoa(up.Port), "upstream_name": up.Name,
		"data_dir": b.dataDir, "member": b.opts.Member,
	})
	env := []string{"STEWARD_MYSQL_USER=" + b.opts.User, "STEWARD_MYSQL_PASSWORD=" + b.opts.Password,
		"STEWARD_UPSTREAM_HOST=" + up.Host, "STEWARD_UPSTREAM_PORT=" + strconv.Itoa(up.Port)}
	if out, err := runCommand(ctx, argv, env); err != nil {
		return "", fmt.Errorf("mysql.clone_command %q: %w; output: %s", strings.Join(argv, " "), err, out)
	}
	if err := b.ensureRunning(ctx); err != nil {
		return "", fmt.Errorf("starting the server after the copy: %w", err)
	}
	pos := ""
	for _, n := range []string{"mariadb_backup_binlog_info", "xtrabackup_binlog_info"} {
		data, err := os.ReadFile(filepath.Join(b.dataDir, n))
		if err != nil {
			continue
		}
		if fs := strings.Fields(string(data)); len(fs) >= 3 {
			pos = strings.Join(fs[2:], "")
		}
		break
	}
	c, f, err := b.session(ctx)
	if err != nil {
		return "", err
	}
	defer closeDiscard(c)
	if pos == "" {
		b.log.Warn("the clone command left no binlog info file: keeping the GTID history the copy brought")
		s, err := readServerState(ctx, c)
		if err != nil {
			return "", err
		}
		return s.history, nil
	}
	if f.MariaDB {
		p, err := ParseMariaState(pos)
		if err != nil {
			return "", fmt.Errorf("the backup's GTID position %q: %w", pos, err)
		}
		if err := execAll(ctx, c, "SET SESSION sql_log_bin = 0", f.ResetBinlogsSQL()); err != nil {
			return "", err
		}
		stmts := f.SetGTIDHistorySQL()
		for _, st := range stmts {
			if _, err := c.ExecContext(ctx, st, p.String()); err != nil {
				return "", fmt.Errorf("%s (%s): %w", st, p, err)
			}
		}
	} else {
		if err := execAll(ctx, c, f.ResetBinlogsSQL()); err != nil {
			return "", err
		}
		if _, err := c.ExecContext(ctx, f.SetGTIDHistorySQL()[0], pos); err != nil {
			return "", fmt.Errorf("setting gtid_purged to %s: %w", pos, err)
		}
	}
	return pos, nil
}

// readAccounts returns the statements that recreate up's accounts and
// roles (SHOW CREATE USER made idempotent, SHOW GRANTS), except the
// server's own accounts and steward's.
func (b *Backend) readAccounts(ctx context.Context, q querier, f Flavor) ([]string, error) {
	rows, err := queryRows(ctx, q, f.AccountsSQL())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rows {
		user, host := r["user"], r["host"]
		if systemAccounts[user] || user == b.opts.User {
			continue
		}
		if truthy(r["is_role"]) {
			out = append(out, "CREATE ROLE IF NOT EXISTS "+quoteIdent(user))
			host = ""
		} else {
			var stmt string
			if err := q.QueryRowContext(ctx, "SHOW CREATE USER "+quoteIdent(user)+"@"+quoteIdent(host)).Scan(&stmt); err != nil {
				return nil, fmt.Errorf("SHOW CREATE USER %s@%s: %w", user, host, err)
			}
			out = append(out, createIfNotExists(stmt))
		}
		grants, err := queryRows(ctx, q, grantsQuery(user, host))
		if err != nil {
			return nil, fmt.Errorf("SHOW GRANTS FOR %s@%s: %w", user, host, err)
		}
		for _, g := range grants {
			for _, v := range g {
				out = append(out, v)
			}
		}
	}
	return out, nil
}

// grantsQuery is SHOW GRANTS for an account (host "" for a role).
func grantsQuery(user, host string) string {
	if host == "" {
		return "SHOW GRANTS FOR " + quoteIdent(user)
	}
	return "SHOW GRANTS FOR " + quoteIdent(user) + "@" + quoteIdent(host)
}
