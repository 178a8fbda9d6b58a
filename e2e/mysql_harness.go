package e2e

// The MySQL/MariaDB flavour of the cluster harness.
//
// Each member is a host as an operator sets it up: a MariaDB data directory
// initialized beforehand (mariadb-install-db with steward's account, as the
// docs ask: steward does not install servers), a my.cnf with GTIDs,
// read_only=ON and skip_slave_start=ON, and a steward agent process whose
// mysql.start_command runs mariadbd in the foreground. The agent starts the
// server itself (detached, so that kill -9 of the agent leaves it running,
// like a systemd-managed server); the test only kills it (Crash). When the
// tests run as root, agents — and so the servers — run as the "mysql" OS
// user. Every server is stopped by PID when the test ends.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends/mysql/mytest"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/dcstest"
	"github.com/stewardha/steward/dcs/etcd"
)

// MyCluster is a test cluster of MariaDB members: one etcd, N members.
type MyCluster struct {
	T       testing.TB
	Name    string
	Etcd    dcstest.Server
	Members []*MyMember
	Profile Profile
	dir     string
	runAs   string
	store   *etcd.Store
	binary  string
}

// MyMember is one host: an agent process managing one mariadbd.
type MyMember struct {
	c       *MyCluster
	Name    string
	APIPort int
	Server  *mytest.Server
	Config  string
	LogPath string
	Proxy   *dcstest.Proxy
	Tags    string // YAML for the tags section
	// MySQLExtra: YAML lines added to the mysql section ("  key: value\n").
	MySQLExtra string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// NewMyCluster prepares (does not start) a cluster of n members m1..mn,
// each with an initialized, stopped MariaDB server (server_id = its index).
func NewMyCluster(t testing.TB, n int, p Profile) *MyCluster {
	t.Helper()
	mytest.RequireBinaries(t)
	c := &MyCluster{T: t, Name: "e2e", Profile: p, dir: mytest.Dir(t), runAs: mytest.RunAs(t), binary: binaryPath}
	if c.binary == "" {
		t.Fatalf("the steward binary was not built (TestMain)")
	}
	c.Etcd = dcstest.StartEmbedded(t)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("m%d", i)
		m := &MyMember{c: c, Name: name, APIPort: dcstest.FreePort(t), LogPath: filepath.Join(c.dir, name+".agent.log")}
		m.Server = mytest.NewServer(t, c.dir, name, i)
		m.Proxy = dcstest.StartProxy(t, strings.TrimPrefix(c.Etcd.Endpoints()[0], "http://"))
		m.Config = filepath.Join(c.dir, name+".yml")
		c.Members = append(c.Members, m)
	}
	st, err := etcd.New(etcd.Options{Endpoints: c.Etcd.Endpoints(), Namespace: "/steward", Cluster: c.Name, RequestTimeout: 5 * time.Second, TTL: p.TTL})
	if err != nil {
		t.Fatal(err)
	}
	c.store = st
	t.Cleanup(func() { st.Close() })
	t.Cleanup(c.stopAll) // runs before the servers' own cleanups (LIFO)
	return c
}

