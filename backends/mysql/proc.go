package mysql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stewardha/steward/backends"
)

// The server process.
//
// steward finds the process of the managed server without a connection, so
// that FenceWrites and Stop work on a server that does not answer: the
// foreground process Start launched (while alive), then the PID file
// (@@pid_file once seen, and *.pid in the data directory), then any
// mariadbd/mysqld process whose working directory is the data directory (the
// server changes into it at startup). A PID is accepted only when it is a
// live mariadbd/mysqld process, in the data directory when /proc lets us
// check, so a stale PID file naming a reused PID is not mistaken for the
// server.

var serverComms = map[string]bool{"mariadbd": true, "mysqld": true}

// procInfo is what /proc says about a process.
type procInfo struct {
	ppid  int
	comm  string
	state byte
}

func readProc(pid int) (procInfo, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	s := string(data)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open || closing+4 > len(s) {
		return procInfo{}, false
	}
	fields := strings.Fields(s[closing+1:])
	if len(fields) < 2 {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(fields[1])
	return procInfo{ppid: ppid, comm: s[open+1 : closing], state: fields[0][0]}, true
}

func (p procInfo) gone() bool { return p.state == 'Z' || p.state == 'X' }

func alive(pid int) bool {
	p, ok := readProc(pid)
	return ok && !p.gone()
}

func resolvedDir(dir string) string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r
	}
	return dir
}

// procCwd is the process's working directory (error: not allowed to look).
func procCwd(pid int) (string, error) {
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(cwd, " (deleted)"), nil
}

// dirs are the data directory as configured and as the server reported it.
func (b *Backend) dirs() []string {
	b.mu.Lock()
	seen := b.seenDataDir
	b.mu.Unlock()
	var out []string
	for _, d := range []string{b.dataDir, strings.TrimSuffix(seen, "/")} {
		if d != "" {
			out = append(out, filepath.Clean(d), resolvedDir(d))
		}
	}
	return out
}

// isServer reports whether pid is a live server process of this data
// directory.
func (b *Backend) isServer(pid int) bool {
	if pid <= 0 {
		return false
	}
	p, ok := readProc(pid)
	if !ok || p.gone() || !serverComms[p.comm] {
		return false
	}
	dirs := b.dirs()
	if len(dirs) == 0 {
		return true // nothing to compare with: trust the PID file
	}
	cwd, err := procCwd(pid)
	if err != nil {
		return true // not allowed to look: it is a live server process
	}
	for _, d := range dirs {
		if cwd == d {
			return true
		}
	}
	return false
}

// pidFiles are the candidate PID files.
func (b *Backend) pidFiles() []string {
	b.mu.Lock()
	pf := b.pidFile
	b.mu.Unlock()
	var out []string
	if pf != "" {
		out = append(out, pf)
	}
	for _, d := range b.dirs() {
		m, _ := filepath.Glob(filepath.Join(d, "*.pid"))
		out = append(out, m...)
	}
	return out
}

