package systemd

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// The environment variables systemd sets for a Type=notify service with
// WatchdogSec=.
const (
	EnvNotifySocket = "NOTIFY_SOCKET"
	EnvWatchdogUsec = "WATCHDOG_USEC"
	EnvWatchdogPID  = "WATCHDOG_PID"
)

// EnvNames lists the variables FromEnv reads, which the caller should remove
// from its environment afterwards so that child processes do not inherit
// them.
var EnvNames = []string{EnvNotifySocket, EnvWatchdogUsec, EnvWatchdogPID}

// Notifier sends sd_notify messages to the service manager. The zero value
// and a nil *Notifier are disabled: every method is a no-op.
type Notifier struct {
	addr     *net.UnixAddr // nil: not run by systemd
	watchdog time.Duration // 0: no watchdog
	now      func() time.Time

	mu       sync.Mutex
	status   string
	lastPing time.Time
}

// FromEnv returns the notifier described by NOTIFY_SOCKET, WATCHDOG_USEC and
// WATCHDOG_PID as seen through lookupEnv (os.LookupEnv in production); pid
// is this process's PID (os.Getpid()).
//
// An invalid WATCHDOG_USEC or WATCHDOG_PID is returned as an error together
// with a notifier that still sends READY/STATUS/STOPPING (with the watchdog
// off), so the caller can log it and carry on.
func FromEnv(lookupEnv func(string) (string, bool), pid int) (*Notifier, error) {
	get := func(k string) string {
		if lookupEnv == nil {
			return ""
		}
		v, _ := lookupEnv(k)
		return v
	}
	n := &Notifier{now: time.Now}
	sock := get(EnvNotifySocket)
	if sock == "" {
		return n, nil
	}
	// "@name" is an abstract socket; the net package maps a leading '@' to
	// the abstract namespace itself.
	n.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
	wd, err := watchdogInterval(get(EnvWatchdogUsec), get(EnvWatchdogPID), pid)
	n.watchdog = wd
	return n, err
}

// watchdogInterval parses WATCHDOG_USEC/WATCHDOG_PID like
// sd_watchdog_enabled(3) (and go-systemd's daemon.SdWatchdogEnabled).
func watchdogInterval(usec, wpid string, pid int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	u, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || u <= 0 {
		return 0, fmt.Errorf("%s=%q is not a positive number of microseconds; the systemd watchdog is not petted", EnvWatchdogUsec, usec)
	}
	if wpid != "" {
		p, err := strconv.Atoi(wpid)
		if err != nil {
			return 0, fmt.Errorf("%s=%q is not a PID; the systemd watchdog is not petted", EnvWatchdogPID, wpid)
		}
		if p != pid {
			return 0, nil // the watchdog is meant for another process
		}
	}
	return time.Duration(u) * time.Microsecond, nil
}

// New returns a notifier sending to socket (a path, or "@name" for an
// abstract socket) with the given watchdog interval (0: none). For tests and
// callers that resolved the environment themselves.
func New(socket string, watchdog time.Duration) *Notifier {
	n := &Notifier{now: time.Now, watchdog: watchdog}
	if socket != "" {
		n.addr = &net.UnixAddr{Name: socket, Net: "unixgram"}
	}
	return n
}

// SetClock replaces the clock used to throttle watchdog pings (tests).
func (n *Notifier) SetClock(now func() time.Time) {
	if n != nil && now != nil {
		n.mu.Lock()
		n.now = now
		n.mu.Unlock()
	}
}

// Enabled reports whether a service manager listens (NOTIFY_SOCKET was set).
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// WatchdogInterval is WatchdogSec= as systemd passed it (0: no watchdog).
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog
}

// Ready tells systemd that start-up (or a reload) is complete, with the
// status line to show in `systemctl status`.
func (n *Notifier) Ready(status string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	n.status = status
	n.mu.Unlock()
	return n.send(daemon.SdNotifyReady + "\n" + statusLine(status))
}

// Status updates the status line; nothing is sent when it did not change.
func (n *Notifier) Status(status string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	same := status == n.status
	n.status = status
	n.mu.Unlock()
	if same {
		return nil
	}
	return n.send(statusLine(status))
}

// Watchdog pets the systemd watchdog, at most once per quarter of its
// interval. It reports whether a ping was sent.
func (n *Notifier) Watchdog() (bool, error) {
	if !n.Enabled() || n.watchdog <= 0 {
		return false, nil
	}
	n.mu.Lock()
	now := n.now()
	if !n.lastPing.IsZero() && now.Sub(n.lastPing) < n.watchdog/4 {
		n.mu.Unlock()
		return false, nil
	}
	n.lastPing = now
	n.mu.Unlock()
	return true, n.send(daemon.SdNotifyWatchdog)
}

// Reloading tells systemd that a configuration reload started; Ready must
// follow when it is done (whether or not the new file was accepted).
func (n *Notifier) Reloading(status string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	n.status = status
	n.mu.Unlock()
	msg := daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + statusLine(status)
	return n.send(msg)
}

// Stopping tells systemd that a clean shutdown started.
func (n *Notifier) Stopping(status string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	n.status = status
	n.mu.Unlock()
	return n.send(daemon.SdNotifyStopping + "\n" + statusLine(status))
}

// statusLine is a STATUS= assignment: one line, as sd_notify requires.
func statusLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	return "STATUS=" + s
}

// errNoSocket is returned by send when the socket address is empty.
var errNoSocket = errors.New("no notify socket")

// send writes one datagram. A new connection per message: systemd may have
// re-executed (daemon-reexec) and recreated its socket since the last one.
func (n *Notifier) send(msg string) error {
	if n.addr == nil || n.addr.Name == "" {
		return errNoSocket
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
