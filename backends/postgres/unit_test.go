package postgres

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stewardha/steward/backends"
)

func TestSlotName(t *testing.T) {
	long := strings.Repeat("x", 70)
	for in, want := range map[string]string{
		"db1":               "db1",
		"Rep-1":             "rep_1",
		"node.example.com":  "node_example_com",
		"ÄÖ":                "__", // each non-ASCII character is one '_'
		"a b/c":             "a_b_c",
		long:                strings.Repeat("x", 63),
		"UPPER_lower_09":    "upper_lower_09",
		"with'quote\"slash": "with_quote_slash",
	} {
		if got := SlotName(in); got != want {
			t.Errorf("SlotName(%q) = %q, want %q", in, got, want)
		}
		if len(SlotName(in)) > 63 {
			t.Errorf("SlotName(%q) longer than 63 bytes", in)
		}
	}
}

func testBackend(t *testing.T, edit func(*Options)) *Backend {
	t.Helper()
	bin := t.TempDir()
	for _, p := range append(requiredPrograms, "pg_rewind") {
		if err := os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/false\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{Member: "db-1", DataDir: "/var/lib/steward/db1", BinDir: bin, Listen: "127.0.0.1:5433",
		Replication: Credentials{Username: "repl", Password: "secret"}, RunAs: "postgres"}
	if edit != nil {
		edit(&o)
	}
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// confSettings parses the rendered postgresql.conf back (name = 'value').
func confSettings(t *testing.T, conf string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(conf, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, " = ")
		if !ok {
			t.Fatalf("bad line %q", l)
		}
		if strings.HasPrefix(v, "'") {
			// Find the closing quote (not a doubled one).
			end := -1
			for i := 1; i < len(v); i++ {
				if v[i] == '\\' {
					i++
					continue
				}
				if v[i] == '\'' {
					if i+1 < len(v) && v[i+1] == '\'' {
						i++
						continue
					}
					end = i
					break
				}
			}
			if end < 0 {
				t.Fatalf("unterminated value in %q", l)
			}
			if rest := strings.TrimSpace(v[end+1:]); rest != "" && !strings.HasPrefix(rest, "#") {
				t.Fatalf("garbage after value in %q", l)
			}
			out[k] = parseConfString(v[1:end])
		} else {
			out[k] = strings.TrimSpace(strings.SplitN(v, "#", 2)[0])
		}
	}
	return out
}

func TestRenderConfPrimaryAndReplica(t *testing.T) {
	b := testBackend(t, func(o *Options) {
		o.Parameters = map[string]string{"max_connections": "200", "wal_keep_size": "1GB", "Work_Mem": "8MB"}
	})
	prim := confSettings(t, b.renderConf(backends.RolePrimary, &backends.Upstream{Name: "x", Host: "h", Port: 1}))
	for k, want := range map[string]string{
		"listen_addresses": "127.0.0.1", "port": "5433", "unix_socket_directories": "/var/lib/steward/db1.run",
		"wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on", "max_wal_senders": "10",
		"max_replication_slots": "10", "wal_retrieve_retry_interval": "1s", "recovery_target_timeline": "latest",
		"max_connections": "200", "wal_keep_size": "1GB", "work_mem": "8MB",
	} {
		if prim[k] != want {
			t.Errorf("primary %s = %q, want %q", k, prim[k], want)
		}
	}
	if _, ok := prim["primary_conninfo"]; ok {
		t.Error("a primary's configuration has primary_conninfo")
	}
	rep := confSettings(t, b.renderConf(backends.RoleReplica, &backends.Upstream{Name: "db2", Host: "10.0.0.2", Port: 5432}))
	if rep["primary_slot_name"] != "db_1" {
		t.Errorf("primary_slot_name = %q", rep["primary_slot_name"])
	}
	ci, err := parseConninfo(rep["primary_conninfo"])
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"host": "10.0.0.2", "port": "5432", "user": "repl", "password": "secret",
		"application_name": "db-1", "connect_timeout": "2", "keepalives": "1", "keepalives_idle": "5"} {
		if ci[k] != want {
			t.Errorf("primary_conninfo %s = %q, want %q (%s)", k, ci[k], want, rep["primary_conninfo"])
		}
	}
	if got := configuredUpstream(rep["primary_conninfo"]); got != "10.0.0.2:5432" {
		t.Errorf("configuredUpstream = %q", got)
	}
	// A replica following nobody.
	none := confSettings(t, b.renderConf(backends.RoleReplica, nil))
	if _, ok := none["primary_conninfo"]; ok {
		t.Error("replica of nobody has primary_conninfo")
	}
}

