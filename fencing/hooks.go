// Package fencing stops a former primary from taking writes: STONITH hooks
// the new leader runs against the old primary before it promotes, and the
// Linux watchdog device that resets a host whose agent stopped renewing its
// lease.
//
// Guarantees: a hook is run as an argv list, never through a shell, so a
// member name or host cannot inject commands; placeholders are substituted
// inside single argv elements only. Every run is bounded by its timeout: the
// whole process group is killed when it expires. Output is captured, bounded,
// for the log.
//
// Not guaranteed: a hook that exits 0 is trusted to have fenced its target;
// steward cannot verify what an external command did.
package fencing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Target is the member to fence (the former primary).
type Target struct {
	Name    string // member name
	Host    string // its database host
	API     string // its REST API URL
	Cluster string
}

// Hook is one fencing command.
type Hook struct {
	Name    string
	Command []string // argv; placeholders {target_name} {target_host} {target_api} {cluster}
	Timeout time.Duration
}

// Result of one attempt.
const (
	ResultSuccess = "success"
	ResultFailure = "failure"
	ResultTimeout = "timeout"
)

// Attempt is one run of one hook.
type Attempt struct {
	Hook     string        `json:"hook"`
	Try      int           `json:"try"`
	Result   string        `json:"result"` // success, failure, timeout
	ExitCode int           `json:"exit_code"`
	Duration time.Duration `json:"duration"`
	Output   string        `json:"output,omitempty"` // bounded
	Err      string        `json:"error,omitempty"`
}

func (a Attempt) String() string {
	s := fmt.Sprintf("hook %s try %d: %s", a.Hook, a.Try, a.Result)
	if a.Err != "" {
		s += " (" + a.Err + ")"
	}
	return s
}

// Runner runs the configured hooks.
type Runner struct {
	Hooks []Hook
	// Tries per hook (default 3) and the first backoff between tries
	// (default 1s, doubled after each failure).
	Tries   int
	Backoff time.Duration
	// MaxOutput bounds the captured output per attempt (default 4 KiB).
	MaxOutput int
	// Env is the base environment of hooks (default: PATH only).
	Env    []string
	Logger *slog.Logger
	// OnAttempt is called after every attempt (metrics).
	OnAttempt func(Attempt)
}

// Expand substitutes the placeholders in each argv element. No element is
// ever split or joined: a value with spaces or shell metacharacters stays
// one argument.
func Expand(argv []string, t Target) []string {
	r := strings.NewReplacer("{target_name}", t.Name, "{target_host}", t.Host, "{target_api}", t.API, "{cluster}", t.Cluster)
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = r.Replace(a)
	}
	return out
}

func (r *Runner) env(t Target) []string {
	base := r.Env
	if base == nil {
		base = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	return append(append([]string(nil), base...),
		"STEWARD_TARGET_NAME="+t.Name, "STEWARD_TARGET_HOST="+t.Host,
		"STEWARD_TARGET_API="+t.API, "STEWARD_CLUSTER="+t.Cluster)
}

// Fence runs the hooks in order against t until one confirms (exits 0);
// each hook is tried up to Tries times with exponential backoff. It returns
// whether a hook confirmed and every attempt made. With no hooks configured
// it returns false and no attempts.
func (r *Runner) Fence(ctx context.Context, t Target) (bool, []Attempt) {
	tries := r.Tries
	if tries <= 0 {
		tries = 3
	}
	backoff := r.Backoff
	if backoff <= 0 {
		backoff = time.Second
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var attempts []Attempt
	for _, h := range r.Hooks {
		wait := backoff
		for try := 1; try <= tries; try++ {
			a := r.run(ctx, h, t, try)
			attempts = append(attempts, a)
			if r.OnAttempt != nil {
				r.OnAttempt(a)
			}
			lvl := slog.LevelWarn
			if a.Result == ResultSuccess {
				lvl = slog.LevelInfo
			}
			log.Log(ctx, lvl, "fencing hook ran", "hook", h.Name, "target", t.Name, "try", try, "result", a.Result,
				"exit_code", a.ExitCode, "duration", a.Duration.Round(time.Millisecond), "output", a.Output, "err", a.Err)
			if a.Result == ResultSuccess {
				return true, attempts
			}
			if ctx.Err() != nil {
				return false, attempts
			}
			if try < tries {
				select {
				case <-ctx.Done():
					return false, attempts
				case <-time.After(wait):
				}
				wait *= 2
			}
		}
	}
	return false, attempts
}

// run executes one attempt of one hook.
func (r *Runner) run(ctx context.Context, h Hook, t Target, try int) Attempt {
	a := Attempt{Hook: h.Name, Try: try, ExitCode: -1}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	argv := Expand(h.Command, t)
	if len(argv) == 0 || argv[0] == "" {
		a.Result, a.Err = ResultFailure, "empty command"
		return a
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = r.env(t)
	cmd.Stdin = nil
	max := r.MaxOutput
	if max <= 0 {
		max = 4 << 10
	}
	out := &boundedBuffer{max: max}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that a timeout kills the hook's children
	// too (ssh, ipmitool, a cloud CLI that forks).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		a.Result, a.Err, a.Duration = ResultFailure, err.Error(), time.Since(start)
		return a
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-hctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done // reap it; its exit status says nothing more than the timeout
		a.Duration = time.Since(start)
		a.Output = out.String()
		if errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			a.Result, a.Err = ResultTimeout, fmt.Sprintf("killed after its timeout of %v", timeout)
		} else {
			a.Result, a.Err = ResultFailure, "cancelled"
		}
		return a
	}
	a.Duration = time.Since(start)
	a.Output = out.String()
	if cmd.ProcessState != nil {
		a.ExitCode = cmd.ProcessState.ExitCode()
	}
	if err != nil {
		a.Result, a.Err = ResultFailure, err.Error()
		return a
	}
	a.Result = ResultSuccess
	return a
}

// boundedBuffer keeps the first and the last max/2 bytes written.
type boundedBuffer struct {
	mu    sync.Mutex
	max   int
	head  bytes.Buffer
	tail  []byte
	total int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	written := len(p)
	b.total += len(p)
	half := b.max / 2
	if room := half - b.head.Len(); room > 0 {
		n := min(room, len(p))
		b.head.Write(p[:n])
		p = p[n:]
	}
	b.tail = append(b.tail, p...)
	if len(b.tail) > half {
		b.tail = b.tail[len(b.tail)-half:]
	}
	return written, nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.head.String()
	if dropped := b.total - b.head.Len() - len(b.tail); dropped > 0 {
		s += fmt.Sprintf("\n[... %d bytes omitted ...]\n", dropped)
	}
	return strings.TrimSpace(s + string(b.tail))
}
