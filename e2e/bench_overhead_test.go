package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procStat is one reading of a process's CPU time and memory.
type procStat struct {
	at        time.Time
	cpu       time.Duration // user + system
	rssKiB    int64
	hwmKiB    int64 // peak RSS
	readError error
}

// clockTicks is USER_HZ, 100 on every Linux we run on (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

func readProc(pid int) procStat {
	st := procStat{at: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		st.readError = err
		return st
	}
	// Fields after the command name (which may contain spaces) start at ")".
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		st.readError = fmt.Errorf("short /proc/%d/stat", pid)
		return st
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	st.cpu = time.Duration(ut+stt) * time.Second / clockTicks
	sf, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		st.readError = err
		return st
	}
	defer sf.Close()
	sc := bufio.NewScanner(sf)
	for sc.Scan() {
		l := sc.Text()
		for _, k := range []struct {
			prefix string
			dst    *int64
		}{{"VmRSS:", &st.rssKiB}, {"VmHWM:", &st.hwmKiB}} {
			if v, ok := strings.CutPrefix(l, k.prefix); ok {
				*k.dst, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
	}
	return st
}

// scrapeCounters reads a Prometheus text endpoint and sums every sample of
// each named metric (over all label sets).
func scrapeCounters(url string, names ...string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		name := l
		if i := strings.IndexAny(l, "{ "); i >= 0 {
			name = l[:i]
		}
		if !want[name] {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out, nil
}

// grpcRequestsByMethod sums etcd's grpc_server_msg_received_total per
// method: one per unary request and one per message on a stream (a lease
// keep-alive or a watch request on a long-lived stream is a request too).
func grpcRequestsByMethod(url string) (map[string]float64, error) {
	return grpcByMethod(url, "grpc_server_msg_received_total")
}

// grpcCallsByMethod sums grpc_server_handled_total per method: one per
// unary request or finished stream.
func grpcCallsByMethod(url string) (map[string]float64, error) {
	return grpcByMethod(url, "grpc_server_handled_total")
}

func grpcByMethod(url, metric string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, metric+"{") {
			continue
		}
		m := l[strings.Index(l, `grpc_method="`)+len(`grpc_method="`):]
		m = m[:strings.IndexByte(m, '"')]
		f := strings.Fields(l)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		out[m] += v
	}
	return out, sc.Err()
}

