package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Lab is the test network: one "switch" namespace holding a bridge, one
// namespace per test host plugged into it with a veth pair, and one veth
// from the test process's own namespace (the client: writers, checks, the
// CLI). Partitions and packet loss are nftables rules of the bridge family
// inside the switch namespace, so they drop frames silently in both
// directions (a real partition: no RST, no ICMP) and vanish with it.
//
// Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking);
// a free /24 is picked per run. Nothing outside the lab's own namespaces
// and its one client veth is touched.
type Lab struct {
	ID     string // random run id, part of every name
	Prefix string // "198.18.N." – the lab's /24
	Switch string // namespace holding the bridge
	client string // veth in the test process's namespace
	log    *slog.Logger

	mu    sync.Mutex
	hosts []*Host
	rules map[string][]string // named groups of nft rules (partitions, loss)
}

// Host is one namespace on the lab's bridge.
type Host struct {
	Name string // short name (m1, e1, hap)
	NS   string // namespace name
	IP   string
}

// ClientIP is the test process's address on the lab network.
func (l *Lab) ClientIP() string { return l.Prefix + "1" }

// newRunID returns 6 random hex characters.
func newRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RequireTools fails with what to install when a program the lab needs is
// missing, or when network namespaces cannot be made (not root).
func RequireTools() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the chaos suite creates network namespaces, tmpfs mounts and nftables rules: it must run as root (CI does)")
	}
	for _, p := range []string{"/usr/sbin/ip", "/usr/sbin/nft", "/usr/bin/setpriv", "/usr/bin/etcd", "/usr/sbin/haproxy"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s not found: run make deps (Debian packages iproute2, nftables, util-linux, etcd-server, haproxy)", p)
		}
	}
	return nil
}

