package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
