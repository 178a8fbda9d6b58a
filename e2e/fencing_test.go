package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// perMemberWriters writes to every member independently (each its own
// connection, every 10 ms) and records every acknowledged write: the way to
// see two primaries acknowledging at once.
type perMemberWriters struct {
	mu   sync.Mutex
	acks map[string][]time.Time
	stop chan struct{}
	wg   sync.WaitGroup
}

func startPerMemberWriters(members []*Member) *perMemberWriters {
	w := &perMemberWriters{acks: map[string][]time.Time{}, stop: make(chan struct{})}
	for _, m := range members {
		w.wg.Add(1)
		go func(m *Member) {
			defer w.wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			var id int64
			for {
				select {
				case <-w.stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				if conn == nil || conn.IsClosed() {
					c, err := pgx.Connect(ctx, m.DSN())
					if err != nil {
						cancel()
						continue
					}
					conn = c
				}
				id++
				_, err := conn.Exec(ctx, "INSERT INTO fence_test(member, n) VALUES ($1, $2)", m.Name, id)
				cancel()
				if err != nil {
					conn.Close(context.Background())
					conn = nil
					continue
				}
				w.mu.Lock()
				w.acks[m.Name] = append(w.acks[m.Name], time.Now())
				w.mu.Unlock()
			}
		}(m)
	}
	return w
}

func (w *perMemberWriters) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

func (w *perMemberWriters) first(member string, after time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.acks[member] {
		if t.After(after) {
			return t
		}
	}
	return time.Time{}
}

func (w *perMemberWriters) last(member string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.acks[member]
	if len(a) == 0 {
		return time.Time{}
	}
	return a[len(a)-1]
}

// fenceHook writes a hook script that kills the postmaster of the target
// member (found through its pid file), or fails while <dir>/deny-fence
// exists.
func fenceHook(t *testing.T, c *Cluster) string {
	p := filepath.Join(c.dir, "fence-kill.sh")
	script := `#!/bin/sh
# Test STONITH hook: $1 = members' directory, $2 = target member.
if [ -e "$1/deny-fence" ]; then echo "fencing denied by the test" >&2; exit 1; fi
pid=$(head -n 1 "$1/$2/postmaster.pid" 2>/dev/null) || { echo "no postmaster for $2: nothing to fence"; exit 0; }
kill -9 "$pid" 2>/dev/null || true
echo "killed postmaster $pid of $2"
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func fencingConfig(mode, hook, dir string) func(m *Member) string {
	return func(m *Member) string {
		if mode == "off" {
			return "fencing: {mode: off}\n"
		}
		return fmt.Sprintf("fencing:\n  mode: %s\n  hooks:\n    - name: kill-postmaster\n      command: [%s, %s, \"{target_name}\"]\n      timeout: 5s\n", mode, hook, dir)
	}
}

// freezeScenario: the primary's agent is SIGSTOPped for 3 × ttl while its
// PostgreSQL keeps running; writers write directly to every member. It
// returns the old and new primaries and the writers' record.
func freezeScenario(t *testing.T, mode string) (*Cluster, *Member, *Member, *perMemberWriters, time.Time) {
	var c *Cluster
	c, old := bootstrap(t, Fast, func(cl *Cluster) {
		c = cl
		cl.Extra = fencingConfig(mode, fenceHook(t, cl), cl.dir)
	})
	if err := old.Exec("CREATE TABLE fence_test(member text, n bigint)"); err != nil {
		t.Fatal(err)
	}
	w := startPerMemberWriters(c.Members)
	Eventually(t, 10*time.Second, "writes acknowledged by the primary", func() bool { return !w.last(old.Name).IsZero() })
	frozenAt := time.Now()
	old.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { old.Signal(syscall.SIGCONT) })
	var newLeader *Member
	Eventually(t, 3*c.Profile.TTL, "a new primary acknowledges a write", func() bool {
		for _, m := range c.Members {
			if m != old && !w.first(m.Name, frozenAt).IsZero() {
				newLeader = m
				return true
			}
		}
		return false
	})
	// Keep the old agent frozen for 3 × ttl in all, writers running.
	if rest := 3*c.Profile.TTL - time.Since(frozenAt); rest > 0 {
		time.Sleep(rest)
	}
	old.Signal(syscall.SIGCONT)
	time.Sleep(2 * time.Second) // the thawed agent sees it lost the key and demotes
	w.Stop()
	return c, old, newLeader, w, frozenAt
}

// fencing.mode required with a hook that kills the old postmaster: the new
// primary is promoted only after the hook succeeded, and no write is
// acknowledged by the old primary after the new one acknowledged its first.
func TestFencingRequiredClosesTheHole(t *testing.T) {
	t.Parallel()
	c, old, newLeader, w, frozenAt := freezeScenario(t, "required")
	firstNew := w.first(newLeader.Name, frozenAt)
	lastOld := w.last(old.Name)
	t.Logf("MEASURED fencing.mode required, primary's agent SIGSTOPped: last write acknowledged by the old primary %v after the freeze; first by the new primary %v after it",
		lastOld.Sub(frozenAt).Round(time.Millisecond), firstNew.Sub(frozenAt).Round(time.Millisecond))
	if lastOld.After(firstNew) {
		t.Fatalf("split brain: the old primary acknowledged a write %v after the new primary's first", lastOld.Sub(firstNew))
	}
	var fenced, failover bool
	for _, h := range history(t, c) {
		if h.Kind == "fencing" && h.Member == old.Name && strings.Contains(h.Reason, "confirmed by a hook") {
			fenced = true
		}
		if h.Kind == "failover" && h.NewLeader == newLeader.Name && fenced && strings.Contains(h.Reason, "fenced") {
			failover = true
		}
	}
	if !fenced || !failover {
		t.Fatalf("history does not show the fencing (confirmed) before the failover: %+v", history(t, c))
	}
}

// The same with fencing.mode off shows the hole: both primaries acknowledge
// writes for a while. The measured window goes in the docs.
func TestFencingOffShowsTheHole(t *testing.T) {
	t.Parallel()
	_, old, newLeader, w, frozenAt := freezeScenario(t, "off")
	firstNew := w.first(newLeader.Name, frozenAt)
	lastOld := w.last(old.Name)
	window := lastOld.Sub(firstNew)
	t.Logf("MEASURED fencing.mode off, primary's agent SIGSTOPped for 3 x ttl: both primaries acknowledged writes for %v (old primary's last ack %v after the new one's first)",
		window.Round(time.Millisecond), window.Round(time.Millisecond))
	if window <= 0 {
		t.Fatalf("with fencing off the frozen primary stopped taking writes by itself (last ack %v before the new primary's first): the scenario did not reproduce the hole", -window)
	}
}

// fencing.mode required with a failing hook: no promotion, the reason shows
// in list and the API; once the hook succeeds, promotion follows.
func TestFencingRequiredFailingHookBlocksPromotion(t *testing.T) {
	t.Parallel()
	var dir string
	c, old := bootstrap(t, Fast, func(cl *Cluster) {
		dir = cl.dir
		cl.Extra = fencingConfig("required", fenceHook(t, cl), cl.dir)
	})
	if err := os.WriteFile(filepath.Join(dir, "deny-fence"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old.Crash()
	var holder *Member
	Eventually(t, c.Profile.TTL+10*time.Second, "a replica takes the key and waits for fencing", func() bool {
		holder = c.Leader()
		return holder != nil && holder != old && strings.Contains(fmt.Sprint(listMembers(t, holder)[holder.Name]), "fencing")
	})
	// It stays so: nobody is writable.
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range c.Members {
			if st := m.Status(); st != nil && st.Writable {
				t.Fatalf("%s promoted although fencing failed (fencing.mode required)", m.Name)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	lm := listMembers(t, holder)[holder.Name]
	if r := fmt.Sprint(lm["reason"]); lm["state"] != "fencing" || !(strings.Contains(r, "fencing.mode is required") || strings.Contains(r, "fencing.mode required")) ||
		!strings.Contains(r, "hook kill-postmaster failure") {
		t.Fatalf("list does not say why there is no primary: %v", lm)
	}
	out, _ := holder.Steward("list")
	t.Logf("steward list while fencing fails:\n%s", out)
	if code := holder.HTTPCode("/primary"); code != 503 {
		t.Fatalf("/primary on the key holder = %d while fencing fails, want 503", code)
	}
	// The hook starts succeeding: promotion follows.
	if err := os.Remove(filepath.Join(dir, "deny-fence")); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "promotion once fencing succeeds", func() bool {
		st := holder.Status()
		return st != nil && st.Writable
	})
}

// The primary's loop is stuck on a database call that never returns and
// etcd is unreachable: the lease timer still stops writes before the key
// expires at etcd.
func TestStuckLoopAndEtcdUnreachable(t *testing.T) {
	t.Parallel()
	c, old := bootstrap(t, Fast, nil)
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := c.Store().WatchLeader(wctx)
	w := StartWriter(t, []*Member{old}, 10*time.Millisecond)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Snapshot()) > 10 })
	old.Fault("hang-observe", true)
	t.Cleanup(func() { old.Fault("hang-observe", false) })
	time.Sleep(2 * c.Profile.LoopWait) // the loop is now stuck
	cutAt := time.Now()
	old.Proxy.Cut()
	var gone time.Time
	for ev := range events {
		if ev.Leader == nil && !ev.Resync {
			gone = time.Now()
			break
		}
		if time.Since(cutAt) > c.Profile.TTL+5*time.Second {
			t.Fatal("the leader key did not expire")
		}
	}
	time.Sleep(300 * time.Millisecond)
	w.Stop()
	acks := w.Snapshot()
	lastAck := acks[len(acks)-1].At
	t.Logf("MEASURED stuck loop + etcd unreachable (ttl %v): last write acknowledged %v after the cut, key expired %v after it: margin %v",
		c.Profile.TTL, lastAck.Sub(cutAt).Round(time.Millisecond), gone.Sub(cutAt).Round(time.Millisecond), gone.Sub(lastAck).Round(time.Millisecond))
	if !lastAck.Before(gone) {
		t.Fatalf("the stuck primary acknowledged a write %v after its key expired", lastAck.Sub(gone))
	}
	if !strings.Contains(old.Log(), "fencing the database now") {
		t.Fatal("the agent log does not show the deadline fence")
	}
}
