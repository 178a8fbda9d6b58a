// Package e2e runs steward as operators do: real etcd, real PostgreSQL, the
// steward binary as separate agent processes (as an unprivileged user when
// the tests run as root), and checks what a user would check.
//
// Every test builds its own cluster on free 127.0.0.1 ports in temp
// directories and tears it down, ending only the processes it started, by
// PID.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends/postgres/pgtest"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/dcstest"
	"github.com/stewardha/steward/dcs/etcd"
)

// Binary is the steward binary built once per test process (TestMain).
var binaryPath string

// BuildBinary builds cmd/steward into dir (readable by every user) and
// returns its path. race builds it with the race detector.
func BuildBinary(dir string, race bool) (string, error) {
	out := filepath.Join(dir, "steward")
	// Test builds carry the fault-injection points (agent/faults_on.go).
	args := []string{"build", "-tags", "faultinject", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/stewardha/steward/cmd/steward")
	cmd := exec.Command("go", args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	return out, nil
}

// Profile is a cluster's timing.
type Profile struct {
	TTL, LoopWait, RetryTimeout time.Duration
	MaxLag                      string
	PrimaryUnhealthyTimeout     time.Duration
	PrimaryStartTimeout         time.Duration
}

// Fast is the timing most tests use: failures show within seconds.
var Fast = Profile{TTL: 4 * time.Second, LoopWait: 500 * time.Millisecond, RetryTimeout: time.Second, MaxLag: "1MB",
	PrimaryUnhealthyTimeout: 10 * time.Second, PrimaryStartTimeout: 10 * time.Second}

// Cluster is a test cluster: one etcd, N members.
type Cluster struct {
	T        testing.TB
	Name     string
	Etcd     dcstest.Server
	Members  []*Member
	Profile  Profile
	dir      string
	runAs    string
	store    *etcd.Store
	Extra    func(m *Member) string // extra YAML appended to a member's config
	binary   string
	Postgres map[string]string // extra postgres parameters for every member
	// LogLevel of the agents (default debug: failed tests print the logs;
	// benchmarks of the agent's own cost use info).
	LogLevel string
}

// Member is one host: an agent process managing one PostgreSQL.
type Member struct {
	c        *Cluster
	Name     string
	APIPort  int
	PGPort   int
	DataDir  string
	Config   string
	LogPath  string
	Proxy    *dcstest.Proxy // this member's path to etcd
	Tags     string         // YAML for the tags section
	cmd      *exec.Cmd
	exited   chan struct{}
	Priority int
}

// NewCluster prepares (does not start) a cluster of n members named m1..mn.
func NewCluster(t testing.TB, n int, p Profile) *Cluster {
	t.Helper()
	pgtest.RequireBinaries(t)
	c := &Cluster{T: t, Name: "e2e", Profile: p, dir: pgtest.Dir(t), runAs: pgtest.RunAs(t), binary: binaryPath}
	if c.binary == "" {
		t.Fatalf("the steward binary was not built (TestMain)")
	}
	c.Etcd = dcstest.StartEmbedded(t)
	for i := 1; i <= n; i++ {
		c.AddMember(fmt.Sprintf("m%d", i))
	}
	st, err := etcd.New(etcd.Options{Endpoints: c.Etcd.Endpoints(), Namespace: "/steward", Cluster: c.Name, RequestTimeout: 5 * time.Second, TTL: p.TTL})
	if err != nil {
		t.Fatal(err)
	}
	c.store = st
	t.Cleanup(func() { st.Close() })
	t.Cleanup(c.stopAll)
	return c
}

// AddMember prepares one more member.
func (c *Cluster) AddMember(name string) *Member {
	m := &Member{c: c, Name: name, APIPort: dcstest.FreePort(c.T), PGPort: dcstest.FreePort(c.T),
		DataDir: filepath.Join(c.dir, name), LogPath: filepath.Join(c.dir, name+".agent.log"), Priority: 1}
	m.Proxy = dcstest.StartProxy(c.T, strings.TrimPrefix(c.Etcd.Endpoints()[0], "http://"))
	m.Config = filepath.Join(c.dir, name+".yml")
	pgtest.StopAtCleanup(c.T, m.DataDir)
	c.Members = append(c.Members, m)
	return m
}

// Store is a DCS client for the test (not a member).
func (c *Cluster) Store() *etcd.Store { return c.store }

func (c *Cluster) writeConfig(m *Member) {
	p := c.Profile
	var b strings.Builder
	fmt.Fprintf(&b, `cluster: %s
name: %s
etcd:
  endpoints: [%s]
bootstrap:
  ttl: %s
  loop_wait: %s
  retry_timeout: %s
  maximum_lag_on_failover: %s
  primary_unhealthy_timeout: %s
  primary_start_timeout: %s
api:
  listen: 127.0.0.1:%d
postgres:
  data_dir: %s
  bin_dir: %s
  listen: 127.0.0.1:%d
  superuser: {username: postgres, password: steward-test}
  replication: {username: replicator, password: rep-test}
  pg_hba:
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
  parameters:
    shared_buffers: 16MB
    max_connections: "30"
    fsync: "off"
`, c.Name, m.Name, m.Proxy.URL(), p.TTL, p.LoopWait, p.RetryTimeout, p.MaxLag, p.PrimaryUnhealthyTimeout, p.PrimaryStartTimeout,
		m.APIPort, m.DataDir, pgtest.RequireBinaries(c.T), m.PGPort)
	for k, v := range c.Postgres {
		fmt.Fprintf(&b, "    %s: %q\n", k, v)
	}
	level := c.LogLevel
	if level == "" {
		level = "debug"
	}
	fmt.Fprintf(&b, "log: {level: %s, format: text}\n", level)
	if m.Tags != "" {
		fmt.Fprintf(&b, "tags: %s\n", m.Tags)
	}
	if c.Extra != nil {
		b.WriteString(c.Extra(m))
	}
	if err := os.WriteFile(m.Config, []byte(b.String()), 0o644); err != nil {
		c.T.Fatal(err)
	}
}

// Start starts every member's agent.
func (c *Cluster) Start() {
	for _, m := range c.Members {
		m.Start()
	}
}

func (c *Cluster) stopAll() {
	for _, m := range c.Members {
		m.Kill()
	}
	if keep := os.Getenv("STEWARD_E2E_KEEP_LOGS"); keep != "" {
		dst := filepath.Join(keep, strings.ReplaceAll(c.T.Name(), "/", "_"))
		_ = os.MkdirAll(dst, 0o755)
		for _, m := range c.Members {
			if b, err := os.ReadFile(m.LogPath); err == nil {
				_ = os.WriteFile(filepath.Join(dst, m.Name+".agent.log"), b, 0o644)
			}
			if b, err := os.ReadFile(m.DataDir + ".log"); err == nil {
				_ = os.WriteFile(filepath.Join(dst, m.Name+".postgres.log"), b, 0o644)
			}
		}
	}
	if c.T.Failed() {
		// One t.Log call per line: make test's console filter keeps lines
		// that carry a file:line prefix, and CI shows only the console.
		for _, m := range c.Members {
			c.T.Logf("---- agent log of %s (last 60 lines) ----", m.Name)
			for _, l := range strings.Split(tail(m.LogPath, 60), "\n") {
				c.T.Logf("%s| %s", m.Name, l)
			}
		}
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// credential returns the uid/gid to run agents as (nil: as ourselves).
func credential(t testing.TB, name string) *syscall.Credential {
	if name == "" {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("looking up user %s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// Start starts the member's agent process (writing its config first).
func (m *Member) Start() {
	c := m.c
	c.T.Helper()
	c.writeConfig(m)
	logf, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.T.Fatal(err)
	}
	cmd := exec.Command(c.binary, "agent", "--config", m.Config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + c.dir, "GORACE=halt_on_error=1", "STEWARD_FAULTS=" + m.FaultDir()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: credential(c.T, c.runAs)}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.T.Fatalf("starting the agent of %s: %v", m.Name, err)
	}
	logf.Close()
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { _ = cmd.Wait(); close(ch) }(cmd, m.exited)
}

// FaultDir is where this member's fault files go (agent/faults_on.go).
func (m *Member) FaultDir() string { return filepath.Join(m.c.dir, m.Name+".faults") }

// Fault activates (on) or clears a fault injection point of the agent.
func (m *Member) Fault(name string, on bool) {
	m.c.T.Helper()
	p := filepath.Join(m.FaultDir(), name)
	if !on {
		_ = os.Remove(p)
		return
	}
	if err := os.MkdirAll(m.FaultDir(), 0o755); err != nil {
		m.c.T.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		m.c.T.Fatal(err)
	}
}

// Running reports whether the agent process runs.
func (m *Member) Running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the agent (not to its database) and waits for it.
func (m *Member) Kill() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// Signal sends a signal to the agent process.
func (m *Member) Signal(sig syscall.Signal) {
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(sig)
	}
}

// Stop sends SIGTERM and waits (bounded) for the agent to exit.
func (m *Member) Stop(within time.Duration) error {
	if m.cmd == nil {
		return nil
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
		m.cmd = nil
		return nil
	case <-time.After(within):
		return fmt.Errorf("agent %s did not exit within %v of SIGTERM", m.Name, within)
	}
}

// PostmasterPID reads the PID of the member's postmaster (0: none).
func (m *Member) PostmasterPID() int {
	b, err := os.ReadFile(filepath.Join(m.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	if pid > 0 && syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// KillPostgres SIGKILLs the postmaster and all its children (a host crash
// for the database).
func (m *Member) KillPostgres() {
	pid := m.PostmasterPID()
	if pid == 0 {
		return
	}
	kids := childrenOf(pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// SignalPostgres sends sig to the postmaster and all its children
// (SIGSTOP: a database frozen by a hung disk or a debugger; SIGCONT ends
// it).
func (m *Member) SignalPostgres(sig syscall.Signal) {
	pid := m.PostmasterPID()
	if pid == 0 {
		return
	}
	_ = syscall.Kill(pid, sig)
	for _, k := range childrenOf(pid) {
		_ = syscall.Kill(k, sig)
	}
}

// Crash kills both the agent and its database (kill -9), like a host dying.
func (m *Member) Crash() {
	m.Kill()
	m.KillPostgres()
}

func childrenOf(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 2 {
			if p, _ := strconv.Atoi(f[1]); p == ppid {
				out = append(out, pid)
			}
		}
	}
	return out
}

// DSN of the member's database as the superuser.
func (m *Member) DSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=steward-test dbname=postgres connect_timeout=2 sslmode=disable", m.PGPort)
}

// Exec runs SQL on the member's database.
func (m *Member) Exec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// QueryInt runs a query returning one integer.
func (m *Member) QueryInt(sql string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.DSN())
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

// Status fetches the member's GET /status (nil when unreachable).
func (m *Member) Status() *agent.PeerStatus {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/status", m.APIPort))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st agent.PeerStatus
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return nil
	}
	return &st
}

// HTTPCode returns the status code of GET path on the member's API (0: no answer).
func (m *Member) HTTPCode(path string) int {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d%s", m.APIPort, path))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Log returns the agent's log so far.
func (m *Member) Log() string {
	b, _ := os.ReadFile(m.LogPath)
	return string(b)
}

// LoadCluster reads the DCS.
func (c *Cluster) LoadCluster() *dcs.Cluster {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := c.store.Load(ctx)
	if err != nil {
		c.T.Logf("loading the cluster: %v", err)
		return nil
	}
	return cl
}

// Leader returns the member holding the leader key (nil: none).
func (c *Cluster) Leader() *Member {
	cl := c.LoadCluster()
	if cl == nil || cl.Leader == nil {
		return nil
	}
	return c.Member(cl.Leader.Name)
}

// Member returns a member by name.
func (c *Cluster) Member(name string) *Member {
	for _, m := range c.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Eventually polls cond every 50 ms until it holds or the time is up.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("timed out after %v waiting for: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// EventuallySettles is Eventually for a check that lists what is still
// wrong (nothing: settled). Each new list is logged, so a timeout shows the
// last state that kept the check from passing.
func EventuallySettles(t testing.TB, within time.Duration, what string, check func() []string) time.Duration {
	t.Helper()
	last := ""
	return Eventually(t, within, what, func() bool {
		problems := check()
		if now := strings.Join(problems, "; "); now != last && now != "" {
			t.Logf("not settled yet (%s): %s", what, now)
			last = now
		}
		return len(problems) == 0
	})
}

// WaitHealthy waits until one member is a writable leader and every other
// running member streams from it. It returns the leader.
func (c *Cluster) WaitHealthy(within time.Duration) *Member {
	c.T.Helper()
	var leader *Member
	Eventually(c.T, within, "one writable leader and every replica streaming with a known lag", func() bool {
		cl := c.LoadCluster()
		if cl == nil || cl.Leader == nil {
			return false
		}
		leader = c.Member(cl.Leader.Name)
		lm := cl.Members[cl.Leader.Name]
		for _, m := range c.Members {
			if !m.Running() {
				continue
			}
			mm, ok := cl.Members[m.Name]
			if !ok {
				return false
			}
			if m == leader {
				if !mm.Writable || mm.State != agent.StateRunning {
					return false
				}
			} else if mm.State != agent.StateStreaming || mm.Following != leader.Name || mm.LagBytes < 0 ||
				(mm.Timeline != 0 && lm.Timeline != 0 && mm.Timeline != lm.Timeline) {
				// LagBytes < 0: streaming, but its replay position is not known
				// yet (a MariaDB replica before its SQL thread applied an event).
				// Timeline behind the leader's: streaming the new timeline but
				// not yet replayed past the switch point (right after a
				// switchover). Either way a switchover to it would be refused.
				return false
			}
		}
		return true
	})
	return leader
}

// SetDynamic changes the cluster's dynamic config in the DCS (CAS).
func (c *Cluster) SetDynamic(key, value string) {
	c.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 10; i++ {
		raw, ver, err := c.store.GetConfig(ctx)
		if err != nil {
			c.T.Fatalf("reading config: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			c.T.Fatal(err)
		}
		var v any = value
		if value == "true" || value == "false" {
			v = value == "true"
		}
		m[key] = v
		b, _ := json.Marshal(m)
		if _, err := c.store.CASConfig(ctx, b, ver); err == nil {
			return
		}
	}
	c.T.Fatalf("could not set %s=%s", key, value)
}

// Steward runs the steward CLI with a member's config and returns its
// output and exit code.
func (m *Member) Steward(args ...string) (string, int) {
	cmd := exec.Command(m.c.binary, append(args, "--config", m.Config)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return err.Error(), -1
	}
	return string(out), code
}

// Writer inserts increasing ids through a connection factory every interval
// and records which were acknowledged by which member, until stopped.
type Writer struct {
	mu    sync.Mutex
	Acked []Ack
	stop  chan struct{}
	done  chan struct{}
}

// Ack is one acknowledged write.
type Ack struct {
	ID     int64
	Member string
	At     time.Time
}

// StartWriter writes to whichever member is reachable through dsnOf (tried
// in order) into table steward_test(id bigint primary key).
func StartWriter(t testing.TB, members []*Member, every time.Duration) *Writer {
	w := &Writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var id int64
		conns := map[string]*pgx.Conn{}
		defer func() {
			for _, c := range conns {
				c.Close(context.Background())
			}
		}()
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tk.C:
			}
			id++
			for _, m := range members {
				conn := conns[m.Name]
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				if conn == nil || conn.IsClosed() {
					c, err := pgx.Connect(ctx, m.DSN())
					if err != nil {
						cancel()
						continue
					}
					conn, conns[m.Name] = c, c
				}
				_, err := conn.Exec(ctx, "INSERT INTO steward_test(id, member) VALUES ($1, $2)", id, m.Name)
				cancel()
				if err == nil {
					w.mu.Lock()
					w.Acked = append(w.Acked, Ack{ID: id, Member: m.Name, At: time.Now()})
					w.mu.Unlock()
					break
				}
				conn.Close(context.Background())
				delete(conns, m.Name)
			}
		}
	}()
	return w
}

// Stop ends the writer.
func (w *Writer) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// Snapshot returns the acknowledged writes so far.
func (w *Writer) Snapshot() []Ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Ack(nil), w.Acked...)
}

// grepLines returns the log lines containing s.
func grepLines(log, s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			out = append(out, sc.Text())
		}
	}
	return out
}
