package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/dcs"
)

// Stats summarises repeated measurements.
type Stats struct {
	Name string
	Vals []time.Duration
}

func (s Stats) pct(p float64) time.Duration {
	v := append([]time.Duration(nil), s.Vals...)
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	if len(v) == 0 {
		return 0
	}
	i := int(p*float64(len(v)-1) + 0.5)
	return v[i]
}

func (s Stats) String() string {
	if len(s.Vals) == 0 {
		return fmt.Sprintf("%-52s (no samples)", s.Name)
	}
	r := func(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
	return fmt.Sprintf("%-52s n=%-3d min %-7s median %-7s p95 %-7s max %s", s.Name, len(s.Vals), r(s.pct(0)), r(s.pct(0.5)), r(s.pct(0.95)), r(s.pct(1)))
}

func benchRuns() int {
	if n, err := strconv.Atoi(os.Getenv("STEWARD_BENCH_RUNS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// hapIDWriter inserts an increasing id every interval through HAProxy's
// write port, one connection (reconnecting after any error), and records
// every acknowledged id with the member that acknowledged it.
type hapIDWriter struct {
	mu   sync.Mutex
	acks []Ack
	quit chan struct{}
	done chan struct{}
}

func startHAProxyIDWriter(h *haproxy, every time.Duration) *hapIDWriter {
	w := &hapIDWriter{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=steward-test dbname=postgres connect_timeout=1 sslmode=disable", h.write)
		tk := time.NewTicker(every)
		defer tk.Stop()
		var id int64
		for {
			select {
			case <-w.quit:
				return
			case <-tk.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			if conn == nil {
				c, err := pgx.Connect(ctx, dsn)
				if err != nil {
					cancel()
					continue
				}
				conn = c
			}
			id++
			var port int
			err := conn.QueryRow(ctx, "INSERT INTO steward_test(id, member) VALUES ($1, 'haproxy') RETURNING inet_server_port()", id).Scan(&port)
			cancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			m := h.memberByPort[port]
			name := "?"
			if m != nil {
				name = m.Name
			}
			w.mu.Lock()
			w.acks = append(w.acks, Ack{ID: id, Member: name, At: time.Now()})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *hapIDWriter) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}

func (w *hapIDWriter) snapshot() []Ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Ack(nil), w.acks...)
}

// lostOn counts the acknowledged ids (of those acked by member `by`, or all
// when by is "") that are missing on member m.
func lostOn(t testing.TB, m *Member, acks []Ack, by string) int {
	t.Helper()
	have := map[int64]bool{}
	conn, err := pgx.Connect(context.Background(), m.DSN())
	if err != nil {
		t.Fatalf("connecting to %s: %v", m.Name, err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), "SELECT id FROM steward_test")
	if err != nil {
		t.Fatalf("reading steward_test on %s: %v", m.Name, err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err == nil {
			have[id] = true
		}
	}
	rows.Close()
	lost := 0
	for _, a := range acks {
		if (by == "" || a.Member == by) && !have[a.ID] {
			lost++
		}
	}
	return lost
}

// benchCluster starts a 3-member cluster (m1 first, so it leads) with
// HAProxy in front of it, built from docs/examples/haproxy.cfg.
func benchCluster(b *testing.B, p Profile) (*Cluster, *haproxy) {
	c := NewCluster(b, 3, p)
	c.LogLevel = "info"
	c.Members[0].Start()
	Eventually(b, 60*time.Second, "m1 leads", func() bool { l := c.Leader(); return l != nil && l.Name == "m1" })
	for _, m := range c.Members[1:] {
		m.Start()
	}
	leader := c.WaitHealthy(90 * time.Second)
	if err := leader.Exec("CREATE TABLE IF NOT EXISTS steward_test(id bigint PRIMARY KEY, member text)"); err != nil {
		b.Fatal(err)
	}
	h := haproxyConfigFromExample(b, c)
	startHAProxy(b, h)
	Eventually(b, 10*time.Second, "HAProxy routes writes to the leader", func() bool {
		up := h.up("postgres-write")
		return len(up) == 1 && up[0] == leader.Name
	})
	return c, h
}

var benchProfiles = []struct {
	name string
	p    Profile
}{
	{"ttl10s-loop1s", Profile{TTL: 10 * time.Second, LoopWait: time.Second, RetryTimeout: 3 * time.Second, MaxLag: "1MB", PrimaryUnhealthyTimeout: 30 * time.Second, PrimaryStartTimeout: 30 * time.Second}},
	{"ttl3s-loop500ms", Profile{TTL: 3 * time.Second, LoopWait: 500 * time.Millisecond, RetryTimeout: time.Second, MaxLag: "1MB", PrimaryUnhealthyTimeout: 30 * time.Second, PrimaryStartTimeout: 30 * time.Second}},
}

// BenchmarkFailover: kill -9 of the primary's agent and PostgreSQL (a host
// crash), N times (STEWARD_BENCH_RUNS, default 10), at ttl 10 s and at the
// fast profile. A writer inserts an increasing id every 5 ms through
// HAProxy's write port (docs/examples/haproxy.cfg: checks every 500 ms).
// Measured: write unavailability (kill -> first write acknowledged through
// HAProxy by the new primary), and where the time goes: kill -> old key
// gone (detection: the lease outliving the dead agent), key gone -> new key
// acquired (election), acquired -> promoted (fencing check and pg_promote),
// promoted -> HAProxy routes to it (load balancer); acknowledged writes
// lost; the old primary's rejoin. Run by `make bench`.
func BenchmarkFailover(b *testing.B) {
	for _, syncMode := range []string{"off", "on"} {
		for _, pr := range benchProfiles {
			name := pr.name + "-sync-" + syncMode
			b.Run(name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					runFailoverBench(b, name, pr.p, syncMode, benchRuns())
				}
			})
		}
	}
}

func runFailoverBench(b *testing.B, name string, p Profile, syncMode string, runs int) {
	c, h := benchCluster(b, p)
	if syncMode != "off" {
		setDynamic(b, c, "synchronous_mode", syncMode)
	}
	// In synchronous mode every failover must promote a member the sync key
	// counted, and the cluster is measured only once the leader counts a
	// standby again (the rejoined member may be the one it picks).
	waitSync := func(leader string) {
		if syncMode == "off" {
			return
		}
		waitSyncKey(b, c, 30*time.Second, "the leader counts a synchronous standby", func(s dcs.SyncState) bool {
			return s.Mode == syncMode && s.Leader == leader && s.Quorum > 0 && len(s.Members) > 0
		})
	}
	unavail := Stats{Name: "write unavailability (kill -> first write via HAProxy)"}
	expiry := Stats{Name: "  detection: kill -> old leader key gone"}
	elect := Stats{Name: "  election: key gone -> new key acquired"}
	promote := Stats{Name: "  promotion: acquired -> promoted"}
	lb := Stats{Name: "  load balancer: promoted -> first write via HAProxy"}
	rejoin := Stats{Name: "old primary restarted -> streaming again"}
	var lostTotal, acked int
	for run := 0; run < runs; run++ {
		old := c.WaitHealthy(60 * time.Second)
		waitSync(old.Name)
		var syncSet []string
		if s := syncState(c); s != nil {
			syncSet = s.Members
		}
		Eventually(b, 10*time.Second, "HAProxy routes writes to "+old.Name, func() bool {
			up := h.up("postgres-write")
			return len(up) == 1 && up[0] == old.Name
		})
		w := startHAProxyIDWriter(h, 5*time.Millisecond)
		Eventually(b, 10*time.Second, "writes flow", func() bool { return len(w.snapshot()) > 20 })
		time.Sleep(time.Duration(run%5) * 200 * time.Millisecond) // vary the phase against the renewals
		keyGone := make(chan time.Time, 1)
		wctx, cancel := context.WithCancel(context.Background())
		events := c.Store().WatchLeader(wctx)
		go func() {
			for ev := range events {
				if ev.Leader == nil && !ev.Resync {
					select {
					case keyGone <- time.Now():
					default:
					}
					return
				}
			}
		}()
		killedAt := time.Now()
		old.Crash()
		var first Ack
		Eventually(b, p.TTL+20*time.Second, "a new primary acknowledges a write through HAProxy", func() bool {
			for _, a := range w.snapshot() {
				if a.At.After(killedAt) && a.Member != old.Name {
					first = a
					return true
				}
			}
			return false
		})
		cancel()
		time.Sleep(50 * time.Millisecond)
		w.stop()
		acks := w.snapshot()
		acked += len(acks)
		unavail.Vals = append(unavail.Vals, first.At.Sub(killedAt))
		newLeader := c.Member(first.Member)
		if syncMode != "off" && !slices.Contains(syncSet, newLeader.Name) {
			b.Fatalf("synchronous_mode %s: %s was promoted, but the sync key before the kill counted only %v", syncMode, newLeader.Name, syncSet)
		}
		acquired := logTimeAfter(newLeader, `msg="acquired the leader key"`, killedAt)
		promoted := logTimeAfter(newLeader, `msg="role change: promoted"`, killedAt)
		select {
		case g := <-keyGone:
			expiry.Vals = append(expiry.Vals, g.Sub(killedAt))
			if !acquired.IsZero() {
				elect.Vals = append(elect.Vals, acquired.Sub(g))
			}
		default:
		}
		if !acquired.IsZero() && !promoted.IsZero() {
			promote.Vals = append(promote.Vals, promoted.Sub(acquired))
			lb.Vals = append(lb.Vals, first.At.Sub(promoted))
		}
		// Acknowledged writes lost: acknowledged (by anyone) and absent on
		// the new primary (async replication: bounded by the lag allowed).
		lostTotal += lostOn(b, newLeader, acks, "")
		restart := time.Now()
		old.Start()
		Eventually(b, 60*time.Second, "old primary streams", func() bool {
			n, err := newLeader.QueryInt("SELECT count(*) FROM pg_stat_replication WHERE application_name=$1 AND state='streaming'", old.Name)
			return err == nil && n == 1
		})
		rejoin.Vals = append(rejoin.Vals, time.Since(restart))
		if err := newLeader.Exec("TRUNCATE steward_test"); err != nil {
			b.Fatal(err)
		}
	}
	target := p.TTL - p.LoopWait/2 + time.Second
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nMEASURED failover, profile %s (ttl %v, loop_wait %v, retry_timeout %v, synchronous_mode %s), %d runs, writer every 5ms through HAProxy (checks every 500ms):\n", name, p.TTL, p.LoopWait, p.RetryTimeout, syncMode, runs)
	for _, s := range []Stats{unavail, expiry, elect, promote, lb, rejoin} {
		fmt.Fprintf(&sb, "  %s\n", s)
	}
	fmt.Fprintf(&sb, "  target: median write unavailability <= ttl - loop_wait/2 + 1s = %.2fs; acknowledged writes lost (synchronous_mode %s): %d of %d acknowledged, in %d failovers\n",
		target.Seconds(), syncMode, lostTotal, acked, runs)
	fmt.Print(sb.String())
	if syncMode != "off" && lostTotal > 0 {
		b.Fatalf("synchronous_mode %s lost %d acknowledged writes", syncMode, lostTotal)
	}
	b.ReportMetric(unavail.pct(0.5).Seconds(), "median-failover-s")
	b.ReportMetric(rejoin.pct(0.5).Seconds(), "median-rejoin-s")
}

// BenchmarkSwitchover: N planned switchovers (STEWARD_BENCH_RUNS, default
// 10) back and forth under a writer inserting every 5 ms through HAProxy's
// write port (checks every 500 ms): the write pause (last write acknowledged
// by the old primary -> first by the new one, as the application sees it
// through HAProxy), the switchover's own duration (request -> answer), and
// acknowledged writes lost (must be 0). Run by `make bench`.
func BenchmarkSwitchover(b *testing.B) {
	p := Profile{TTL: 10 * time.Second, LoopWait: time.Second, RetryTimeout: 3 * time.Second, MaxLag: "1MB", PrimaryUnhealthyTimeout: 30 * time.Second, PrimaryStartTimeout: 30 * time.Second}
	for i := 0; i < b.N; i++ {
		c, h := benchCluster(b, p)
		pause := Stats{Name: "write pause via HAProxy (last ack old -> first ack new)"}
		took := Stats{Name: "switchover request -> answered (promoted)"}
		lostTotal, acked := 0, 0
		runs := benchRuns()
		for run := 0; run < runs; run++ {
			old := c.WaitHealthy(60 * time.Second)
			Eventually(b, 10*time.Second, "HAProxy routes writes to "+old.Name, func() bool {
				up := h.up("postgres-write")
				return len(up) == 1 && up[0] == old.Name
			})
			cand := c.Members[(run+1)%len(c.Members)]
			if cand == old {
				cand = c.Members[(run+2)%len(c.Members)]
			}
			w := startHAProxyIDWriter(h, 5*time.Millisecond)
			Eventually(b, 10*time.Second, "writes flow", func() bool { return len(w.snapshot()) > 20 })
			req := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			res, code, err := apiClient().Switchover(ctx, old.APIURL(), api.SwitchoverBody{Leader: old.Name, Candidate: cand.Name}, false, true)
			cancel()
			if err != nil || code != 200 {
				b.Fatalf("switchover %s -> %s: %d %+v %v", old.Name, cand.Name, code, res, err)
			}
			took.Vals = append(took.Vals, time.Since(req))
			Eventually(b, 10*time.Second, "writes acknowledged by "+cand.Name, func() bool {
				for _, a := range w.snapshot() {
					if a.Member == cand.Name {
						return true
					}
				}
				return false
			})
			time.Sleep(100 * time.Millisecond)
			w.stop()
			acks := w.snapshot()
			acked += len(acks)
			var lastOld, firstNew time.Time
			for _, a := range acks {
				if a.Member == old.Name {
					lastOld = a.At
				}
				if a.Member == cand.Name && firstNew.IsZero() {
					firstNew = a.At
				}
			}
			pause.Vals = append(pause.Vals, firstNew.Sub(lastOld))
			lostTotal += lostOn(b, cand, acks, "")
			if err := cand.Exec("TRUNCATE steward_test"); err != nil {
				b.Fatal(err)
			}
		}
		fmt.Printf("\nMEASURED planned switchover (ttl %v, loop_wait %v), %d runs, writer every 5ms through HAProxy (checks every 500ms):\n  %s\n  %s\n  acknowledged writes lost: %d of %d (target 0); target: median write pause <= 0.6s\n",
			p.TTL, p.LoopWait, runs, pause, took, lostTotal, acked)
		if lostTotal > 0 {
			b.Errorf("%d acknowledged writes lost in planned switchovers", lostTotal)
		}
		b.ReportMetric(pause.pct(0.5).Seconds(), "median-pause-s")
	}
}

// logTimeAfter returns the time of the first log line of m containing msg
// at or after `after` (zero when there is none).
func logTimeAfter(m *Member, msg string, after time.Time) time.Time {
	for _, line := range grepLines(m.Log(), msg) {
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				if ts, err := time.Parse(time.RFC3339Nano, v); err == nil && !ts.Before(after) {
					return ts
				}
			}
		}
	}
	return time.Time{}
}