func (c *MyCluster) writeConfig(m *MyMember) {
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
mysql:
  address: %s
  user: %s
  password: %s
  replication: {username: %s, password: %s}
  data_dir: %s
  start_command: [%s, "--defaults-file=%s"]
%slog: {level: debug, format: text}
`, c.Name, m.Name, m.Proxy.URL(), p.TTL, p.LoopWait, p.RetryTimeout, p.MaxLag, p.PrimaryUnhealthyTimeout, p.PrimaryStartTimeout,
		m.APIPort, m.Server.Addr(), mytest.User, mytest.Password, mytest.ReplicationUser, mytest.ReplicationPassword,
		m.Server.DataDir, mytest.Mariadbd, m.Server.Cnf, m.MySQLExtra)
	if m.Tags != "" {
		fmt.Fprintf(&b, "tags: %s\n", m.Tags)
	}
	if err := os.WriteFile(m.Config, []byte(b.String()), 0o644); err != nil {
		c.T.Fatal(err)
	}
}

func (c *MyCluster) stopAll() {
	for _, m := range c.Members {
		m.Kill()
	}
	if keep := os.Getenv("STEWARD_E2E_KEEP_LOGS"); keep != "" {
		dst := filepath.Join(keep, strings.ReplaceAll(c.T.Name(), "/", "_"))
		_ = os.MkdirAll(dst, 0o755)
		for _, m := range c.Members {
			for src, name := range map[string]string{m.LogPath: m.Name + ".agent.log", m.Server.ErrorLog(): m.Name + ".mariadb.err"} {
				if b, err := os.ReadFile(src); err == nil {
					_ = os.WriteFile(filepath.Join(dst, name), b, 0o644)
				}
			}
		}
	}
	if c.T.Failed() {
		for _, m := range c.Members {
			c.T.Logf("---- agent log of %s (last 60 lines) ----\n%s", m.Name, tail(m.LogPath, 60))
			c.T.Logf("---- MariaDB error log of %s (last 15 lines) ----\n%s", m.Name, tail(m.Server.ErrorLog(), 15))
		}
	}
}

// Start starts the member's agent process (writing its config first).
func (m *MyMember) Start() {
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
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/bin", "HOME=" + c.dir, "GORACE=halt_on_error=1"}
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

// Running reports whether the agent process runs.
func (m *MyMember) Running() bool {
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

// Kill sends SIGKILL to the agent (not to its server) and waits for it.
func (m *MyMember) Kill() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// Reload rewrites the member's config file and sends its agent SIGHUP.
func (m *MyMember) Reload() {
	m.c.T.Helper()
	m.c.writeConfig(m)
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(syscall.SIGHUP)
	}
}

// KillDB SIGKILLs the member's mariadbd (a crash).
func (m *MyMember) KillDB() { mytest.Kill(m.Server.DataDir) }

// Crash kills both the agent and its server (kill -9), like a host dying.
func (m *MyMember) Crash() {
	m.Kill()
	m.KillDB()
}

// DB opens a pool to the member's server as steward's account.
func (m *MyMember) DB() *sql.DB { return mytest.Open(m.Server.Addr(), "", "") }

// Exec runs statements on one connection to the member's server.
func (m *MyMember) Exec(stmts ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return mytest.TryExec(ctx, m.Server.Addr(), stmts...)
}

// QueryInt runs a query returning one integer.
func (m *MyMember) QueryInt(q string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	db := m.DB()
	defer db.Close()
	var n int64
	err := db.QueryRowContext(ctx, q, args...).Scan(&n)
	return n, err
}

// QueryString runs a query returning one string ("" for NULL).
func (m *MyMember) QueryString(q string, args ...any) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	db := m.DB()
	defer db.Close()
	var s sql.NullString
	err := db.QueryRowContext(ctx, q, args...).Scan(&s)
	return s.String, err
}

// SlaveStatus reads SHOW SLAVE STATUS (empty map: no replication).
func (m *MyMember) SlaveStatus() map[string]string {
	rows, err := mytest.TryQuery(m.Server.Addr(), "SHOW SLAVE STATUS")
	if err != nil || len(rows) == 0 {
		return map[string]string{}
	}
	return rows[0]
}

// Status fetches the member's GET /status (nil when unreachable).
func (m *MyMember) Status() *agent.PeerStatus {
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

// HTTPCode returns the status code of GET path on the member's API (0: no
// answer).
func (m *MyMember) HTTPCode(path string) int {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d%s", m.APIPort, path))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Log returns the agent's log so far.
func (m *MyMember) Log() string {
	b, _ := os.ReadFile(m.LogPath)
	return string(b)
}

// Steward runs the steward CLI with the member's config.
func (m *MyMember) Steward(args ...string) (string, int) {
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

// LoadCluster reads the DCS.
func (c *MyCluster) LoadCluster() *dcs.Cluster {
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
func (c *MyCluster) Leader() *MyMember {
	cl := c.LoadCluster()
	if cl == nil || cl.Leader == nil {
		return nil
	}
	return c.Member(cl.Leader.Name)
}

// Member returns a member by name.
func (c *MyCluster) Member(name string) *MyMember {
	for _, m := range c.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// History reads the DCS history.
func (c *MyCluster) History() []dcs.HistoryRecord {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := c.store.History(ctx)
	if err != nil {
		c.T.Fatal(err)
	}
	return h
}

// SetDynamic changes the cluster's dynamic config in the DCS (CAS).
func (c *MyCluster) SetDynamic(key, value string) {
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

// Pause turns maintenance mode on and waits until every agent applies it.
func (c *MyCluster) Pause() {
	c.T.Helper()
	c.SetDynamic("paused", "true")
	Eventually(c.T, 10*time.Second, "agents paused", func() bool {
		for _, m := range c.Members {
			if st := m.Status(); st == nil || !st.Paused {
				return false
			}
		}
		return true
	})
}

// WaitHealthy waits until one member is a writable leader and every other
// running member streams from it with GTID replication. It returns the
// leader.
func (c *MyCluster) WaitHealthy(within time.Duration) *MyMember {
	c.T.Helper()
	var leader *MyMember
	Eventually(c.T, within, "one writable leader and every replica streaming with a known lag", func() bool {
		cl := c.LoadCluster()
		if cl == nil || cl.Leader == nil {
			return false
		}
		leader = c.Member(cl.Leader.Name)
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
			} else if mm.State != agent.StateStreaming || mm.Following != leader.Name || mm.LagBytes < 0 {
				// LagBytes < 0: streaming, but its replay position is not known
				// yet (a MariaDB replica before its SQL thread applied an event):
				// a switchover to it would be refused.
				return false
			}
		}
		return true
	})
	return leader
}

// MyAck is one acknowledged write.
type MyAck struct {
	ID     int64
	Member string
	At     time.Time
}

// MyWriter inserts increasing ids into app.steward_test on whichever member
// accepts them (as the application account, which cannot bypass
// read_only), every interval, and records the acknowledged ones.
type MyWriter struct {
	mu    sync.Mutex
	acked []MyAck
	stop  chan struct{}
	done  chan struct{}
}

// StartMyWriter starts writing; ids continue from next.
func StartMyWriter(members []*MyMember, every time.Duration, next int64) *MyWriter {
	w := &MyWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		dbs := map[string]*sql.DB{}
		for _, m := range members {
			db := mytest.Open(m.Server.Addr(), mytest.AppUser, mytest.AppPassword)
			db.SetMaxOpenConns(1)
			dbs[m.Name] = db
			defer db.Close()
		}
		id := next - 1
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
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				_, err := dbs[m.Name].ExecContext(ctx, "INSERT INTO app.steward_test (id, member) VALUES (?, ?)", id, m.Name)
				cancel()
				if err == nil {
					w.mu.Lock()
					w.acked = append(w.acked, MyAck{ID: id, Member: m.Name, At: time.Now()})
					w.mu.Unlock()
					break
				}
			}
		}
	}()
	return w
}

// Stop ends the writer.
func (w *MyWriter) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// Snapshot returns the acknowledged writes so far.
func (w *MyWriter) Snapshot() []MyAck {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]MyAck(nil), w.acked...)
}
