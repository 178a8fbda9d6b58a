package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/etcd"
	"github.com/stewardha/steward/internal/freeport"
)

// defaultPGBinDir is where Debian's postgresql-15 installs the binaries; the
// demo installs that package when they are missing there.
const defaultPGBinDir = "/usr/lib/postgresql/15/bin"

type demoOpts struct {
	members   int
	dir       string
	keep      bool
	killAfter time.Duration
	binDir    string
	ttl       time.Duration
	loopWait  time.Duration
	backend   string // postgres or mysql
}

func newDemoCmd(e *env) *cobra.Command {
	o := demoOpts{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a live local cluster: in-process etcd, 3 PostgreSQL members and their agents",
		Long: `Run a complete steward cluster on this machine: an in-process etcd and three
PostgreSQL members with their agents on 127.0.0.1, then print the cluster and
how to watch a failover. With --kill-primary-after, the primary (agent and
PostgreSQL) is killed after that delay and the failover is printed as a
timeline: detected, candidates, promoted, rejoined.

Ctrl-C stops everything and removes the demo directory (unless --keep).
Running as root, PostgreSQL runs as the "postgres" user.

With --backend mysql the members are MariaDB servers instead (Debian's
mariadb-server, installed when missing and running as root): each data
directory is initialized with steward's account, and each agent starts its
mariadbd through mysql.start_command (as the "mysql" user when root).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(e, o) },
	}
	f := cmd.Flags()
	f.IntVar(&o.members, "members", 3, "number of PostgreSQL members")
	f.StringVar(&o.dir, "dir", "", "directory for data and logs (default: a new temporary directory)")
	f.BoolVar(&o.keep, "keep", false, "keep the demo directory after Ctrl-C")
	f.DurationVar(&o.killAfter, "kill-primary-after", 0, "kill the primary (agent and PostgreSQL) this long after the cluster is up, and show the failover")
	f.StringVar(&o.binDir, "bin-dir", defaultPGBinDir, "PostgreSQL binaries")
	f.DurationVar(&o.ttl, "ttl", 10*time.Second, "leader key ttl")
	f.DurationVar(&o.loopWait, "loop-wait", time.Second, "HA loop interval")
	f.StringVar(&o.backend, "backend", "postgres", "database of the members: postgres or mysql (MariaDB)")
	return cmd
}

// demo is a running demo cluster.
type demo struct {
	e       *env
	o       demoOpts
	dir     string
	start   time.Time
	etcd    *embed.Etcd
	store   *etcd.Store
	cfgs    []*config.Config
	nodes   map[string]*node
	logs    map[string]*os.File
	printed map[string]string
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.e.stdout, "[%7.2fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func runDemo(e *env, o demoOpts) error {
	if o.members < 1 || o.members > 9 {
		return usageErr(fmt.Errorf("--members %d: expected 1 to 9", o.members))
	}
	if o.ttl < 3*time.Second || o.ttl%time.Second != 0 {
		return usageErr(fmt.Errorf("--ttl %v: expected whole seconds, at least 3s", o.ttl))
	}
	switch o.backend {
	case "postgres":
		if err := ensurePostgres(e, o.binDir); err != nil {
			return err
		}
	case "mysql":
		if err := ensureMariaDB(e); err != nil {
			return err
		}
	default:
		return usageErr(fmt.Errorf("--backend %q: expected postgres or mysql", o.backend))
	}
	d := &demo{e: e, o: o, start: time.Now(), nodes: map[string]*node{}, logs: map[string]*os.File{}, printed: map[string]string{}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	defer d.cleanup()
	if err := d.setup(); err != nil {
		return err
	}
	d.say("etcd (in-process) at %s", d.store.Endpoints()[0])
	// The first member bootstraps; the others clone from it.
	if err := d.startMember(0); err != nil {
		return err
	}
	if !d.waitFor(ctx, 120*time.Second, func(cl *dcs.Cluster) bool { return cl.Leader != nil && d.memberState(cl, cl.Leader.Name) == "running" }) {
		return d.abort(ctx, "the first member did not bootstrap within 120s")
	}
	d.say("%s bootstrapped the cluster and leads it", d.cfgs[0].Name)
	for i := 1; i < len(d.cfgs); i++ {
		if err := d.startMember(i); err != nil {
			return err
		}
	}
	if !d.waitFor(ctx, 120*time.Second, d.healthy) {
		return d.abort(ctx, "the replicas did not start streaming within 120s")
	}
	d.say("cluster is up: one primary, %d streaming replicas", len(d.cfgs)-1)
	d.printTable()
	d.printHelp()

	if o.killAfter > 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.killAfter):
		}
		if err := d.failover(ctx); err != nil {
			return err
		}
	}
	d.say("press Ctrl-C to stop the demo")
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(e.stdout)
			d.say("stopping the demo")
			return nil
		case <-t.C:
			d.watchChanges()
		}
	}
}

// ensurePostgres installs PostgreSQL 15 when its binaries are missing and we
// may (root with apt-get), and otherwise says how to.
func ensurePostgres(e *env, binDir string) error {
	if _, err := os.Stat(filepath.Join(binDir, "pg_ctl")); err == nil {
		return nil
	}
	if os.Geteuid() != 0 || binDir != defaultPGBinDir {
		return fmt.Errorf("PostgreSQL not found in %s: install it (apt-get install postgresql-15) or pass --bin-dir", binDir)
	}
	fmt.Fprintln(e.stdout, "PostgreSQL 15 is not installed: installing postgresql-15 with apt-get ...")
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "--no-install-recommends", "postgresql-15"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = io.Discard, e.stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	if _, err := os.Stat(filepath.Join(binDir, "pg_ctl")); err != nil {
		return fmt.Errorf("PostgreSQL still not found in %s after installing postgresql-15", binDir)
	}
	return nil
}

// freePort: a port outside the kernel's ephemeral range, so that a member
// restarted during a switchover finds its port still free.
func freePort() (int, error) { return freeport.Free() }

func (d *demo) setup() error {
	dir := d.o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "steward-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d.dir = dir
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	runAs := ""
	if os.Geteuid() == 0 {
		runAs = "postgres"
		if d.o.backend == "mysql" {
			runAs = "mysql"
		}
		u, err := user.Lookup(runAs)
		if err != nil {
			return fmt.Errorf("running as root, the database must run as the %s user: %w", runAs, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return err
		}
	}
	// etcd in-process.
	ec := embed.NewConfig()
	ec.Name = "demo"
	ec.Dir = filepath.Join(dir, "etcd")
	cp, err := freePort()
	if err != nil {
		return err
	}
	pp, err := freePort()
	if err != nil {
		return err
	}
	cu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(cp))
	pu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(pp))
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	d.etcd, err = embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	select {
	case <-d.etcd.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return errors.New("etcd did not start within 30s")
	}
	for i := 1; i <= d.o.members; i++ {
		name := fmt.Sprintf("pg%d", i)
		if d.o.backend == "mysql" {
			name = fmt.Sprintf("my%d", i)
		}
		apiPort, err := freePort()
		if err != nil {
			return err
		}
		pgPort, err := freePort()
		if err != nil {
			return err
		}
		var yml string
		if d.o.backend == "mysql" {
			if yml, err = d.mysqlMember(i, name, cu.String(), apiPort, pgPort, runAs); err != nil {
				return err
			}
		} else {
			yml = fmt.Sprintf(`# steward demo member %[1]s
cluster: demo
name: %[1]s
etcd:
  endpoints: [%[2]s]
bootstrap:
  ttl: %[3]s
  loop_wait: %[4]s
  retry_timeout: %[5]s
api:
  listen: 127.0.0.1:%[6]d
postgres:
  data_dir: %[7]s
  bin_dir: %[8]s
  listen: 127.0.0.1:%[9]d
  superuser: {username: postgres, password: demo}
  replication: {username: replicator, password: demo-rep}
  pg_hba:
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
  parameters: {shared_buffers: 32MB, max_connections: "50"}
  run_as: %[10]s
log: {level: info, format: text}
`, name, cu.String(), d.o.ttl, d.o.loopWait, retryFor(d.o.ttl, d.o.loopWait), apiPort, filepath.Join(dir, name), d.o.binDir, pgPort, orDefault(runAs, "postgres"))
		}
		path := filepath.Join(dir, name+".yml")
		if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
			return err
		}
		cfg, err := config.Load(path, func(string) (string, bool) { return "", false })
		if err != nil {
			return fmt.Errorf("demo config %s: %w", path, err)
		}
		d.cfgs = append(d.cfgs, cfg)
	}
	d.store, err = etcd.New(storeOptions(d.cfgs[0], "", nil))
	if err != nil {
		return err
	}
	d.say("demo directory: %s (configs, data and logs)", dir)
	return nil
}

// retryFor picks a retry_timeout that satisfies ttl >= loop_wait + 2*retry.
func retryFor(ttl, loop time.Duration) time.Duration {
	r := (ttl - loop) / 2
	if r > 3*time.Second {
		r = 3 * time.Second
	}
	return r.Truncate(100 * time.Millisecond)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (d *demo) startMember(i int) error {
	cfg := d.cfgs[i]
	lf := d.logs[cfg.Name]
	if lf == nil {
		var err error
		// <name>.log is PostgreSQL's own log (beside its data directory).
		lf, err = os.OpenFile(filepath.Join(d.dir, cfg.Name+".agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		d.logs[cfg.Name] = lf
	}
	n, err := startNode(context.Background(), cfg, newLogger(lf, cfg.Log).With("member", cfg.Name), nil)
	if err != nil {
		return fmt.Errorf("starting %s: %w", cfg.Name, err)
	}
	d.nodes[cfg.Name] = n
	if cfg.MySQL != nil {
		d.say("started %s: MariaDB on %s, REST API on http://%s (log: %s)", cfg.Name, cfg.MySQL.Address, cfg.API.Listen, lf.Name())
		return nil
	}
	d.say("started %s: PostgreSQL on %s, REST API on http://%s (log: %s)", cfg.Name, cfg.Postgres.Listen, cfg.API.Listen, lf.Name())
	return nil
}

func (d *demo) load() *dcs.Cluster {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cl, err := d.store.Load(ctx)
	if err != nil {
		return nil
	}
	return cl
}

func (d *demo) memberState(cl *dcs.Cluster, name string) string {
	if m, ok := cl.Members[name]; ok {
		return m.State
	}
	return ""
}

func (d *demo) healthy(cl *dcs.Cluster) bool {
	if cl.Leader == nil || d.memberState(cl, cl.Leader.Name) != "running" {
		return false
	}
	for name := range d.nodes {
		if name != cl.Leader.Name && d.memberState(cl, name) != "streaming" {
			return false
		}
	}
	return true
}

func (d *demo) waitFor(ctx context.Context, within time.Duration, cond func(*dcs.Cluster) bool) bool {
	end := time.Now().Add(within)
	for time.Now().Before(end) {
		if cl := d.load(); cl != nil && cond(cl) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

func (d *demo) abort(ctx context.Context, msg string, members ...string) error {
	if ctx.Err() != nil {
		return nil
	}
	// Say why before the directory goes away: the cluster as the DCS
	// shows it (each member's state and reason) and the end of the logs of
	// the members concerned.
	d.printTable()
	for _, name := range members {
		logs := []string{filepath.Join(d.dir, name+".agent.log")}
		for _, c := range d.cfgs {
			if c.Name == name && c.MySQL != nil {
				logs = append(logs, filepath.Join(d.dir, name, "mariadbd.err"))
			}
		}
		for _, f := range logs {
			if tail := tailLines(f, 25); tail != "" {
				fmt.Fprintf(d.e.stdout, "--- last lines of %s:\n%s\n", f, tail)
			}
		}
	}
	return fmt.Errorf("%s; see the member logs in %s (run with --keep to inspect them)", msg, d.dir)
}

// tailLines returns the last n lines of a file ("" when it cannot be read).
func tailLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (d *demo) printTable() {
	if cl := d.load(); cl != nil {
		fmt.Fprintln(d.e.stdout)
		_ = renderList(d.e.stdout, "table", d.cfgs[0], cl)
		fmt.Fprintln(d.e.stdout)
	}
}

func (d *demo) printHelp() {
	c := d.cfgs[0]
	if c.MySQL != nil {
		d.printHelpMySQL()
		return
	}
	exe, _ := os.Executable()
	fmt.Fprintf(d.e.stdout, `Try, in another terminal:
  %[1]s list --config %[2]s   # the cluster table
  curl -s -o /dev/null -w '%%{http_code}\n' http://%[3]s/primary   # 200 on the primary, 503 elsewhere
  psql "host=127.0.0.1 port=%[4]s user=postgres password=demo dbname=postgres"
To watch a failover: run the demo with --kill-primary-after 20s, or kill -9 the
primary's postmaster and see what the agents do (logs in %[5]s).

`, exe, filepath.Join(d.dir, c.Name+".yml"), c.API.Listen, strings.TrimPrefix(c.Postgres.Listen[strings.LastIndex(c.Postgres.Listen, ":"):], ":"), d.dir)
}

// failover kills the primary and narrates what happens.
func (d *demo) failover(ctx context.Context) error {
	cl := d.load()
	if cl == nil || cl.Leader == nil {
		return errors.New("no leader to kill")
	}
	old := cl.Leader.Name
	oldTerm := cl.Leader.Term
	var oldCfg *config.Config
	for _, c := range d.cfgs {
		if c.Name == old {
			oldCfg = c
		}
	}
	fmt.Fprintln(d.e.stdout)
	dbName := "PostgreSQL"
	if oldCfg.MySQL != nil {
		dbName = "MariaDB"
	}
	d.say("FAILOVER: killing the primary %s (its agent and %s, like kill -9 of the host)", old, dbName)
	t0 := time.Now()
	at := func() string { return fmt.Sprintf("t+%.2fs", time.Since(t0).Seconds()) }
	n := d.nodes[old]
	n.cancel() // the agent stops at once: it renews nothing and restarts nothing
	d.killDB(oldCfg, false)
	n.crash()
	d.killDB(oldCfg, false) // in case the loop restarted it before it saw the cancel
	delete(d.nodes, old)
	d.say("  %s  %s is down; its leader key lives until its lease expires (ttl %v after the last renewal)", at(), old, d.o.ttl)
	var newLeader string
	if !d.waitFor(ctx, d.o.ttl+30*time.Second, func(cl *dcs.Cluster) bool { return cl.Leader == nil || cl.Leader.Term != oldTerm }) {
		return d.abort(ctx, "the old leader key did not expire", old)
	}
	d.say("  %s  detected: the leader key of %s expired", at(), old)
	if !d.waitFor(ctx, 30*time.Second, func(cl *dcs.Cluster) bool {
		if cl.Leader != nil && cl.Leader.Term != oldTerm {
			newLeader = cl.Leader.Name
			return true
		}
		return false
	}) {
		return d.abort(ctx, "no member took over within 30s")
	}
	d.say("  %s  %s took the leader key", at(), newLeader)
	var newCfg *config.Config
	for _, c := range d.cfgs {
		if c.Name == newLeader {
			newCfg = c
		}
	}
	hc := http.Client{Timeout: time.Second}
	end := time.Now().Add(30 * time.Second)
	for time.Now().Before(end) {
		resp, err := hc.Get("http://" + newCfg.API.Listen + "/primary")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.say("  %s  promoted: %s accepts writes (GET /primary answers 200)", at(), newLeader)
	if h := d.lastHistory(); h != nil {
		var parts []string
		for _, c := range h.Candidates {
			s := c.Name + ": "
			if c.Eligible {
				s += "eligible at " + c.Position.String()
			} else {
				s += "rejected (" + strings.Join(c.Reasons, "; ") + ")"
			}
			parts = append(parts, s)
		}
		d.say("           candidates considered: %s", strings.Join(parts, " | "))
		d.say("           history: %s", h.Reason)
	}
	time.Sleep(2 * time.Second)
	d.say("  %s  restarting %s's agent: it must rejoin as a replica of %s", at(), old, newLeader)
	for i, c := range d.cfgs {
		if c.Name == old {
			if err := d.startMember(i); err != nil {
				return err
			}
		}
	}
	if !d.waitFor(ctx, 60*time.Second, func(cl *dcs.Cluster) bool {
		m, ok := cl.Members[old]
		return ok && m.State == "streaming" && m.Following == newLeader
	}) {
		return d.abort(ctx, old+" did not rejoin within 60s", old)
	}
	d.say("  %s  rejoined: %s streams from %s", at(), old, newLeader)
	d.printTable()
	return nil
}

func (d *demo) lastHistory() *dcs.HistoryRecord {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	h, err := d.store.History(ctx)
	if err != nil || len(h) == 0 {
		return nil
	}
	return &h[len(h)-1]
}

// watchChanges prints role and state changes as they happen.
func (d *demo) watchChanges() {
	cl := d.load()
	if cl == nil {
		return
	}
	names := make([]string, 0, len(cl.Members))
	for n := range cl.Members {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := cl.Members[n]
		role := m.Role
		if cl.Leader != nil && cl.Leader.Name == n {
			role = "leader"
		}
		s := role + "/" + m.State
		if d.printed[n] != "" && d.printed[n] != s {
			d.say("%s is now %s %s", n, role, m.State)
		}
		d.printed[n] = s
	}
}

// killPostmaster SIGKILLs the postmaster of a data directory and its children.
func killPostmaster(dataDir string) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return
	}
	kids := childPIDs(pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

func childPIDs(ppid int) []int {
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
		if len(f) > 1 {
			if p, _ := strconv.Atoi(f[1]); p == ppid {
				out = append(out, pid)
			}
		}
	}
	return out
}

// cleanup stops every agent (stopping its PostgreSQL), etcd, and removes the
// directory; it also kills any PostgreSQL of the demo that is still running,
// so that nothing outlives the demo.
func (d *demo) cleanup() {
	for name, n := range d.nodes {
		if err := n.shutdown(); err != nil {
			d.say("stopping %s: %v", name, err)
		}
	}
	for _, c := range d.cfgs {
		d.killDB(c, true)
	}
	if d.store != nil {
		d.store.Close()
	}
	if d.etcd != nil {
		d.etcd.Close()
	}
	for _, f := range d.logs {
		f.Close()
	}
	if d.dir != "" {
		if d.o.keep {
			d.say("kept %s", d.dir)
		} else {
			_ = os.RemoveAll(d.dir)
		}
	}
	d.say("demo stopped; nothing left running")
}

// The MySQL/MariaDB members of `steward demo --backend mysql`.

// mariadbd and mariadbInstallDB are Debian's mariadb-server programs.
const (
	mariadbd         = "/usr/sbin/mariadbd"
	mariadbInstallDB = "/usr/bin/mariadb-install-db"
)

// ensureMariaDB installs mariadb-server and mariadb-client when the server
// is missing and we may (root with apt-get), and otherwise says how to.
func ensureMariaDB(e *env) error {
	have := func() bool {
		for _, p := range []string{mariadbd, mariadbInstallDB, "/usr/bin/mariadb-dump", "/usr/bin/mariadb"} {
			if _, err := os.Stat(p); err != nil {
				return false
			}
		}
		return true
	}
	if have() {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("MariaDB not found (" + mariadbd + "): install it (apt-get install mariadb-server mariadb-client)")
	}
	fmt.Fprintln(e.stdout, "MariaDB is not installed: installing mariadb-server and mariadb-client with apt-get ...")
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "--no-install-recommends", "mariadb-server", "mariadb-client"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = io.Discard, e.stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	if !have() {
		return errors.New("MariaDB still not found after installing mariadb-server")
	}
	return nil
}

// mysqlMember initializes member i's MariaDB data directory as an operator
// would (mariadb-install-db with steward's account; the server is started
// later by the agent through mysql.start_command) and returns its config.
func (d *demo) mysqlMember(i int, name, etcdURL string, apiPort, dbPort int, runAs string) (string, error) {
	mdir := filepath.Join(d.dir, name)
	data := filepath.Join(mdir, "data")
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		return "", err
	}
	userLine := ""
	if runAs != "" {
		userLine = "user=" + runAs + "\n"
		u, err := user.Lookup(runAs)
		if err != nil {
			return "", err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(mdir, uid, gid); err != nil {
			return "", err
		}
	}
	cnf := filepath.Join(mdir, "my.cnf")
	conf := fmt.Sprintf("[mariadbd]\n%sdatadir=%s\ntmpdir=%s\nsocket=%s/mariadbd.sock\npid-file=%s/mariadbd.pid\nlog_error=%s/mariadbd.err\n"+
		"port=%d\nbind-address=127.0.0.1\nskip-name-resolve\nserver_id=%d\nreport_host=%s\nreport_port=%d\n"+
		"log_bin=%s/binlog\nrelay_log=%s/relay-bin\nbinlog_format=ROW\nlog_slave_updates=ON\ngtid_domain_id=0\ngtid_strict_mode=ON\n"+
		"sync_binlog=1\ninnodb_flush_log_at_trx_commit=1\nread_only=ON\nskip_slave_start=ON\nslave_net_timeout=10\n"+
		"innodb_buffer_pool_size=64M\ninnodb_log_file_size=32M\nperformance_schema=OFF\nmax_connections=100\n",
		userLine, data, mdir, mdir, data, mdir, dbPort, i, name, dbPort, data, data)
	setup := filepath.Join(mdir, "setup.sql")
	sqlText := "FLUSH PRIVILEGES;\nCREATE USER 'steward'@'127.0.0.1' IDENTIFIED BY 'demo';\n" +
		"GRANT ALL PRIVILEGES ON *.* TO 'steward'@'127.0.0.1' WITH GRANT OPTION;\n"
	if err := os.WriteFile(cnf, []byte(conf), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(setup, []byte(sqlText), 0o644); err != nil {
		return "", err
	}
	args := []string{"--defaults-file=" + cnf, "--skip-test-db", "--extra-file=" + setup}
	if runAs != "" {
		args = append(args, "--user="+runAs)
	}
	if out, err := exec.Command(mariadbInstallDB, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mariadb-install-db for %s: %v: %s", name, err, out)
	}
	return fmt.Sprintf(`# steward demo member %[1]s (MariaDB)
cluster: demo
name: %[1]s
etcd:
  endpoints: [%[2]s]
bootstrap:
  ttl: %[3]s
  loop_wait: %[4]s
  retry_timeout: %[5]s
api:
  listen: 127.0.0.1:%[6]d
mysql:
  address: 127.0.0.1:%[7]d
  user: steward
  password: demo
  replication: {username: repl, password: demo-rep}
  data_dir: %[8]s
  start_command: [%[9]s, "--defaults-file=%[10]s"]
  # The killed primary may hold a heartbeat the replicas never received
  # (asynchronous replication): an errant transaction, which a MariaDB
  # member cannot rewind. The demo re-clones it instead of leaving it out
  # until "steward reinit".
  reclone_on_divergence: true
log: {level: info, format: text}
`, name, etcdURL, d.o.ttl, d.o.loopWait, retryFor(d.o.ttl, d.o.loopWait), apiPort, dbPort, data, mariadbd, cnf), nil
}

func (d *demo) printHelpMySQL() {
	c := d.cfgs[0]
	exe, _ := os.Executable()
	_, port, _ := net.SplitHostPort(c.MySQL.Address)
	fmt.Fprintf(d.e.stdout, `Try, in another terminal:
  %[1]s list --config %[2]s   # the cluster table
  curl -s -o /dev/null -w '%%{http_code}\n' http://%[3]s/primary   # 200 on the primary, 503 elsewhere
  mariadb -h127.0.0.1 -P%[4]s -usteward -pdemo -e 'SHOW SLAVE STATUS\G'
To watch a failover: run the demo with --kill-primary-after 20s, or kill -9 the
primary's mariadbd and see what the agents do (logs in %[5]s).

`, exe, filepath.Join(d.dir, c.Name+".yml"), c.API.Listen, port, d.dir)
}

// killDB kills a member's database: PostgreSQL's postmaster, or mariadbd
// (SIGKILL; with graceful, SIGTERM first and SIGKILL after 10 s).
func (d *demo) killDB(cfg *config.Config, graceful bool) {
	if cfg.MySQL == nil {
		killPostmaster(cfg.Postgres.DataDir)
		return
	}
	b, err := os.ReadFile(filepath.Join(cfg.MySQL.DataDir, "mariadbd.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return
	}
	if graceful {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 500 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 250 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
}
