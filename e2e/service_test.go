package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/systemd/sdtest"
)

// The agent as systemd runs it (Type=notify, WatchdogSec=): a fake service
// manager listens on a real NOTIFY_SOCKET and records who sent what.

// notifySocket starts a fake systemd notify socket for member m.
func notifySocket(t *testing.T, m *Member) *sdtest.Manager {
	t.Helper()
	mgr, err := sdtest.Listen(filepath.Join(m.c.dir, m.Name+".notify"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgr.Close)
	return mgr
}

// startWithEnv is Member.Start with extra environment entries, as systemd
// starts a Type=notify service: NOTIFY_SOCKET, WATCHDOG_USEC (extra) and
// WATCHDOG_PID (the agent's own PID).
func startWithEnv(m *Member, extra ...string) {
	c := m.c
	c.T.Helper()
	c.writeConfig(m)
	logf, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.T.Fatal(err)
	}
	defer logf.Close()
	// Like systemd: WATCHDOG_PID is the PID of the process that execs the
	// agent (the shell execs it, keeping its PID).
	cmd := exec.Command("/bin/sh", "-c", `WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"`, c.binary, "agent", "--config", m.Config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.dir
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + c.dir, "GORACE=halt_on_error=1", "STEWARD_FAULTS=" + m.FaultDir()}, extra...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: credential(c.T, c.runAs)}
	if err := cmd.Start(); err != nil {
		c.T.Fatalf("starting the agent of %s: %v", m.Name, err)
	}
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { _ = cmd.Wait(); close(ch) }(cmd, m.exited)
}

