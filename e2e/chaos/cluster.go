package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/etcd"
)

// Settings are a chaos cluster's knobs.
type Settings struct {
	TTL, LoopWait, RetryTimeout time.Duration
	MaxLag                      int64 // maximum_lag_on_failover, bytes
	PrimaryUnhealthyTimeout     time.Duration
	PrimaryStartTimeout         time.Duration
	// SynchronousMode is written to bootstrap.synchronous_mode (off, on,
	// strict). The loss checker demands zero loss when it is not off.
	SynchronousMode string
	// FencingMode is fencing.mode; with required or best-effort the hook
	// kills the former primary's PostgreSQL (a STONITH power-off).
	FencingMode string
	LogLevel    string
	Members     int
	// TmpfsSize bounds each member's data filesystem (the WAL disk).
	TmpfsSize string
	// Backend is the members' database: "postgres" (PostgreSQL 15) or
	// "mysql" (MariaDB 10.11, see mysql.go; synchronous modes use semi-synchronous replication).
	Backend string
}

// DefaultSettings: ttl 5 s, loop_wait 500 ms, retry_timeout 1 s, 1MB lag,
// fencing required, asynchronous.
func DefaultSettings() Settings {
	return Settings{TTL: 5 * time.Second, LoopWait: 500 * time.Millisecond, RetryTimeout: time.Second, MaxLag: 1 << 20,
		PrimaryUnhealthyTimeout: 5 * time.Second, PrimaryStartTimeout: 5 * time.Second,
		SynchronousMode: "off", FencingMode: "required", LogLevel: "info", Members: 3, TmpfsSize: "512M", Backend: "postgres"}
}

const (
	pgPort      = 5432 // what others connect to (the member's delay proxy)
	pgLocalPort = 5433 // where PostgreSQL listens, on the member's 127.0.0.1
	apiPort     = 8008
	etcdClient  = 2379
	etcdPeer    = 2380
	superPass   = "chaos-secret"
	pgBinDir    = "/usr/lib/postgresql/15/bin"
	runAsUser   = "postgres"
)

// proc is a process the suite started.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startProc(cmd *exec.Cmd, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

