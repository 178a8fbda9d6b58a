package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/backends/postgres/pgtest"
)

// leaseRemaining reads steward_lease_remaining_seconds from a member's
// /metrics (-1 when it cannot be read).
func leaseRemaining(m *Member) float64 {
	v, err := scrapeCounters(fmt.Sprintf("http://127.0.0.1:%d/metrics", m.APIPort), "steward_lease_remaining_seconds")
	if err != nil {
		return -1
	}
	r, ok := v["steward_lease_remaining_seconds"]
	if !ok {
		return -1
	}
	return r
}

// BenchmarkStressNoFalseFailover: the fast profile (ttl 3 s, loop_wait
// 500 ms, retry_timeout 1 s) on a healthy 3-member cluster while stress-ng
// loads every CPU, memory and disk I/O of this machine and pgbench writes to
// the primary, for 10 minutes (STEWARD_BENCH_STRESS). Counts leader changes
// (must be 0: nothing failed, so any change is a false failover) and reports
// the closest the leader's lease came to its deadline (sampled from
// /metrics every 50 ms). Agents run without -race (make bench). Run by
// `make bench`.
func BenchmarkStressNoFalseFailover(b *testing.B) {
	dur := 10 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("STEWARD_BENCH_STRESS")); err == nil && d > 0 {
		dur = d
	}
	if _, err := exec.LookPath("stress-ng"); err != nil {
		if out, err := exec.Command("../scripts/deps.sh", "stress-ng").CombinedOutput(); err != nil {
			b.Fatalf("stress-ng is not installed and scripts/deps.sh stress-ng failed: %v\n%s", err, out)
		}
	}
	p := Profile{TTL: 3 * time.Second, LoopWait: 500 * time.Millisecond, RetryTimeout: time.Second, MaxLag: "1MB",
		PrimaryUnhealthyTimeout: 30 * time.Second, PrimaryStartTimeout: 30 * time.Second}
	for i := 0; i < b.N; i++ {
		c := NewCluster(b, 3, p)
		c.LogLevel = "info"
		c.Members[0].Start()
		Eventually(b, 60*time.Second, "m1 leads", func() bool { l := c.Leader(); return l != nil && l.Name == "m1" })
		for _, m := range c.Members[1:] {
			m.Start()
		}
		leader := c.WaitHealthy(90 * time.Second)
		term := c.LoadCluster().Leader.Term
		pgbench := filepath.Join(pgtest.RequireBinaries(b), "pgbench")
		conn := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(leader.PGPort), "-U", "postgres"}
		env := append(os.Environ(), "PGPASSWORD=steward-test")
		initCmd := exec.Command(pgbench, append([]string{"-i", "-s", "10", "-q"}, append(conn, "postgres")...)...)
		initCmd.Env = env
		if out, err := initCmd.CombinedOutput(); err != nil {
			b.Fatalf("pgbench -i: %v\n%s", err, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Second)
		secs := strconv.Itoa(int(dur.Seconds()))
		bench := exec.CommandContext(ctx, pgbench, append([]string{"-c", "4", "-j", "2", "-T", secs, "-P", "60"}, append(conn, "postgres")...)...)
		bench.Env = env
		var benchOut strings.Builder
		bench.Stdout, bench.Stderr = &benchOut, &benchOut
		if err := bench.Start(); err != nil {
			b.Fatal(err)
		}
		ncpu := runtime.NumCPU()
		stress := exec.CommandContext(ctx, "stress-ng", "--cpu", strconv.Itoa(ncpu), "--vm", "1", "--vm-bytes", "1G",
			"--io", "1", "--hdd", "1", "--hdd-bytes", "256M", "--temp-path", c.dir, "--timeout", secs+"s", "--metrics-brief")
		var stressOut strings.Builder
		stress.Stdout, stress.Stderr = &stressOut, &stressOut
		stress.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := stress.Start(); err != nil {
			b.Fatal(err)
		}
		stopStress := func() { _ = syscall.Kill(-stress.Process.Pid, syscall.SIGKILL) }
		minRemaining, samples, unreadable := 1e9, 0, 0
		start := time.Now()
		for time.Since(start) < dur {
			time.Sleep(50 * time.Millisecond)
			r := leaseRemaining(leader)
			if r < 0 {
				unreadable++
				continue
			}
			samples++
			minRemaining = min(minRemaining, r)
		}
		_ = bench.Wait()
		stopStress()
		_ = stress.Wait()
		cancel()
		cl := c.LoadCluster()
		hist, err := c.Store().History(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		changes := 0
		for _, h := range hist {
			if h.Term > term {
				changes++
			}
		}
		if changes == 0 && (cl == nil || cl.Leader == nil || cl.Leader.Term != term) {
			changes = 1 // the key changed hands without a history record
		}
		tps := ""
		for _, l := range strings.Split(benchOut.String(), "\n") {
			if strings.HasPrefix(l, "tps = ") {
				tps = strings.TrimSpace(l)
			}
		}
		fmt.Printf("\nMEASURED stress run, fast profile (ttl %v, loop_wait %v, retry_timeout %v), %v, %d CPUs, stress-ng --cpu %d --vm 1 --vm-bytes 1G --io 1 --hdd 1, pgbench -c 4 -j 2 on the primary (%s):\n",
			p.TTL, p.LoopWait, p.RetryTimeout, dur, ncpu, ncpu, tps)
		fmt.Printf("  leader changes: %d (target 0); closest the leader's lease came to its deadline: %.3fs remaining (sampled every 50ms, %d samples, %d unreadable); deadline = last renewal sent + ttl - safety margin\n",
			changes, minRemaining, samples, unreadable)
		if changes > 0 {
			b.Errorf("a false failover under stress: the leader key changed (term %d -> %+v)", term, cl.Leader)
		}
		b.ReportMetric(float64(changes), "false-failovers")
		b.ReportMetric(minRemaining, "min-lease-remaining-s")
	}
}
