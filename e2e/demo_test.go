package e2e

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// `steward demo` as a new user runs it: it starts, shows the cluster, the
// scripted failover completes, and Ctrl-C leaves no process or port behind.
func TestDemo(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binaryPath, "demo", "--kill-primary-after", "2s", "--ttl", "4s", "--loop-wait", "500ms")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out strings.Builder
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("demo output:\n%s", out.String())
			mu.Unlock()
		}
	}()
	want := []string{"cluster is up", "MEMBER", "FAILOVER: killing the primary", "detected:", "took the leader key", "promoted:", "candidates considered", "rejoined:"}
	deadline := time.After(150 * time.Second)
	for _, w := range want {
	wait:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the demo exited before printing %q", w)
				}
				if strings.Contains(l, w) {
					break wait
				}
			case <-deadline:
				t.Fatalf("the demo did not print %q in time", w)
			}
		}
	}
	mu.Lock()
	text := out.String()
	mu.Unlock()
	dir := regexp.MustCompile(`demo directory: (\S+)`).FindStringSubmatch(text)
	ports := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(text, -1)
	if dir == nil || len(ports) < 6 {
		t.Fatalf("the demo did not say where it runs:\n%s", text)
	}
	// Ctrl-C.
	_ = cmd.Process.Signal(syscall.SIGINT)
	go func() {
		for range lines {
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the demo exited with %v after Ctrl-C", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the demo did not stop within 60s of Ctrl-C")
	}
	if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
		t.Errorf("the demo left its directory %s behind", dir[1])
	}
	for _, p := range ports {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+p[1], 200*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("port %s still answers after the demo stopped", p[1])
		}
	}
	if pids := processesMentioning(dir[1]); len(pids) > 0 {
		t.Errorf("processes of the demo still run: %v", pids)
	}
}

// processesMentioning lists PIDs whose command line mentions s.
func processesMentioning(s string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		f, err := os.Open("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if strings.Contains(string(b), s) {
			out = append(out, e.Name()+":"+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}
