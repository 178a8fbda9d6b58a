package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/dcstest"
	"github.com/stewardha/steward/dcs/etcd"
)

func TestParseAt(t *testing.T) {
	loc := time.FixedZone("CET", 3600)
	now := time.Date(2026, 11, 21, 14, 30, 0, 0, loc)
	for _, tc := range []struct {
		in   string
		want time.Time // zero: at once
		err  string
	}{
		{in: "2026-11-22T03:00:00+01:00", want: time.Date(2026, 11, 22, 3, 0, 0, 0, loc)},
		{in: "2026-11-22T02:00:00Z", want: time.Date(2026, 11, 22, 3, 0, 0, 0, loc)},
		{in: "2026-11-22 03:00", want: time.Date(2026, 11, 22, 3, 0, 0, 0, loc)},
		{in: "2026-11-22T03:00:30", want: time.Date(2026, 11, 22, 3, 0, 30, 0, loc)},
		{in: "15:00", want: time.Date(2026, 11, 21, 15, 0, 0, 0, loc)},
		{in: "+10m", want: now.Add(10 * time.Minute)},
		{in: "now"},
		{in: "14:00", err: "is in the past"},
		{in: "2020-01-01T00:00:00Z", err: "is in the past"},
		{in: "tomorrow", err: "not a time: use RFC 3339"},
		{in: "+10", err: "not a time"},
	} {
		got, err := parseAt(tc.in, now)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseAt(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseAt(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// The steps of a switchover as the DCS shows them, each reported once and
// in order; a failed one reports the agent's reason.
func TestHandoverWatch(t *testing.T) {
	req := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	t0 := req.Add(time.Second)
	sw := func(phase string, final uint64) *dcs.Versioned[dcs.Switchover] {
		return &dcs.Versioned[dcs.Switchover]{Version: 5, Value: dcs.Switchover{Leader: "m1", Candidate: "m2", RequestedAt: req,
			Phase: phase, FinalPosition: backends.Position{LSN: final}}}
	}
	members := func(ms ...dcs.Member) map[string]dcs.Member {
		out := map[string]dcs.Member{}
		for _, m := range ms {
			out[m.Name] = m
		}
		return out
	}
	primary := func(n string, tl int64) dcs.Member {
		return dcs.Member{Name: n, Role: dcs.RolePrimary, State: agent.StateRunning, Writable: true, Timeline: tl}
	}
	replica := func(n, of string) dcs.Member {
		return dcs.Member{Name: n, Role: dcs.RoleReplica, State: agent.StateStreaming, Following: of}
	}
	stopped := dcs.Member{Name: "m1", Role: dcs.RoleUnknown, State: "stopped"}
	l1 := &dcs.Leader{Name: "m1", Term: 10}
	l2 := &dcs.Leader{Name: "m2", Term: 20}

	t.Run("success", func(t *testing.T) {
		w := newHandoverWatch("m1", "m2", 10, 3, req)
		steps := []struct {
			cl   dcs.Cluster
			want []string
			st   watchStatus
		}{
			{dcs.Cluster{Leader: l1, Switchover: sw("", 0), Members: members(primary("m1", 1), replica("m2", "m1"))}, nil, watching},
			{dcs.Cluster{Leader: l1, Switchover: sw(agent.PhaseDemoting, 0), Members: members(stopped, replica("m2", "m1"))},
				[]string{"demoting: m1 stopped taking writes; waiting for m2"}, watching},
			{dcs.Cluster{Switchover: sw(agent.PhaseHandover, 0x3000148), Members: members(stopped, replica("m2", "m1"))},
				[]string{"m2 caught up at 0/3000148, m1's final position"}, watching},
			{dcs.Cluster{Leader: l2, Switchover: sw(agent.PhaseHandover, 0x3000148), Members: members(stopped, replica("m2", "m1"))},
				[]string{"m2 took the leader key (term 20)"}, watching},
			{dcs.Cluster{Leader: l2, Members: members(stopped, primary("m2", 2), replica("m3", "m2"))},
				[]string{"promoted: m2 accepts writes (timeline 2)", "m3 streams from m2"}, watching},
			{dcs.Cluster{Leader: l2, Members: members(replica("m1", "m2"), primary("m2", 2), replica("m3", "m2"))},
				[]string{"m1, the old primary, streams from m2"}, watchDone},
		}
		for i, s := range steps {
			cl := s.cl
			lines, st, reason := w.observe(&cl, t0.Add(time.Duration(i)*100*time.Millisecond))
			if st != s.st || reason != "" || len(lines) != len(s.want) {
				t.Fatalf("step %d: %q %v %q, want %q %v", i, lines, st, reason, s.want, s.st)
			}
			for j := range lines {
				if !strings.HasPrefix(lines[j], s.want[j]) {
					t.Fatalf("step %d line %d: %q, want %q...", i, j, lines[j], s.want[j])
				}
			}
		}
	})

	t.Run("missed phases are still reported", func(t *testing.T) {
		w := newHandoverWatch("m1", "m2", 10, 3, req)
		lines, st, _ := w.observe(&dcs.Cluster{Leader: l2, Members: members(primary("m2", 2), replica("m1", "m2"))}, t0)
		want := "demoting: m1 stopped taking writes|m1 handed the leader key over|m2 took the leader key (term 20)|promoted: m2 accepts writes (timeline 2)|m1, the old primary, streams from m2"
		if st != watchDone || strings.Join(lines, "|") != want {
			t.Fatalf("got %v %q", st, lines)
		}
	})

	t.Run("failed with the reason from history", func(t *testing.T) {
		w := newHandoverWatch("m1", "m2", 10, 3, req)
		_, st, _ := w.observe(&dcs.Cluster{Leader: l1, Switchover: sw(agent.PhaseDemoting, 0), Members: members(stopped)}, t0)
		if st != watching {
			t.Fatal(st)
		}
		// The request is gone, the old leader still leads; the reason
		// reaches the history a moment later.
		gone := &dcs.Cluster{Leader: l1, Members: members(primary("m1", 1)), LastHistory: &dcs.HistoryRecord{Index: 3, Kind: "bootstrap"}}
		if _, st, _ := w.observe(gone, t0.Add(100*time.Millisecond)); st != watching {
			t.Fatalf("reported before the history could say why: %v", st)
		}
		gone.LastHistory = &dcs.HistoryRecord{Index: 4, Kind: "switchover-failed", Reason: "switchover aborted: m2 did not replay the final position"}
		_, st, reason := w.observe(gone, t0.Add(200*time.Millisecond))
		if st != watchFailed || !strings.Contains(reason, "did not replay") {
			t.Fatalf("%v %q", st, reason)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		w := newHandoverWatch("m1", "m2", 10, 3, req)
		gone := &dcs.Cluster{Leader: l1, Members: members(primary("m1", 1))}
		if _, st, _ := w.observe(gone, t0); st != watching {
			t.Fatal(st)
		}
		_, st, reason := w.observe(gone, t0.Add(requestGrace+time.Millisecond))
		if st != watchFailed || !strings.Contains(reason, "removed") {
			t.Fatalf("%v %q", st, reason)
		}
	})

	t.Run("another member took over", func(t *testing.T) {
		w := newHandoverWatch("", "m2", 0, 3, req)
		_, st, reason := w.observe(&dcs.Cluster{Leader: &dcs.Leader{Name: "m3", Term: 30}, LastHistory: &dcs.HistoryRecord{Index: 4, Reason: "no leader; racing"}}, t0)
		if st != watchFailed || reason != "m3 took the leader key instead of m2: no leader; racing" {
			t.Fatalf("%v %q", st, reason)
		}
	})

	t.Run("manual failover is done at the promotion", func(t *testing.T) {
		w := newHandoverWatch("", "m2", 0, 3, req)
		mf := &dcs.Versioned[dcs.Switchover]{Value: dcs.Switchover{Candidate: "m2", RequestedAt: req}}
		if _, st, _ := w.observe(&dcs.Cluster{Switchover: mf, Members: members(replica("m2", ""))}, t0); st != watching {
			t.Fatal(st)
		}
		lines, st, _ := w.observe(&dcs.Cluster{Leader: l2, Members: members(primary("m2", 2))}, t0)
		if st != watchDone || strings.Join(lines, "|") != "m2 took the leader key (term 20)|promoted: m2 accepts writes (timeline 2)" {
			t.Fatalf("%v %q", st, lines)
		}
	})
}

func TestEditConfigValues(t *testing.T) {
	cur := config.DefaultDynamic()
	next, err := applySets(cur, [][2]string{{"loop_wait", "500ms"}, {"maximum_lag_on_failover", "16MB"}, {"paused", "true"}})
	if err != nil {
		t.Fatal(err)
	}
	diff, patch := dynamicDiff(cur, next)
	if got := strings.Join(diff, "|"); got != "-loop_wait: 1s|+loop_wait: 500ms|-maximum_lag_on_failover: 1MB|+maximum_lag_on_failover: 16MB|-paused: false|+paused: true" {
		t.Fatalf("diff %q", got)
	}
	if string(patch["loop_wait"]) != `"500ms"` || string(patch["maximum_lag_on_failover"]) != "16777216" || string(patch["paused"]) != "true" || len(patch) != 3 {
		t.Fatalf("patch %s", patch)
	}
	for _, tc := range []struct {
		sets [][2]string
		want string
	}{
		{[][2]string{{"loop_wait", "abc"}}, "config.loop_wait: "},
		{[][2]string{{"loop_wiat", "1s"}}, "config.loop_wiat: unknown key; did you mean loop_wait?"},
		{[][2]string{{"loop_wait", "10ms"}}, "config.loop_wait: 10ms is too short"},
		{[][2]string{{"ttl", "5s"}}, "config.ttl: 5s is too short: ttl must be >= loop_wait + 2*retry_timeout"},
		{[][2]string{{"paused", "maybe"}}, "config.paused: expected true or false"},
	} {
		if _, err := applySets(cur, tc.sets); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %v: %v, want %q", tc.sets, err, tc.want)
		}
	}
	// The editor's YAML: a removed key goes back to its default; errors
	// carry the key and the line.
	d, err := parseEdited([]byte("# comment\nttl: 30s\nloop_wait: 2s  # default\n"))
	if err != nil || d.TTL.D() != 30*time.Second || d.LoopWait.D() != 2*time.Second || d.RetryTimeout != config.DefaultDynamic().RetryTimeout {
		t.Fatalf("parseEdited: %+v %v", d, err)
	}
	if _, err := parseEdited([]byte("ttl: 30s\nloop_wait: [1s]\nttl: 20s\n")); err == nil ||
		!strings.Contains(err.Error(), "config.loop_wait: expected a single value (line 2)") || !strings.Contains(err.Error(), "config.ttl: given twice (line 3)") {
		t.Fatalf("bad YAML: %v", err)
	}
	if _, err := parseEdited([]byte("# only comments\n")); err != errEmptyEdit {
		t.Fatalf("empty edit: %v", err)
	}
}

// fakeMember is a member's API backed by the real etcd: it "runs with" the
// dynamic config stored there, as an agent would after its next loop.
type fakeMember struct {
	store *etcd.Store
	name  string
}

func (f *fakeMember) Snapshot() agent.View {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v := agent.View{Config: config.DefaultDynamic(), Member: dcs.Member{Name: f.name, Role: dcs.RolePrimary, State: agent.StateRunning}}
	if raw, _, err := f.store.GetConfig(ctx); err == nil {
		if d, err := config.ParseDynamicJSON(raw); err == nil {
			v.Config = d
		}
	}
	return v
}
func (f *fakeMember) PeerStatus(time.Time) agent.PeerStatus { return agent.PeerStatus{Name: f.name} }
func (f *fakeMember) LeaseDeadline() time.Time              { return time.Time{} }
func (f *fakeMember) Wake()                                 {}

// cliCluster is an embedded etcd with one member "db1" that leads and
// serves the real API (with the test config's credentials), without a
// database.
func cliCluster(t *testing.T) (cfgPath string, st *etcd.Store) {
	t.Helper()
	srv := dcstest.StartEmbedded(t)
	dir := t.TempDir()
	cfgPath = writeConfig(t, dir, goodConfig(srv.Endpoints()[0], filepath.Join(dir, "data")))
	st, err := etcd.New(etcd.Options{Endpoints: srv.Endpoints(), Namespace: "/steward", Cluster: "main", Member: "db1", TTL: 10 * time.Second, RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := api.New(api.Deps{Agent: &fakeMember{store: st, name: "db1"}, Store: st, Cluster: "main",
		Security: api.Security{Username: "admin", Password: "api-secret"}})
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	ctx := context.Background()
	if err := st.PutMember(ctx, dcs.Member{Name: "db1", Role: dcs.RolePrimary, State: agent.StateRunning, APIURL: hs.URL, DBURL: "10.0.0.1:5432", Writable: true, Priority: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.AcquireLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CASConfig(ctx, []byte(`{"ttl":"10s","loop_wait":"1s","retry_timeout":"3s"}`), 0); err != nil {
		t.Fatal(err)
	}
	return cfgPath, st
}

func storedConfig(t *testing.T, st *etcd.Store) (string, int64) {
	t.Helper()
	raw, ver, err := st.GetConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return string(raw), ver
}

// runCLIIn runs steward in-process with stdin.
func runCLIIn(t *testing.T, stdin string, envv map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb strings.Builder
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, lookupEnv: func(k string) (string, bool) {
		v, ok := envv[k]
		return v, ok
	}}
	code := run(e, args)
	return out.String(), errb.String(), code
}

func TestConfigCommandsThroughTheAPI(t *testing.T) {
	cfg, st := cliCluster(t)

	out, stderr, code := runCLI(t, nil, "show-config", "--config", cfg)
	if code != 0 || !strings.Contains(out, "ttl: 10s\n") || !strings.Contains(out, "maximum_lag_on_failover: 1MB  # default\n") || !strings.Contains(out, "paused: false  # default") {
		t.Fatalf("show-config: exit %d %s\n%s", code, stderr, out)
	}

	// --set with bad values: exit 2, the key named, nothing written.
	raw0, ver0 := storedConfig(t, st)
	for _, tc := range []struct{ set, want string }{
		{"loop_wait=abc", "config.loop_wait:"},
		{"loop_wiat=1s", "did you mean loop_wait?"},
		{"loop_wait=10ms", "config.loop_wait: 10ms is too short"},
		{"loop_wait", "expected key=value"},
	} {
		_, stderr, code := runCLI(t, nil, "edit-config", "--set", tc.set, "--force", "--config", cfg)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("--set %s: exit %d, stderr %q, want 2 and %q", tc.set, code, stderr, tc.want)
		}
		if raw, ver := storedConfig(t, st); raw != raw0 || ver != ver0 {
			t.Fatalf("--set %s changed the config: %s v%d", tc.set, raw, ver)
		}
	}

	// Declined: nothing written.
	out, _, code = runCLIIn(t, "n\n", nil, "edit-config", "--set", "loop_wait=2s", "--config", cfg)
	if code != 1 || !strings.Contains(out, "-loop_wait: 1s\n+loop_wait: 2s") || !strings.Contains(out, "[y/N] n\n") {
		t.Fatalf("declined: exit %d\n%s", code, out)
	}
	if _, ver := storedConfig(t, st); ver != ver0 {
		t.Fatal("a declined edit wrote the config")
	}

	// Accepted: written with CAS, and the member reports it runs with it.
	out, stderr, code = runCLIIn(t, "y\n", nil, "edit-config", "--set", "loop_wait=2s", "-s", "maximum_lag_on_failover=16MB", "--config", cfg)
	if code != 0 || !strings.Contains(out, "written through db1's API") || !strings.Contains(out, "db1 runs with the new settings") {
		t.Fatalf("edit-config: exit %d %s\n%s", code, stderr, out)
	}
	raw, _ := storedConfig(t, st)
	var obj map[string]any
	if json.Unmarshal([]byte(raw), &obj) != nil || obj["loop_wait"] != "2s" || obj["maximum_lag_on_failover"] != float64(16<<20) || obj["ttl"] != "10s" {
		t.Fatalf("stored config %s", raw)
	}

	// The editor: a script changes one line; the diff shows it.
	dir := t.TempDir()
	ed := filepath.Join(dir, "ed.sh")
	if err := os.WriteFile(ed, []byte("#!/bin/sh\nsed -i 's/^retry_timeout: .*/retry_timeout: 2s/' \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = runCLIIn(t, "y\n", map[string]string{"EDITOR": ed}, "edit-config", "--config", cfg)
	if code != 0 || !strings.Contains(out, "-retry_timeout: 3s\n+retry_timeout: 2s") {
		t.Fatalf("edit-config in an editor: exit %d %s\n%s", code, stderr, out)
	}
	// An editor that makes it invalid, then the operator gives up: exit 2.
	if err := os.WriteFile(ed, []byte("#!/bin/sh\nsed -i 's/^ttl: .*/ttl: 1s/' \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, ver1 := storedConfig(t, st)
	_, stderr, code = runCLIIn(t, "n\n", map[string]string{"EDITOR": ed}, "edit-config", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, "config.ttl: 1s is too short") {
		t.Fatalf("invalid edit: exit %d %s", code, stderr)
	}
	if _, ver := storedConfig(t, st); ver != ver1 {
		t.Fatal("an invalid edit wrote the config")
	}

	// Pause and resume; list shows maintenance mode.
	out, stderr, code = runCLI(t, nil, "pause", "--config", cfg)
	if code != 0 || !strings.Contains(out, "maintenance mode ON") {
		t.Fatalf("pause: exit %d %s\n%s", code, stderr, out)
	}
	if out, _, _ := runCLI(t, nil, "list", "--config", cfg); !strings.Contains(out, "Maintenance mode: ON (paused)") {
		t.Fatalf("list after pause:\n%s", out)
	}
	if out, _, code := runCLI(t, nil, "pause", "--config", cfg); code != 0 || !strings.Contains(out, "already ON") {
		t.Fatalf("pause twice: %d\n%s", code, out)
	}
	if out, _, code := runCLI(t, nil, "resume", "--config", cfg); code != 0 || !strings.Contains(out, "maintenance mode off") {
		t.Fatalf("resume: %d\n%s", code, out)
	}
	if out, _, _ := runCLI(t, nil, "list", "--config", cfg); !strings.Contains(out, "Maintenance mode: off") {
		t.Fatalf("list after resume:\n%s", out)
	}

	// Wrong API credentials: refused, and said why.
	bad := strings.Replace(readFile(t, cfg), "password: api-secret", "password: wrong", 1)
	badCfg := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(badCfg, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCLI(t, nil, "pause", "--config", badCfg); code != 1 || !strings.Contains(stderr, "refused the credentials (401)") {
		t.Fatalf("bad credentials: exit %d %s", code, stderr)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHistoryAndRefusals(t *testing.T) {
	cfg, st := cliCluster(t)
	ctx := context.Background()
	for _, r := range []dcs.HistoryRecord{
		{Kind: "bootstrap", NewLeader: "db1", Term: 3, Timeline: 1, Promoted: backends.Position{LSN: 0x152B538}, Reason: "cluster bootstrapped by db1"},
		{Kind: "switchover", OldLeader: "db1", NewLeader: "db2", Term: 9, Timeline: 2, Position: backends.Position{LSN: 0x3000148}, Reason: "switchover from db1"},
		{Kind: "reinit", Member: "db3", NewLeader: "db2", Reason: "data directory wiped and cloned again from db2"},
	} {
		if _, err := st.AppendHistory(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	out, stderr, code := runCLI(t, nil, "history", "--config", cfg)
	if code != 0 {
		t.Fatalf("history: %d %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "#  TIME") {
		t.Fatalf("history:\n%s", out)
	}
	for i, want := range [][]string{
		{"bootstrap", "db1", "3", "0/152B538", "cluster bootstrapped by db1"},
		{"switchover", "db1", "db2", "9", "2", "0/3000148", "switchover from db1"},
		{"reinit", "db3: data directory wiped and cloned again from db2"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("history line %d lacks %q: %s", i+1, w, lines[i+1])
			}
		}
	}
	out, _, code = runCLI(t, nil, "history", "-o", "json", "--last", "1", "--config", cfg)
	var h []dcs.HistoryRecord
	if code != 0 || json.Unmarshal([]byte(out), &h) != nil || len(h) != 1 || h[0].Kind != "reinit" {
		t.Fatalf("history -o json --last 1: %d\n%s", code, out)
	}

	// Bad input: exit 2, nothing asked of any agent.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"restart", "nope"}, `"nope" is not a member of cluster main (members: db1)`},
		{[]string{"reinit", "nope", "--force"}, `"nope" is not a member`},
		{[]string{"restart"}, "accepts 1 arg(s)"},
		{[]string{"switchover", "--candidate", "nope"}, `"nope" is not a member`},
		{[]string{"switchover", "--candidate", "db1"}, "db1 is already the leader"},
		{[]string{"switchover", "--at", "yesterday"}, "--at \"yesterday\": not a time"},
		{[]string{"switchover", "--cancel", "--candidate", "db2"}, "--cancel takes no --candidate"},
		{[]string{"failover"}, "--candidate is required"},
		{[]string{"failover", "--candidate", "nope"}, `"nope" is not a member`},
		{[]string{"list", "--watch", "1ms"}, "--watch 1ms"},
		{[]string{"show-config", "-o", "table"}, "expected yaml or json"},
	} {
		_, stderr, code := runCLI(t, nil, append(tc.args, "--config", cfg)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("steward %v: exit %d %q, want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	// Refusals: exit 1 with the reason.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"reinit", "db1", "--force"}, "reinit refused: db1 is the leader"},
		{[]string{"failover", "--candidate", "db1", "--force"}, "db1 is already the leader"},
		{[]string{"switchover", "--cancel"}, "no switchover is pending"},
	} {
		_, stderr, code := runCLI(t, nil, append(tc.args, "--config", cfg)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("steward %v: exit %d %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
	// A scheduled switchover is shown by list.
	at := time.Now().Add(time.Hour).Truncate(time.Second)
	if _, err := st.PutSwitchover(ctx, dcs.Switchover{Leader: "db1", Candidate: "db2", ScheduledAt: at, RequestedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	out, _, _ = runCLI(t, nil, "list", "--config", cfg)
	if want := fmt.Sprintf("Scheduled switchover: from db1 to db2 at %s (in ", at.Local().Format(time.RFC3339)); !strings.Contains(out, want) {
		t.Fatalf("list lacks %q:\n%s", want, out)
	}
	if _, stderr, code := runCLI(t, nil, "switchover", "--force", "--config", cfg); code != 1 || !strings.Contains(stderr, "a switchover is already pending (from db1 to db2 at") {
		t.Fatalf("second switchover: %d %s", code, stderr)
	}
}

// --watch prints the list again until the context ends.
func TestListWatch(t *testing.T) {
	cfg, _ := cliCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	var out, errb strings.Builder
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, lookupEnv: func(string) (string, bool) { return "", false }, ctx: ctx}
	if code := run(e, []string{"list", "--watch", "200ms", "--config", cfg}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if n := strings.Count(out.String(), "Cluster: main   Leader: db1"); n < 2 || n > 5 {
		t.Fatalf("%d lists in 700ms at 200ms intervals:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "(every 200ms; Ctrl-C to stop)") {
		t.Fatalf("no watch header:\n%s", out.String())
	}
}