func readPID(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// serverPID returns the PID of the running server, 0 when none is found.
func (b *Backend) serverPID() int {
	b.mu.Lock()
	child := b.childPID
	b.mu.Unlock()
	// The server Start launched in the foreground is ours even before it
	// has changed into its data directory.
	if p, ok := readProc(child); child > 0 && ok && !p.gone() && serverComms[p.comm] {
		return child
	}
	for _, f := range b.pidFiles() {
		if pid := readPID(f); b.isServer(pid) {
			return pid
		}
	}
	if len(b.dirs()) == 0 {
		return 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		p, ok := readProc(pid)
		if !ok || p.gone() || !serverComms[p.comm] {
			continue
		}
		cwd, err := procCwd(pid)
		if err != nil {
			continue
		}
		for _, d := range b.dirs() {
			if cwd == d {
				return pid
			}
		}
	}
	return 0
}

// stalePIDFile reports a PID file left by a server that is gone (it did not
// shut down cleanly).
func (b *Backend) stalePIDFile() (string, bool) {
	for _, f := range b.pidFiles() {
		if pid := readPID(f); pid > 0 && !b.isServer(pid) {
			return f, true
		}
	}
	return "", false
}

// waitGone waits until pid has exited, polling, until ctx ends.
func waitGone(ctx context.Context, pid int) bool {
	for {
		if !alive(pid) {
			return true
		}
		select {
		case <-ctx.Done():
			return !alive(pid)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// killServer sends SIGKILL to the server process and waits (bounded by
// ctx) until it is gone.
func (b *Backend) killServer(ctx context.Context, pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGKILL to the server (PID %d): %w", pid, err)
	}
	if !waitGone(ctx, pid) {
		return fmt.Errorf("the server (PID %d) is still alive after SIGKILL (%v): the host may be overloaded or the process stuck in the kernel", pid, ctx.Err())
	}
	b.resetPool()
	return nil
}

// resetPool drops idle connections to a server that went away.
func (b *Backend) resetPool() {
	b.db.SetMaxIdleConns(0)
	b.db.SetMaxIdleConns(2)
}

// launch runs the start command detached (its own session, output to
// StartLog) and waits until a server process of this data directory exists
// (or, without a data directory, until the command exited successfully).
// A command that exits non-zero fails the start with its output.
func (b *Backend) launch(ctx context.Context) error {
	argv := b.opts.StartCommand
	if len(argv) == 0 {
		return errors.New("the server does not run and mysql.start_command is not set: start it (or configure start_command)")
	}
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	logPath := b.StartLog()
	if logPath != "" {
		if f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640); err == nil {
			out.Close()
			out = f
		} else {
			logPath = ""
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = "/"
	// Its own session: a signal to the agent's process group (Ctrl-C of a
	// foreground agent) does not reach the server, and a server run in the
	// foreground outlives the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("mysql.start_command %q: %w", strings.Join(argv, " "), err)
	}
	out.Close()
	pid := cmd.Process.Pid
	b.mu.Lock()
	b.childPID = pid
	b.stoppedPos = backends.Position{} // the history may move from now on
	b.mu.Unlock()
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait() // reaps it whenever it exits
		b.mu.Lock()
		if b.childPID == pid {
			b.childPID = 0
		}
		b.mu.Unlock()
		exited <- err
	}()
	b.log.Info("start command launched", "command", strings.Join(argv, " "), "pid", pid, "log", logPath)
	commandDone := false
	for {
		if !commandDone {
			select {
			case err := <-exited:
				commandDone = true
				if err != nil {
					return fmt.Errorf("mysql.start_command %q failed: %v; output: %s", strings.Join(argv, " "), err, b.startLogTail(logPath, 8))
				}
				if len(b.dirs()) == 0 {
					return nil
				}
			default:
			}
		}
		if spid := b.serverPID(); spid != 0 {
			b.log.Debug("server process up", "pid", spid, "after", time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			if commandDone {
				return fmt.Errorf("mysql.start_command %q returned but no server process of %s appeared (%v); output: %s",
					strings.Join(argv, " "), b.dataDir, ctx.Err(), b.startLogTail(logPath, 8))
			}
			return nil // still running: a slow start (Observe reports starting)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startLogTail returns the last n lines of the start log.
func (b *Backend) startLogTail(path string, n int) string {
	if path == "" {
		return "(not kept: mysql.data_dir is not set)"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// runCommand runs argv (no shell) bounded by ctx, with extra environment,
// and returns its output (stderr bounded to 8 kB).
func runCommand(ctx context.Context, argv, env []string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out limitedBuffer
	out.max = 8 << 10
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// limitedBuffer keeps the last max bytes written.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.buf.Write(p)
	if l.buf.Len() > l.max {
		b := l.buf.Bytes()
		keep := append([]byte(nil), b[len(b)-l.max:]...)
		l.buf.Reset()
		l.buf.Write(keep)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return l.buf.String() }
