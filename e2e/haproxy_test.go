package e2e

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stewardha/steward/dcs/dcstest"
)

// The HAProxy test runs docs/examples/haproxy.cfg — the file operators are
// told to use — with only the addresses and ports replaced by the test
// cluster's, so that the documented configuration is the tested one.

const haproxyBin = "/usr/sbin/haproxy"

// haproxy is one running HAProxy process.
type haproxy struct {
	cfg                          string
	write, read, stats           int
	cmd                          *exec.Cmd
	exited                       chan struct{}
	serverOf                     map[string]*Member // HAProxy server name -> member
	memberByPort                 map[int]*Member    // PostgreSQL port -> member
	exampleText, generatedConfig string
}

// exampleServer matches one server line of the example.
var exampleServer = regexp.MustCompile(`(?m)^(\s*server )db(\d) 10\.0\.0\.1\d:5432( check port )8008$`)

// haproxyConfigFromExample renders docs/examples/haproxy.cfg for the
// cluster: db<i> is member i. It fails when the example no longer has the
// shape the test relies on.
func haproxyConfigFromExample(t testing.TB, c *Cluster) *haproxy {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "examples", "haproxy.cfg"))
	if err != nil {
		t.Fatalf("reading the example config: %v", err)
	}
	h := &haproxy{write: dcstest.FreePort(t), read: dcstest.FreePort(t), stats: dcstest.FreePort(t),
		serverOf: map[string]*Member{}, memberByPort: map[int]*Member{}, exampleText: string(b)}
	s := string(b)
	for old, port := range map[string]int{"bind *:5000": h.write, "bind *:5001": h.read, "bind *:7000": h.stats} {
		if strings.Count(s, old) != 1 {
			t.Fatalf("docs/examples/haproxy.cfg: expected exactly one %q", old)
		}
		s = strings.Replace(s, old, fmt.Sprintf("bind 127.0.0.1:%d", port), 1)
	}
	n := 0
	s = exampleServer.ReplaceAllStringFunc(s, func(line string) string {
		m := exampleServer.FindStringSubmatch(line)
		i := int(m[2][0] - '1')
		if i < 0 || i >= len(c.Members) {
			t.Fatalf("docs/examples/haproxy.cfg: server db%s has no test member", m[2])
		}
		mem := c.Members[i]
		h.serverOf["db"+m[2]] = mem
		n++
		return fmt.Sprintf("%sdb%s 127.0.0.1:%d%s%d", m[1], m[2], mem.PGPort, m[3], mem.APIPort)
	})
	if n != 2*len(c.Members) {
		t.Fatalf("docs/examples/haproxy.cfg: %d server lines substituted, want %d (3 per listen section)", n, 2*len(c.Members))
	}
	for _, want := range []string{"option httpchk GET /primary", "option httpchk GET /replica?lag=1MB", "http-check expect status 200",
		"inter 500ms downinter 100ms fall 1 rise 1 on-marked-down shutdown-sessions observe layer4 error-limit 1 on-error mark-down", "option redispatch"} {
		if !strings.Contains(s, want) {
			t.Fatalf("docs/examples/haproxy.cfg lacks %q", want)
		}
	}
	for _, m := range c.Members {
		h.memberByPort[m.PGPort] = m
	}
	h.generatedConfig = s
	h.cfg = filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(h.cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

// startHAProxy validates and starts HAProxy in the foreground; it is
// stopped (by PID) when the test ends.
func startHAProxy(t testing.TB, h *haproxy) {
	t.Helper()
	if _, err := os.Stat(haproxyBin); err != nil {
		t.Fatalf("%s not found: install Debian's haproxy (make deps)", haproxyBin)
	}
	if out, err := exec.Command(haproxyBin, "-c", "-f", h.cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c rejects the config: %v\n%s\n%s", err, out, h.generatedConfig)
	}
	logf, err := os.Create(h.cfg + ".log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(haproxyBin, "-db", "-f", h.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	h.cmd, h.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(h.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-h.exited
		if t.Failed() {
			b, _ := os.ReadFile(h.cfg + ".log")
			t.Logf("---- haproxy log ----\n%s", b)
		}
	})
	Eventually(t, 10*time.Second, "haproxy serves its status page", func() bool { return h.states() != nil })
}

