package postgres

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/stewardha/steward/backends"
)

// SlotName is the physical replication slot name of a member: the name in
// lower case, every character outside [a-z0-9_] replaced by '_', at most 63
// bytes (PostgreSQL's limit).
func SlotName(member string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(member) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
		if sb.Len() >= 63 {
			break
		}
	}
	return sb.String()
}

// confValue quotes v as a postgresql.conf string value: inside single
// quotes, with ' doubled and \ escaped (the configuration file parser
// interprets backslash escapes).
func confValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `''`)
	return "'" + v + "'"
}

// conninfoValue quotes v as a libpq connection string value.
func conninfoValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}

// conninfo renders libpq key=value pairs, every value quoted.
func conninfo(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, kv[i]+"="+conninfoValue(kv[i+1]))
	}
	return strings.Join(parts, " ")
}

// parseConninfo parses a libpq key=value connection string (the subset
// PostgreSQL's own parser accepts: optional spaces around '=', values bare
// or in single quotes with backslash escapes).
func parseConninfo(s string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skip()
		if i >= len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		key := s[start:i]
		skip()
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("missing \"=\" after %q in connection info", key)
		}
		i++
		skip()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == '\'' {
					i++
					closed = true
					break
				}
				val.WriteByte(c)
				i++
			}
			if !closed {
				return nil, fmt.Errorf("unterminated quoted value for %q in connection info", key)
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		out[key] = val.String()
	}
}

// parseConfString undoes confValue: the content of a quoted
// postgresql.conf value (without the surrounding quotes).
func parseConfString(q string) string {
	var sb strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'' && i+1 < len(q) && q[i+1] == '\'':
			sb.WriteByte('\'')
			i++
		case c == '\\' && i+1 < len(q):
			i++
			switch q[i] {
			case 'b':
				sb.WriteByte('\b')
			case 'f':
				sb.WriteByte('\f')
			case 'n':
				sb.WriteByte('\n')
			case 'r':
				sb.WriteByte('\r')
			case 't':
				sb.WriteByte('\t')
			default:
				sb.WriteByte(q[i])
			}
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// primaryConninfo is the primary_conninfo of a replica of up.
func (b *Backend) primaryConninfo(up backends.Upstream) string {
	kv := []string{"host", up.Host, "port", strconv.Itoa(up.Port), "user", b.opts.Replication.Username}
	if b.opts.Replication.Password != "" {
		kv = append(kv, "password", b.opts.Replication.Password)
	}
	kv = append(kv, "application_name", b.opts.Member, "connect_timeout", "2", "keepalives", "1", "keepalives_idle", "5")
	return conninfo(kv...)
}

// renderConf renders postgresql.conf for the role. up is the upstream of a
// replica (nil: a replica that follows nobody).
func (b *Backend) renderConf(role backends.Role, up *backends.Upstream) string {
	host, port, _ := splitAddr(b.opts.Listen)
	if host == "" {
		host = "*"
	}
	sockDir := b.socketDir()
	type kv struct{ k, v string }
	defaults := []kv{
		{"listen_addresses", confValue(host)},
		{"port", strconv.Itoa(port)},
		{"unix_socket_directories", confValue(sockDir)},
		{"wal_level", "replica"},
		{"hot_standby", "on"},
		{"wal_log_hints", "on"},
		{"max_wal_senders", "10"},
		{"max_replication_slots", "10"},
		{"wal_keep_size", "'128MB'"},
		{"wal_retrieve_retry_interval", "'1s'"},
		{"recovery_target_timeline", "'latest'"},
	}
	// Kept in every role: a standby ignores it, and a primary restarted in
	// place must wait for the same standbys as before (strict mode never
	// falls back). The leader changes it with SetSync.
	defaults = append(defaults, kv{"synchronous_standby_names", confValue(FormatSyncStandbyNames(b.syncSetting()))})
	if role == backends.RoleReplica && up != nil {
		defaults = append(defaults,
			kv{"primary_conninfo", confValue(b.primaryConninfo(*up))},
			kv{"primary_slot_name", confValue(SlotName(b.opts.Member))})
	}
	user := map[string]string{}
	for k, v := range b.opts.Parameters {
		user[strings.ToLower(k)] = v
	}
	var sb strings.Builder
	sb.WriteString("# Written by steward; it rewrites this file on every start, promote, follow,\n")
	sb.WriteString("# clone and rewind. Put your settings in postgres.parameters instead.\n")
	fmt.Fprintf(&sb, "# role: %s", role)
	if up != nil && role == backends.RoleReplica {
		fmt.Fprintf(&sb, " of %s (%s)", up.Name, net.JoinHostPort(up.Host, strconv.Itoa(up.Port)))
	}
	sb.WriteString("\n\n")
	for _, d := range defaults {
		if v, ok := user[d.k]; ok {
			fmt.Fprintf(&sb, "%s = %s # from postgres.parameters\n", d.k, confValue(v))
			delete(user, d.k)
			continue
		}
		fmt.Fprintf(&sb, "%s = %s\n", d.k, d.v)
	}
	if len(user) > 0 {
		sb.WriteString("\n# postgres.parameters\n")
		keys := make([]string, 0, len(user))
		for k := range user {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&sb, "%s = %s\n", k, confValue(user[k]))
		}
	}
	return sb.String()
}