// NewLab creates the switch namespace, its bridge and the client veth. The
// caller must call Close (also on failure).
func NewLab(id string, log *slog.Logger) (*Lab, error) {
	l := &Lab{ID: id, Switch: "stwchaos-" + id + "-sw", client: "stwc" + id, log: log, rules: map[string][]string{}}
	third, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	l.Prefix = third
	steps := [][]string{
		{"ip", "netns", "add", l.Switch},
		{"ip", "-n", l.Switch, "link", "set", "lo", "up"},
		{"ip", "-n", l.Switch, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", l.Switch, "link", "set", "br0", "up"},
		{"ip", "link", "add", l.client, "type", "veth", "peer", "name", "p-client", "netns", l.Switch},
		{"ip", "-n", l.Switch, "link", "set", "p-client", "master", "br0", "up"},
		{"ip", "addr", "add", l.ClientIP() + "/24", "dev", l.client},
		{"ip", "link", "set", l.client, "up"},
		{"ip", "netns", "exec", l.Switch, "nft", "add", "table", "bridge", "chaos"},
		{"ip", "netns", "exec", l.Switch, "nft", "add", "chain", "bridge", "chaos", "filt", "{ type filter hook forward priority 0; policy accept; }"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// freeSubnet picks a /24 of 198.18.0.0/15 that no address or route of this
// namespace uses.
func freeSubnet() (string, error) {
	out, err := exec.Command("ip", "-4", "-o", "addr").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip addr: %v", err)
	}
	routes, _ := exec.Command("ip", "-4", "route").CombinedOutput()
	used := string(out) + string(routes)
	for i := 0; i < 100; i++ {
		b := make([]byte, 2)
		_, _ = rand.Read(b)
		p := fmt.Sprintf("198.%d.%d.", 18+int(b[0]&1), b[1])
		if !strings.Contains(used, p) && !strings.Contains(used, "198.18.0.0/15") {
			return p, nil
		}
	}
	return "", fmt.Errorf("no free /24 in 198.18.0.0/15")
}

// AddHost creates a namespace plugged into the bridge with address
// Prefix+octet.
func (l *Lab) AddHost(name string, octet int) (*Host, error) {
	h := &Host{Name: name, NS: "stwchaos-" + l.ID + "-" + name, IP: fmt.Sprintf("%s%d", l.Prefix, octet)}
	port := "p-" + name
	steps := [][]string{
		{"ip", "netns", "add", h.NS},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", l.Switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"ip", "-n", l.Switch, "link", "set", port, "master", "br0", "up"},
		{"ip", "-n", h.NS, "addr", "add", h.IP + "/24", "dev", "eth0"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
	}
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	for _, s := range steps {
		if err := run(s...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Close deletes every namespace of the lab (their veths go with them, the
// client veth with its peer in the switch namespace).
func (l *Lab) Close() {
	l.mu.Lock()
	hosts := append([]*Host(nil), l.hosts...)
	l.mu.Unlock()
	for _, h := range hosts {
		if err := run("ip", "netns", "del", h.NS); err != nil && l.log != nil {
			l.log.Warn("deleting a namespace failed", "ns", h.NS, "err", err)
		}
	}
	_ = run("ip", "netns", "del", l.Switch)
	if _, err := net.InterfaceByName(l.client); err == nil {
		_ = run("ip", "link", "del", l.client)
	}
}

// SetRules replaces the named group of nft rules (nil removes it) and
// loads the whole chain atomically.
func (l *Lab) SetRules(group string, rules []string) error {
	l.mu.Lock()
	if rules == nil {
		delete(l.rules, group)
	} else {
		l.rules[group] = rules
	}
	names := make([]string, 0, len(l.rules))
	for n := range l.rules {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("flush chain bridge chaos filt\n")
	for _, n := range names {
		for _, r := range l.rules[n] {
			fmt.Fprintf(&b, "add rule bridge chaos filt %s\n", r)
		}
	}
	l.mu.Unlock()
	cmd := exec.Command("ip", "netns", "exec", l.Switch, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s\n%s", err, out, b.String())
	}
	return nil
}

// Block drops every frame between a and each of others, both ways.
func (l *Lab) Block(group string, a *Host, others ...*Host) error {
	var rules []string
	for _, o := range others {
		rules = append(rules, fmt.Sprintf("ip saddr %s ip daddr %s drop", a.IP, o.IP), fmt.Sprintf("ip saddr %s ip daddr %s drop", o.IP, a.IP))
	}
	return l.SetRules(group, rules)
}

// Loss drops pct % of the frames from and to h, at random (real packet
// loss: TCP retransmits).
func (l *Lab) Loss(group string, h *Host, pct int) error {
	return l.SetRules(group, []string{
		fmt.Sprintf("ip saddr %s numgen random mod 100 < %d drop", h.IP, pct),
		fmt.Sprintf("ip daddr %s numgen random mod 100 < %d drop", h.IP, pct),
	})
}

// Heal removes every partition and loss rule.
func (l *Lab) Heal() error {
	l.mu.Lock()
	l.rules = map[string][]string{}
	l.mu.Unlock()
	return l.SetRules("", nil)
}

// inNetns runs f on an OS thread switched into the namespace ns: sockets
// created by f belong to ns for their whole life, whichever thread uses
// them later. The thread is switched back (or, if that fails, retired).
func inNetns(ns string, f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := setns(int(target.Fd())); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	ferr := f()
	if err := setns(int(orig.Fd())); err != nil {
		// Leave the thread locked: it exits with this goroutine instead
		// of running other goroutines in the wrong namespace.
		return fmt.Errorf("switching back from %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

func setns(fd int) error {
	return unix.Setns(fd, unix.CLONE_NEWNET)
}

// ListenIn listens on addr inside namespace ns.
func ListenIn(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// DialIn connects to addr from inside namespace ns.
func DialIn(ctx context.Context, ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		var err error
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// NSCommand returns a command that runs argv inside namespace ns, as user
// runAs when set (setpriv execs, so the command's PID is the program's).
func NSCommand(ns, runAs string, argv ...string) *exec.Cmd {
	args := []string{"netns", "exec", ns}
	if runAs != "" {
		args = append(args, "setpriv", "--reuid="+runAs, "--regid="+runAs, "--init-groups", "--")
	}
	args = append(args, argv...)
	return exec.Command("ip", args...)
}
