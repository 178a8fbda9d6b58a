package postgres

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stewardha/steward/backends"
)

func TestSyncStandbyNamesRoundTrip(t *testing.T) {
	for _, cfg := range []backends.SyncConfig{
		{},
		{Method: backends.SyncFirst, Num: 1, Names: []string{"db2"}},
		{Method: backends.SyncFirst, Num: 2, Names: []string{"db-2", "Db3", `we"ird`, "with space", "1abc", "any"}},
		{Method: backends.SyncAny, Num: 2, Names: []string{"a", "b", "c"}},
	} {
		s := FormatSyncStandbyNames(cfg)
		got, err := ParseSyncStandbyNames(s)
		if err != nil {
			t.Fatalf("parsing our own %q: %v", s, err)
		}
		if !got.Equal(cfg) {
			t.Errorf("%q parsed back as %s, want %s", s, got, cfg)
		}
		// and as postgresql.conf stores it
		if parseConfString(strings.Trim(confValue(s), "'")) != s {
			t.Errorf("%q does not survive postgresql.conf quoting", s)
		}
	}
	if s := FormatSyncStandbyNames(backends.SyncConfig{Method: backends.SyncFirst, Num: 1, Names: []string{"a"}}); s != `FIRST 1 ("a")` {
		t.Errorf("format %q", s)
	}
}

// Values an operator (or another tool) may have written, with PostgreSQL's
// grammar.
func TestParseSyncStandbyNames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want backends.SyncConfig
	}{
		{"", backends.SyncConfig{}},
		{"  ", backends.SyncConfig{}},
		{"s1", backends.SyncConfig{Method: "FIRST", Num: 1, Names: []string{"s1"}}},
		{"s1, s2", backends.SyncConfig{Method: "FIRST", Num: 1, Names: []string{"s1", "s2"}}},
		{"*", backends.SyncConfig{Method: "FIRST", Num: 1, Names: []string{"*"}}},
		{"2 (s1, s2, s3)", backends.SyncConfig{Method: "FIRST", Num: 2, Names: []string{"s1", "s2", "s3"}}},
		{"first 2 (s1,s2)", backends.SyncConfig{Method: "FIRST", Num: 2, Names: []string{"s1", "s2"}}},
		{`ANY 1 ("a b", c$d)`, backends.SyncConfig{Method: "ANY", Num: 1, Names: []string{"a b", "c$d"}}},
		{"steward_fenced", backends.SyncConfig{Method: "FIRST", Num: 1, Names: []string{"steward_fenced"}}},
	} {
		got, err := ParseSyncStandbyNames(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !got.Equal(tc.want) || (!got.Async() && got.Method != tc.want.Method) {
			t.Errorf("%q parsed as %s, want %s", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"ANY (a)", "2 (a", "a,", "(a)", `"unterminated`, "ANY 0 (a)", "a b", "2 (a) b"} {
		if got, err := ParseSyncStandbyNames(bad); err == nil {
			t.Errorf("%q parsed as %s, want an error", bad, got)
		}
		// What the agent sees: a value nobody can be sure of promises
		// nothing (it waits for one standby no member is).
		if c := syncConfigOf(bad); c.Async() || c.Num != 1 || len(c.Names) != 1 {
			t.Errorf("syncConfigOf(%q) = %s", bad, c)
		}
	}
}

func TestSyncPriority(t *testing.T) {
	first := backends.SyncConfig{Method: backends.SyncFirst, Num: 1, Names: []string{"b", "C"}}
	anyCfg := backends.SyncConfig{Method: backends.SyncAny, Num: 1, Names: []string{"b", "c"}}
	for _, tc := range []struct {
		cfg  backends.SyncConfig
		name string
		want int
	}{
		{first, "b", 1}, {first, "c", 2}, {first, "d", 0},
		{anyCfg, "b", 1}, {anyCfg, "C", 1}, {anyCfg, "x", 0},
		{backends.SyncConfig{}, "b", 0},
		{backends.SyncConfig{Method: backends.SyncFirst, Num: 1, Names: []string{"*"}}, "anything", 1},
	} {
		if got := syncPriority(tc.cfg, tc.name); got != tc.want {
			t.Errorf("priority of %s under %s = %d, want %d", tc.name, tc.cfg, got, tc.want)
		}
	}
}

// postgresql.conf always carries the setting, in every role, so that a
// primary restarted in place (or by a restarted agent) waits for the same
// standbys; a new Backend reads it back from the file.
func TestRenderConfKeepsSyncStandbyNames(t *testing.T) {
	dir := t.TempDir()
	b := testBackend(t, func(o *Options) { o.DataDir = filepath.Join(dir, "db") })
	if err := os.MkdirAll(b.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := confSettings(t, b.renderConf(backends.RolePrimary, nil))["synchronous_standby_names"]; got != "" {
		t.Fatalf("fresh primary waits for %q", got)
	}
	cfg := backends.SyncConfig{Method: backends.SyncFirst, Num: 1, Names: []string{"db-2"}}
	b.syncCfg, b.syncLoaded = cfg, true
	for _, role := range []backends.Role{backends.RolePrimary, backends.RoleReplica} {
		if got := confSettings(t, b.renderConf(role, nil))["synchronous_standby_names"]; got != `FIRST 1 ("db-2")` {
			t.Errorf("%s: synchronous_standby_names = %q", role, got)
		}
	}
	if err := os.WriteFile(filepath.Join(b.dataDir, "postgresql.conf"), []byte(b.renderConf(backends.RolePrimary, nil)), 0o600); err != nil {
		t.Fatal(err)
	}
	b2 := testBackend(t, func(o *Options) { o.DataDir = b.dataDir })
	if got := b2.syncSetting(); !got.Equal(cfg) {
		t.Fatalf("a new backend reads %s from postgresql.conf, want %s", got, cfg)
	}
	b2.confMu.Lock()
	if err := b2.rewriteSyncLine(FormatSyncStandbyNames(backends.SyncConfig{Method: backends.SyncAny, Num: 1, Names: []string{"x", "y"}})); err != nil {
		t.Fatal(err)
	}
	b2.confMu.Unlock()
	data, _ := os.ReadFile(filepath.Join(b.dataDir, "postgresql.conf"))
	if n := strings.Count(string(data), syncLinePrefix); n != 1 {
		t.Fatalf("%d synchronous_standby_names lines after a rewrite:\n%s", n, data)
	}
	if got := confSettings(t, string(data))["synchronous_standby_names"]; got != `ANY 1 ("x", "y")` {
		t.Fatalf("after the rewrite: %q", got)
	}
}
