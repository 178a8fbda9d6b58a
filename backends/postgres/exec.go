package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxOutput bounds how much of a program's stdout/stderr is kept.
const maxOutput = 16 << 10

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu        sync.Mutex
	buf       []byte
	max       int
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
		t.truncated = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if t.truncated {
		s = "…" + s
	}
	return s
}

// cmdSpec is one program run.
type cmdSpec struct {
	prog string   // name in BinDir
	args []string // argv[1:]
	env  []string // extra environment (KEY=value), e.g. PGPASSWORD
	// cLocale runs the program with LC_ALL=C (its output is parsed).
	cLocale bool
}

// run executes a PostgreSQL program from BinDir without a shell, as RunAs
// when root, bounded by ctx. It returns stdout and stderr (each bounded to
// their last 16 KiB); a failure's error includes stderr.
func (b *Backend) run(ctx context.Context, c cmdSpec) (stdout, stderr string, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
	}
	path := filepath.Join(b.opts.BinDir, c.prog)
	cmd := exec.CommandContext(ctx, path, c.args...)
	cmd.Env = b.environ(c.cLocale, c.env...)
	cmd.Dir = "/"
	if b.runAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: b.runAs.uid, Gid: b.runAs.gid, Groups: []uint32{}}}
	}
	out := &tailBuffer{max: maxOutput}
	errb := &tailBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, errb
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err = cmd.Run()
	b.log.Debug("ran program", "program", c.prog, "args", strings.Join(c.args, " "), "duration", time.Since(start).Round(time.Millisecond), "error", err)
	if err != nil {
		msg := errb.String()
		if msg == "" {
			msg = out.String()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%s did not finish in time (%w)", c.prog, ctx.Err())
		}
		var ee *exec.ExitError
		if msg != "" && (errors.As(err, &ee) || ctx.Err() != nil) {
			return out.String(), errb.String(), fmt.Errorf("%s: %w: %s", c.prog, err, msg)
		}
		return out.String(), errb.String(), fmt.Errorf("%s: %w", c.prog, err)
	}
	return out.String(), errb.String(), nil
}

// environ is the environment of a PostgreSQL program: this process's,
// without PG* variables (an operator's PGDATA or PGHOST must not redirect
// steward's programs), with HOME/USER of the run-as user, plus extra.
func (b *Backend) environ(cLocale bool, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") {
			continue
		}
		if b.runAs != nil && (k == "HOME" || k == "USER" || k == "LOGNAME") {
			continue
		}
		if cLocale && (k == "LC_ALL" || k == "LANGUAGE" || k == "LC_MESSAGES") {
			continue
		}
		env = append(env, kv)
	}
	if b.runAs != nil {
		env = append(env, "HOME="+b.runAs.home, "USER="+b.runAs.name, "LOGNAME="+b.runAs.name)
	}
	if cLocale {
		env = append(env, "LC_ALL=C", "LANGUAGE=")
	}
	return append(env, extra...)
}

// chown gives path to the run-as user (no-op when not root).
func (b *Backend) chown(path string) error {
	if b.runAs == nil {
		return nil
	}
	if err := os.Lchown(path, int(b.runAs.uid), int(b.runAs.gid)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, b.runAs.name, err)
	}
	return nil
}

// writeFile writes data to path atomically (temp file + rename), with mode,
// owned by the run-as user.
func (b *Backend) writeFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".steward-*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := b.chown(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	ok = true
	return nil
}

// ensureDataDir creates the data directory (mode 0700, owned by the run-as
// user) and its parents (0755) when missing, and the server log file.
func (b *Backend) ensureDataDir() error {
	parent := filepath.Dir(b.dataDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("creating %s (parent of postgres.data_dir): %w", parent, err)
	}
	if err := os.Mkdir(b.dataDir, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("creating postgres.data_dir %s: %w", b.dataDir, err)
	}
	if err := os.Chmod(b.dataDir, 0o700); err != nil {
		return fmt.Errorf("chmod 0700 postgres.data_dir %s: %w", b.dataDir, err)
	}
	if err := b.chown(b.dataDir); err != nil {
		return err
	}
	return b.ensureLogFile()
}

// ensureLogFile creates <DataDir>.log for the run-as user.
func (b *Backend) ensureLogFile() error {
	f, err := os.OpenFile(b.LogFile(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("creating the server log %s: %w", b.LogFile(), err)
	}
	f.Close()
	return b.chown(b.LogFile())
}

// dataDirEntries lists the data directory (nil, nil when it is missing).
func (b *Backend) dataDirEntries() ([]os.DirEntry, error) {
	ents, err := os.ReadDir(b.dataDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	return ents, err
}

// logTail returns the last lines of the server log (for error messages).
func (b *Backend) logTail(lines int) string {
	f, err := os.Open(b.LogFile())
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4096
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := fi.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	ls := strings.Split(strings.TrimSpace(string(bytes.ToValidUTF8(buf[:n], nil))), "\n")
	if off > 0 && len(ls) > 1 {
		ls = ls[1:] // first line is partial
	}
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, " | ")
}

// lastLogProblem returns the last replication-related FATAL or ERROR line
// (or timeline fork message) among the last 8 KiB of the server log (""
// when none), to explain why a replica does not
// stream ("could not connect to the primary server: ...", "requested
// timeline 2 is not a child of this server's history", ...).
func (b *Backend) lastLogProblem() string {
	f, err := os.Open(b.LogFile())
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 8192
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-window, 0)
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	lines := strings.Split(string(bytes.ToValidUTF8(buf[:n], nil)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		replication := strings.Contains(l, "WAL") || strings.Contains(l, "primary") || strings.Contains(l, "replication") || strings.Contains(l, "timeline")
		if ((strings.Contains(l, "FATAL:") || strings.Contains(l, "ERROR:")) && replication) ||
			strings.Contains(l, "forked off current database system timeline") || strings.Contains(l, "is not a child of") {
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			return l
		}
	}
	return ""
}

// secondsLeft is the whole seconds until ctx's deadline (at least 1; def
// when ctx has none).
func secondsLeft(ctxDeadline time.Time, ok bool, def int) int {
	if !ok {
		return def
	}
	s := int(time.Until(ctxDeadline) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