// BenchmarkAgentOverhead measures what an idle agent costs: RSS and CPU of
// each agent process of a healthy 3-member cluster over 60 s at loop_wait
// 1 s (agents built without -race, log level info), and the etcd requests
// and writes per member per loop, from etcd's own /metrics (the embedded
// etcd 3.6 of the test process, reached by the agents through their TCP
// proxies). Targets: RSS <= 20 MiB, <= 1.5 etcd requests and <= 1 write per
// member per loop. Run by `make bench`.
func BenchmarkAgentOverhead(b *testing.B) {
	p := Profile{TTL: 10 * time.Second, LoopWait: time.Second, RetryTimeout: 3 * time.Second, MaxLag: "1MB",
		PrimaryUnhealthyTimeout: 30 * time.Second, PrimaryStartTimeout: 30 * time.Second}
	window := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("STEWARD_BENCH_IDLE")); err == nil && d > 0 {
		window = d
	}
	for i := 0; i < b.N; i++ {
		c := NewCluster(b, 3, p)
		c.LogLevel = "info"
		c.Members[0].Start()
		Eventually(b, 60*time.Second, "m1 leads", func() bool { l := c.Leader(); return l != nil && l.Name == "m1" })
		for _, m := range c.Members[1:] {
			m.Start()
		}
		c.WaitHealthy(90 * time.Second)
		time.Sleep(5 * time.Second) // settle: slots, first publications
		metricsURL := c.Etcd.Endpoints()[0] + "/metrics"
		counters := []string{"etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_mvcc_range_total", "etcd_mvcc_txn_total",
			"etcd_server_proposals_committed_total", "etcd_disk_wal_write_bytes_total", "etcd_network_client_grpc_received_bytes_total"}
		before, err := scrapeCounters(metricsURL, counters...)
		if err != nil {
			b.Fatal(err)
		}
		grpcBefore, err := grpcRequestsByMethod(metricsURL)
		if err != nil {
			b.Fatal(err)
		}
		callsBefore, err := grpcCallsByMethod(metricsURL)
		if err != nil {
			b.Fatal(err)
		}
		start := map[string]procStat{}
		peak := map[string]int64{}
		for _, m := range c.Members {
			start[m.Name] = readProc(m.cmd.Process.Pid)
		}
		deadline := time.Now().Add(window)
		for time.Now().Before(deadline) {
			time.Sleep(time.Second)
			for _, m := range c.Members {
				if s := readProc(m.cmd.Process.Pid); s.rssKiB > peak[m.Name] {
					peak[m.Name] = s.rssKiB
				}
			}
		}
		after, err := scrapeCounters(metricsURL, counters...)
		if err != nil {
			b.Fatal(err)
		}
		grpcAfter, err := grpcRequestsByMethod(metricsURL)
		if err != nil {
			b.Fatal(err)
		}
		callsAfter, err := grpcCallsByMethod(metricsURL)
		if err != nil {
			b.Fatal(err)
		}
		leader := c.Leader()
		fmt.Printf("\nMEASURED agent overhead at idle, 3 members, loop_wait %v, ttl %v, over %v (agents without -race, log level info):\n", p.LoopWait, p.TTL, window)
		var maxRSS int64
		for _, m := range c.Members {
			e := readProc(m.cmd.Process.Pid)
			s := start[m.Name]
			cpu := (e.cpu - s.cpu).Seconds() / e.at.Sub(s.at).Seconds() * 100
			role := "replica"
			if leader != nil && leader.Name == m.Name {
				role = "leader"
			}
			fmt.Printf("  %s (%s): CPU %.2f%% of one core, RSS %.1f MiB (peak during the window %.1f MiB, process peak %.1f MiB)\n",
				m.Name, role, cpu, float64(e.rssKiB)/1024, float64(peak[m.Name])/1024, float64(e.hwmKiB)/1024)
			maxRSS = max(maxRSS, peak[m.Name])
		}
		loops := window.Seconds() / p.LoopWait.Seconds() * float64(len(c.Members))
		// The test's own DCS client (c.Store) is idle during the window.
		var reqs float64
		var methods []string
		for meth, v := range grpcAfter {
			d := v - grpcBefore[meth]
			if d <= 0 {
				continue
			}
			reqs += d
			methods = append(methods, fmt.Sprintf("%s %.2f", meth, d/loops))
		}
		var calls []string
		for meth, v := range callsAfter {
			if d := v - callsBefore[meth]; d > 0 {
				calls = append(calls, fmt.Sprintf("%s %.2f", meth, d/loops))
			}
		}
		d := func(k string) float64 { return after[k] - before[k] }
		writes := d("etcd_mvcc_put_total") + d("etcd_mvcc_delete_total")
		fmt.Printf("  etcd, per member per loop: %.2f requests (messages received, by method: %s; calls handled: %s), %.2f writes (puts+deletes), %.2f raft proposals committed, %.0f bytes received from clients, %.0f WAL bytes written\n",
			reqs/loops, strings.Join(methods, ", "), strings.Join(calls, ", "), writes/loops, d("etcd_server_proposals_committed_total")/loops,
			d("etcd_network_client_grpc_received_bytes_total")/loops, d("etcd_disk_wal_write_bytes_total")/loops)
		fmt.Printf("  targets: RSS <= 20 MiB (max %.1f MiB), <= 1.5 etcd requests per member per loop (%.2f), <= 1 write (%.2f)\n",
			float64(maxRSS)/1024, reqs/loops, writes/loops)
		b.ReportMetric(float64(maxRSS)/1024, "max-rss-MiB")
		b.ReportMetric(reqs/loops, "etcd-req/member/loop")
		b.ReportMetric(writes/loops, "etcd-writes/member/loop")
	}
}
