package postgres

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stewardha/steward/backends"
)

// Synchronous replication: steward owns synchronous_standby_names. It is
// written into postgresql.conf (never with ALTER SYSTEM) so that every
// rewrite of the file keeps it and a primary restarted in place waits for
// the same standbys as before it stopped.

// syncLinePrefix starts the one line of postgresql.conf that holds it.
const syncLinePrefix = "synchronous_standby_names = "

// syncSettle is how long SetSync waits after every walsender showed the new
// priorities, for the processes that show nothing (the checkpointer, which
// tells committing backends whether to wait at all) to apply the reload.
const syncSettle = 100 * time.Millisecond

// FormatSyncStandbyNames renders cfg as a synchronous_standby_names value:
// FIRST n ("a", "b") or ANY n ("a", "b"), every name double-quoted (member
// names may hold characters PostgreSQL's unquoted names do not allow); ""
// for asynchronous replication.
func FormatSyncStandbyNames(cfg backends.SyncConfig) string {
	if cfg.Async() {
		return ""
	}
	method := cfg.Method
	if method != backends.SyncAny {
		method = backends.SyncFirst
	}
	q := make([]string, len(cfg.Names))
	for i, n := range cfg.Names {
		q[i] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
	}
	return fmt.Sprintf("%s %d (%s)", method, cfg.Num, strings.Join(q, ", "))
}

// ParseSyncStandbyNames parses a synchronous_standby_names value with
// PostgreSQL's grammar: "a, b" (FIRST 1), "2 (a, b)" (FIRST 2),
// "FIRST 2 (a, b)", "ANY 2 (a, b)"; names bare, double-quoted ("" for a
// quote) or *.
func ParseSyncStandbyNames(s string) (backends.SyncConfig, error) {
	toks, err := syncTokens(s)
	if err != nil {
		return backends.SyncConfig{}, err
	}
	if len(toks) == 0 {
		return backends.SyncConfig{}, nil
	}
	cfg := backends.SyncConfig{Method: backends.SyncFirst, Num: 1}
	i := 0
	if toks[0].kind == tokKeyword {
		cfg.Method = strings.ToUpper(toks[0].text)
		i++
		if i >= len(toks) || toks[i].kind != tokNum {
			return backends.SyncConfig{}, fmt.Errorf("%q: expected a number after %s", s, cfg.Method)
		}
	}
	if i < len(toks) && toks[i].kind == tokNum && i+1 < len(toks) && toks[i+1].kind == tokOpen {
		n, err := strconv.Atoi(toks[i].text)
		if err != nil || n <= 0 {
			return backends.SyncConfig{}, fmt.Errorf("%q: %q is not a number of standbys", s, toks[i].text)
		}
		cfg.Num = n
		i += 2
		if toks[len(toks)-1].kind != tokClose {
			return backends.SyncConfig{}, fmt.Errorf("%q: missing )", s)
		}
		toks = toks[:len(toks)-1]
	} else if i > 0 {
		return backends.SyncConfig{}, fmt.Errorf("%q: expected ( after the number", s)
	}
	want := true // a name is expected next
	for ; i < len(toks); i++ {
		t := toks[i]
		switch {
		case want && (t.kind == tokName || t.kind == tokNum || t.kind == tokKeyword):
			cfg.Names = append(cfg.Names, t.text)
			want = false
		case !want && t.kind == tokComma:
			want = true
		default:
			return backends.SyncConfig{}, fmt.Errorf("%q: unexpected %q", s, t.text)
		}
	}
	if want {
		return backends.SyncConfig{}, fmt.Errorf("%q: a standby name is missing", s)
	}
	return cfg, nil
}

type tokKind int

const (
	tokName tokKind = iota
	tokNum
	tokKeyword
	tokOpen
	tokClose
	tokComma
)

type token struct {
	kind tokKind
	text string
}

