package fencing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

var target = Target{Name: "db1", Host: "10.0.0.1", API: "http://10.0.0.1:8008", Cluster: "main"}

func TestPlaceholdersAndEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	h := script(t, `printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" > `+out+`
printf '%s|%s|%s|%s\n' "$STEWARD_TARGET_NAME" "$STEWARD_TARGET_HOST" "$STEWARD_TARGET_API" "$STEWARD_CLUSTER" >> `+out)
	r := &Runner{Hooks: []Hook{{Name: "h", Command: []string{h, "{target_name}", "host={target_host}", "{target_api}", "{cluster}"}, Timeout: 5 * time.Second}}}
	ok, att := r.Fence(context.Background(), target)
	if !ok || len(att) != 1 || att[0].Result != ResultSuccess {
		t.Fatalf("fence = %v %+v", ok, att)
	}
	b, _ := os.ReadFile(out)
	want := "db1|host=10.0.0.1|http://10.0.0.1:8008|main\ndb1|10.0.0.1|http://10.0.0.1:8008|main\n"
	if string(b) != want {
		t.Fatalf("hook saw %q, want %q", b, want)
	}
}

// A member name full of shell metacharacters is one argument: nothing else
// runs.
func TestNoShellInjection(t *testing.T) {
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	args := filepath.Join(dir, "args")
	h := script(t, `for a in "$@"; do printf '[%s]\n' "$a"; done > `+args)
	evil := Target{Name: "x; touch " + pwned + " && echo $(id) `id` | cat", Host: "$(touch " + pwned + ")", Cluster: "c"}
	r := &Runner{Hooks: []Hook{{Name: "h", Command: []string{h, "{target_name}", "{target_host}"}, Timeout: 5 * time.Second}}}
	if ok, att := r.Fence(context.Background(), evil); !ok {
		t.Fatalf("fence failed: %+v", att)
	}
	if _, err := os.Stat(pwned); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a shell metacharacter in a member name ran a command")
	}
	b, _ := os.ReadFile(args)
	if string(b) != "["+evil.Name+"]\n["+evil.Host+"]\n" {
		t.Fatalf("arguments were split or altered: %q", b)
	}
}

