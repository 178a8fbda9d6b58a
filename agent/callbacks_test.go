package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/config"
)

// The callback tests run a real shell script. It is run as
// [/bin/sh, script, ...] rather than executed directly: a script written by
// a test while another parallel test forks can fail to exec with "text file
// busy".

type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// lines returns the log lines containing every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// callbackAgent is member "a" of cluster "main" with the leader key held by
// "a" (term 5) in a fake store, and the given script as its
// on_role_change callback (with two arguments of its own).
func callbackAgent(t *testing.T, script string) (*Agent, *fakeStore, *logBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "callback.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nOUT="+dir+"\n"+script), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	st := newFakeStore("a", 5)
	dyn := config.DefaultDynamic()
	dyn.RetryTimeout = config.Duration(time.Second)
	a := New(Options{
		Self: Self{Name: "a", Priority: 1}, Store: st, Backend: &fakeDB{}, Bootstrap: dyn, Cluster: "main",
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Callbacks: config.Callbacks{OnRoleChange: []string{"/bin/sh", path, "--dev", "eth0"}},
	})
	t.Cleanup(a.callbacks.close)
	return a, st, logs, dir
}

// waitFor polls cond until it holds or 5 s passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive: pid exists and is not a zombie (an orphan whose reaper, in a
// container, may never collect it).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// The real promote and demote paths run the callback with argv... <action>
// <role> <cluster> and the same values (and the member) in the
// environment, in the order of the changes: on_start for the first role
// the agent learns (a streaming replica), then on_role_change. A role
// reported again (every loop of a leader) runs nothing.
func TestRoleChangeCallbackOnPromoteAndDemote(t *testing.T) {
	t.Parallel()
	a, st, logs, dir := callbackAgent(t, `echo "$*|$STEWARD_CALLBACK_ACTION|$STEWARD_ROLE|$STEWARD_CLUSTER|$STEWARD_MEMBER|$HOME" >> "$OUT/calls"
echo "moved the VIP for $4"
`)
	calls := filepath.Join(dir, "calls")
	ran := func(n int) func() bool {
		return func() bool { return len(logs.lines(`msg="role change callback ran"`)) == n }
	}
	ctx := context.Background()

	// A streaming replica after the agent started: on_start.
	o := obs()
	o.Self.Name = "a"
	a.act(ctx, o, Decision{Action: ActNone, Reason: "replica streaming"})
	waitFor(t, "the on_start callback", ran(1))
	a.act(ctx, o, Decision{Action: ActNone, Reason: "replica streaming"}) // same role: nothing

	// Promotion (the key is ours: term 5 in the store).
	a.setLead(5, time.Now())
	o.Cluster, _ = st.Load(ctx)
	a.promote(ctx, o, Decision{Reason: "test failover"}, "failover")
	waitFor(t, "the promote callback", ran(2))
	a.roleChanged("primary") // what every leader loop reports: nothing

	// Demotion.
	a.demote(ctx, o, Decision{Reason: "test demote"})
	waitFor(t, "the demote callback", ran(3))

	want := []string{
		"--dev eth0 on_start replica main|on_start|replica|main|a|",
		"--dev eth0 on_role_change primary main|on_role_change|primary|main|a|",
		"--dev eth0 on_role_change replica main|on_role_change|replica|main|a|",
	}
	if got := readLines(t, calls); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("callback calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range logs.lines(`msg="role change callback ran"`) {
		if !strings.Contains(l, "level=INFO") || !strings.Contains(l, "result=success") || !strings.Contains(l, "exit_code=0") ||
			!strings.Contains(l, `output="moved the VIP for `) || !strings.Contains(l, "duration=") {
			t.Errorf("callback log line: %s", l)
		}
	}
	if n := len(logs.lines(`msg="role change callback ran"`, "action=on_role_change", "role=primary")); n != 1 {
		t.Errorf("%d log lines for the promotion's callback, want 1", n)
	}
}

