package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stewardha/steward/backends/postgres/pgtest"
)

// BenchmarkSyncModes: write latency and throughput of the same pgbench run
// (TPC-B-like, 4 clients, STEWARD_PGBENCH_SECONDS each, default 20) against
// the primary of one 3-member cluster in synchronous_mode off, on (FIRST 1)
// and quorum (ANY 1 of 2). fsync is turned on (the test profile runs with it
// off), so a commit waits for the primary's disk and, when synchronous, a
// standby's. All members share one host: the standby round trip is a
// loopback one. Run by `make bench`.
func BenchmarkSyncModes(b *testing.B) {
	secs := 20
	if n, err := strconv.Atoi(os.Getenv("STEWARD_PGBENCH_SECONDS")); err == nil && n > 0 {
		secs = n
	}
	bin := pgtest.RequireBinaries(b)
	for i := 0; i < b.N; i++ {
		c := NewCluster(b, 3, Fast)
		c.Members[0].Start()
		Eventually(b, 60*time.Second, "m1 leads", func() bool { l := c.Leader(); return l != nil && l.Name == "m1" })
		for _, m := range c.Members[1:] {
			m.Start()
		}
		leader := c.WaitHealthy(90 * time.Second)
		for _, m := range c.Members {
			if err := m.Exec("ALTER SYSTEM SET fsync = on"); err != nil {
				b.Fatal(err)
			}
			if err := m.Exec("SELECT pg_reload_conf()"); err != nil {
				b.Fatal(err)
			}
		}
		pgbench := func(args ...string) string {
			cmd := exec.Command(filepath.Join(bin, "pgbench"), append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(leader.PGPort), "-U", "postgres"}, append(args, "postgres")...)...)
			cmd.Env = append(os.Environ(), "PGPASSWORD=steward-test")
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("pgbench %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		pgbench("-i", "-q", "-s", "5")
		var sb strings.Builder
		fmt.Fprintf(&sb, "\nMEASURED pgbench TPC-B-like, 4 clients, 2 threads, %d s per mode, scale 5, fsync on, 3 members on one host (loopback):\n", secs)
		fmt.Fprintf(&sb, "  %-30s %10s %14s %12s\n", "synchronous_mode", "tps", "latency avg", "latency sd")
		for _, mode := range []struct{ name, mode string }{{"off", "off"}, {"on (FIRST 1)", "on"}, {"quorum (ANY 1 of 2)", "quorum"}} {
			setDynamic(b, c, "synchronous_node_count", 1)
			setDynamic(b, c, "synchronous_mode", mode.mode)
			Eventually(b, 30*time.Second, "synchronous_mode "+mode.mode+" in effect", func() bool {
				s := syncState(c)
				if mode.mode == "off" {
					return s == nil || !s.Active()
				}
				return s != nil && s.Mode == mode.mode && s.Quorum == 1 && (mode.mode != "quorum" || len(s.Members) == 2)
			})
			Eventually(b, 10*time.Second, "the primary's synchronous_standby_names matches", func() bool {
				n, err := leader.QueryInt("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')")
				return err == nil && (mode.mode == "off") == (n == 0)
			})
			out := pgbench("-c", "4", "-j", "2", "-T", strconv.Itoa(secs), "-P", strconv.Itoa(secs))
			tps, lat, sd := pgbenchFigure(out, `tps = ([0-9.]+)`), pgbenchFigure(out, `latency average = ([0-9.]+) ms`), pgbenchFigure(out, `latency stddev = ([0-9.]+) ms`)
			fmt.Fprintf(&sb, "  %-30s %10.0f %11.2f ms %9.2f ms\n", mode.name, tps, lat, sd)
			b.ReportMetric(tps, "tps-"+mode.mode)
			b.ReportMetric(lat, "ms-"+mode.mode)
		}
		fmt.Print(sb.String())
	}
}

func pgbenchFigure(out, re string) float64 {
	m := regexp.MustCompile(re).FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	return f
}

// BenchmarkMySQLSyncModes: single-row INSERT commits (4 clients, one
// connection each, STEWARD_PGBENCH_SECONDS per mode, default 20) against
// the primary of one 3-member MariaDB cluster in synchronous_mode off, on
// (one acknowledger) and quorum (ANY 1 of 2), with sync_binlog=1 and
// innodb_flush_log_at_trx_commit=1 (the members' settings). All members
// share one host: the acknowledgement round trip is a loopback one. Run by
// `make bench`.
func BenchmarkMySQLSyncModes(b *testing.B) {
	secs := 20
	if n, err := strconv.Atoi(os.Getenv("STEWARD_PGBENCH_SECONDS")); err == nil && n > 0 {
		secs = n
	}
	for i := 0; i < b.N; i++ {
		c, leader := myBootstrap(b, Fast, nil)
		if err := leader.Exec("CREATE TABLE IF NOT EXISTS app.bench (id BIGINT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64)) ENGINE=InnoDB"); err != nil {
			b.Fatal(err)
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "\nMEASURED MariaDB single-row INSERT commits, 4 clients, %d s per mode, sync_binlog=1, 3 members on one host (loopback):\n", secs)
		fmt.Fprintf(&sb, "  %-30s %10s %12s %12s %12s\n", "synchronous_mode", "commits/s", "p50", "p99", "max")
		for _, mode := range []struct{ name, mode string }{{"off", "off"}, {"on (1 acknowledger)", "on"}, {"quorum (ANY 1 of 2)", "quorum"}} {
			c.SetDynamic("synchronous_mode", mode.mode)
			Eventually(b, 30*time.Second, "synchronous_mode "+mode.mode+" in effect", func() bool {
				cl := c.LoadCluster()
				if cl == nil {
					return false
				}
				s := cl.Sync
				en, _ := mySemiSyncMaster(b, leader)
				if mode.mode == "off" {
					return (s == nil || !s.Value.Active()) && !en
				}
				return s != nil && s.Value.Mode == mode.mode && s.Value.Quorum == 1 && (mode.mode != "quorum" || len(s.Value.Members) == 2) && en
			})
			lat, n := myInsertLoad(b, leader, 4, time.Duration(secs)*time.Second)
			fmt.Fprintf(&sb, "  %-30s %10.0f %12v %12v %12v\n", mode.name, float64(n)/float64(secs),
				pct(lat, 50).Round(10*time.Microsecond), pct(lat, 99).Round(10*time.Microsecond), pct(lat, 100).Round(10*time.Microsecond))
			b.ReportMetric(float64(n)/float64(secs), "commits/s-"+mode.mode)
		}
		fmt.Print(sb.String())
	}
}

// myInsertLoad commits single-row INSERTs from clients connections for d
// and returns every commit's latency.
func myInsertLoad(b *testing.B, m *MyMember, clients int, d time.Duration) ([]time.Duration, int) {
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := m.DB()
			defer db.Close()
			db.SetMaxOpenConns(1)
			var mine []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				if _, err := db.Exec("INSERT INTO app.bench (v) VALUES ('bench')"); err != nil {
					b.Errorf("insert: %v", err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat, len(lat)
}

// pct is the p-th percentile of sorted durations (100: the maximum).
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted) - 1) * p / 100
	return sorted[i]
}