func TestConninfoQuoting(t *testing.T) {
	for _, pw := range []string{`plain`, `it's`, `back\slash`, `both\'"mix`, `sp ace`, `'`, `\`, `trailing\\`, `=eq= `, ``} {
		b := testBackend(t, func(o *Options) { o.Replication.Password = pw })
		conf := b.renderConf(backends.RoleReplica, &backends.Upstream{Host: "h", Port: 1})
		s := confSettings(t, conf)
		ci, err := parseConninfo(s["primary_conninfo"])
		if err != nil {
			t.Fatalf("%q: %v (%s)", pw, err, conf)
		}
		if ci["password"] != pw {
			t.Errorf("password %q came back as %q from %s", pw, ci["password"], s["primary_conninfo"])
		}
		if ci["user"] != "repl" || ci["host"] != "h" {
			t.Errorf("%q broke the other keys: %v", pw, ci)
		}
	}
}

func TestConfValueQuoting(t *testing.T) {
	for _, v := range []string{`a`, `it's`, `c:\dir\`, `'quoted'`, `x''y`} {
		q := confValue(v)
		if !strings.HasPrefix(q, "'") || !strings.HasSuffix(q, "'") {
			t.Fatalf("confValue(%q) = %s", v, q)
		}
		if got := parseConfString(q[1 : len(q)-1]); got != v {
			t.Errorf("confValue(%q) = %s parses back as %q", v, q, got)
		}
	}
}

func TestLongDataDirDisablesSocket(t *testing.T) {
	long := "/" + strings.Repeat("d", 76)
	b := testBackend(t, func(o *Options) { o.DataDir = long })
	if got := confSettings(t, b.renderConf(backends.RolePrimary, nil))["unix_socket_directories"]; got != "" {
		t.Errorf("unix_socket_directories = %q for a %d-byte path", got, len(long))
	}
}

func TestRenderHba(t *testing.T) {
	b := testBackend(t, nil)
	if got := b.renderHba(); !strings.Contains(got, "host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n") {
		t.Errorf("default pg_hba:\n%s", got)
	}
	b = testBackend(t, func(o *Options) { o.PgHba = []string{"host all all 0.0.0.0/0 md5"} })
	if got := b.renderHba(); !strings.HasSuffix(got, "\nhost all all 0.0.0.0/0 md5\n") {
		t.Errorf("pg_hba:\n%s", got)
	}
}

func TestParseConninfo(t *testing.T) {
	ci, err := parseConninfo(`host=db2  port = 5433 user='rep user' password='a\'b\\c' application_name=x`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"host": "db2", "port": "5433", "user": "rep user", "password": `a'b\c`, "application_name": "x"}
	for k, v := range want {
		if ci[k] != v {
			t.Errorf("%s = %q, want %q", k, ci[k], v)
		}
	}
	if _, err := parseConninfo(`host='open`); err == nil {
		t.Error("unterminated quote accepted")
	}
	if _, err := parseConninfo(`host`); err == nil {
		t.Error("missing = accepted")
	}
	if got := configuredUpstream(""); got != "" {
		t.Errorf("empty conninfo upstream %q", got)
	}
	if got := configuredUpstream("host=a"); got != "a:5432" {
		t.Errorf("default port: %q", got)
	}
}