func (p *proc) running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proc) signal(sig syscall.Signal) {
	if p.running() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill sends SIGKILL (SIGCONT first, in case it was stopped) and waits.
func (p *proc) kill() {
	if p == nil {
		return
	}
	p.signal(syscall.SIGKILL)
	p.signal(syscall.SIGCONT)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
}

// EtcdNode is one member of the 3-node etcd cluster, in its own namespace.
type EtcdNode struct {
	Name    string
	Host    *Host
	dataDir string
	logPath string
	initial string
	token   string
	p       *proc
}

// ClientURL is the node's client URL.
func (e *EtcdNode) ClientURL() string { return fmt.Sprintf("http://%s:%d", e.Host.IP, etcdClient) }

// Start (re)starts the node with its data directory.
func (e *EtcdNode) Start() error {
	state := "new"
	if _, err := os.Stat(filepath.Join(e.dataDir, "member")); err == nil {
		state = "existing"
	}
	peer := fmt.Sprintf("http://%s:%d", e.Host.IP, etcdPeer)
	cmd := NSCommand(e.Host.NS, "", "/usr/bin/etcd", "--name", e.Name, "--data-dir", e.dataDir,
		"--listen-client-urls", e.ClientURL(), "--advertise-client-urls", e.ClientURL(),
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", e.initial, "--initial-cluster-state", state, "--initial-cluster-token", e.token,
		"--log-level", "warn")
	p, err := startProc(cmd, e.logPath)
	if err != nil {
		return err
	}
	e.p = p
	return nil
}

// Kill is kill -9 of the node.
func (e *EtcdNode) Kill() { e.p.kill() }

// Running reports whether the process runs.
func (e *EtcdNode) Running() bool { return e.p.running() }

// Member is one test host: an agent and its PostgreSQL, with the delay
// proxies in front of its etcd and PostgreSQL traffic.
type Member struct {
	Name     string
	Host     *Host
	c        *Cluster
	Mount    string // tmpfs: the member's data and WAL disk
	DataDir  string
	Config   string
	LogPath  string
	FaultDir string
	agent    *proc
	pgProxy  *DelayProxy
	etcdPx   []*DelayProxy
}

// Cluster is the whole lab: etcd, members, HAProxy, the client.
type Cluster struct {
	S       Settings
	Lab     *Lab
	Dir     string
	Binary  string
	Etcd    []*EtcdNode
	Members []*Member
	HAProxy *Host
	hap     *proc
	hapCfg  string
	binDir  string
	store   *etcd.Store
	log     *slog.Logger
	uid     int
	gid     int

	mu       sync.Mutex
	cleanups []func()
}

// addCleanup registers f to run at Close, last registered first.
func (c *Cluster) addCleanup(f func()) {
	c.mu.Lock()
	c.cleanups = append(c.cleanups, f)
	c.mu.Unlock()
}

// Close tears everything down: processes (by PID), mounts, namespaces.
func (c *Cluster) Close() {
	c.mu.Lock()
	cl := c.cleanups
	c.cleanups = nil
	c.mu.Unlock()
	for i := len(cl) - 1; i >= 0; i-- {
		cl[i]()
	}
}

// NewCluster builds the lab and starts etcd, the members' agents (m1
// first, so that it bootstraps) and HAProxy. On error, everything made so
// far is torn down.
func NewCluster(s Settings, binary, dir string, log *slog.Logger) (c *Cluster, err error) {
	if err := RequireTools(); err != nil {
		return nil, err
	}
	u, err := user.Lookup(s.osUser())
	if err != nil {
		return nil, fmt.Errorf("the database runs as the OS user %q: %v (install postgresql-15 and mariadb-server: make deps)", s.osUser(), err)
	}
	c = &Cluster{S: s, Dir: dir, Binary: binary, log: log}
	c.uid, _ = strconv.Atoi(u.Uid)
	c.gid, _ = strconv.Atoi(u.Gid)
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return c, err
	}
	ReapOrphans(log)
	id := newRunID()
	if err := markRun(dir, id); err != nil {
		return c, err
	}
	lab, err := NewLab(id, log)
	if err != nil {
		return c, err
	}
	c.Lab = lab
	c.addCleanup(lab.Close)
	log.Info("lab created", "id", id, "switch", lab.Switch, "subnet", lab.Prefix+"0/24", "dir", dir)

	// etcd: e1..e3 at .21-.23.
	var initial []string
	for i := 1; i <= 3; i++ {
		h, err := lab.AddHost(fmt.Sprintf("e%d", i), 20+i)
		if err != nil {
			return c, err
		}
		e := &EtcdNode{Name: fmt.Sprintf("e%d", i), Host: h, dataDir: filepath.Join(dir, fmt.Sprintf("e%d.etcd", i)),
			logPath: filepath.Join(dir, fmt.Sprintf("e%d.etcd.log", i)), token: "stwchaos-" + id}
		c.Etcd = append(c.Etcd, e)
		initial = append(initial, fmt.Sprintf("e%d=http://%s:%d", i, h.IP, etcdPeer))
	}
	for _, e := range c.Etcd {
		e.initial = strings.Join(initial, ",")
		if err := e.Start(); err != nil {
			return c, err
		}
		c.addCleanup(e.Kill)
	}
	var eps []string
	for _, e := range c.Etcd {
		eps = append(eps, e.ClientURL())
	}
	st, err := etcd.New(etcd.Options{Endpoints: eps, Namespace: "/steward", Cluster: "chaos", RequestTimeout: 3 * time.Second, TTL: s.TTL})
	if err != nil {
		return c, err
	}
	c.store = st
	c.addCleanup(func() { st.Close() })
	if err := waitFor(60*time.Second, func() bool { return c.EtcdLeader() != nil }); err != nil {
		return c, fmt.Errorf("the etcd cluster elected no leader: %w\n%s", err, tailFile(c.Etcd[0].logPath, 20))
	}

	hookScript := myFenceHookScript
	if !s.IsMySQL() {
		hookScript = fenceHookScript
		if err := c.makeBinDir(); err != nil {
			return c, err
		}
	}
	hook := filepath.Join(dir, "fence-kill.sh")
	if err := os.WriteFile(hook, []byte(hookScript), 0o755); err != nil {
		return c, err
	}
	for i := 1; i <= s.Members; i++ {
		h, err := lab.AddHost(fmt.Sprintf("m%d", i), 10+i)
		if err != nil {
			return c, err
		}
		m := &Member{Name: h.Name, Host: h, c: c, Mount: filepath.Join(dir, h.Name)}
		m.DataDir = filepath.Join(m.Mount, "data")
		m.Config = filepath.Join(dir, h.Name+".yml")
		m.LogPath = filepath.Join(dir, h.Name+".agent.log")
		m.FaultDir = filepath.Join(dir, h.Name+".faults")
		if err := os.MkdirAll(m.FaultDir, 0o755); err != nil {
			return c, err
		}
		if err := c.mountTmpfs(m.Mount); err != nil {
			return c, err
		}
		c.addCleanup(func() { c.unmount(m) })
		if s.IsMySQL() {
			if err := c.myInitMember(m, i); err != nil {
				return c, err
			}
		}
		// Proxies: the database at IP:5432 -> 127.0.0.1:5433 (MariaDB:
		// 3306 -> 3307), and one local port per etcd node for the agent.
		port, local := s.dbPorts()
		px, err := StartDelayProxy(h.NS, fmt.Sprintf("%s:%d", h.IP, port), h.NS, fmt.Sprintf("127.0.0.1:%d", local))
		if err != nil {
			return c, err
		}
		m.pgProxy = px
		c.addCleanup(px.Close)
		for j, e := range c.Etcd {
			ep, err := StartDelayProxy(h.NS, fmt.Sprintf("127.0.0.1:%d", 23791+j), h.NS, fmt.Sprintf("%s:%d", e.Host.IP, etcdClient))
			if err != nil {
				return c, err
			}
			m.etcdPx = append(m.etcdPx, ep)
			c.addCleanup(ep.Close)
		}
		if err := c.writeConfig(m, hook); err != nil {
			return c, err
		}
		c.Members = append(c.Members, m)
		c.addCleanup(func() { m.agent.kill(); m.KillPostgres() })
	}
	hap, err := lab.AddHost("hap", 30)
	if err != nil {
		return c, err
	}
	c.HAProxy = hap
	if err := c.startHAProxy(); err != nil {
		return c, err
	}

	// m1 bootstraps; the others clone from it.
	if err := c.Members[0].Start(); err != nil {
		return c, err
	}
	if err := waitFor(90*time.Second, func() bool {
		st := c.Members[0].Status()
		return st != nil && st.Writable && st.Leader
	}); err != nil {
		return c, fmt.Errorf("m1 did not bootstrap: %w\n%s", err, tailFile(c.Members[0].LogPath, 30))
	}
	for _, m := range c.Members[1:] {
		if err := m.Start(); err != nil {
			return c, err
		}
	}
	if _, err := c.WaitHealthy(120 * time.Second); err != nil {
		return c, fmt.Errorf("the cluster did not become healthy: %w", err)
	}
	return c, nil
}

