package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Callback actions: the first argument appended to callbacks.on_role_change.
const (
	CallbackOnStart      = "on_start"       // the first role this agent learned after it started
	CallbackOnRoleChange = "on_role_change" // every later change of role
)

// Callback results, as logged.
const (
	callbackSuccess    = "success"
	callbackFailure    = "failure"
	callbackTimeout    = "timeout"
	callbackSuperseded = "superseded" // killed: a newer role change came
)

const (
	// CallbackTimeout bounds one run of a callback; the process group is
	// killed when it expires.
	CallbackTimeout = 30 * time.Second
	// callbackMaxOutput is how much of a callback's output (stdout and
	// stderr together, the last bytes) is logged.
	callbackMaxOutput = 4 << 10
	// callbackWaitDelay bounds how long a finished (or killed) callback's
	// output pipes are waited for: a child that left the process group and
	// kept stdout open must not hold the runner.
	callbackWaitDelay = 2 * time.Second
)

var (
	errSuperseded = errors.New("a newer role change came")
	errClosed     = errors.New("the agent stopped")
)

// callbackPath is the whole environment of a callback besides its own
// STEWARD_* variables, as for fencing hooks: nothing of the agent's
// environment (which may carry STEWARD_*_PASSWORD secrets) is passed.
const callbackPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// roleEvent is one role change to report.
type roleEvent struct {
	action, role, cluster, member string
	argv                          []string // the command as configured when the change happened
}

// callbackRunner runs callbacks.on_role_change, one at a time, off the HA
// loop. Guarantees:
//   - notify never blocks on a callback: it records the event and returns;
//     one worker goroutine (owned by the runner, ended by close) runs it.
//   - Callbacks run in the order of the role changes and never overlap: a
//     newer change kills the running callback's process group first (as
//     Patroni does), and of several changes that came while one ran only
//     the newest is run (it carries the current role); the skipped ones are
//     logged.
//   - Every run is bounded by timeout (process group killed) and logged as
//     one line with result, exit code, duration and the last bytes of
//     output. Its outcome changes nothing else.
type callbackRunner struct {
	log     *slog.Logger
	timeout time.Duration
	env     []string // base environment (default: callbackPath)

	mu      sync.Mutex
	argv    []string
	pending *roleEvent
	cancel  context.CancelCauseFunc // of the running callback; nil when none
	running bool                    // the worker goroutine exists
	closed  bool
	done    chan struct{} // closed when the worker exits (nil: no worker yet)
}

func newCallbackRunner(log *slog.Logger, argv []string) *callbackRunner {
	return &callbackRunner{log: log, timeout: CallbackTimeout, argv: slices.Clone(argv)}
}

// setCommand replaces the command (SIGHUP); the next role change uses it.
func (r *callbackRunner) setCommand(argv []string) {
	r.mu.Lock()
	r.argv = slices.Clone(argv)
	r.mu.Unlock()
}

// notify reports a role change. With no command configured it does nothing.
func (r *callbackRunner) notify(action, role, cluster, member string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.argv) == 0 {
		return
	}
	ev := &roleEvent{action: action, role: role, cluster: cluster, member: member, argv: slices.Clone(r.argv)}
	if r.closed {
		r.logSkipped(ev, errClosed)
		return
	}
	if r.pending != nil {
		r.logSkipped(r.pending, errSuperseded)
	}
	r.pending = ev
	if r.cancel != nil {
		r.cancel(errSuperseded)
	}
	if !r.running {
		r.running = true
		r.done = make(chan struct{})
		go r.work(r.done)
	}
}

// work runs pending events until there are none.
func (r *callbackRunner) work(done chan struct{}) {
	defer close(done)
	for {
		r.mu.Lock()
		ev := r.pending
		r.pending = nil
		if ev == nil || r.closed {
			r.running = false
			r.mu.Unlock()
			return
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		r.cancel = cancel
		timeout := r.timeout
		r.mu.Unlock()

		r.run(ctx, ev, timeout)

		r.mu.Lock()
		r.cancel = nil
		r.mu.Unlock()
		cancel(nil)
	}
}

// close stops starting callbacks and waits for the running one, which may
// finish (within its timeout): a half-moved virtual IP is worse than a
// shutdown that takes a few seconds longer.
func (r *callbackRunner) close() {
	r.mu.Lock()
	r.closed = true
	if r.pending != nil {
		r.logSkipped(r.pending, errClosed)
		r.pending = nil
	}
	done := r.done
	r.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (r *callbackRunner) logSkipped(ev *roleEvent, why error) {
	r.log.Warn("role change callback skipped", "action", ev.action, "role", ev.role, "command", ev.argv,
		"reason", why.Error())
}

// run executes one callback and logs it.
func (r *callbackRunner) run(ctx context.Context, ev *roleEvent, timeout time.Duration) {
	argv := append(slices.Clone(ev.argv), ev.action, ev.role, ev.cluster)
	cmd := exec.Command(argv[0], argv[1:]...)
	env := r.env
	if env == nil {
		env = []string{callbackPath}
	}
	cmd.Env = append(slices.Clone(env),
		"STEWARD_CALLBACK_ACTION="+ev.action, "STEWARD_ROLE="+ev.role,
		"STEWARD_CLUSTER="+ev.cluster, "STEWARD_MEMBER="+ev.member)
	out := &tailBuffer{max: callbackMaxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that a kill reaches the callback's children
	// too (ip, a cloud CLI, curl started by a script).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = callbackWaitDelay

	start := time.Now()
	result, exitCode, errText := callbackSuccess, -1, ""
	if err := cmd.Start(); err != nil {
		result, errText = callbackFailure, err.Error()
	} else {
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		timer := time.NewTimer(timeout)
		var err error
		select {
		case err = <-waited:
			timer.Stop()
		case <-timer.C:
			result, errText = callbackTimeout, fmt.Sprintf("killed after the callback timeout of %v", timeout)
		case <-ctx.Done(): // only notify cancels it
			result, errText = callbackSuperseded, "killed: "+context.Cause(ctx).Error()
		}
		if result != callbackSuccess {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-waited // reap it
		} else if err != nil {
			result, errText = callbackFailure, err.Error()
		}
		if cmd.ProcessState != nil {
			exitCode = cmd.ProcessState.ExitCode()
		}
	}
	lvl := slog.LevelInfo
	if result != callbackSuccess {
		lvl = slog.LevelWarn
	}
	kv := []any{"action", ev.action, "role", ev.role, "command", ev.argv, "result", result,
		"exit_code", exitCode, "duration", time.Since(start).Round(time.Millisecond), "output", out.String()}
	if errText != "" {
		kv = append(kv, "err", errText)
	}
	r.log.Log(context.Background(), lvl, "role change callback ran", kv...)
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.dropped += over
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("[... %d bytes omitted ...]\n%s", b.dropped, strings.TrimSpace(string(b.buf)))
	}
	return strings.TrimSpace(string(b.buf))
}
