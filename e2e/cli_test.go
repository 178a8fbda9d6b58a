package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/dcs"
)

// cli runs the steward CLI with a member's configuration file, with stdin,
// as an operator on that host would. It returns the combined output and
// the exit code.
func (m *Member) cli(stdin string, args ...string) (string, int) {
	cmd := exec.Command(binaryPath, append(args, "--config", m.Config)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		return err.Error(), -1
	}
	return string(out), 0
}

// rowIDs reads every id of steward_test on a member.
func rowIDs(t *testing.T, m *Member) map[int64]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT id FROM steward_test")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int64]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out
}

// leaderChange is a history record as the test expects it.
type leaderChange struct{ kind, old, new string }

// inOrder checks that each of wants appears in out, in this order.
func inOrder(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	at := 0
	for _, w := range wants {
		i := strings.Index(out[at:], w)
		if i < 0 {
			t.Fatalf("%s: %q missing (or out of order) in:\n%s", what, w, out)
		}
		at += i + len(w)
	}
}

// The operator CLI against one real cluster (etcd, 3 PostgreSQL 15, m3
// tagged nofailover), as an operator uses it: a new user's terminal
// session; refused switchovers that change nothing; a scheduled switchover
// that fires and a cancelled one that does not; switchovers under writes
// that lose nothing; live config changes; maintenance mode; a manual
// failover; restart and reinit; and a history that tells all of it.
func TestCLI(t *testing.T) {
	t.Parallel()
	c, _ := bootstrap(t, Fast, func(c *Cluster) { c.Members[2].Tags = "{nofailover: true}" })
	m1, m2, m3 := c.Members[0], c.Members[1], c.Members[2]
	want := []leaderChange{{"bootstrap", "", "m1"}}
	// unchanged: a refused request left the leader, its term and the
	// switchover key as they were.
	unchanged := func(what string, before *dcs.Leader) {
		t.Helper()
		cl := c.LoadCluster()
		if cl == nil || cl.Leader == nil || cl.Leader.Name != before.Name || cl.Leader.Term != before.Term || cl.Switchover != nil {
			t.Fatalf("%s changed the cluster: leader %+v (was %+v), switchover %+v", what, cl.Leader, before, cl.Switchover)
		}
	}
	leader := func() *dcs.Leader {
		t.Helper()
		cl := c.LoadCluster()
		if cl == nil || cl.Leader == nil {
			t.Fatal("no leader")
		}
		return cl.Leader
	}

	t.Run("terminal session", func(t *testing.T) {
		terminalSession(t, c)
		want = append(want, leaderChange{"switchover", "m1", "m2"})
		if l := c.WaitHealthy(30 * time.Second); l != m2 {
			t.Fatalf("after the terminal switchover the leader is %s, want m2", l.Name)
		}
	})

	t.Run("refused switchovers change nothing", func(t *testing.T) {
		before := leader() // m2
		out, code := m1.cli("", "switchover", "--candidate", "m9", "--force")
		if code != 2 || !strings.Contains(out, `"m9" is not a member of cluster e2e (members: m1, m2, m3)`) {
			t.Fatalf("unknown candidate: exit %d\n%s", code, out)
		}
		unchanged("a switchover to an unknown member", before)
		out, code = m1.cli("", "switchover", "--candidate", "m3", "--force")
		if code != 1 || !strings.Contains(out, "switchover refused, nothing was changed: candidate m3 is not eligible: tagged nofailover") {
			t.Fatalf("nofailover candidate: exit %d\n%s", code, out)
		}
		unchanged("a switchover to a nofailover member", before)

		// Lagging: m1 stops replaying while the leader writes 4 MB.
		if err := m1.Exec("SELECT pg_wal_replay_pause()"); err != nil {
			t.Fatal(err)
		}
		if err := m2.Exec("CREATE TABLE IF NOT EXISTS filler(x text); INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 4000)"); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 15*time.Second, "m1's lag is visible", func() bool {
			return strings.Contains(fmt.Sprint(listMembers(t, m2)["m1"]["ineligible_reasons"]), "replay lag")
		})
		out, code = m1.cli("", "switchover", "--candidate", "m1", "--force")
		if code != 1 || !regexp.MustCompile(`candidate m1 is not eligible: .*replay lag .* exceeds maximum_lag_on_failover 1MB`).MatchString(out) {
			t.Fatalf("lagging candidate: exit %d\n%s", code, out)
		}
		if !strings.Contains(out, "m1      replica  streaming") {
			t.Fatalf("the refusal does not show the members with their lag:\n%s", out)
		}
		t.Logf("steward switchover --candidate m1 --force (m1 lagging):\n%s", out)
		unchanged("a switchover to a lagging member", before)
		// Scheduled for later, the same request is accepted: the leader
		// checks eligibility again at the scheduled time.
		out, code = m1.cli("", "switchover", "--candidate", "m1", "--at", "+1h", "--force")
		if code != 0 || !strings.Contains(out, "Note: would schedule a switchover from m2 at ") ||
			!strings.Contains(out, "not possible now (candidate m1 is not eligible: ") || !strings.Contains(out, "scheduled: switchover from m2 to m1 at ") {
			t.Fatalf("scheduling a switchover to a member lagging now: exit %d\n%s", code, out)
		}
		t.Logf("steward switchover --candidate m1 --at +1h --force (m1 lagging now):\n%s", out)
		if out, code = m1.cli("", "switchover", "--cancel"); code != 0 {
			t.Fatalf("cancel: exit %d\n%s", code, out)
		}
		unchanged("a switchover scheduled and cancelled", before)
		if err := m1.Exec("SELECT pg_wal_replay_resume()"); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 15*time.Second, "m1 caught up", func() bool { return listMembers(t, m2)["m1"]["eligible"] == true })

		// Unhealthy: m1's agent is dead (its member key not yet expired).
		m1.Kill()
		out, code = m2.cli("", "switchover", "--candidate", "m1", "--force")
		if code != 1 || !strings.Contains(out, "switchover refused, nothing was changed: candidate m1 did not answer") {
			t.Fatalf("candidate with a dead agent: exit %d\n%s", code, out)
		}
		unchanged("a switchover to a member whose agent is dead", before)
		m1.Start()
		// Its old member key outlives the kill by up to ttl: wait for the
		// new agent's own answer.
		Eventually(t, 60*time.Second, "m1's new agent streams", func() bool {
			st := m1.Status()
			return st != nil && st.State == "streaming" && st.Eligible
		})
		c.WaitHealthy(60 * time.Second)
	})

	t.Run("scheduled switchover", func(t *testing.T) {
		before := leader() // m2
		out, code := m2.cli("", "switchover", "--candidate", "m1", "--at", "+4s", "--force")
		if code != 0 || !strings.Contains(out, "scheduled: switchover from m2 to m1 at") {
			t.Fatalf("scheduling: exit %d\n%s", code, out)
		}
		cl := c.LoadCluster()
		if cl.Switchover == nil {
			t.Fatal("no switchover key after scheduling")
		}
		at := cl.Switchover.Value.ScheduledAt
		list, _ := m3.cli("", "list")
		if !strings.Contains(list, "Scheduled switchover: from m2 to m1 at "+at.Local().Format(time.RFC3339)) {
			t.Fatalf("list does not show the scheduled switchover:\n%s", list)
		}
		t.Logf("steward switchover --candidate m1 --at +4s --force:\n%s\nsteward list:\n%s", out, list)
		if l := leader(); l.Term != before.Term {
			t.Fatal("the scheduled switchover ran early")
		}
		Eventually(t, 20*time.Second, "the scheduled switchover runs", func() bool {
			l := c.Leader()
			return l == m1 && l.Status() != nil && l.Status().Writable
		})
		if time.Now().Before(at) {
			t.Fatalf("ran before its time %v", at)
		}
		want = append(want, leaderChange{"switchover", "m2", "m1"})
		c.WaitHealthy(30 * time.Second)

		// Another one, cancelled: it does not run.
		before = leader()
		out, code = m3.cli("", "switchover", "--at", "+3s", "--force")
		if code != 0 || !strings.Contains(out, "scheduled: switchover from m1 to the best eligible replica at") {
			t.Fatalf("scheduling: exit %d\n%s", code, out)
		}
		at = c.LoadCluster().Switchover.Value.ScheduledAt
		out, code = m3.cli("", "switchover", "--cancel")
		if code != 0 || !strings.Contains(out, "cancelled: switchover from m1 to the best eligible replica at") {
			t.Fatalf("cancel: exit %d\n%s", code, out)
		}
		time.Sleep(time.Until(at) + 2*time.Second)
		unchanged("a cancelled switchover", before)
		out, code = m3.cli("", "switchover", "--cancel")
		if code != 1 || !strings.Contains(out, "no switchover is pending") {
			t.Fatalf("cancel with nothing pending: exit %d\n%s", code, out)
		}
	})

	t.Run("switchovers under writes", func(t *testing.T) {
		w := StartWriter(t, c.Members, 5*time.Millisecond)
		defer w.Stop()
		var pauses, rejoins []time.Duration
		for i := 0; i < 3; i++ {
			old := c.WaitHealthy(30 * time.Second)
			cand := m1
			if old == m1 {
				cand = m2
			}
			n := len(w.Snapshot())
			Eventually(t, 5*time.Second, "writes flow", func() bool { return len(w.Snapshot()) > n+20 })
			start := time.Now()
			type result struct {
				out  string
				code int
			}
			done := make(chan result, 1)
			go func() {
				out, code := old.cli("", "switchover", "--candidate", cand.Name, "--force")
				done <- result{out, code}
			}()
			rejoin := Eventually(t, 15*time.Second, "the old primary streams from the new leader", func() bool {
				n, err := cand.QueryInt("SELECT count(*) FROM pg_stat_replication WHERE application_name=$1 AND state='streaming'", old.Name)
				return err == nil && n == 1
			})
			r := <-done
			if r.code != 0 {
				t.Fatalf("switchover %d %s -> %s: exit %d\n%s", i, old.Name, cand.Name, r.code, r.out)
			}
			inOrder(t, "switchover progress", r.out,
				"requested: switchover from "+old.Name+" to "+cand.Name,
				"demoting: "+old.Name+" stopped taking writes",
				cand.Name+" caught up at ",
				cand.Name+" took the leader key (term ",
				"promoted: "+cand.Name+" accepts writes",
				old.Name+", the old primary, streams from "+cand.Name,
				"switchover done in ")
			want = append(want, leaderChange{"switchover", old.Name, cand.Name})
			rejoins = append(rejoins, rejoin)
			time.Sleep(300 * time.Millisecond)
			acks := w.Snapshot()
			var gap time.Duration
			for j := 1; j < len(acks); j++ {
				if acks[j].At.After(start) && acks[j-1].At.After(start.Add(-time.Second)) {
					gap = max(gap, acks[j].At.Sub(acks[j-1].At))
				}
			}
			pauses = append(pauses, gap)
		}
		w.Stop()
		l := c.WaitHealthy(30 * time.Second)
		acks := w.Snapshot()
		have := rowIDs(t, l)
		var lost []int64
		for _, a := range acks {
			if !have[a.ID] {
				lost = append(lost, a.ID)
			}
		}
		if len(lost) > 0 {
			t.Fatalf("%d of %d acknowledged writes lost: ids %v", len(lost), len(acks), lost)
		}
		sort.Slice(pauses, func(i, j int) bool { return pauses[i] < pauses[j] })
		sort.Slice(rejoins, func(i, j int) bool { return rejoins[i] < rejoins[j] })
		t.Logf("MEASURED 3 CLI switchovers under writes (ttl %v): write pause median %v max %v; old primary streaming from the new leader after the command started: median %v max %v; %d acknowledged writes, 0 lost",
			c.Profile.TTL, pauses[1].Round(time.Millisecond), pauses[2].Round(time.Millisecond), rejoins[1].Round(time.Millisecond), rejoins[2].Round(time.Millisecond), len(acks))
		if rejoins[1] > 2*time.Second {
			t.Errorf("the old primary streamed from the new leader %v (median) after the command started, want <= 2s", rejoins[1])
		}
	})

	t.Run("edit-config applies live", func(t *testing.T) {
		agentPIDs := map[string]int{}
		pgPIDs := map[string]int{}
		for _, m := range c.Members {
			agentPIDs[m.Name], pgPIDs[m.Name] = m.cmd.Process.Pid, m.PostmasterPID()
		}
		changes := func(m *Member, lw string) int {
			n := 0
			for _, l := range grepLines(m.Log(), `msg="dynamic config changed"`) {
				if strings.Contains(l, " loop_wait="+lw+" ") {
					n++
				}
			}
			return n
		}
		for _, lw := range []string{"1s", "500ms"} {
			logged := map[string]int{}
			for _, m := range c.Members {
				logged[m.Name] = changes(m, lw)
			}
			out, code := m3.cli("", "edit-config", "--set", "loop_wait="+lw, "--force")
			if code != 0 || !strings.Contains(out, "+loop_wait: "+lw) || !strings.Contains(out, "every agent runs with the new settings") {
				t.Fatalf("edit-config --set loop_wait=%s: exit %d\n%s", lw, code, out)
			}
			d, _ := time.ParseDuration(lw)
			for _, m := range c.Members {
				st, err := apiClient().StatusBody(context.Background(), m.APIURL())
				if err != nil || st.Config.LoopWait.D() != d {
					t.Fatalf("%s's API: loop_wait %v (%v), want %s", m.Name, st.Config.LoopWait, err, lw)
				}
				if changes(m, lw) <= logged[m.Name] {
					t.Fatalf("%s's log does not show the change to loop_wait=%s", m.Name, lw)
				}
			}
		}
		for _, m := range c.Members {
			if !m.Running() || m.cmd.Process.Pid != agentPIDs[m.Name] || m.PostmasterPID() != pgPIDs[m.Name] {
				t.Fatalf("%s restarted for a config change", m.Name)
			}
		}
		raw0, ver0 := dcsConfig(t, c)
		for _, tc := range []struct{ set, want string }{
			{"loop_wait=10ms", "config.loop_wait: 10ms is too short"},
			{"ttl=abc", "config.ttl: "},
			{"loop_wiat=1s", "config.loop_wiat: unknown key; did you mean loop_wait?"},
		} {
			out, code := m3.cli("", "edit-config", "--set", tc.set, "--force")
			if code != 2 || !strings.Contains(out, tc.want) || !strings.Contains(out, "nothing was written") {
				t.Fatalf("edit-config --set %s: exit %d, want 2 naming the key:\n%s", tc.set, code, out)
			}
			if raw, ver := dcsConfig(t, c); raw != raw0 || ver != ver0 {
				t.Fatalf("edit-config --set %s changed the config: %s", tc.set, raw)
			}
		}
		out, _ := m3.cli("", "show-config")
		if !strings.Contains(out, "loop_wait: 500ms\n") || !strings.Contains(out, "ttl: 4s\n") {
			t.Fatalf("show-config:\n%s", out)
		}
	})

	t.Run("paused: no promotion until resume", func(t *testing.T) {
		out, code := m3.cli("", "pause", "--wait")
		if code != 0 || !strings.Contains(out, "every member reports maintenance mode ON") {
			t.Fatalf("pause --wait: exit %d\n%s", code, out)
		}
		if out, _ := m3.cli("", "list"); !strings.Contains(out, "Maintenance mode: ON (paused)") {
			t.Fatalf("list while paused:\n%s", out)
		}
		old := c.Leader()
		other := m1
		if old == m1 {
			other = m2
		}
		out, code = m3.cli("", "switchover", "--force")
		if code != 1 || !strings.Contains(out, "the cluster is paused") {
			t.Fatalf("switchover while paused: exit %d\n%s", code, out)
		}
		// The API refuses it too (the candidate would not take the key).
		res, code, err := apiClient().Switchover(context.Background(), old.APIURL(), api.SwitchoverBody{Leader: old.Name, Candidate: other.Name}, false, false)
		if err != nil || code != 412 || !strings.Contains(res.Error, "paused") {
			t.Fatalf("POST /switchover while paused: %d %+v %v", code, res, err)
		}
		if cl := c.LoadCluster(); cl.Switchover != nil {
			t.Fatalf("a switchover was stored while paused: %+v", cl.Switchover.Value)
		}
		old.Crash()
		end := time.Now().Add(c.Profile.TTL + 3*time.Second)
		for time.Now().Before(end) {
			for _, m := range []*Member{other, m3} {
				if st := m.Status(); st != nil && st.Writable {
					t.Fatalf("%s was promoted while the cluster was paused", m.Name)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if l := c.Leader(); l != nil {
			t.Fatalf("%s holds the leader key while paused", l.Name)
		}
		out, code = m3.cli("", "resume", "--wait")
		if code != 0 || !strings.Contains(out, "every member reports maintenance mode off") {
			t.Fatalf("resume --wait: exit %d\n%s", code, out)
		}
		Eventually(t, c.Profile.TTL+10*time.Second, "a failover after resume", func() bool {
			l := c.Leader()
			return l == other && l.Status() != nil && l.Status().Writable
		})
		want = append(want, leaderChange{"failover", old.Name, other.Name})
		old.Start()
		c.WaitHealthy(60 * time.Second)
	})

	t.Run("manual failover of a lagging replica needs --force", func(t *testing.T) {
		old := c.WaitHealthy(30 * time.Second)
		cand := m1
		if old == m1 {
			cand = m2
		}
		if err := cand.Exec("SELECT pg_wal_replay_pause()"); err != nil {
			t.Fatal(err)
		}
		if err := old.Exec("INSERT INTO filler SELECT repeat('y', 1000) FROM generate_series(1, 4000)"); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 15*time.Second, cand.Name+"'s lag is visible", func() bool {
			return strings.Contains(fmt.Sprint(listMembers(t, m3)[cand.Name]["ineligible_reasons"]), "replay lag")
		})
		out, code := m3.cli("", "failover", "--candidate", cand.Name, "--yes")
		if code != 1 || !strings.Contains(out, old.Name+" leads the cluster: use steward switchover") {
			t.Fatalf("failover with a leader: exit %d\n%s", code, out)
		}
		old.Crash()
		Eventually(t, c.Profile.TTL+5*time.Second, "the old leader's key expires", func() bool {
			cl := c.LoadCluster()
			return cl != nil && cl.Leader == nil && cl.Members[old.Name].Name == ""
		})
		// Nobody is eligible: no automatic failover.
		time.Sleep(2 * time.Second)
		if l := c.Leader(); l != nil {
			t.Fatalf("%s took over although no replica is eligible", l.Name)
		}
		out, code = m3.cli("", "failover", "--candidate", cand.Name, "--yes")
		if code != 1 || !regexp.MustCompile(`failover refused, nothing was changed: candidate `+cand.Name+` is not eligible: .*replay lag .* exceeds maximum_lag_on_failover .*--force promotes it anyway`).MatchString(out) {
			t.Fatalf("failover to a lagging candidate: exit %d\n%s", code, out)
		}
		if l := c.Leader(); l != nil {
			t.Fatalf("a refused failover promoted %s", l.Name)
		}
		t.Logf("steward failover --candidate %s --yes (lagging, no leader):\n%s", cand.Name, out)
		out, code = m3.cli("", "failover", "--candidate", cand.Name, "--force")
		if code != 0 {
			t.Fatalf("failover --force: exit %d\n%s", code, out)
		}
		t.Logf("steward failover --candidate %s --force:\n%s", cand.Name, out)
		inOrder(t, "failover progress", out, "requested: promote "+cand.Name+" (manual failover, forced", cand.Name+" took the leader key", "promoted: "+cand.Name+" accepts writes", "failover done")
		want = append(want, leaderChange{"manual-failover", old.Name, cand.Name})
		old.Start()
		if l := c.WaitHealthy(60 * time.Second); l != cand {
			t.Fatalf("leader %s after the manual failover, want %s", l.Name, cand.Name)
		}
	})

	t.Run("restart and reinit", func(t *testing.T) {
		l := c.WaitHealthy(30 * time.Second)
		before := leader()
		pid := l.PostmasterPID()
		out, code := m3.cli("", "restart", l.Name, "--force")
		if code != 0 || !strings.Contains(out, "no failover: "+l.Name+" still leads") {
			t.Fatalf("restart of the leader: exit %d\n%s", code, out)
		}
		if p := l.PostmasterPID(); p == 0 || p == pid {
			t.Fatalf("the leader's postmaster was not restarted (pid %d -> %d)", pid, p)
		}
		unchanged("a restart of the leader", before)
		if err := l.Exec("INSERT INTO filler VALUES ('after restart')"); err != nil {
			t.Fatalf("the leader does not take writes after its restart: %v", err)
		}
		out, code = m3.cli("", "restart", "m3", "--pending", "--force")
		if code != 0 || !strings.Contains(out, "nothing to do") {
			t.Fatalf("restart --pending without a pending setting: exit %d\n%s", code, out)
		}

		out, code = m3.cli("", "reinit", l.Name, "--force")
		if code != 1 || !strings.Contains(out, "reinit refused: "+l.Name+" is the leader") {
			t.Fatalf("reinit of the leader: exit %d\n%s", code, out)
		}
		unchanged("a refused reinit", before)
		marker := filepath.Join(m3.DataDir, "steward-test-marker")
		if err := os.WriteFile(marker, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code = m1.cli("", "reinit", "m3", "--force")
		if code != 0 {
			t.Fatalf("reinit m3: exit %d\n%s", code, out)
		}
		inOrder(t, "reinit progress", out, "requested: reinit of m3 from "+l.Name, "m3: cloned again from "+l.Name, "m3 streams from "+l.Name+": reinit done")
		if _, err := os.Stat(marker); !os.IsNotExist(err) {
			t.Fatalf("m3's data directory was not wiped (marker: %v)", err)
		}
		unchanged("a reinit of a replica", before)
	})

	t.Run("history tells it all", func(t *testing.T) {
		out, code := m2.cli("", "history", "-o", "json")
		var h []dcs.HistoryRecord
		if code != 0 || json.Unmarshal([]byte(out), &h) != nil {
			t.Fatalf("history -o json: exit %d\n%s", code, out)
		}
		var got []leaderChange
		reinit := false
		for _, r := range h {
			switch r.Kind {
			case "reinit":
				reinit = reinit || r.Member == "m3"
			case "rewind", "fencing", "switchover-failed":
			default:
				got = append(got, leaderChange{r.Kind, r.OldLeader, r.NewLeader})
				if r.Time.IsZero() || r.Reason == "" || (r.Kind != "bootstrap" && r.Position.IsZero()) {
					t.Errorf("history record without time, reason or position: %+v", r)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || !reinit {
			t.Fatalf("history leader changes:\n got %v\nwant %v (and a reinit of m3: %v)", got, want, reinit)
		}
		out, _ = m2.cli("", "history")
		t.Logf("steward history:\n%s", out)
		for _, lc := range want[1:] {
			if !regexp.MustCompile(`(?m)^\d+\s+\S+ \S+ \S+\s+` + regexp.QuoteMeta(lc.kind) + `\s+` + lc.old + `\s+` + lc.new + `\s+\d+\s+\d+\s+\d+/[0-9A-F]+\s+\S`).MatchString(out) {
				t.Fatalf("history table lacks a readable row for %v:\n%s", lc, out)
			}
		}
	})
}

// terminalSession is a new user's session in a real terminal (tmux):
// steward list, steward switchover answering its prompt, steward history.
func terminalSession(t *testing.T, c *Cluster) {
	tm, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatalf("tmux is needed for the terminal session test (make deps installs it): %v", err)
	}
	dir, err := os.MkdirTemp("", "stw-tmux-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tm, append([]string{"-S", sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	shell := fmt.Sprintf("env -i PATH=%s:/usr/bin:/bin HOME=%s TERM=screen STEWARD_CONFIG=%s PS1='operator$ ' bash --norc --noprofile",
		filepath.Dir(binaryPath), dir, c.Members[0].Config)
	tmux("new-session", "-d", "-s", "op", "-x", "220", "-y", "50", shell)
	defer exec.Command(tm, "-S", sock, "kill-server").Run()
	screen := func() string { return tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "op") }
	// capture-pane drops trailing spaces: an idle prompt is "operator$".
	prompts := func() int { return len(regexp.MustCompile(`(?m)^operator\$( |$)`).FindAllString(screen(), -1)) }
	Eventually(t, 10*time.Second, "the shell prompt", func() bool { return prompts() == 1 })
	// run types a command and waits for the shell prompt to come back;
	// it returns what the command printed.
	run := func(cmdline string, answer func(screen string) (string, bool)) string {
		t.Helper()
		n := prompts()
		before := screen()
		tmux("send-keys", "-t", "op", "-l", cmdline)
		tmux("send-keys", "-t", "op", "Enter")
		answered := answer == nil
		Eventually(t, 90*time.Second, "`"+cmdline+"` finishes", func() bool {
			s := screen()
			if !answered {
				if keys, ok := answer(s); ok {
					tmux("send-keys", "-t", "op", "-l", keys)
					tmux("send-keys", "-t", "op", "Enter")
					answered = true
				}
			}
			return prompts() > n
		})
		s := screen()
		out := strings.TrimPrefix(s, strings.TrimRight(before, "\n"))
		out = strings.TrimSpace(out)
		return strings.TrimSpace(strings.TrimSuffix(out, "operator$"))
	}
	status := func() string { return run("echo $?", nil) }

	// The rows below are those of an idle cluster. Bootstrap returns once
	// the replicas stream, which can be before a fresh clone replayed to
	// the leader's position (m3 showed "16.0 MB" of lag here once, in one
	// of 13 full-suite runs): wait for lag 0 first.
	Eventually(t, 20*time.Second, "every replica streaming at lag 0", func() bool {
		cl := c.LoadCluster()
		if cl == nil || cl.Leader == nil {
			return false
		}
		for _, m := range c.Members {
			mm, ok := cl.Members[m.Name]
			if m.Name != cl.Leader.Name && (!ok || mm.State != agent.StateStreaming || mm.LagBytes != 0) {
				return false
			}
		}
		return true
	})
	out := run("steward list", nil)
	t.Logf("terminal: steward list\n%s", out)
	if s := status(); !strings.HasSuffix(s, "0") {
		t.Fatalf("steward list exited %s", s)
	}
	inOrder(t, "steward list in a terminal", out,
		"Cluster: e2e   Leader: m1 (term ", "System ID: ",
		"Maintenance mode: off",
		"MEMBER  HOST", "ROLE     STATE      TL  LAG  SYNC   PENDING RESTART  FAILOVER", "TAGS")
	for _, re := range []string{
		`(?m)^m1\s+127\.0\.0\.1:\d+\s+leader\s+running\s+1\s+-\s+-\s+-\s*$`,
		`(?m)^m2\s+127\.0\.0\.1:\d+\s+replica\s+streaming\s+1\s+0 B\s+async\s+-\s+eligible\s*$`,
		`(?m)^m3\s+127\.0\.0\.1:\d+\s+replica\s+streaming\s+1\s+0 B\s+async\s+-\s+no: tagged nofailover\s+nofailover=true$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("steward list in a terminal: no row matching %s:\n%s", re, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 120 || strings.ContainsRune(l, '\x1b') {
			t.Fatalf("steward list of a healthy cluster has a line wider than 120 columns or escape codes: %q", l)
		}
	}

	var prompt string
	out = run("steward switchover", func(s string) (string, bool) {
		if strings.Contains(s, "[y/N]") {
			prompt = s
			return "y", true
		}
		return "", false
	})
	t.Logf("terminal: steward switchover\n%s", out)
	if s := status(); !strings.HasSuffix(s, "0") {
		t.Fatalf("steward switchover exited %s:\n%s", s, out)
	}
	inOrder(t, "switchover prompt", prompt,
		"Cluster e2e, leader m1 (term ",
		"MEMBER  ROLE     STATE      TL  LAG  CANDIDATE",
		"m1      leader   running    1   -    current leader, at ",
		"m2      replica  streaming  1   0 B  eligible <- chosen",
		"m3      replica  streaming  1   0 B  no: tagged nofailover",
		"Switch over from m1 to m2 now? [y/N]")
	inOrder(t, "switchover in a terminal", out,
		"Switch over from m1 to m2 now? [y/N] y",
		"requested: switchover from m1 to m2",
		"demoting: m1 stopped taking writes",
		"m2 caught up at ",
		"m2 took the leader key",
		"promoted: m2 accepts writes (timeline 2)",
		"m1, the old primary, streams from m2",
		"switchover done in ")

	out = run("steward history", nil)
	t.Logf("terminal: steward history\n%s", out)
	inOrder(t, "steward history in a terminal", out,
		"#  TIME", "EVENT", "OLD LEADER", "NEW LEADER", "TERM", "TL", "POSITION", "REASON",
		"bootstrap", "cluster bootstrapped by m1",
		"switchover", "planned switchover: m1 stopped cleanly at")
	if !regexp.MustCompile(`(?m)^2\s+\S+ \S+ \S+\s+switchover\s+m1\s+m2\s+\d+\s+2\s+\d+/[0-9A-F]+\s+switchover from m1`).MatchString(out) {
		t.Fatalf("steward history in a terminal: no readable row for the switchover m1 -> m2:\n%s", out)
	}
}
