package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/systemd/sdtest"
)

func mustParse(t *testing.T, body string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(body), nil)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, body)
	}
	return c
}

// configDiff names every changed key the way the file spells it, custom
// tags and map entries included, and never a value.
func TestConfigDiff(t *testing.T) {
	base := goodConfig("http://127.0.0.1:2379", "/var/lib/steward/db1")
	a := mustParse(t, base)
	if d := configDiff(a, mustParse(t, base)); len(d) != 0 {
		t.Fatalf("identical files differ: %v", d)
	}
	changed := strings.NewReplacer(
		"endpoints: [http://127.0.0.1:2379]", "endpoints: [http://127.0.0.1:2379, http://127.0.0.2:2379]",
		"ttl: 10s", "ttl: 20s",
		"password: api-secret", "password: other-secret",
	).Replace(base) + `  parameters: {work_mem: 8MB}
tags: {nofailover: true, rack: r1}
on_shutdown: leave-running
log: {level: debug}
callbacks: {on_role_change: [/usr/local/bin/move-vip, eth0]}
`
	got := configDiff(a, mustParse(t, changed))
	want := []string{"api.password", "bootstrap.ttl", "callbacks.on_role_change", "etcd.endpoints", "log.level", "on_shutdown",
		"postgres.parameters.work_mem", "tags.nofailover", "tags.rack"}
	if !slices.Equal(got, want) {
		t.Fatalf("diff = %v, want %v", got, want)
	}
	for _, k := range got {
		if strings.Contains(k, "secret") {
			t.Fatalf("a value leaked into the diff: %v", got)
		}
	}
	var live []string
	for _, k := range got {
		if liveKey(k) {
			live = append(live, k)
		}
	}
	if !slices.Equal(live, []string{"callbacks.on_role_change", "log.level", "on_shutdown", "tags.nofailover", "tags.rack"}) {
		t.Fatalf("live keys = %v", live)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestService runs newService against a fake systemd (sdtest) with the
// given watchdog interval, for the config file at path.
func newTestService(t *testing.T, path string, watchdogUsec string) (*service, *sdtest.Manager, *syncBuffer, *slog.LevelVar) {
	t.Helper()
	mgr, err := sdtest.Listen(filepath.Join(t.TempDir(), "notify"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgr.Close)
	envv := map[string]string{"NOTIFY_SOCKET": mgr.Path}
	if watchdogUsec != "" {
		envv["WATCHDOG_USEC"] = watchdogUsec
	}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{},
		lookupEnv: func(k string) (string, bool) { v, ok := envv[k]; return v, ok }}
	cfg, err := config.Load(path, e.lookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	lv := new(slog.LevelVar)
	log := newLeveledLogger(out, cfg.Log, lv)
	s := newService(e, cfg, lv, log)
	s.attach(agent.New(agent.Options{Self: agent.Self{Name: cfg.Name}, Bootstrap: cfg.Bootstrap}))
	return s, mgr, out, lv
}

func waitMsg(t *testing.T, m *sdtest.Manager, from int, what string, match func(sdtest.Message) bool) int {
	t.Helper()
	_, i, ok := m.Wait(from, 2*time.Second, match)
	if !ok {
		t.Fatalf("no %s notification; got %v", what, m.Messages())
	}
	return i
}

// READY=1 after the first loop only, STATUS= on change, WATCHDOG=1
// throttled to a quarter of WATCHDOG_USEC.
func TestServiceNotifications(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, goodConfig("http://127.0.0.1:2379", filepath.Join(dir, "db1")))
	s, m, out, _ := newTestService(t, path, "400000") // 400 ms: pings at most every 100 ms
	if s.notifier.WatchdogInterval() != 400*time.Millisecond {
		t.Fatalf("watchdog interval %v", s.notifier.WatchdogInterval())
	}
	if !strings.Contains(out.String(), "WatchdogSec is shorter than 2 × ttl") {
		t.Errorf("no warning about a watchdog shorter than 2 × ttl:\n%s", out)
	}
	if len(m.Messages()) != 0 {
		t.Fatalf("notified before the first loop: %v", m.Messages())
	}
	rep := agent.LoopReport{Role: "replica", Leader: "db2", Healthy: true}
	s.onLoop(rep)
	i := waitMsg(t, m, 0, "READY", func(x sdtest.Message) bool {
		return x.Has("READY", "1") && x.Has("STATUS", "replica of cluster main, leader db2")
	})
	waitMsg(t, m, i, "WATCHDOG", func(x sdtest.Message) bool { return x.Raw == "WATCHDOG=1" })
	for k := 0; k < 5; k++ {
		s.onLoop(rep) // same status, pings throttled
	}
	time.Sleep(120 * time.Millisecond)
	s.onLoop(agent.LoopReport{Role: "primary", Leader: "db1", Healthy: false})
	waitMsg(t, m, i+1, "STATUS change", func(x sdtest.Message) bool {
		return x.Raw == "STATUS=primary of cluster main, leader db1 (database starting)"
	})
	time.Sleep(50 * time.Millisecond)
	var ready, pings, statuses int
	for _, x := range m.Messages() {
		switch {
		case x.Has("READY", "1"):
			ready++
		case x.Raw == "WATCHDOG=1":
			pings++
		case strings.HasPrefix(x.Raw, "STATUS="):
			statuses++
		}
	}
	if ready != 1 || pings != 2 || statuses != 1 {
		t.Fatalf("READY %d, WATCHDOG %d, STATUS %d; want 1, 2 (throttled), 1: %v", ready, pings, statuses, m.Messages())
	}
	s.stopping("stop-database")
	waitMsg(t, m, 0, "STOPPING", func(x sdtest.Message) bool {
		return x.Has("STOPPING", "1") && x.Has("STATUS", "stopping (on_shutdown: stop-database)")
	})
}

// The notify variables are removed from the process environment, so that
// PostgreSQL and hooks started by the agent do not inherit them.
func TestServiceUnsetsNotifyEnv(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/nonexistent/notify")
	t.Setenv("WATCHDOG_USEC", "30000000")
	e := &env{stderr: &bytes.Buffer{}, lookupEnv: os.LookupEnv}
	dir := t.TempDir()
	cfg := mustParse(t, goodConfig("http://127.0.0.1:2379", filepath.Join(dir, "db1")))
	s := newService(e, cfg, new(slog.LevelVar), slog.New(slog.DiscardHandler))
	if !s.notifier.Enabled() || s.notifier.WatchdogInterval() != 30*time.Second {
		t.Fatalf("notifier not configured from the environment")
	}
	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		if _, ok := os.LookupEnv(k); ok {
			t.Fatalf("%s is still in the environment", k)
		}
	}
}

// SIGHUP's work: live keys applied, the rest reported as needing a restart,
// an invalid file rejected with its keys named while the previous
// configuration stays in force.
func TestServiceReload(t *testing.T) {
	dir := t.TempDir()
	base := goodConfig("http://127.0.0.1:2379", filepath.Join(dir, "db1"))
	path := writeConfig(t, dir, base)
	s, m, out, lv := newTestService(t, path, "")
	s.onLoop(agent.LoopReport{Role: "replica", Leader: "db2", Healthy: true})
	waitMsg(t, m, 0, "READY", func(x sdtest.Message) bool { return x.Has("READY", "1") })

	if err := s.reload(); err != nil {
		t.Fatalf("reloading an unchanged file: %v", err)
	}
	if !strings.Contains(out.String(), `msg="configuration reloaded" file=`+path+" applied=0 needs_restart=0") {
		t.Fatalf("unchanged reload not logged as such:\n%s", out)
	}

	changed := strings.NewReplacer("ttl: 10s", "ttl: 20s",
		"  endpoints: [http://127.0.0.1:2379]\n", "  endpoints: [http://127.0.0.1:2379]\n  dial_timeout: 5s\n").Replace(base) + `tags: {nofailover: true}
log: {level: debug}
on_shutdown: leave-running
callbacks: {on_role_change: [/usr/local/bin/move-vip]}
`
	writeConfig(t, dir, changed)
	n0 := len(m.Messages())
	if err := s.reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	log := out.String()
	for _, want := range []string{
		`msg="reload: applied" key=tags.nofailover`,
		`msg="reload: applied" key=log.level`,
		`msg="reload: applied" key=on_shutdown`,
		`msg="reload: applied" key=callbacks.on_role_change`,
		`needs a restart to take effect (systemctl restart steward)" key=etcd.dial_timeout`,
		`has no effect on a running cluster`,
		`key=bootstrap.ttl`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if lv.Level() != slog.LevelDebug {
		t.Errorf("log level %v after reload, want debug", lv.Level())
	}
	if s.onShutdown() != "leave-running" {
		t.Errorf("on_shutdown %q after reload", s.onShutdown())
	}
	i := waitMsg(t, m, n0, "RELOADING", func(x sdtest.Message) bool { return x.Has("RELOADING", "1") })
	waitMsg(t, m, i, "READY after reload", func(x sdtest.Message) bool {
		return x.Has("READY", "1") && strings.Contains(x.Fields()["STATUS"], "restart needed for etcd.dial_timeout")
	})

	// Invalid: rejected, every bad key named, previous configuration kept.
	writeConfig(t, dir, strings.Replace(changed, "on_shutdown: leave-running", "on_shutdown: whenever\ntags: {failover_priority: -1}", 1))
	err := s.reload()
	if err == nil || !strings.Contains(err.Error(), "on_shutdown") {
		t.Fatalf("invalid file accepted or not explained: %v", err)
	}
	log = out.String()
	if !strings.Contains(log, `msg="reload: invalid configuration key" key=on_shutdown`) ||
		!strings.Contains(log, "reload: configuration rejected; still running on the previous configuration") {
		t.Fatalf("rejection not logged with the key:\n%s", log)
	}
	if s.onShutdown() != "leave-running" || lv.Level() != slog.LevelDebug {
		t.Fatalf("a rejected file changed the running configuration")
	}

	// Unreadable file: same.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := s.reload(); err == nil || !strings.Contains(out.String(), "cannot read the configuration") {
		t.Fatalf("missing file: %v\n%s", err, out)
	}
}

// reloadFunc finds what withReload installed; steward demo has none.
func TestReloadPlumbing(t *testing.T) {
	if reloadFunc(t.Context()) != nil {
		t.Fatal("a reload function out of nowhere")
	}
	called := false
	f := reloadFunc(withReload(t.Context(), func() error { called = true; return nil }))
	if f == nil || f() != nil || !called {
		t.Fatal("reload function not passed through")
	}
}

// Reloads (SIGHUP and POST /reload may race) and the HA loop's onLoop run
// concurrently without data races (run with -race).
func TestServiceReloadConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, goodConfig("http://127.0.0.1:2379", filepath.Join(dir, "db1")))
	s, _, _, _ := newTestService(t, path, "1000000")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			s.onLoop(agent.LoopReport{Role: "replica", Leader: "db2", Healthy: i%2 == 0})
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.reload(); err != nil {
				t.Error(err)
			}
			_ = s.onShutdown()
		}()
	}
	wg.Wait()
	<-done
}