// renderHba renders pg_hba.conf.
func (b *Backend) renderHba() string {
	lines := b.opts.PgHba
	if len(lines) == 0 {
		lines = DefaultPgHba
	}
	return "# Written by steward from postgres.pg_hba.\n" + strings.Join(lines, "\n") + "\n"
}

// socketDir is the Unix socket directory: <DataDir>.run beside the data
// directory ("" — no Unix socket — when that path is 80 bytes or longer,
// since socket paths are limited to 107 bytes). Not inside the data
// directory: pg_rewind copies every file of the source's data directory
// and fails on a socket there.
func (b *Backend) socketDir() string {
	d := b.dataDir + ".run"
	if len(d) >= 80 {
		return ""
	}
	return d
}

// ensureSocketDir creates the socket directory for the run-as user and
// removes socket lock files of servers that are gone (a killed
// postmaster's lock names its PID; a zombie or another process with that
// PID would make the next postmaster refuse to start).
func (b *Backend) ensureSocketDir() error {
	d := b.socketDir()
	if d == "" {
		return nil
	}
	if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
		return fmt.Errorf("creating the socket directory %s: %w", d, err)
	}
	if err := b.chown(d); err != nil {
		return err
	}
	locks, _ := filepath.Glob(filepath.Join(d, ".s.PGSQL.*.lock"))
	for _, l := range locks {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		first, _, _ := strings.Cut(string(data), "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && !serverProcess(pid, b.dataDir) {
			_ = os.Remove(l)
			_ = os.Remove(strings.TrimSuffix(l, ".lock"))
		}
	}
	return nil
}

// writeConfig writes postgresql.conf, pg_hba.conf and standby.signal (iff
// replica) for the role.
func (b *Backend) writeConfig(role backends.Role, up *backends.Upstream) error {
	b.confMu.Lock()
	defer b.confMu.Unlock()
	if err := b.ensureSocketDir(); err != nil {
		return err
	}
	if err := b.writeFile(filepath.Join(b.dataDir, "postgresql.conf"), []byte(b.renderConf(role, up)), 0o600); err != nil {
		return err
	}
	if err := b.writeFile(filepath.Join(b.dataDir, "pg_hba.conf"), []byte(b.renderHba()), 0o600); err != nil {
		return err
	}
	sig := filepath.Join(b.dataDir, "standby.signal")
	if role == backends.RoleReplica {
		if err := b.writeFile(sig, nil, 0o600); err != nil {
			return err
		}
	} else {
		for _, f := range []string{sig, filepath.Join(b.dataDir, "recovery.signal")} {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("removing %s: %w", f, err)
			}
		}
	}
	return nil
}

// configuredUpstream reads host:port from a primary_conninfo value.
func configuredUpstream(primaryConninfo string) string {
	if strings.TrimSpace(primaryConninfo) == "" {
		return ""
	}
	kv, err := parseConninfo(primaryConninfo)
	if err != nil {
		return ""
	}
	host := kv["host"]
	if host == "" {
		host = kv["hostaddr"]
	}
	port := kv["port"]
	if port == "" {
		port = "5432"
	}
	if host == "" {
		return ""
	}
	return net.JoinHostPort(host, port)
}