// makeBinDir makes the members' postgres.bin_dir: PostgreSQL 15's
// programs, with initdb wrapped to make 1 MB WAL segments instead of 16.
// Every failover leaves a copy of the current segment per timeline, and a
// long schedule makes hundreds; at 16 MB each they would fill the small WAL
// disks for reasons no production cluster shares (docs/reliability.md).
func (c *Cluster) makeBinDir() error {
	c.binDir = filepath.Join(c.Dir, "pgbin")
	if err := os.MkdirAll(c.binDir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(pgBinDir)
	if err != nil {
		return fmt.Errorf("PostgreSQL 15 programs: %w (make deps installs postgresql-15)", err)
	}
	for _, e := range ents {
		if e.Name() == "initdb" {
			continue
		}
		if err := os.Symlink(filepath.Join(pgBinDir, e.Name()), filepath.Join(c.binDir, e.Name())); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(c.binDir, "initdb"), []byte("#!/bin/sh\nexec "+pgBinDir+"/initdb --wal-segsize=1 \"$@\"\n"), 0o755)
}

// fenceHookScript is the STONITH hook of the suite: it powers the target
// "off" by stopping its postmaster (so that it forks nothing more) and
// killing it and all its children. $1 = run directory, $2 = target.
const fenceHookScript = `#!/bin/sh
pidfile="$1/$2/data/postmaster.pid"
pid=$(head -n 1 "$pidfile" 2>/dev/null) || { echo "no postmaster for $2: nothing to fence"; exit 0; }
[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { echo "postmaster $pid of $2 is gone: nothing to fence"; exit 0; }
kill -STOP "$pid" 2>/dev/null
kids=$(pgrep -P "$pid")
kill -9 "$pid" $kids 2>/dev/null
echo "fenced $2: killed postmaster $pid and its children $kids"
`

func (c *Cluster) mountTmpfs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	opts := fmt.Sprintf("size=%s,mode=0755,uid=%d,gid=%d", c.S.TmpfsSize, c.uid, c.gid)
	return run("mount", "-t", "tmpfs", "-o", opts, "stwchaos", dir)
}

