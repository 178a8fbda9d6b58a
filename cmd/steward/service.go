package main

// The agent as a well-mannered daemon: sd_notify (READY, STATUS, WATCHDOG,
// RELOADING, STOPPING) and SIGHUP/POST /reload re-reading the configuration
// file. runAgent (run.go) wires it in; docs/operations.md documents the
// behaviour for operators.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/systemd"
)

// newLeveledLogger is newLogger with a level that SIGHUP can change
// (log.level is applied live; log.format needs a restart).
func newLeveledLogger(w io.Writer, c config.Log, lv *slog.LevelVar) *slog.Logger {
	lv.Set(parseLevel(c.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// service is the agent's side of the service manager and of reloads.
type service struct {
	e        *env
	notifier *systemd.Notifier
	log      *slog.Logger
	level    *slog.LevelVar
	path     string
	cluster  string

	reloadMu sync.Mutex // serializes reloads (SIGHUP, POST /reload)

	mu        sync.Mutex
	started   *config.Config // what the process started with (restart-only keys)
	current   *config.Config // the last configuration accepted (live keys)
	ag        *agent.Agent   // nil until startNode returned
	ready     bool
	startedAt time.Time
	last      agent.LoopReport
	haveLast  bool
	detail    string   // why the last loop was not healthy
	pending   []string // changed keys that need a restart
	sendWarn  bool     // a failed notification was already logged at Warn
}

// newService reads NOTIFY_SOCKET/WATCHDOG_USEC/WATCHDOG_PID through the
// env's lookup and then removes them from the process environment, so that
// PostgreSQL (built with systemd support on Debian), pg_rewind and hooks do
// not inherit them and notify steward's unit in the agent's name.
func newService(e *env, cfg *config.Config, lv *slog.LevelVar, log *slog.Logger) *service {
	n, err := systemd.FromEnv(e.lookupEnv, os.Getpid())
	if err != nil {
		log.Warn("ignoring the systemd watchdog settings", "err", err)
	}
	for _, k := range systemd.EnvNames {
		if _, ok := e.lookupEnv(k); ok {
			_ = os.Unsetenv(k)
		}
	}
	s := &service{e: e, notifier: n, log: log, level: lv, path: cfg.Path, cluster: cfg.Cluster,
		started: cfg, current: cfg, startedAt: time.Now()}
	if wd := n.WatchdogInterval(); wd > 0 {
		ttl := cfg.Bootstrap.TTL.D()
		log.Info("systemd watchdog enabled: petted after every completed HA loop", "watchdog_sec", wd)
		if wd < 2*ttl {
			log.Warn("WatchdogSec is shorter than 2 × ttl: systemd may restart an agent whose loop is merely slow, before the HA protocol would have declared it failed; raise WatchdogSec (systemctl edit)",
				"watchdog_sec", wd, "ttl", ttl)
		}
	}
	return s
}

// attach gives the service the running agent (for live reconfiguration).
func (s *service) attach(ag *agent.Agent) {
	s.mu.Lock()
	s.ag = ag
	s.mu.Unlock()
}

// onLoop runs after every HA loop, on the loop's goroutine (agent.Options
// OnLoop): READY=1 after the first one, STATUS= when the role or leader
// changed, WATCHDOG=1.
//
// Every completed loop pets the watchdog, including loops that could not
// read etcd or reach the database (LoopReport.Healthy false). The systemd
// watchdog guards against a hung agent process — a loop that never comes
// back — which a restart cures. It must not fire on an etcd outage or a
// stopped database: the agent is then doing exactly its job (fencing its
// primary at the lease deadline, keeping replicas read-only, restarting the
// database), a restart would not bring etcd back, and restarting every
// agent of the cluster at once during an etcd outage would throw away the
// state that rule 1's deadline timer and the DCS failsafe rely on. Those
// conditions are reported in STATUS and the log instead.
func (s *service) onLoop(r agent.LoopReport) {
	s.mu.Lock()
	ag := s.ag
	s.mu.Unlock()
	detail := ""
	if !r.Healthy {
		detail = degradedDetail(ag)
	}
	s.mu.Lock()
	s.last, s.haveLast, s.detail = r, true, detail
	first := !s.ready
	s.ready = true
	status := s.statusLocked()
	s.mu.Unlock()
	if first {
		s.notifyErr("READY", s.notifier.Ready(status))
		if s.notifier.Enabled() {
			s.log.Info("first HA loop complete: notified systemd READY=1", "since_start", time.Since(s.startedAt).Round(time.Millisecond), "status", status)
		}
	} else {
		s.notifyErr("STATUS", s.notifier.Status(status))
	}
	_, err := s.notifier.Watchdog()
	s.notifyErr("WATCHDOG", err)
}

// statusLocked is the STATUS= line: "<role> of cluster <c>, leader <l>".
func (s *service) statusLocked() string {
	if !s.haveLast {
		return "starting"
	}
	r := s.last
	role := r.Role
	if role == "" {
		role = "unknown"
	}
	leader := "leader " + r.Leader
	if r.Leader == "" {
		leader = "no leader"
	}
	st := fmt.Sprintf("%s of cluster %s, %s", role, s.cluster, leader)
	if !r.Healthy {
		st += " (" + s.detail + ")"
	}
	if len(s.pending) > 0 {
		keys := s.pending
		more := ""
		if len(keys) > 3 {
			keys, more = keys[:3], fmt.Sprintf(" and %d more", len(s.pending)-3)
		}
		st += "; restart needed for " + strings.Join(keys, ", ") + more
	}
	return st
}

// degradedDetail says why a loop was not healthy, from the agent's view
// (read outside the loop's lock: OnLoop runs after the loop released it).
func degradedDetail(ag *agent.Agent) string {
	if ag == nil {
		return "etcd or the database did not answer"
	}
	v := ag.Snapshot()
	switch {
	case v.DCSError != "":
		return "etcd unreachable"
	case v.Member.State != "":
		return "database " + v.Member.State
	}
	return "database " + string(v.DB.State)
}

// stopping sends STOPPING=1 (SIGTERM, or the loop ended by itself).
func (s *service) stopping(onShutdown string) {
	s.notifyErr("STOPPING", s.notifier.Stopping("stopping (on_shutdown: "+onShutdown+")"))
}

// onShutdown is on_shutdown as last reloaded.
func (s *service) onShutdown() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current.OnShutdown
}

func (s *service) notifyErr(what string, err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	warned := s.sendWarn
	s.sendWarn = true
	s.mu.Unlock()
	if warned {
		s.log.Debug("notifying systemd failed", "message", what, "err", err)
		return
	}
	s.log.Warn("notifying systemd failed (logged once; later failures at debug level)", "message", what, "err", err)
}

// ---------------------------------------------------------------------------
// Reload (SIGHUP, POST /reload)

// Keys whose change takes effect at once; every other changed key but the
// bootstrap section needs a restart.
func liveKey(k string) bool {
	switch {
	case k == "tags" || strings.HasPrefix(k, "tags."):
		return true // agent.Reconfigure: flags and tags from the next loop
	case k == "log.level", k == "on_shutdown":
		return true
	case k == "callbacks.on_role_change":
		return true // agent.SetCallbacks: from the next role change
	case k == "postgres.remove_data_directory_on_rewind_failure", k == "mysql.reclone_on_divergence":
		return true // an agent flag (Self.Reinit), read by each decision
	}
	return false
}

func bootstrapKey(k string) bool { return k == "bootstrap" || strings.HasPrefix(k, "bootstrap.") }

// reload re-reads the configuration file. An invalid file is rejected (each
// problem logged with its key) and the agent keeps running on the previous
// configuration; a valid one is applied as far as it can be live, and every
// other changed key is logged as needing a restart. The error is for POST
// /reload; SIGHUP only logs.
func (s *service) reload() error {
	// Reloads are serialized by reloadMu; s.mu is only held for short state
	// reads and writes, so the HA loop (onLoop) never waits on file I/O.
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	ag, ready, started, current := s.ag, s.ready, s.started, s.current
	s.mu.Unlock()
	if ag == nil {
		return errors.New("the agent is still starting; reload again in a moment")
	}
	if ready {
		s.notifyErr("RELOADING", s.notifier.Reloading("reloading "+s.path))
		defer func() {
			s.mu.Lock()
			status := s.statusLocked()
			s.mu.Unlock()
			s.notifyErr("READY", s.notifier.Ready(status))
		}()
	}
	cfg, err := config.Load(s.path, s.e.lookupEnv)
	if err != nil {
		var errs *config.Errors
		if errors.As(err, &errs) {
			s.log.Error("reload: configuration rejected; still running on the previous configuration", "file", s.path, "problems", len(*errs))
			for _, fe := range *errs {
				key := fe.Path
				if key == "" {
					key = "(file)"
				}
				s.log.Error("reload: invalid configuration key", "key", key, "problem", fe.Msg)
			}
			return fmt.Errorf("configuration %s rejected, still running on the previous one:\n%w", s.path, err)
		}
		s.log.Error("reload: cannot read the configuration; still running on the previous configuration", "file", s.path, "err", err)
		return fmt.Errorf("configuration %s not reloaded: %w", s.path, err)
	}

	var applied []string
	for _, k := range configDiff(current, cfg) {
		if liveKey(k) {
			applied = append(applied, k)
		}
	}
	var restart, ignored []string
	for _, k := range configDiff(started, cfg) {
		switch {
		case liveKey(k):
		case bootstrapKey(k):
			ignored = append(ignored, k)
		default:
			restart = append(restart, k)
		}
	}

	if slices.Contains(applied, "log.level") {
		s.level.Set(parseLevel(cfg.Log.Level))
	}
	if slices.Contains(applied, "callbacks.on_role_change") {
		ag.SetCallbacks(cfg.Callbacks)
	}
	if slices.ContainsFunc(applied, func(k string) bool {
		return k != "log.level" && k != "on_shutdown" && k != "callbacks.on_role_change"
	}) {
		ag.Reconfigure(agentSelf(cfg, started), customTags(cfg), cfg.Tags.NoLoadBalance)
	}
	// Only the live keys of the new file take effect; the others keep their
	// running values until a restart (the diff against started finds them).
	s.mu.Lock()
	s.current = cfg
	s.pending = restart
	s.mu.Unlock()

	for _, k := range applied {
		s.log.Info("reload: applied", "key", k)
	}
	for _, k := range restart {
		s.log.Warn("reload: changed key needs a restart to take effect (systemctl restart steward)", "key", k)
	}
	for _, k := range ignored {
		s.log.Warn("reload: changed key has no effect on a running cluster: the bootstrap section only seeds etcd when the cluster is first created; change the cluster-wide setting in etcd", "key", k)
	}
	s.log.Info("configuration reloaded", "file", s.path, "applied", len(applied), "needs_restart", len(restart))
	return nil
}

// agentSelf is the member's flags from cfg. The pg_rewind flag stays as the
// process started (started): the backend checked its prerequisites then.
func agentSelf(cfg, started *config.Config) agent.Self {
	self := agent.Self{Name: started.Name, NoFailover: cfg.Tags.NoFailover, Priority: cfg.Tags.FailoverPriority, NoSync: cfg.Tags.NoSync, Kind: "postgres"}
	if started.MySQL != nil {
		self.Kind = "mysql"
	}
	if started.Postgres != nil {
		self.Rewind = started.Postgres.UsePgRewind
	}
	if cfg.Postgres != nil {
		self.Reinit = cfg.Postgres.RemoveDataDirectoryOnRewindFailure
	}
	if cfg.MySQL != nil {
		self.Reinit = cfg.MySQL.RecloneOnDivergence
	}
	return self
}

func customTags(cfg *config.Config) map[string]string {
	tags := map[string]string{}
	for k, v := range cfg.Tags.Custom {
		tags[k] = v
	}
	return tags
}

// configDiff returns the dotted keys (as in the file: "etcd.endpoints",
// "tags.rack", "postgres.parameters.work_mem") whose values differ between
// a and b, sorted. Values are never returned (they may be secrets).
func configDiff(a, b *config.Config) []string {
	var out []string
	diffValue("", reflect.ValueOf(*a), reflect.ValueOf(*b), &out)
	sort.Strings(out)
	return out
}

func diffValue(path string, a, b reflect.Value, out *[]string) {
	switch a.Kind() {
	case reflect.Struct:
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			p := path
			if !strings.Contains(opts, "inline") {
				if name == "" {
					name = strings.ToLower(f.Name)
				}
				p = joinKey(path, name)
			}
			diffValue(p, a.Field(i), b.Field(i), out)
		}
	case reflect.Pointer:
		switch {
		case a.IsNil() && b.IsNil():
		case a.IsNil() != b.IsNil():
			*out = append(*out, path)
		default:
			diffValue(path, a.Elem(), b.Elem(), out)
		}
	case reflect.Map:
		keys := map[string]reflect.Value{}
		for _, k := range a.MapKeys() {
			keys[fmt.Sprint(k.Interface())] = k
		}
		for _, k := range b.MapKeys() {
			keys[fmt.Sprint(k.Interface())] = k
		}
		for name, k := range keys {
			av, bv := a.MapIndex(k), b.MapIndex(k)
			if !av.IsValid() || !bv.IsValid() || !reflect.DeepEqual(av.Interface(), bv.Interface()) {
				*out = append(*out, joinKey(path, name))
			}
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
	}
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// ---------------------------------------------------------------------------
// POST /reload plumbing

type reloadKey struct{}

// withReload hands runAgent's reload function to startNode, which passes it
// to the API server (POST /reload) — the same function SIGHUP calls.
// steward demo starts nodes without one.
func withReload(ctx context.Context, f func() error) context.Context {
	return context.WithValue(ctx, reloadKey{}, f)
}

// reloadFunc returns the reload function installed by withReload, or nil.
func reloadFunc(ctx context.Context) func() error {
	f, _ := ctx.Value(reloadKey{}).(func() error)
	return f
}

// notifyHUP delivers SIGHUP on the returned channel (instead of its default
// action, which ends the process) until stop is called.
func notifyHUP() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch, func() { signal.Stop(ch) }
}
