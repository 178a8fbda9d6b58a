// Package dcstest starts real etcd servers for tests — in-process with
// go.etcd.io/etcd/server/v3/embed, or Debian's etcd binary as a separate
// process — and provides a TCP proxy that cuts or delays the connection to
// them. It also holds the conformance suite every DCS implementation must
// pass.
//
// Nothing here skips: when etcd cannot be started the test fails, naming what
// is missing and how to install it.
package dcstest

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/stewardha/steward/internal/freeport"
)

// Server is a running etcd.
type Server interface {
	// Endpoints are the client URLs.
	Endpoints() []string
	// Stop ends the server (idempotent).
	Stop()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// outside the kernel's ephemeral range (see internal/freeport).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freeport.Free()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Embedded is an in-process etcd (the current server version).
type Embedded struct {
	e    *embed.Etcd
	eps  []string
	done bool
}

// StartEmbedded starts an in-process single-member etcd on free 127.0.0.1
// ports with its data in a temp dir; it is stopped when the test ends.
func StartEmbedded(t testing.TB) *Embedded {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "steward-test"
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(FreePort(t)))
	pu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(FreePort(t)))
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("starting embedded etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatalf("embedded etcd did not become ready within 30s")
	}
	s := &Embedded{e: e, eps: []string{cu.String()}}
	t.Cleanup(s.Stop)
	return s
}

func (s *Embedded) Endpoints() []string { return s.eps }

func (s *Embedded) Stop() {
	if s.done {
		return
	}
	s.done = true
	s.e.Close()
}

// EtcdBinary is where Debian's etcd-server package installs etcd.
const EtcdBinary = "/usr/bin/etcd"

// Binary is an etcd server running as a separate process (Debian's etcd,
// 3.4 on Debian 12), to check compatibility with older servers and to kill,
// freeze and restart etcd on purpose.
type Binary struct {
	t       testing.TB
	cmd     *exec.Cmd
	dir     string
	client  int
	peer    int
	logPath string
	exited  chan struct{}
}

// StartBinary starts Debian's etcd on free ports. It fails the test if the
// binary is missing (install: apt-get install etcd-server).
func StartBinary(t testing.TB) *Binary {
	t.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		t.Fatalf("%s not found: install Debian's etcd-server package (make deps does this)", EtcdBinary)
	}
	b := &Binary{t: t, dir: filepath.Join(t.TempDir(), "etcd-bin"), client: FreePort(t), peer: FreePort(t)}
	b.logPath = filepath.Join(filepath.Dir(b.dir), "etcd.log")
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Start (re)starts the process with the same data dir and ports.
func (b *Binary) Start() {
	b.t.Helper()
	cu := "http://127.0.0.1:" + strconv.Itoa(b.client)
	pu := "http://127.0.0.1:" + strconv.Itoa(b.peer)
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.t.Fatalf("etcd log: %v", err)
	}
	cmd := exec.Command(EtcdBinary,
		"--name", "steward-test",
		"--data-dir", b.dir,
		"--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		"--initial-cluster", "steward-test="+pu,
		"--log-level", "error",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		b.t.Fatalf("starting %s: %v", EtcdBinary, err)
	}
	logf.Close()
	b.cmd = cmd
	b.exited = make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { _ = c.Wait(); close(ch) }(cmd, b.exited)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.client), 200*time.Millisecond)
		if err == nil {
			c.Close()
			// A listening etcd may still be electing itself; give raft a moment.
			time.Sleep(300 * time.Millisecond)
			return
		}
		select {
		case <-b.exited:
			log, _ := os.ReadFile(b.logPath)
			b.t.Fatalf("etcd exited during start-up:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	b.t.Fatalf("etcd did not listen on 127.0.0.1:%d within 30s", b.client)
}

func (b *Binary) Endpoints() []string {
	return []string{"http://127.0.0.1:" + strconv.Itoa(b.client)}
}

// PID of the running etcd process (0 when stopped).
func (b *Binary) PID() int {
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Stop kills the process (SIGKILL: an etcd crash) and waits for it.
func (b *Binary) Stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		b.t.Errorf("etcd pid %d did not exit after SIGKILL", b.cmd.Process.Pid)
	}
	b.cmd = nil
}

// Freeze stops (SIGSTOP) the process; Thaw continues it.
//
// It returns once every thread of etcd is stopped: SIGSTOP is delivered
// asynchronously, and a thread still running on the other core could answer
// one more request (a keep-alive succeeded "with etcd frozen" once under a
// loaded make test).
func (b *Binary) Freeze() error {
	if err := b.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		running, err := runningThreads(b.cmd.Process.Pid)
		if err != nil || running == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd (pid %d) still has %d running thread(s) 5s after SIGSTOP", b.cmd.Process.Pid, running)
		}
		time.Sleep(time.Millisecond)
	}
}

// runningThreads counts the threads of pid that are not stopped (state T
// or t in /proc/<pid>/task/<tid>/stat).
func runningThreads(pid int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, tk := range tasks {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, tk.Name()))
		if err != nil {
			continue // the thread exited
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(st, ')')
		if i < 0 || i+2 >= len(st) {
			return 0, fmt.Errorf("unexpected /proc stat line %q", st)
		}
		if state := st[i+2]; state != 'T' && state != 't' {
			n++
		}
	}
	return n, nil
}

// Thaw continues a frozen process.
func (b *Binary) Thaw() error { return b.signal(syscall.SIGCONT) }

func (b *Binary) signal(sig syscall.Signal) error {
	if b.cmd == nil {
		return fmt.Errorf("etcd is not running")
	}
	return b.cmd.Process.Signal(sig)
}