func syncTokens(s string) ([]token, error) {
	var out []token
	isNameStart := func(c byte) bool { return c == '_' || c >= 0x80 || (c|0x20) >= 'a' && (c|0x20) <= 'z' }
	isNameChar := func(c byte) bool { return isNameStart(c) || c == '$' || c >= '0' && c <= '9' }
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			out = append(out, token{tokOpen, "("})
			i++
		case c == ')':
			out = append(out, token{tokClose, ")"})
			i++
		case c == ',':
			out = append(out, token{tokComma, ","})
			i++
		case c == '*':
			out = append(out, token{tokName, "*"})
			i++
		case c == '"':
			var sb strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						sb.WriteByte('"')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				sb.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("%q: unterminated quoted name", s)
			}
			out = append(out, token{tokName, sb.String()})
		case c >= '0' && c <= '9':
			j := i
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			out = append(out, token{tokNum, s[i:j]})
			i = j
		case isNameStart(c):
			j := i
			for j < len(s) && isNameChar(s[j]) {
				j++
			}
			w := s[i:j]
			kind := tokName
			if strings.EqualFold(w, "first") || strings.EqualFold(w, "any") {
				kind = tokKeyword
			}
			out = append(out, token{kind, w})
			i = j
		default:
			return nil, fmt.Errorf("%q: unexpected character %q", s, c)
		}
	}
	return out, nil
}

// syncConfigOf parses the running server's value; a value steward cannot
// parse is reported as waiting for one standby nobody is known to be, so
// that the leader promises nothing on it and rewrites it.
func syncConfigOf(raw string) backends.SyncConfig {
	cfg, err := ParseSyncStandbyNames(raw)
	if err != nil {
		return backends.SyncConfig{Method: "unparsed", Num: 1, Names: []string{raw}}
	}
	return cfg
}

// syncSetting is the synchronous configuration postgresql.conf carries:
// the last SetSync of this process, or what the file says.
func (b *Backend) syncSetting() backends.SyncConfig {
	if b.syncLoaded {
		return b.syncCfg
	}
	b.syncLoaded = true
	data, err := os.ReadFile(filepath.Join(b.dataDir, "postgresql.conf"))
	if err != nil {
		return b.syncCfg
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, syncLinePrefix); ok {
			v = strings.TrimSpace(v)
			if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
				if cfg, err := ParseSyncStandbyNames(parseConfString(v[1 : len(v)-1])); err == nil {
					b.syncCfg = cfg
				}
			}
		}
	}
	return b.syncCfg
}

