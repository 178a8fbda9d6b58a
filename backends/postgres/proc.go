package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pidFile is the content of postmaster.pid that steward uses.
type pidFile struct {
	pid    int
	status string // line 8: starting, ready, standby, stopping ("" before it is written)
}

func readPidFile(dataDir string) (pidFile, bool) {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return pidFile{}, false
	}
	lines := strings.Split(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return pidFile{}, false
	}
	pf := pidFile{pid: pid}
	if len(lines) >= 8 {
		pf.status = strings.TrimSpace(lines[7])
	}
	return pf, true
}

// procInfo is what /proc says about a process.
type procInfo struct {
	pid   int
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
	return procInfo{pid: pid, ppid: ppid, comm: s[open+1 : closing], state: fields[0][0]}, true
}

// gone: no such process, or a zombie (it can do nothing any more).
func (p procInfo) gone() bool { return p.state == 'Z' || p.state == 'X' }

// procCwd is the process's working directory ("" when unknown).
func procCwd(pid int) (string, error) {
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(cwd, " (deleted)"), nil
}

// resolvedDir is dir with symlinks resolved (dir itself when that fails).
func resolvedDir(dir string) string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r
	}
	return dir
}

// serverProcess reports whether pid is a live PostgreSQL process of the
// server in dataDir: alive, not a zombie, and (when /proc lets us see it)
// running in that data directory — a reused PID is not mistaken for the
// postmaster.
func serverProcess(pid int, dataDir string) bool {
	if pid <= 0 {
		return false
	}
	p, ok := readProc(pid)
	if !ok || p.gone() {
		return false
	}
	cwd, err := procCwd(pid)
	if err != nil {
		return true // not allowed to look: it exists and is not a zombie
	}
	return cwd == resolvedDir(dataDir) || cwd == dataDir
}

// RunningPID returns the PID of the postmaster running from dataDir, or 0
// when none runs (no postmaster.pid, or a stale one).
func RunningPID(dataDir string) int {
	pf, ok := readPidFile(dataDir)
	if !ok || !serverProcess(pf.pid, dataDir) {
		return 0
	}
	return pf.pid
}

// serverProcesses lists the live processes of the server in dataDir:
// children of the postmaster, and PostgreSQL processes whose working
// directory is the data directory (orphans of a killed postmaster).
func serverProcesses(dataDir string, postmaster int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	dir := resolvedDir(dataDir)
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == postmaster || pid == os.Getpid() {
			continue
		}
		p, ok := readProc(pid)
		if !ok || p.gone() {
			continue
		}
		if postmaster > 0 && p.ppid == postmaster {
			pids = append(pids, pid)
			continue
		}
		if p.comm != "postgres" && p.comm != "postmaster" {
			continue
		}
		if cwd, err := procCwd(pid); err == nil && (cwd == dir || cwd == dataDir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func alive(pid int) bool {
	p, ok := readProc(pid)
	return ok && !p.gone()
}

// waitGone waits until none of pids is alive, polling, until deadline or
// ctx ends. It reports whether they are all gone.
func waitGone(ctx context.Context, pids []int, deadline time.Time) bool {
	for {
		left := pids[:0:0]
		for _, p := range pids {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return true
		}
		pids = left
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// fenceGrace is how long the postmaster gets to finish an immediate
// shutdown before it and its children are killed.
const fenceGrace = 2 * time.Second

// FenceWrites stops the server now without using a database connection:
// SIGQUIT (immediate shutdown) to the postmaster named in postmaster.pid;
// if it has not exited within 2 s (or half the time ctx leaves, when
// shorter), SIGKILL to it and to every process of
// the server (its children, and PostgreSQL processes running in the data
// directory). It returns nil once no process of the server is left — so
// none accepts writes — and an error when ctx ends before that could be
// confirmed. It is idempotent: with nothing running it only sweeps orphans.
func (b *Backend) FenceWrites(ctx context.Context) error {
	start := time.Now()
	method := "none running"
	pf, ok := readPidFile(b.dataDir)
	if ok && serverProcess(pf.pid, b.dataDir) {
		method = "SIGQUIT"
		// Collect the children first: once the postmaster dies they are
		// re-parented and only the data directory identifies them.
		children := serverProcesses(b.dataDir, pf.pid)
		if err := syscall.Kill(pf.pid, syscall.SIGQUIT); err != nil && !errors.Is(err, syscall.ESRCH) {
			b.log.Warn("fence: SIGQUIT failed", "pid", pf.pid, "error", err)
		}
		// Leave time for SIGKILL within a short ctx.
		grace := fenceGrace
		if dl, ok := ctx.Deadline(); ok {
			grace = min(grace, time.Until(dl)/2)
		}
		if !waitGone(context.WithoutCancel(ctx), []int{pf.pid}, time.Now().Add(grace)) {
			method = "SIGKILL"
			children = append(children, serverProcesses(b.dataDir, pf.pid)...)
			_ = syscall.Kill(pf.pid, syscall.SIGKILL)
			for _, c := range children {
				_ = syscall.Kill(c, syscall.SIGKILL)
			}
			dl, _ := ctx.Deadline()
			if dl.IsZero() {
				dl = time.Now().Add(10 * time.Second)
			}
			if !waitGone(ctx, append(children, pf.pid), dl) {
				err := fmt.Errorf("fencing: server processes of %s still alive after SIGKILL (%v): the host may be overloaded or the processes stuck in the kernel; writes are NOT confirmed stopped", b.dataDir, ctx.Err())
				b.log.Error("fence writes failed", "pid", pf.pid, "error", err)
				return err
			}
		}
	}
	// Orphans (a postmaster killed earlier, children still running).
	if left := serverProcesses(b.dataDir, 0); len(left) > 0 {
		if method == "none running" {
			method = "SIGKILL of orphans"
		}
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		dl, _ := ctx.Deadline()
		if dl.IsZero() {
			dl = time.Now().Add(10 * time.Second)
		}
		if !waitGone(ctx, left, dl) {
			err := fmt.Errorf("fencing: orphaned server processes %v of %s still alive after SIGKILL (%v); writes are NOT confirmed stopped", left, b.dataDir, ctx.Err())
			b.log.Error("fence writes failed", "error", err)
			return err
		}
	}
	b.log.Info("fenced writes", "method", method, "pid", pf.pid, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}