func (m *Member) pid() int {
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// waitNotify waits for a message from the member's agent process matching
// match, from message index from on.
func waitNotify(t *testing.T, mgr *sdtest.Manager, from int, within time.Duration, what string, match func(sdtest.Message) bool) (sdtest.Message, int) {
	t.Helper()
	msg, i, ok := mgr.Wait(from, within, match)
	if !ok {
		var raw []string
		for _, x := range mgr.Messages() {
			raw = append(raw, fmt.Sprintf("%d:%q", x.PID, x.Raw))
		}
		t.Fatalf("timed out after %v waiting for %s; notifications so far: %s", within, what, strings.Join(raw, " "))
	}
	return msg, i
}

func status(x sdtest.Message) string { return x.Fields()["STATUS"] }

// onlyFrom fails unless every notification came from pid (NotifyAccess=main:
// PostgreSQL, started by the agent, must not have inherited NOTIFY_SOCKET).
func onlyFrom(t *testing.T, mgr *sdtest.Manager, pid int, who string) {
	t.Helper()
	for _, x := range mgr.Messages() {
		if x.PID != pid {
			t.Errorf("%s: notification %q from PID %d, not from the agent (PID %d)", who, x.Raw, x.PID, pid)
		}
	}
}

// READY=1 after the first complete loop, WATCHDOG=1 at the right rate and
// not while the loop hangs, STATUS= on a role change, STOPPING=1 and a clean
// exit on SIGTERM.
func TestServiceNotify(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 2, Fast)
	m1, m2 := c.Members[0], c.Members[1]
	const watchdog = 3 * time.Second
	wdEnv := fmt.Sprintf("WATCHDOG_USEC=%d", watchdog.Microseconds())

	n1 := notifySocket(t, m1)
	start := time.Now()
	startWithEnv(m1, n1.Env(), wdEnv)
	ready, _ := waitNotify(t, n1, 0, 60*time.Second, "READY=1 from m1", func(x sdtest.Message) bool { return x.Has("READY", "1") })
	t.Logf("MEASURED time to READY=1 (bootstrapping member, empty data directory): %v (status %q)",
		ready.At.Sub(start).Round(time.Millisecond), status(ready))
	// The first loop published the member key before READY=1 was sent.
	if cl := c.LoadCluster(); cl == nil || cl.Members[m1.Name].Name == "" {
		t.Fatalf("READY=1 before the first loop published the member key")
	}
	if !regexp.MustCompile(`^[a-z]+ of cluster e2e, (no leader|leader m1)( \(.+\))?$`).MatchString(status(ready)) {
		t.Fatalf("READY status %q", status(ready))
	}
	waitNotify(t, n1, 0, 60*time.Second, "m1's STATUS: primary", func(x sdtest.Message) bool {
		return status(x) == "primary of cluster e2e, leader m1"
	})

	n2 := notifySocket(t, m2)
	start = time.Now()
	startWithEnv(m2, n2.Env(), wdEnv)
	ready, _ = waitNotify(t, n2, 0, 60*time.Second, "READY=1 from m2", func(x sdtest.Message) bool { return x.Has("READY", "1") })
	t.Logf("MEASURED time to READY=1 (joining replica): %v (status %q)", ready.At.Sub(start).Round(time.Millisecond), status(ready))
	c.WaitHealthy(90 * time.Second)
	waitNotify(t, n2, 0, 30*time.Second, "m2's STATUS: replica of m1", func(x sdtest.Message) bool {
		return status(x) == "replica of cluster e2e, leader m1"
	})

	// Watchdog rate: at most one ping per watchdog/4 (throttled), at least
	// one per watchdog/2 (systemd's recommendation), in steady state.
	from := len(n2.Messages())
	time.Sleep(8 * time.Second)
	var pings []time.Time
	for _, x := range n2.Messages()[from:] {
		if x.Raw == "WATCHDOG=1" {
			pings = append(pings, x.At)
		}
	}
	if len(pings) < 4 {
		t.Fatalf("%d WATCHDOG=1 in 8 s with WATCHDOG_USEC=%v", len(pings), watchdog)
	}
	var gaps []time.Duration
	for i := 1; i < len(pings); i++ {
		gaps = append(gaps, pings[i].Sub(pings[i-1]))
	}
	slices.Sort(gaps)
	median, maxGap := gaps[len(gaps)/2], gaps[len(gaps)-1]
	t.Logf("MEASURED WATCHDOG=1 with WatchdogSec=%v, loop_wait %v: %d pings in 8 s, gaps min %v median %v max %v",
		watchdog, c.Profile.LoopWait, len(pings), gaps[0].Round(time.Millisecond), median.Round(time.Millisecond), maxGap.Round(time.Millisecond))
	if gaps[0] < watchdog/4-50*time.Millisecond {
		t.Errorf("pings %v apart: more often than once per WatchdogSec/4 (%v)", gaps[0], watchdog/4)
	}
	if median > watchdog/2 {
		t.Errorf("median gap %v: less often than once per WatchdogSec/2 (%v)", median, watchdog/2)
	}
	if maxGap >= watchdog {
		t.Errorf("a %v gap between pings: systemd would have killed a healthy agent", maxGap)
	}

	// A hung loop stops the pings: systemd would kill and restart the agent.
	m2.Fault("hang-observe", true)
	time.Sleep(c.Profile.LoopWait + 500*time.Millisecond) // let the loop reach the hang
	hungFrom := len(n2.Messages())
	time.Sleep(watchdog + 500*time.Millisecond)
	for _, x := range n2.Messages()[hungFrom:] {
		if x.Raw == "WATCHDOG=1" {
			t.Fatalf("WATCHDOG=1 while the HA loop was hung")
		}
	}
	m2.Fault("hang-observe", false)
	waitNotify(t, n2, hungFrom, 5*time.Second, "WATCHDOG=1 once the loop runs again", func(x sdtest.Message) bool { return x.Raw == "WATCHDOG=1" })
	c.WaitHealthy(30 * time.Second)

	// SIGTERM to the primary (on_shutdown: stop-database): STOPPING=1, a
	// clean exit, and the replica's STATUS turns primary.
	stopFrom := len(n2.Messages())
	termAt := time.Now()
	pid1 := m1.pid()
	m1.Signal(syscall.SIGTERM)
	stopping, _ := waitNotify(t, n1, 0, 10*time.Second, "STOPPING=1 from m1", func(x sdtest.Message) bool { return x.Has("STOPPING", "1") })
	if status(stopping) != "stopping (on_shutdown: stop-database)" {
		t.Errorf("STOPPING status %q", status(stopping))
	}
	select {
	case <-m1.exited:
	case <-time.After(70 * time.Second):
		t.Fatal("m1 did not exit after SIGTERM")
	}
	if code := m1.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("m1 exited with status %d after SIGTERM, want 0", code)
	}
	exitAfter := time.Since(termAt)
	m1.cmd = nil
	promoted, _ := waitNotify(t, n2, stopFrom, c.Profile.TTL+10*time.Second, "m2's STATUS: primary", func(x sdtest.Message) bool {
		return status(x) == "primary of cluster e2e, leader m2"
	})
	t.Logf("MEASURED SIGTERM to the primary's agent: STOPPING=1 after %v, agent exited after %v, replica's STATUS primary after %v",
		stopping.At.Sub(termAt).Round(time.Millisecond), exitAfter.Round(time.Millisecond), promoted.At.Sub(termAt).Round(time.Millisecond))
	if m1.PostmasterPID() != 0 {
		t.Errorf("m1's PostgreSQL still runs after SIGTERM with on_shutdown: stop-database")
	}
	onlyFrom(t, n1, pid1, "m1")
	onlyFrom(t, n2, m2.pid(), "m2")
}