func (c *Cluster) unmount(m *Member) {
	for i := 0; i < 50; i++ {
		if err := syscall.Unmount(m.Mount, 0); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Unmount(m.Mount, syscall.MNT_DETACH)
}

// writeConfig writes the member's steward.yml. Two PostgreSQL settings
// keep the small WAL disk from filling with what the faults leave behind
// (docs/reliability.md, "Violations found"): max_slot_wal_keep_size bounds
// what a stale replication slot on a former primary can pin, and a 30 s
// checkpoint_timeout lets replicas recycle WAL between faults.
func (c *Cluster) writeConfig(m *Member, hook string) error {
	s := c.S
	fencing := "fencing: {mode: off}\n"
	if s.FencingMode != "off" {
		fencing = fmt.Sprintf("fencing:\n  mode: %s\n  hooks:\n    - name: power-off\n      command: [%s, %s, \"{target_name}\"]\n      timeout: 5s\n", s.FencingMode, hook, c.Dir)
	}
	db := c.pgConfigSection(m)
	if s.IsMySQL() {
		db = c.myConfigSection(m)
	}
	cfg := fmt.Sprintf(`cluster: chaos
name: %s
etcd:
  endpoints: [http://127.0.0.1:23791, http://127.0.0.1:23792, http://127.0.0.1:23793]
bootstrap:
  ttl: %s
  loop_wait: %s
  retry_timeout: %s
  maximum_lag_on_failover: %d
  primary_unhealthy_timeout: %s
  primary_start_timeout: %s
  synchronous_mode: %s
api:
  listen: %s:%d
  connect_address: %s:%d
%s%slog: {level: %s, format: text}
`, m.Name, s.TTL, s.LoopWait, s.RetryTimeout, s.MaxLag, s.PrimaryUnhealthyTimeout, s.PrimaryStartTimeout, s.SynchronousMode,
		m.Host.IP, apiPort, m.Host.IP, apiPort, db, fencing, s.LogLevel)
	return os.WriteFile(m.Config, []byte(cfg), 0o644)
}

// pgConfigSection is the member's postgres section.
func (c *Cluster) pgConfigSection(m *Member) string {
	return fmt.Sprintf(`postgres:
  data_dir: %s
  bin_dir: %s
  listen: 127.0.0.1:%d
  connect_address: %s:%d
  superuser: {username: postgres, password: %s}
  replication: {username: replicator, password: rep-%s}
  pg_hba:
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
  parameters:
    shared_buffers: 16MB
    max_connections: "40"
    fsync: "off"
    cluster_name: %s
    min_wal_size: 8MB
    max_wal_size: 64MB
    max_slot_wal_keep_size: 128MB
    checkpoint_timeout: 30s
`, m.DataDir, c.binDir, pgLocalPort, m.Host.IP, pgPort, superPass, superPass, m.Name)
}

// ClientConfig is a config file the test's CLI calls use: the first
// member's, with etcd reached directly over the lab network.
func (c *Cluster) ClientConfig() (string, error) {
	p := filepath.Join(c.Dir, "client.yml")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	b, err := os.ReadFile(c.Members[0].Config)
	if err != nil {
		return "", err
	}
	var eps []string
	for _, e := range c.Etcd {
		eps = append(eps, e.ClientURL())
	}
	s := regexp.MustCompile(`(?m)^  endpoints: .*$`).ReplaceAllString(string(b), "  endpoints: ["+strings.Join(eps, ", ")+"]")
	return p, os.WriteFile(p, []byte(s), 0o644)
}

// Start starts the member's agent (in its namespace, as the postgres
// user); it does nothing while the agent runs (two agents for one member
// would be a fault the suite did not mean, and one it could not end).
func (m *Member) Start() error {
	if m.agent.running() {
		return nil
	}
	cmd := NSCommand(m.Host.NS, m.c.S.osUser(), m.c.Binary, "agent", "--config", m.Config)
	cmd.Dir = m.c.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + m.c.Dir, "STEWARD_FAULTS=" + m.FaultDir}
	p, err := startProc(cmd, m.LogPath)
	if err != nil {
		return err
	}
	m.agent = p
	return nil
}