// A hanging hook (and its children) is killed at its timeout.
func TestHangingHookKilledAtTimeout(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "child.pid")
	h := script(t, `sleep 300 & echo $! > `+pidfile+`; wait`)
	r := &Runner{Hooks: []Hook{{Name: "hang", Command: []string{h}, Timeout: 300 * time.Millisecond}}, Tries: 1}
	start := time.Now()
	ok, att := r.Fence(context.Background(), target)
	d := time.Since(start)
	if ok || len(att) != 1 || att[0].Result != ResultTimeout {
		t.Fatalf("fence = %v %+v, want one timeout", ok, att)
	}
	if d > 3*time.Second {
		t.Fatalf("a hanging hook held the fence for %v (timeout 300ms)", d)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Stat("/proc/" + pid); errors.Is(err, os.ErrNotExist) {
			break
		}
		if st, _ := os.ReadFile("/proc/" + pid + "/stat"); strings.Contains(string(st), ") Z ") {
			break // a zombie waiting for init: it runs no more
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hook's child %s survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Retries with exponential backoff, then the next hook; the first hook that
// confirms ends the fence.
func TestRetriesBackoffAndOrder(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	fail := script(t, `echo x >> `+count+`; echo "power controller unreachable" >&2; exit 3`)
	okHook := script(t, `echo fenced`)
	never := filepath.Join(dir, "never")
	third := script(t, `touch `+never)
	var mu sync.Mutex
	var seen []Attempt
	r := &Runner{Tries: 3, Backoff: 50 * time.Millisecond, OnAttempt: func(a Attempt) { mu.Lock(); seen = append(seen, a); mu.Unlock() },
		Hooks: []Hook{{Name: "ipmi", Command: []string{fail}, Timeout: time.Second}, {Name: "ssh", Command: []string{okHook}, Timeout: time.Second}, {Name: "third", Command: []string{third}, Timeout: time.Second}}}
	start := time.Now()
	ok, att := r.Fence(context.Background(), target)
	if !ok || len(att) != 4 {
		t.Fatalf("fence = %v, %d attempts: %+v", ok, len(att), att)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("3 tries took %v: no backoff (50ms then 100ms)", d)
	}
	if att[0].ExitCode != 3 || !strings.Contains(att[0].Output, "power controller unreachable") || att[3].Hook != "ssh" || att[3].Result != ResultSuccess {
		t.Fatalf("attempts = %+v", att)
	}
	if b, _ := os.ReadFile(count); strings.Count(string(b), "x") != 3 {
		t.Fatalf("the failing hook ran %d times, want 3", strings.Count(string(b), "x"))
	}
	if _, err := os.Stat(never); err == nil {
		t.Fatal("a hook after the one that confirmed ran")
	}
	if len(seen) != 4 {
		t.Fatalf("OnAttempt saw %d attempts", len(seen))
	}
}

func TestOutputIsBounded(t *testing.T) {
	h := script(t, `head -c 100000 /dev/zero | tr '\0' a; echo END`)
	r := &Runner{Hooks: []Hook{{Name: "loud", Command: []string{h}, Timeout: 5 * time.Second}}, MaxOutput: 1000}
	_, att := r.Fence(context.Background(), target)
	if len(att[0].Output) > 1100 || !strings.Contains(att[0].Output, "omitted") || !strings.HasSuffix(att[0].Output, "END") {
		t.Fatalf("output not bounded as expected (%d bytes): %.80q...", len(att[0].Output), att[0].Output)
	}
}

func TestMissingCommandFails(t *testing.T) {
	r := &Runner{Tries: 1, Hooks: []Hook{{Name: "gone", Command: []string{"/nonexistent/fence"}, Timeout: time.Second}}}
	ok, att := r.Fence(context.Background(), target)
	if ok || att[0].Result != ResultFailure || att[0].Err == "" {
		t.Fatalf("fence = %v %+v", ok, att)
	}
}

// fakeDevice records what the watchdog did.
type fakeDevice struct {
	mu        sync.Mutex
	timeout   int
	maxT      int // 0: accepts any
	pets      int
	closed    bool
	magic     bool
	failSetTO bool
}

func (d *fakeDevice) SetTimeout(s int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failSetTO {
		return 0, errors.New("ioctl: inappropriate ioctl for device")
	}
	d.timeout = s
	if d.maxT > 0 && s < d.maxT {
		d.timeout = d.maxT // the driver rounds up: unsafe
	}
	return d.timeout, nil
}
func (d *fakeDevice) Keepalive() error { d.mu.Lock(); d.pets++; d.mu.Unlock(); return nil }
func (d *fakeDevice) MagicClose() error {
	d.mu.Lock()
	d.closed, d.magic = true, true
	d.mu.Unlock()
	return nil
}

func TestWatchdogArmKeepaliveDisarm(t *testing.T) {
	dev := &fakeDevice{}
	w := &Watchdog{Mode: WatchdogRequired, Path: "/dev/fake", Open: func(string) (Device, error) { return dev, nil }}
	if err := w.Arm(10*time.Second - 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if dev.timeout != 8 || dev.pets != 1 || !w.Armed() {
		t.Fatalf("armed with timeout %d, %d pets", dev.timeout, dev.pets)
	}
	for i := 0; i < 5; i++ {
		_ = w.Keepalive()
	}
	if dev.pets != 6 {
		t.Fatalf("%d pets", dev.pets)
	}
	if err := w.Disarm(); err != nil || !dev.magic || w.Armed() {
		t.Fatalf("disarm: %v magic=%v", err, dev.magic)
	}
	// Keepalive after disarm does nothing.
	_ = w.Keepalive()
	if dev.pets != 6 {
		t.Fatal("keepalive after disarm reached the device")
	}
}

func TestWatchdogRequiredRefusesBrokenDevice(t *testing.T) {
	for name, open := range map[string]func(string) (Device, error){
		"missing device":  func(string) (Device, error) { return nil, errors.New("no such file") },
		"ioctl fails":     func(string) (Device, error) { return &fakeDevice{failSetTO: true}, nil },
		"timeout too big": func(string) (Device, error) { return &fakeDevice{maxT: 60}, nil },
	} {
		w := &Watchdog{Mode: WatchdogRequired, Path: "/dev/fake", Open: open}
		if err := w.Arm(8 * time.Second); err == nil {
			t.Errorf("%s: required mode armed anyway", name)
		}
		w.Mode = WatchdogAutomatic
		if err := w.Arm(8 * time.Second); err != nil {
			t.Errorf("%s: automatic mode refused to lead: %v", name, err)
		}
	}
	w := &Watchdog{Mode: WatchdogOff, Open: func(string) (Device, error) { t.Fatal("off mode opened the device"); return nil, nil }}
	if err := w.Arm(8 * time.Second); err != nil || w.Armed() {
		t.Fatal("off mode")
	}
	if err := (&Watchdog{Mode: WatchdogRequired, Open: func(string) (Device, error) { return &fakeDevice{}, nil }}).Arm(800 * time.Millisecond); err == nil {
		t.Fatal("a sub-second watchdog timeout was accepted")
	}
}