// SIGHUP re-reads the configuration file: a changed tag is applied live (and
// `steward list` shows it), a key that needs a restart is reported as such,
// and an invalid file is rejected with its key named while the agent keeps
// running on the previous configuration.
func TestServiceReloadSIGHUP(t *testing.T) {
	t.Parallel()
	c, _ := bootstrapN(t, 2)
	m2 := c.Members[1]
	n2 := notifySocket(t, m2)
	// Restart m2's agent under the fake systemd (its database keeps running).
	m2.Kill()
	startWithEnv(m2, n2.Env())
	waitNotify(t, n2, 0, 30*time.Second, "READY=1", func(x sdtest.Message) bool { return x.Has("READY", "1") })
	eligible := func() (bool, string) {
		ms := listMembers(t, c.Members[0]) // m2's own file is invalid for a while
		return ms[m2.Name]["eligible"] == true, fmt.Sprint(ms[m2.Name]["ineligible_reasons"], " tags=", ms[m2.Name]["tags"])
	}
	Eventually(t, 20*time.Second, "m2 eligible", func() bool { ok, _ := eligible(); return ok })

	// 1. A valid change: nofailover on (live) and a PostgreSQL parameter
	// (needs a restart).
	m2.Tags = "{nofailover: true}"
	c.Postgres = map[string]string{"work_mem": "8MB"}
	c.writeConfig(m2)
	from := len(n2.Messages())
	m2.Signal(syscall.SIGHUP)
	applied := Eventually(t, 10*time.Second, "steward list shows m2 as nofailover", func() bool {
		ok, why := eligible()
		return !ok && strings.Contains(why, "nofailover")
	})
	t.Logf("MEASURED SIGHUP -> nofailover visible in steward list: %v", applied.Round(time.Millisecond))
	i := waitNotifyFrom(t, n2, from, "RELOADING=1", func(x sdtest.Message) bool { return x.Has("RELOADING", "1") })
	ready, _ := waitNotify(t, n2, i, 5*time.Second, "READY=1 after the reload", func(x sdtest.Message) bool { return x.Has("READY", "1") })
	if !strings.Contains(status(ready), "restart needed for postgres.parameters.work_mem") {
		t.Errorf("status after the reload %q does not say a restart is needed", status(ready))
	}
	log := m2.Log()
	for _, want := range []string{`msg="reload: applied" member=m2 key=tags.nofailover`,
		`needs a restart to take effect (systemctl restart steward)" member=m2 key=postgres.parameters.work_mem`} {
		if !strings.Contains(log, want) {
			t.Errorf("agent log lacks %q", want)
		}
	}

	// 2. An invalid file: rejected, the key named, the old configuration
	// (nofailover) kept, the agent still running and answering.
	m2.Tags = "{nofailover: false, failover_priority: -1}"
	c.writeConfig(m2)
	m2.Signal(syscall.SIGHUP)
	Eventually(t, 10*time.Second, "the rejection logged with the key", func() bool {
		return strings.Contains(m2.Log(), `msg="reload: invalid configuration key" member=m2 key=tags.failover_priority`)
	})
	if !strings.Contains(m2.Log(), "reload: configuration rejected; still running on the previous configuration") {
		t.Errorf("the rejection does not say the previous configuration stays")
	}
	time.Sleep(3 * c.Profile.LoopWait)
	if !m2.Running() || m2.Status() == nil {
		t.Fatalf("the agent stopped or stopped answering after an invalid reload")
	}
	if ok, why := eligible(); ok || !strings.Contains(why, "nofailover") {
		t.Fatalf("after a rejected reload m2 is no longer nofailover: %s", why)
	}

	// 3. POST /reload runs the same code: the invalid file is refused with
	// the key named; once fixed, it is applied (nofailover off again).
	code, body := postReload(t, m2)
	if code != 500 || !strings.Contains(body, "tags.failover_priority") {
		t.Fatalf("POST /reload of an invalid file: %d %s", code, body)
	}
	m2.Tags = ""
	c.writeConfig(m2)
	if code, body := postReload(t, m2); code != 200 {
		t.Fatalf("POST /reload: %d %s", code, body)
	}
	Eventually(t, 10*time.Second, "m2 eligible again", func() bool { ok, _ := eligible(); return ok })
	onlyFrom(t, n2, m2.pid(), "m2")
}