// AgentRunning reports whether the agent process runs.
func (m *Member) AgentRunning() bool { return m.agent.running() }

// KillAgent is kill -9 of the agent (its database keeps running).
func (m *Member) KillAgent() { m.agent.kill() }

// SignalAgent sends sig to the agent.
func (m *Member) SignalAgent(sig syscall.Signal) { m.agent.signal(sig) }

// Fault turns a fault point of the agent (agent/faults_on.go) on or off.
func (m *Member) Fault(name string, on bool) error {
	p := filepath.Join(m.FaultDir, name)
	if !on {
		err := os.Remove(p)
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	return os.WriteFile(p, nil, 0o644)
}

// PostmasterPID is the PID in postmaster.pid (MariaDB: mariadbd.pid)
// when that process lives.
func (m *Member) PostmasterPID() int {
	pidFile := "postmaster.pid"
	if m.c.S.IsMySQL() {
		pidFile = "mariadbd.pid"
	}
	b, err := os.ReadFile(filepath.Join(m.DataDir, pidFile))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// postgresPIDs: the postmaster and its children.
func (m *Member) postgresPIDs() []int {
	pid := m.PostmasterPID()
	if pid == 0 {
		return nil
	}
	return append([]int{pid}, childrenOf(pid)...)
}

// KillPostgres is kill -9 of the postmaster and all its children.
func (m *Member) KillPostgres() {
	pids := m.postgresPIDs()
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGCONT)
	}
	if len(pids) > 0 {
		_ = waitFor(5*time.Second, func() bool { return syscall.Kill(pids[0], 0) != nil })
	}
}

