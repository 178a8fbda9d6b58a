// Package sdtest is a fake service manager for tests: a unixgram socket
// that records the sd_notify messages it receives, each with the PID of the
// process that sent it (SO_PASSCRED), so that a test can check what systemd
// would have seen — and, like NotifyAccess=main, from whom.
package sdtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Message is one datagram received on the socket.
type Message struct {
	At  time.Time
	PID int // the sender's PID (0 when the kernel did not pass credentials)
	Raw string
}

// Fields parses the message's "KEY=value" lines.
func (m Message) Fields() map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(m.Raw, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			out[k] = v
		}
	}
	return out
}

// Has reports whether the message carries KEY=value.
func (m Message) Has(key, value string) bool {
	v, ok := m.Fields()[key]
	return ok && v == value
}

// Manager listens on a notify socket.
type Manager struct {
	Path string

	conn    *net.UnixConn
	mu      sync.Mutex
	msgs    []Message
	changed chan struct{}
	done    chan struct{}
}

// Listen creates the socket at path (mode 0666, so that an agent running as
// another user can send to it) and starts recording.
func Listen(path string) (*Manager, error) {
	_ = os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("SO_PASSCRED: %v", errors.Join(err, serr))
	}
	if err := os.Chmod(path, 0o666); err != nil {
		conn.Close()
		return nil, err
	}
	m := &Manager{Path: path, conn: conn, changed: make(chan struct{}), done: make(chan struct{})}
	go m.read()
	return m, nil
}

func (m *Manager) read() {
	defer close(m.done)
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msg := Message{At: time.Now(), Raw: string(buf[:n])}
		if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if cred, err := syscall.ParseUnixCredentials(&cm); err == nil {
					msg.PID = int(cred.Pid)
				}
			}
		}
		m.mu.Lock()
		m.msgs = append(m.msgs, msg)
		close(m.changed)
		m.changed = make(chan struct{})
		m.mu.Unlock()
	}
}

// Env is the environment entry that points a process at this manager.
func (m *Manager) Env() string { return "NOTIFY_SOCKET=" + m.Path }

// Messages returns every message received so far.
func (m *Manager) Messages() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Message(nil), m.msgs...)
}

// Wait returns the first message (from index from on) that satisfies match,
// waiting up to within for it to arrive. ok is false on timeout.
func (m *Manager) Wait(from int, within time.Duration, match func(Message) bool) (msg Message, index int, ok bool) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		for i := from; i < len(m.msgs); i++ {
			if match(m.msgs[i]) {
				msg := m.msgs[i]
				m.mu.Unlock()
				return msg, i, true
			}
		}
		from = max(from, len(m.msgs))
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return Message{}, -1, false
		case <-m.done:
			return Message{}, -1, false
		}
	}
}

// Close stops listening and removes the socket.
func (m *Manager) Close() {
	m.conn.Close()
	<-m.done
	_ = os.Remove(m.Path)
}