// states reads the status page: "backend/server" -> UP, DOWN, ...
func (h *haproxy) states() map[string]string {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/;csv", h.stats))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil
	}
	col := -1
	for i, name := range recs[0] {
		if name == "status" {
			col = i
		}
	}
	out := map[string]string{}
	for _, rec := range recs[1:] {
		if len(rec) > col && col >= 0 && rec[1] != "FRONTEND" && rec[1] != "BACKEND" {
			out[rec[0]+"/"+rec[1]] = strings.Fields(rec[col] + " ?")[0]
		}
	}
	return out
}

// up lists the servers of a backend that HAProxy has up.
func (h *haproxy) up(backend string) []string {
	var out []string
	for k, v := range h.states() {
		if b, s, _ := strings.Cut(k, "/"); b == backend && v == "UP" {
			out = append(out, h.serverOf[s].Name)
		}
	}
	return out
}

// served connects through an HAProxy port and asks the backend who it is:
// the member (by its PostgreSQL port) and whether it is in recovery.
func (h *haproxy) served(port int) (*Member, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=steward-test dbname=postgres connect_timeout=2 sslmode=disable", port))
	if err != nil {
		return nil, false, err
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	var pgPort int
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), inet_server_port()").Scan(&inRecovery, &pgPort); err != nil {
		return nil, false, err
	}
	m := h.memberByPort[pgPort]
	if m == nil {
		return nil, false, fmt.Errorf("served by unknown port %d", pgPort)
	}
	return m, inRecovery, nil
}

// readWatch connects through the read port every interval and records
// who served each connection.
type readWatch struct {
	mu        sync.Mutex
	forbidden map[string]bool
	events    []readEvent
	served    map[string]int
	stop      chan struct{}
	done      chan struct{}
}

type readEvent struct {
	at         time.Time // when the connection was opened (HAProxy routes it then)
	answered   time.Time // when pg_is_in_recovery() answered
	m          *Member
	inRecovery bool
	forbidden  bool // the member was lagging beyond the limit
}

func (h *haproxy) watchReads(every time.Duration) *readWatch {
	w := &readWatch{forbidden: map[string]bool{}, served: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
			at := time.Now()
			m, inRecovery, err := h.served(h.read)
			if err != nil {
				continue // no replica up, or the served one just died: not a routing error
			}
			w.mu.Lock()
			w.served[m.Name]++
			w.events = append(w.events, readEvent{at: at, answered: time.Now(), m: m, inRecovery: inRecovery, forbidden: w.forbidden[m.Name]})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *readWatch) forbid(name string, on bool) {
	w.mu.Lock()
	w.forbidden[name] = on
	w.mu.Unlock()
}

func (w *readWatch) finish() ([]readEvent, map[string]int) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events, w.served
}

// logTime returns the time of the first agent log line containing msg.
func logTime(t testing.TB, m *Member, msg string) time.Time {
	t.Helper()
	for _, line := range grepLines(m.Log(), msg) {
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
					return ts
				}
			}
		}
	}
	t.Fatalf("%s's log has no %q", m.Name, msg)
	return time.Time{}
}

// startAPICluster starts n members with m1 bootstrapping, and waits until
// every replica streams.
func startAPICluster(t testing.TB, n int, p Profile) (*Cluster, *Member) {
	t.Helper()
	c := NewCluster(t, n, p)
	c.Members[0].Start()
	Eventually(t, 60*time.Second, "m1 bootstraps and leads", func() bool {
		l := c.Leader()
		return l != nil && l.Name == "m1" && l.Status() != nil && l.Status().Writable
	})
	for _, m := range c.Members[1:] {
		m.Start()
	}
	return c, c.WaitHealthy(90 * time.Second)
}