// SignalPostgres sends sig to the postmaster and its children; it returns
// the PIDs signalled (to continue exactly those later).
func (m *Member) SignalPostgres(sig syscall.Signal) []int {
	pids := m.postgresPIDs()
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
	return pids
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

// DSN of the member's database through its proxy, from the client, as
// the superuser (MariaDB: steward's account).
func (m *Member) DSN() string {
	if m.c.S.IsMySQL() {
		return myDSN(myUser, superPass, fmt.Sprintf("%s:%d", m.Host.IP, myPort))
	}
	return fmt.Sprintf("host=%s port=%d user=postgres password=%s dbname=postgres connect_timeout=2 sslmode=disable", m.Host.IP, pgPort, superPass)
}

// Exec runs one statement on the member.
func (m *Member) Exec(sql string) error {
	if m.c.S.IsMySQL() {
		return myExec(m.DSN(), sql)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Query runs one query returning one row.
func (m *Member) Query(ctx context.Context, sql string, dest ...any) error {
	if m.c.S.IsMySQL() {
		return myQueryRow(ctx, m.DSN(), sql, dest...)
	}
	return queryRow(ctx, m.DSN(), sql, dest...)
}

func queryRow(ctx context.Context, dsn, sql string, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// Status is the member's GET /status (nil: no answer).
func (m *Member) Status() *agent.PeerStatus {
	var st agent.PeerStatus
	if m.getJSON("/status", &st) != nil {
		return nil
	}
	return &st
}

// HTTPCode is the status code of GET path on the member's API (0: none).
func (m *Member) HTTPCode(path string) int {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://%s:%d%s", m.Host.IP, apiPort, path))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (m *Member) getJSON(path string, v any) error {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://%s:%d%s", m.Host.IP, apiPort, path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// SetDelay sets the one-way latency on the member's etcd and PostgreSQL
// paths.
func (m *Member) SetDelay(d time.Duration) {
	m.pgProxy.SetDelay(d)
	for _, p := range m.etcdPx {
		p.SetDelay(d)
	}
}

// Load reads the DCS (nil when unreachable).
func (c *Cluster) Load() *dcs.Cluster {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cl, err := c.store.Load(ctx)
	if err != nil {
		return nil
	}
	return cl
}

// History reads the DCS history.
func (c *Cluster) History() ([]dcs.HistoryRecord, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.store.History(ctx)
}

// Member by name (nil: none).
func (c *Cluster) Member(name string) *Member {
	for _, m := range c.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// EtcdLeader is the etcd node that is raft leader (nil: none known).
func (c *Cluster) EtcdLeader() *EtcdNode {
	for _, e := range c.Etcd {
		if !e.Running() {
			continue
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ClientURL()}, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, e.ClientURL())
		cancel()
		cli.Close()
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return e
		}
	}
	return nil
}

// Steward runs the steward CLI with the client config.
func (c *Cluster) Steward(args ...string) (string, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.Binary, append(args, "--config", cfg)...).CombinedOutput()
	return string(out), err
}

func (c *Cluster) startHAProxy() error {
	b, err := os.ReadFile(filepath.Join(repoRoot(), "docs", "examples", "haproxy.cfg"))
	if err != nil {
		return fmt.Errorf("reading the documented HAProxy config: %w", err)
	}
	s := string(b)
	port, _ := c.S.dbPorts()
	for i, m := range c.Members {
		s = strings.ReplaceAll(s, fmt.Sprintf("10.0.0.1%d:5432", i+1), fmt.Sprintf("%s:%d", m.Host.IP, port))
	}
	if strings.Contains(s, "10.0.0.") {
		return fmt.Errorf("docs/examples/haproxy.cfg has servers the chaos cluster has no member for")
	}
	c.hapCfg = filepath.Join(c.Dir, "haproxy.cfg")
	if err := os.WriteFile(c.hapCfg, []byte(s), 0o644); err != nil {
		return err
	}
	p, err := startProc(NSCommand(c.HAProxy.NS, "", "/usr/sbin/haproxy", "-db", "-f", c.hapCfg), filepath.Join(c.Dir, "haproxy.log"))
	if err != nil {
		return err
	}
	c.hap = p
	c.addCleanup(p.kill)
	return nil
}

// HAProxyDSN connects through HAProxy's write port (MariaDB: as the
// application account).
func (c *Cluster) HAProxyDSN() string {
	if c.S.IsMySQL() {
		return myDSN(appUser, appPass, c.HAProxy.IP+":5000")
	}
	return fmt.Sprintf("host=%s port=5000 user=postgres password=%s dbname=postgres connect_timeout=2 sslmode=disable", c.HAProxy.IP, superPass)
}

// repoRoot is the module root (the tests run in e2e/chaos).
func repoRoot() string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return wd
}

func waitFor(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tailFile(path string, n int) string {
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