func TestParseTimelineHistory(t *testing.T) {
	content := "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tbefore 2024-01-01 00:00:00+00\n# comment\n3\t1/A0\tat restore point \"x\"\n"
	h, err := ParseTimelineHistory(content)
	if err != nil {
		t.Fatal(err)
	}
	want := []HistoryEntry{
		{1, 0x3000148, "no recovery target specified"},
		{2, 0x5000000, "before 2024-01-01 00:00:00+00"},
		{3, 1<<32 | 0xA0, `at restore point "x"`},
	}
	if len(h) != len(want) {
		t.Fatalf("got %+v", h)
	}
	for i := range want {
		if h[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, h[i], want[i])
		}
	}
	for _, bad := range []string{"x\t0/1\tr", "1\tnot-an-lsn\tr", "1"} {
		if _, err := ParseTimelineHistory(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if h, err := ParseTimelineHistory(""); err != nil || len(h) != 0 {
		t.Errorf("empty history: %v %v", h, err)
	}
}

func TestLSN(t *testing.T) {
	for s, v := range map[string]uint64{"0/0": 0, "0/3000148": 0x3000148, "16/B374D848": 0x16B374D848, "FFFFFFFF/FFFFFFFF": ^uint64(0)} {
		got, err := parseLSN(s)
		if err != nil || got != v {
			t.Errorf("parseLSN(%q) = %x, %v", s, got, err)
		}
		if v != 0 && backends.FormatLSN(v) != s {
			t.Errorf("FormatLSN(%x) = %s, want %s", v, backends.FormatLSN(v), s)
		}
	}
	if v, err := parseLSN(""); err != nil || v != 0 {
		t.Errorf("NULL LSN: %v %v", v, err)
	}
	if _, err := parseLSN("3000148"); err == nil {
		t.Error("accepted an LSN without /")
	}
	if tli, err := timelineFromWalfile("000000020000000000000003"); err != nil || tli != 2 {
		t.Errorf("timeline from walfile: %d %v", tli, err)
	}
	if tli, err := timelineFromWalfile("0000001A0000000000000003"); err != nil || tli != 26 {
		t.Errorf("timeline from walfile: %d %v", tli, err)
	}
}

func TestLagCompare(t *testing.T) {
	p := func(l uint64) backends.Position { return backends.Position{LSN: l} }
	b := &Backend{}
	cases := []struct {
		leader, pos backends.Position
		lag         int64
		cmp         int
	}{
		{p(100), p(40), 60, 1},
		{p(100), p(100), 0, 0},
		{p(100), p(150), 0, -1},
		{p(0), p(10), -1, -1},
		{p(10), p(0), -1, 1},
		{p(1 << 40), p(1<<40 - 1), 1, 1},
	}
	for _, c := range cases {
		if got := b.Lag(c.leader, c.pos); got != c.lag {
			t.Errorf("Lag(%v, %v) = %d, want %d", c.leader.LSN, c.pos.LSN, got, c.lag)
		}
		if got := b.Compare(c.leader, c.pos); got != c.cmp {
			t.Errorf("Compare(%v, %v) = %d, want %d", c.leader.LSN, c.pos.LSN, got, c.cmp)
		}
	}
}

func TestRecordEnd(t *testing.T) {
	const seg = 16 << 20
	cases := []struct{ start, tot, want uint64 }{
		{0x3000028, 114, 0x30000A0},                       // a shutdown checkpoint within a page
		{0x3001FF0, 114, 0x3002000 + 24 + (114 - 16) + 6}, // crosses a page boundary (short header), MAXALIGNed
		{0x3FFFFF0, 114, 0x4000000 + 40 + (114 - 16) + 6}, // crosses a segment boundary (long header)
	}
	for _, c := range cases {
		if got := recordEnd(c.start, c.tot, seg); got != c.want {
			t.Errorf("recordEnd(%X, %d) = %X, want %X", c.start, c.tot, got, c.want)
		}
	}
}

func TestParseControlData(t *testing.T) {
	out := `pg_control version number:            1300
Database system identifier:           7312345678901234567
Database cluster state:               shut down in recovery
Latest checkpoint location:           0/5000060
Latest checkpoint's TimeLineID:       2
Minimum recovery ending location:     0/50000D8
Min recovery ending loc's timeline:   2
Bytes per WAL segment:                16777216
`
	cd := parseControlData(out)
	if cd.state() != "shut down in recovery" || !cleanShutdown(cd.state()) {
		t.Errorf("state %q", cd.state())
	}
	if cd.lsn("Minimum recovery ending location") != 0x50000D8 || cd.int("Min recovery ending loc's timeline") != 2 ||
		cd["Database system identifier"] != "7312345678901234567" {
		t.Errorf("parsed %v", cd)
	}
	if cleanShutdown("in production") || cleanShutdown("in crash recovery") {
		t.Error("crashed states counted as clean")
	}
}

func TestNewValidation(t *testing.T) {
	bin := t.TempDir()
	for _, p := range requiredPrograms {
		os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/false\n"), 0o755)
	}
	base := Options{Member: "m", DataDir: "/data/m", BinDir: bin, Listen: "127.0.0.1:5432"}
	cases := []struct {
		edit func(*Options)
		key  string
	}{
		{func(o *Options) { o.Member = "" }, "name"},
		{func(o *Options) { o.DataDir = "" }, "postgres.data_dir"},
		{func(o *Options) { o.DataDir = "rel/dir" }, "postgres.data_dir"},
		{func(o *Options) { o.BinDir = "/nonexistent" }, "postgres.bin_dir"},
		{func(o *Options) { o.UsePgRewind = true }, "pg_rewind"}, // missing from bin
		{func(o *Options) { o.Listen = "nope" }, "postgres.listen"},
		{func(o *Options) { o.Listen = "127.0.0.1:0" }, "postgres.listen"},
		{func(o *Options) { o.ConnectAddress = "0.0.0.0:5432" }, "postgres.connect_address"},
		{func(o *Options) { o.Parameters = map[string]string{"port": "1"} }, "postgres.parameters.port"},
		{func(o *Options) { o.Parameters = map[string]string{"primary_conninfo": "x"} }, "postgres.parameters.primary_conninfo"},
		{func(o *Options) { o.Parameters = map[string]string{"work_mem": "1\nport=2"} }, "postgres.parameters.work_mem"},
		{func(o *Options) { o.Parameters = map[string]string{"bad name": "1"} }, "postgres.parameters"},
		{func(o *Options) { o.PgHba = []string{"a\nb"} }, "postgres.pg_hba"},
		{func(o *Options) { o.Replication.Password = "a\nb" }, "postgres.replication"},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, struct {
			edit func(*Options)
			key  string
		}{func(o *Options) { o.RunAs = "no-such-user-xyz" }, "postgres.run_as"},
			struct {
				edit func(*Options)
				key  string
			}{func(o *Options) { o.RunAs = "root" }, "postgres.run_as"})
	}
	for i, c := range cases {
		o := base
		c.edit(&o)
		_, err := New(o)
		if err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("case %d: error %v, want one naming %s", i, err, c.key)
		}
	}
	b, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if b.opts.ConnectAddress != base.Listen || b.opts.Superuser.Username != "postgres" || b.opts.Replication.Username != "replicator" ||
		b.opts.QueryTimeout == 0 || b.Kind() != "postgres" || b.LogFile() != "/data/m.log" {
		t.Errorf("defaults: %+v", b.opts)
	}
}
