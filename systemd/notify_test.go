package systemd_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stewardha/steward/systemd"
	"github.com/stewardha/steward/systemd/sdtest"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		enabled  bool
		watchdog time.Duration
		wantErr  string
	}{
		{name: "not under systemd", env: nil},
		{name: "socket only", env: map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify"}, enabled: true},
		{name: "abstract socket", env: map[string]string{"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify/1"}, enabled: true},
		{name: "watchdog for us", env: map[string]string{"NOTIFY_SOCKET": "/s", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, enabled: true, watchdog: 30 * time.Second},
		{name: "watchdog without pid", env: map[string]string{"NOTIFY_SOCKET": "/s", "WATCHDOG_USEC": "2500000"}, enabled: true, watchdog: 2500 * time.Millisecond},
		{name: "watchdog for another process", env: map[string]string{"NOTIFY_SOCKET": "/s", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, enabled: true},
		{name: "watchdog without socket", env: map[string]string{"WATCHDOG_USEC": "30000000"}},
		{name: "bad usec", env: map[string]string{"NOTIFY_SOCKET": "/s", "WATCHDOG_USEC": "soon"}, enabled: true, wantErr: "WATCHDOG_USEC"},
		{name: "zero usec", env: map[string]string{"NOTIFY_SOCKET": "/s", "WATCHDOG_USEC": "0"}, enabled: true, wantErr: "WATCHDOG_USEC"},
		{name: "bad pid", env: map[string]string{"NOTIFY_SOCKET": "/s", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"}, enabled: true, wantErr: "WATCHDOG_PID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := systemd.FromEnv(envOf(tc.env), 42)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
			}
			if n.Enabled() != tc.enabled || n.WatchdogInterval() != tc.watchdog {
				t.Fatalf("enabled %v watchdog %v, want %v %v", n.Enabled(), n.WatchdogInterval(), tc.enabled, tc.watchdog)
			}
		})
	}
}

// Without NOTIFY_SOCKET every call is a silent no-op (steward run by hand).
func TestDisabledIsNoop(t *testing.T) {
	for _, n := range []*systemd.Notifier{nil, {}, systemd.New("", time.Second)} {
		if n.Ready("x") != nil || n.Status("y") != nil || n.Reloading("z") != nil || n.Stopping("w") != nil {
			t.Fatal("a disabled notifier returned an error")
		}
		if sent, err := n.Watchdog(); sent || err != nil {
			t.Fatalf("disabled watchdog: sent %v err %v", sent, err)
		}
	}
}

func listen(t *testing.T) *sdtest.Manager {
	t.Helper()
	m, err := sdtest.Listen(filepath.Join(t.TempDir(), "notify"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func waitN(t *testing.T, m *sdtest.Manager, n int) []sdtest.Message {
	t.Helper()
	if _, _, ok := m.Wait(n-1, 2*time.Second, func(sdtest.Message) bool { return true }); !ok {
		t.Fatalf("got %d messages, want %d: %v", len(m.Messages()), n, m.Messages())
	}
	return m.Messages()
}

// The messages are what sd_notify(3) expects, sent by this process, and a
// STATUS is sent only when it changes.
func TestMessages(t *testing.T) {
	m := listen(t)
	n := systemd.New(m.Path, 0)
	if err := n.Ready("replica of cluster main, leader db1"); err != nil {
		t.Fatal(err)
	}
	_ = n.Status("replica of cluster main, leader db1") // unchanged: nothing sent
	_ = n.Status("primary of cluster main,\nleader db2")
	_ = n.Reloading("reloading /etc/steward/steward.yml")
	_ = n.Stopping("stopping")
	msgs := waitN(t, m, 4)
	time.Sleep(50 * time.Millisecond)
	if got := len(m.Messages()); got != 4 {
		t.Fatalf("%d messages, want 4: %v", got, m.Messages())
	}
	want := []func(sdtest.Message) bool{
		func(x sdtest.Message) bool {
			return x.Has("READY", "1") && x.Has("STATUS", "replica of cluster main, leader db1")
		},
		func(x sdtest.Message) bool { return x.Raw == "STATUS=primary of cluster main, leader db2" },
		func(x sdtest.Message) bool {
			return x.Has("RELOADING", "1") && x.Fields()["MONOTONIC_USEC"] != "" && x.Has("STATUS", "reloading /etc/steward/steward.yml")
		},
		func(x sdtest.Message) bool { return x.Has("STOPPING", "1") && x.Has("STATUS", "stopping") },
	}
	for i, w := range want {
		if !w(msgs[i]) {
			t.Errorf("message %d = %q", i, msgs[i].Raw)
		}
		if msgs[i].PID != os.Getpid() {
			t.Errorf("message %d from PID %d, want %d (SO_PASSCRED)", i, msgs[i].PID, os.Getpid())
		}
	}
}

// Watchdog pings are throttled to one per quarter interval, so that calling
// it after every loop does not flood systemd.
func TestWatchdogThrottle(t *testing.T) {
	m := listen(t)
	n := systemd.New(m.Path, 4*time.Second)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	n.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var sent []bool
	for _, step := range []time.Duration{0, 500 * time.Millisecond, 400 * time.Millisecond, 100 * time.Millisecond, 999 * time.Millisecond, time.Millisecond, 3 * time.Second} {
		advance(step)
		ok, err := n.Watchdog()
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, ok)
	}
	want := []bool{true, false, false, true, false, true, true}
	for i := range want {
		if sent[i] != want[i] {
			t.Fatalf("pings sent %v, want %v", sent, want)
		}
	}
	msgs := waitN(t, m, 4)
	for _, x := range msgs {
		if x.Raw != "WATCHDOG=1" {
			t.Fatalf("watchdog message %q", x.Raw)
		}
	}
}

// A vanished socket is an error for that message, not a panic or a hang;
// the next message goes through once a listener is back.
func TestSendFailureIsReturned(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "notify")
	n := systemd.New(p, 0)
	if err := n.Ready("x"); err == nil {
		t.Fatal("sending to a missing socket succeeded")
	}
	m, err := sdtest.Listen(p)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := n.Status("y"); err != nil {
		t.Fatal(err)
	}
	waitN(t, m, 1)
}