// A newer role change kills the callback still running for the previous
// one (its whole process group) before the newer one runs, so that the
// callbacks never overlap or finish out of order; a failing callback is
// logged with its exit code and the tail of its output.
func TestRoleChangeCallbackSupersededAndFailing(t *testing.T) {
	t.Parallel()
	a, _, logs, dir := callbackAgent(t, `echo "start $4" >> "$OUT/calls"
if [ "$4" = primary ]; then
	sleep 30 &
	echo $! > "$OUT/child"
	wait
	echo "end $4" >> "$OUT/calls"
	exit 0
fi
i=0; while [ $i -lt 300 ]; do echo "noise line $i of a chatty callback"; i=$((i+1)); done
echo "end $4" >> "$OUT/calls"
exit 3
`)
	calls := filepath.Join(dir, "calls")
	start := time.Now()
	a.roleChanged("primary")
	waitFor(t, "the slow callback to start its child", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "child"))
		return strings.HasSuffix(string(b), "\n")
	})
	a.roleChanged("replica")
	waitFor(t, "the newer callback", func() bool { return len(logs.lines(`msg="role change callback ran"`, "role=replica")) == 1 })
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("the newer callback finished %v after the first started: the slow one was not killed", d)
	}
	want := "start primary\nstart replica\nend replica"
	if got := strings.Join(readLines(t, calls), "\n"); got != want {
		t.Fatalf("callback calls:\n%s\nwant:\n%s", got, want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "child"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("child pid %q", b)
	}
	waitFor(t, "the killed callback's child to be gone", func() bool { return !alive(pid) })
	if l := logs.lines(`msg="role change callback ran"`, "role=primary"); len(l) != 1 ||
		!strings.Contains(l[0], "level=WARN") || !strings.Contains(l[0], "result=superseded") || !strings.Contains(l[0], "exit_code=-1") {
		t.Errorf("superseded callback log: %q", l)
	}
	l := logs.lines(`msg="role change callback ran"`, "role=replica")[0]
	for _, w := range []string{"level=WARN", "result=failure", "exit_code=3", "bytes omitted", "noise line 299 of a chatty callback", "err=\"exit status 3\""} {
		if !strings.Contains(l, w) {
			t.Errorf("failing callback log lacks %q: %s", w, l)
		}
	}
	if strings.Contains(l, "noise line 0 ") || len(l) > callbackMaxOutput+1024 {
		t.Errorf("callback output not bounded to its last %d bytes (%d bytes logged)", callbackMaxOutput, len(l))
	}
}

// A hung callback is killed at its timeout; the next change still runs.
// A command changed by a reload (SetCallbacks) is used from the next
// change on.
func TestRoleChangeCallbackTimeoutAndReload(t *testing.T) {
	t.Parallel()
	a, _, logs, dir := callbackAgent(t, `echo "$4" >> "$OUT/calls"
[ "$4" = primary ] && exec sleep 30
exit 0
`)
	a.callbacks.timeout = 300 * time.Millisecond
	start := time.Now()
	a.roleChanged("primary")
	waitFor(t, "the hung callback to be killed", func() bool { return len(logs.lines("result=timeout")) == 1 })
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the hung callback was killed after %v, want about its timeout (300ms)", d)
	}
	if l := logs.lines("result=timeout")[0]; !strings.Contains(l, "role=primary") || !strings.Contains(l, "action=on_start") ||
		!strings.Contains(l, "killed after the callback timeout of 300ms") {
		t.Errorf("timeout log line: %s", l)
	}

	// SIGHUP with a new command: the next change runs it.
	other := filepath.Join(dir, "other.sh")
	if err := os.WriteFile(other, []byte("#!/bin/sh\necho \"other $*\" >> "+dir+"/calls\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.SetCallbacks(config.Callbacks{OnRoleChange: []string{"/bin/sh", other}})
	a.roleChanged("replica")
	waitFor(t, "the reloaded callback", func() bool { return len(logs.lines("result=success")) == 1 })
	want := "primary\nother on_role_change replica main"
	if got := strings.Join(readLines(t, filepath.Join(dir, "calls")), "\n"); got != want {
		t.Fatalf("callback calls:\n%s\nwant:\n%s", got, want)
	}
	// No command: nothing runs, nothing is logged.
	a.SetCallbacks(config.Callbacks{})
	a.roleChanged("primary")
	a.callbacks.close()
	if n := len(logs.lines("role change callback")); n != 2 {
		t.Fatalf("%d callback log lines, want 2:\n%s", n, logs)
	}
}

// Stopping the agent lets a running callback finish, skips the ones not
// started, and starts none afterwards.
func TestRoleChangeCallbackClose(t *testing.T) {
	t.Parallel()
	a, _, logs, dir := callbackAgent(t, `echo "start $4" >> "$OUT/calls"
[ "$4" = primary ] && sleep 0.3
echo "end $4" >> "$OUT/calls"
`)
	a.roleChanged("primary")
	waitFor(t, "the callback to start", func() bool { return readLines(t, filepath.Join(dir, "calls"))[0] == "start primary" })
	a.callbacks.mu.Lock()
	// A change queued behind the running one (as if notify raced close).
	a.callbacks.pending = &roleEvent{action: CallbackOnRoleChange, role: "replica", cluster: "main", member: "a", argv: []string{"/bin/true"}}
	a.callbacks.mu.Unlock()
	a.callbacks.close()
	a.roleChanged("replica")
	if got := strings.Join(readLines(t, filepath.Join(dir, "calls")), "\n"); got != "start primary\nend primary" {
		t.Fatalf("callback calls after close:\n%s", got)
	}
	if n := len(logs.lines("role change callback skipped", "role=replica", "the agent stopped")); n != 2 {
		t.Fatalf("%d skipped lines, want 2 (the queued one and the one after close):\n%s", n, logs)
	}
}