// rewriteSyncLine replaces the synchronous_standby_names line of
// postgresql.conf (adding it when missing). Callers hold confMu.
func (b *Backend) rewriteSyncLine(value string) error {
	p := filepath.Join(b.dataDir, "postgresql.conf")
	data, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	line := syncLinePrefix + confValue(value)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	found := false
	for i, l := range lines {
		if strings.HasPrefix(l, syncLinePrefix) {
			lines[i], found = line, true
		}
	}
	if !found {
		lines = append(lines, line)
	}
	return b.writeFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// SetSync makes the server wait for cfg before it acknowledges a commit
// (the zero SyncConfig: asynchronous): it rewrites the setting in
// postgresql.conf and reloads. On a primary it returns once the setting is
// in effect — this session reads the new value, every walsender shows the
// priority the new value gives it, and a short settle time for the
// checkpointer has passed — with pg_current_wal_flush_lsn() read after
// that: every commit acknowledged under the old setting is at or before
// it. On a standby (before a promotion) or a stopped server it returns a
// zero position once the file is written: the setting applies when it
// starts or is promoted.
func (b *Backend) SetSync(ctx context.Context, cfg backends.SyncConfig) (backends.Position, error) {
	start := time.Now()
	val := FormatSyncStandbyNames(cfg)
	b.confMu.Lock()
	b.syncCfg, b.syncLoaded = cfg, true
	err := b.rewriteSyncLine(val)
	b.confMu.Unlock()
	if err != nil {
		return backends.Position{}, fmt.Errorf("set synchronous_standby_names: %w", err)
	}
	if RunningPID(b.dataDir) == 0 {
		return backends.Position{}, nil
	}
	if cfg.Async() {
		// On a standby about to be promoted, an asynchronous setting is
		// left in the file for the reload that follows the promotion: a
		// reload just before pg_promote() made PostgreSQL 15's startup
		// process sleep out another wal_retrieve_retry_interval before it
		// noticed the promotion (+1 s in half of the synchronous-mode
		// failovers of BenchmarkFailover). Until that reload the promoted
		// server keeps its previous value, which can only make commits
		// wait, never acknowledge more. A non-empty setting (strict mode)
		// must hold from the first commit and is reloaded now.
		var standby bool
		if err := b.withConn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&standby)
		}); err == nil && standby {
			b.log.Info("synchronous standbys set (standby: in effect at the reload after promotion)", "synchronous_standby_names", val)
			return backends.Position{}, nil
		}
	}
	if err := b.reload(ctx); err != nil {
		return backends.Position{}, fmt.Errorf("set synchronous_standby_names: %w", err)
	}
	var last string
	for {
		done, standby, why, err := b.syncInEffect(ctx, cfg, val)
		if err != nil {
			last = err.Error()
		} else {
			last = why
		}
		if err == nil && standby {
			b.log.Info("synchronous standbys set (standby: in effect once promoted)", "synchronous_standby_names", val)
			return backends.Position{}, nil
		}
		if err == nil && done {
			break
		}
		select {
		case <-ctx.Done():
			return backends.Position{}, fmt.Errorf("set synchronous_standby_names to %q: not in effect in time: %s", val, last)
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return backends.Position{}, ctx.Err()
	case <-time.After(syncSettle):
	}
	var flush backends.Position
	err = b.withConn(ctx, func(c *pgx.Conn) error {
		// A walsender releases waiting commits only when its standby
		// replies, and an idle standby replies every
		// wal_receiver_status_interval (10 s): a little WAL makes every
		// standby reply at once, so that commits waiting for a standby
		// that already has them (a replacement) go on now.
		if _, err := c.Exec(ctx, `SELECT pg_logical_emit_message(false, 'steward', 'synchronous_standby_names changed')`); err != nil {
			return err
		}
		var s string
		if err := c.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&s); err != nil {
			return err
		}
		lsn, err := parseLSN(s)
		flush.LSN = lsn
		return err
	})
	if err != nil {
		return backends.Position{}, fmt.Errorf("set synchronous_standby_names: reading the flushed position: %w", err)
	}
	b.log.Info("synchronous standbys set", "synchronous_standby_names", val, "flush", flush.String(), "duration", time.Since(start).Round(time.Millisecond))
	return flush, nil
}

// syncInEffect checks whether the running server applies val: this
// session's value, and the priority of every walsender past its startup.
func (b *Backend) syncInEffect(ctx context.Context, cfg backends.SyncConfig, val string) (done, standby bool, why string, err error) {
	err = b.withConn(ctx, func(c *pgx.Conn) error {
		var cur string
		if err := c.QueryRow(ctx, `SELECT current_setting('synchronous_standby_names'), pg_is_in_recovery()`).Scan(&cur, &standby); err != nil {
			return err
		}
		if standby {
			return nil
		}
		if cur != val {
			why = fmt.Sprintf("the server still has synchronous_standby_names = %q (set with ALTER SYSTEM in postgresql.auto.conf? steward manages it in postgresql.conf)", cur)
			return nil
		}
		rows, err := c.Query(ctx, `SELECT coalesce(application_name, ''), coalesce(sync_priority, 0) FROM pg_stat_replication WHERE state IN ('catchup', 'streaming')`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var prio int
			if err := rows.Scan(&name, &prio); err != nil {
				return err
			}
			if want := syncPriority(cfg, name); prio != want {
				why = fmt.Sprintf("walsender %q still has priority %d (want %d)", name, prio, want)
				return nil
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		done = true
		return nil
	})
	return done, standby, why, err
}

// syncPriority is the sync_priority PostgreSQL gives a walsender whose
// application_name is name under cfg: its 1-based place in a FIRST list,
// 1 in an ANY list, 0 when it is not listed (names compare case-
// insensitively, * matches every name).
func syncPriority(cfg backends.SyncConfig, name string) int {
	if cfg.Async() {
		return 0
	}
	for i, n := range cfg.Names {
		if n == "*" || strings.EqualFold(n, name) {
			if cfg.Method == backends.SyncAny {
				return 1
			}
			return i + 1
		}
	}
	return 0
}