func postReload(t *testing.T, m *Member) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(fmt.Sprintf("http://127.0.0.1:%d/reload", m.APIPort), "application/json", nil)
	if err != nil {
		t.Fatalf("POST /reload: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitNotifyFrom(t *testing.T, mgr *sdtest.Manager, from int, what string, match func(sdtest.Message) bool) int {
	t.Helper()
	_, i := waitNotify(t, mgr, from, 10*time.Second, what, match)
	return i
}

// bootstrapN starts an n-member cluster (m1 first, so that it bootstraps)
// and waits until it is healthy.
func bootstrapN(t *testing.T, n int) (*Cluster, *Member) {
	t.Helper()
	c := NewCluster(t, n, Fast)
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

// The upgrade recipe of docs/operations.md: on_shutdown switched to
// leave-running by a reload, then a restart of the primary's agent keeps
// the same PostgreSQL process and the same leadership (no failover).
func TestServiceLeaveRunningRestart(t *testing.T) {
	t.Parallel()
	c, leader := bootstrapN(t, 2)
	if leader.Name != "m1" {
		t.Fatalf("leader %s, want m1", leader.Name)
	}
	m1 := c.Members[0]
	n1 := notifySocket(t, m1)
	// Under the fake systemd from here on.
	m1.Kill()
	startWithEnv(m1, n1.Env())
	waitNotify(t, n1, 0, 30*time.Second, "READY=1", func(x sdtest.Message) bool { return x.Has("READY", "1") })
	before := c.LoadCluster().Leader
	pid := m1.PostmasterPID()

	c.Extra = func(m *Member) string {
		if m == m1 {
			return "on_shutdown: leave-running\n"
		}
		return ""
	}
	c.writeConfig(m1)
	m1.Signal(syscall.SIGHUP)
	Eventually(t, 10*time.Second, "on_shutdown applied by the reload", func() bool {
		return strings.Contains(m1.Log(), `msg="reload: applied" member=m1 key=on_shutdown`)
	})
	from := len(n1.Messages())
	if err := m1.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	stopping, _ := waitNotify(t, n1, from, time.Second, "STOPPING=1", func(x sdtest.Message) bool { return x.Has("STOPPING", "1") })
	if status(stopping) != "stopping (on_shutdown: leave-running)" {
		t.Errorf("STOPPING status %q", status(stopping))
	}
	if p := m1.PostmasterPID(); p != pid || p == 0 {
		t.Fatalf("PostgreSQL did not keep running (postmaster %d -> %d)", pid, p)
	}
	time.Sleep(time.Second) // systemd's RestartSec would be 2 s
	n1.Close()
	n1 = notifySocket(t, m1)
	startWithEnv(m1, n1.Env())
	waitNotify(t, n1, 0, 30*time.Second, "READY=1 after the restart", func(x sdtest.Message) bool { return x.Has("READY", "1") })
	waitNotify(t, n1, 0, 30*time.Second, "STATUS primary", func(x sdtest.Message) bool {
		return status(x) == "primary of cluster e2e, leader m1"
	})
	time.Sleep(2 * c.Profile.TTL)
	after := c.LoadCluster().Leader
	if after == nil || after.Name != before.Name || after.Term != before.Term {
		t.Fatalf("leadership changed across a leave-running restart: %+v -> %+v", before, after)
	}
	if p := m1.PostmasterPID(); p != pid {
		t.Fatalf("PostgreSQL was restarted (postmaster %d -> %d)", pid, p)
	}
	if n := len(history(t, c)); n != 1 {
		t.Fatalf("history has %d records, want only the bootstrap", n)
	}
	if err := m1.Exec("CREATE TABLE after_restart (x int)"); err != nil {
		t.Fatalf("the primary does not take writes after the restart: %v", err)
	}
}