func TestHAProxy(t *testing.T) {
	t.Parallel()
	c, leader := startAPICluster(t, 3, Fast)
	if err := leader.Exec("CREATE TABLE hap_test(id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	h := haproxyConfigFromExample(t, c)
	startHAProxy(t, h)

	// Writes through the write port reach the primary.
	Eventually(t, 10*time.Second, "HAProxy routes writes to the leader only", func() bool {
		up := h.up("postgres-write")
		return len(up) == 1 && up[0] == leader.Name
	})
	for i := 0; i < 5; i++ {
		m, inRecovery, err := h.served(h.write)
		if err != nil || m != leader || inRecovery {
			t.Fatalf("write port: served by %v (in recovery %v): %v", m, inRecovery, err)
		}
	}
	wr := startHAProxyWriter(h, 20*time.Millisecond)
	defer wr.stop()
	Eventually(t, 10*time.Second, "writes through HAProxy", func() bool { return wr.count(leader) > 10 })

	// Reads are balanced over the two replicas, never the primary.
	var replicas []*Member
	for _, m := range c.Members {
		if m != leader {
			replicas = append(replicas, m)
		}
	}
	Eventually(t, 10*time.Second, "HAProxy has both replicas up for reads", func() bool { return len(h.up("postgres-read")) == 2 })
	reads := h.watchReads(30 * time.Millisecond)
	Eventually(t, 10*time.Second, "reads served by both replicas", func() bool {
		reads.mu.Lock()
		defer reads.mu.Unlock()
		return reads.served[replicas[0].Name] >= 3 && reads.served[replicas[1].Name] >= 3
	})

	// A replica lagging beyond 1MB leaves the read rotation.
	lagging := replicas[0]
	if err := lagging.Exec("SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	pushed := time.Now()
	if err := leader.Exec("CREATE TABLE hap_big AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 4000) g"); err != nil {
		t.Fatal(err)
	}
	apiDown := Eventually(t, 10*time.Second, "the lagging replica's /replica?lag=1MB answers 503", func() bool {
		return lagging.HTTPCode("/replica?lag=1MB") == 503
	})
	// HAProxy takes it out at its next check (inter 500 ms; the bound
	// allows a loaded machine 4 intervals, the figure is logged); from then
	// on it must never be served until it catches up.
	hapDown := Eventually(t, 2*time.Second, "HAProxy takes the lagging replica out of the read rotation", func() bool {
		up := h.up("postgres-read")
		return len(up) == 1 && up[0] == replicas[1].Name
	})
	reads.forbid(lagging.Name, true)
	t.Logf("MEASURED lag routing: >1MB of WAL pushed with replay paused on %s -> its /replica?lag=1MB answers 503: %v; HAProxy marks it down %v later (%v after the push)",
		lagging.Name, apiDown.Round(time.Millisecond), hapDown.Round(time.Millisecond), time.Since(pushed).Round(time.Millisecond))
	// 20 reads, all served by the other replica. That replica replays the
	// same 4 MB burst and may briefly lag beyond 1MB itself (then HAProxy
	// has no read server and the connection fails: retried); what must
	// never happen is a read served by the lagging replica or the primary.
	okReads, lastErr := 0, error(nil)
	deadline := time.Now().Add(15 * time.Second)
	for okReads < 20 && time.Now().Before(deadline) {
		m, inRecovery, err := h.served(h.read)
		switch {
		case err != nil:
			lastErr = err
			time.Sleep(50 * time.Millisecond)
		case m != replicas[1] || !inRecovery:
			t.Fatalf("read port while %s lags: served by %v (in recovery %v)", lagging.Name, m.Name, inRecovery)
		default:
			okReads++
		}
	}
	if okReads < 20 {
		t.Fatalf("read port while %s lags: %d of 20 reads served by %s within 15s; last error: %v", lagging.Name, okReads, replicas[1].Name, lastErr)
	}
	if err := lagging.Exec("SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	back := Eventually(t, 15*time.Second, "the caught-up replica back in the read rotation", func() bool {
		return len(h.up("postgres-read")) == 2
	})
	reads.forbid(lagging.Name, false)
	t.Logf("MEASURED lag routing: replay resumed -> back in HAProxy's read rotation: %v", back.Round(time.Millisecond))

	// kill -9 of the primary (agent and PostgreSQL): writes through the
	// same write port reach the new primary within ttl + 2 s.
	budget := c.Profile.TTL + 2*time.Second
	killedAt := time.Now()
	leader.Crash()
	var newLeader *Member
	failover := Eventually(t, budget+5*time.Second, "a write through HAProxy acknowledged by a new primary", func() bool {
		if m := wr.firstAfter(killedAt, leader); m != nil {
			newLeader = m
			return true
		}
		return false
	})
	t.Logf("MEASURED HAProxy failover (ttl %v, loop_wait %v, check inter 500ms downinter 100ms fall 1 rise 1): kill -9 of the primary -> first write through the write port acknowledged by %s: %v",
		c.Profile.TTL, c.Profile.LoopWait, newLeader.Name, failover.Round(time.Millisecond))
	if failover > budget {
		t.Errorf("writes reached the new primary after %v, want <= ttl + 2s = %v", failover, budget)
	}
	if l := c.Leader(); l == nil || l != newLeader {
		t.Fatalf("leader key %v, writes acknowledged by %s", l, newLeader.Name)
	}
	m, inRecovery, err := h.served(h.write)
	if err != nil || m != newLeader || inRecovery {
		t.Fatalf("write port after the failover: %v (in recovery %v): %v", m, inRecovery, err)
	}
	// The surviving replica serves reads; the new primary never does.
	var survivor *Member
	for _, r := range replicas {
		if r != newLeader {
			survivor = r
		}
	}
	Eventually(t, 30*time.Second, "the surviving replica follows the new primary and serves reads", func() bool {
		up := h.up("postgres-read")
		return len(up) == 1 && up[0] == survivor.Name
	})
	for i := 0; i < 10; i++ {
		if m, inRecovery, err := h.served(h.read); err != nil || m != survivor || !inRecovery {
			t.Fatalf("read port after the failover: %v (in recovery %v): %v", m, inRecovery, err)
		}
	}
	// The read port never served a primary — except the one inherent
	// window of any polling load balancer: from the new leader's promotion
	// until HAProxy's first read check after its /replica turned 503 (at
	// the key acquisition, before the promotion): at most one check
	// interval (500 ms) plus the check's own time after the acquisition. A
	// connection routed to it while it was still a replica and answered
	// after its promotion is in that window too (seen under a loaded make
	// test: opened 25 ms before the key acquisition, answered after the
	// promotion). "promoted" is when the agent logged the promotion, after
	// PostgreSQL left recovery: the window is bounded by the acquisition.
	acquired := logTime(t, newLeader, `msg="acquired the leader key"`)
	promoted := logTime(t, newLeader, `msg="role change: promoted"`)
	windowEnd := acquired.Add(500*time.Millisecond + 150*time.Millisecond)
	events, served := reads.finish()
	inWindow := 0
	for _, e := range events {
		switch {
		case e.forbidden:
			t.Errorf("%s: the read port served %s while it lagged beyond 1MB", e.at.Format("15:04:05.000"), e.m.Name)
		case !e.inRecovery && e.m == newLeader && !e.answered.Before(acquired) && e.at.Before(windowEnd):
			inWindow++
		case !e.inRecovery:
			t.Errorf("%s: the read port served the primary %s (key acquired %s, promoted %s)", e.at.Format("15:04:05.000"), e.m.Name,
				acquired.Format("15:04:05.000"), promoted.Format("15:04:05.000"))
		}
	}
	t.Logf("MEASURED read routing during the failover: /replica turned 503 on %s at the key acquisition, %v before its promotion; "+
		"%d of %d read connections landed on it in the %v between its promotion and HAProxy's next check (read connections every 30ms)",
		newLeader.Name, promoted.Sub(acquired).Round(time.Millisecond), inWindow, len(events), windowEnd.Sub(promoted).Round(time.Millisecond))
	t.Logf("read connections through HAProxy during the test, by member: %v", served)
	wr.stop()
	t.Logf("writes through HAProxy: %d acknowledged (%d by %s, %d by %s)", wr.total(), wr.count(leader), leader.Name, wr.count(newLeader), newLeader.Name)
}

// haproxyWriter inserts through HAProxy's write port every interval,
// reconnecting after any error, and records which member acknowledged
// each write.
type haproxyWriter struct {
	mu     sync.Mutex
	acks   []hapAck
	quit   chan struct{}
	done   chan struct{}
	closed sync.Once
}

type hapAck struct {
	at time.Time
	m  *Member
}

func startHAProxyWriter(h *haproxy, every time.Duration) *haproxyWriter {
	w := &haproxyWriter{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=steward-test dbname=postgres connect_timeout=1 sslmode=disable", h.write)
		for {
			select {
			case <-w.quit:
				return
			case <-time.After(every):
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
			var port int
			err := conn.QueryRow(ctx, "INSERT INTO hap_test DEFAULT VALUES RETURNING inet_server_port()").Scan(&port)
			cancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			w.mu.Lock()
			w.acks = append(w.acks, hapAck{at: time.Now(), m: h.memberByPort[port]})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *haproxyWriter) stop() {
	w.closed.Do(func() { close(w.quit) })
	<-w.done
}

func (w *haproxyWriter) count(m *Member) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.acks {
		if a.m == m {
			n++
		}
	}
	return n
}

func (w *haproxyWriter) total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// firstAfter returns the member that acknowledged the first write after t
// on a member other than old.
func (w *haproxyWriter) firstAfter(t time.Time, old *Member) *Member {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.acks {
		if a.at.After(t) && a.m != old && a.m != nil {
			return a.m
		}
	}
	return nil
}
