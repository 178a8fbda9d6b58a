// Command systemctl is a stand-in for systemd's systemctl, for tests that
// follow the operator docs literally on a machine where systemd is not PID 1
// (containers, CI). It runs real unit files — the packaged
// /lib/systemd/system/steward.service, Debian's etcd.service and
// haproxy.service — the way systemd would, for what those units use:
//
//   - [Unit] ConditionPathExists=; [Service] Type=simple|notify, User=,
//     Group=, Environment=, EnvironmentFile=[-], ExecStartPre=, ExecStart=,
//     ExecReload=, StateDirectory=, StateDirectoryMode=, TimeoutStartSec=,
//     TimeoutStopSec=, KillMode=, WatchdogSec=; specifiers %i %I %n %N %p
//     %H %%; $VAR / ${VAR} in command lines, $MAINPID in ExecReload.
//   - Type=notify: `start` returns when the main process sent READY=1 (only
//     messages from the main PID count: NotifyAccess=main), fails when it
//     exits first or TimeoutStartSec passes. WATCHDOG_USEC/WATCHDOG_PID are
//     set from WatchdogSec= and the watchdog is enforced (SIGABRT).
//   - A detached supervisor per running unit keeps the notify socket open,
//     records STATUS= (shown by `status`) and the output (the "journal",
//     <state>/<unit>.log).
//
// Not emulated: sandboxing directives (ProtectSystem=, PrivateTmp=, ...),
// Restart=, dependencies, D-Bus. State lives in $SYSTEMCTL_SHIM_STATE.
//
// Commands: start, stop, restart, reload, enable [--now], disable [--now],
// is-active, status, daemon-reload; option --no-block; anything else is an
// error.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stewardha/steward/systemd/sdtest"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "__supervise" {
		os.Exit(supervise(os.Args[2]))
	}
	os.Exit(run(os.Args[1:]))
}

func stateDir() string {
	d := os.Getenv("SYSTEMCTL_SHIM_STATE")
	if d == "" {
		fmt.Fprintln(os.Stderr, "systemctl (test shim): SYSTEMCTL_SHIM_STATE is not set")
		os.Exit(1)
	}
	return d
}

func run(args []string) int {
	var verb string
	var units []string
	now, noBlock := false, false
	for _, a := range args {
		switch {
		case a == "--now":
			now = true
		case a == "--no-block":
			noBlock = true
		case a == "--no-pager" || a == "--quiet" || a == "-q" || a == "--system":
		case strings.HasPrefix(a, "-"):
			fmt.Fprintf(os.Stderr, "systemctl (test shim): unsupported option %s\n", a)
			return 1
		case verb == "":
			verb = a
		default:
			units = append(units, unitName(a))
		}
	}
	rc := 0
	switch verb {
	case "daemon-reload":
		return 0
	case "enable", "disable":
		if !now {
			return 0
		}
		for _, u := range units {
			var err error
			if verb == "enable" {
				err = start(u, noBlock)
			} else {
				err = stop(u)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				rc = 1
			}
		}
	case "start", "stop", "restart", "reload":
		for _, u := range units {
			var err error
			switch verb {
			case "start":
				err = start(u, noBlock)
			case "stop":
				err = stop(u)
			case "restart":
				if err = stop(u); err == nil {
					err = start(u, noBlock)
				}
			case "reload":
				err = reload(u)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				rc = 1
			}
		}
	case "is-active":
		for _, u := range units {
			if mainPID(u) > 0 {
				fmt.Println("active")
			} else {
				fmt.Println("inactive")
				rc = 3
			}
		}
	case "status":
		for _, u := range units {
			if !status(u) {
				rc = 3
			}
		}
	default:
		fmt.Fprintf(os.Stderr, "systemctl (test shim): unsupported command %q\n", verb)
		return 1
	}
	return rc
}

func unitName(s string) string {
	if !strings.Contains(s, ".") {
		return s + ".service"
	}
	return s
}

// ---------------------------------------------------------------------------
// Unit files

type unit struct {
	name     string
	file     string
	sections map[string]map[string][]string
}

func (u *unit) get(section, key string) []string { return u.sections[section][key] }

func (u *unit) last(section, key, def string) string {
	v := u.get(section, key)
	if len(v) == 0 {
		return def
	}
	return v[len(v)-1]
}

func loadUnit(name string) (*unit, error) {
	prefix, inst := strings.TrimSuffix(name, ".service"), ""
	file := name
	if p, i, ok := strings.Cut(prefix, "@"); ok {
		inst = i
		file = p + "@.service"
	}
	var path string
	for _, dir := range []string{"/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(dir, file)); err == nil {
			path = filepath.Join(dir, file)
			break
		}
	}
	if path == "" {
		return nil, fmt.Errorf("Unit %s not found.", name)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	host, _ := os.Hostname()
	spec := strings.NewReplacer("%%", "%", "%i", inst, "%I", inst, "%n", name, "%N", strings.TrimSuffix(name, ".service"),
		"%p", strings.SplitN(prefix, "@", 2)[0], "%H", host)
	u := &unit{name: name, file: path, sections: map[string]map[string][]string{}}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
			if u.sections[section] == nil {
				u.sections[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				continue
			}
			k, v = strings.TrimSpace(k), spec.Replace(strings.TrimSpace(v))
			if v == "" {
				delete(u.sections[section], k) // an empty assignment resets a list
				continue
			}
			u.sections[section][k] = append(u.sections[section][k], v)
		}
	}
	return u, sc.Err()
}

// environment is what systemd gives the service: a fixed PATH, the user's
// HOME/USER/LOGNAME/SHELL, then Environment= and EnvironmentFile=.
func (u *unit) environment(usr *user.User) (map[string]string, error) {
	env := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
	if usr != nil {
		env["HOME"], env["USER"], env["LOGNAME"], env["SHELL"] = usr.HomeDir, usr.Username, usr.Username, "/bin/sh"
	}
	for _, e := range u.get("Service", "Environment") {
		for _, w := range splitWords(e) {
			if k, v, ok := strings.Cut(w, "="); ok {
				env[k] = v
			}
		}
	}
	for _, f := range u.get("Service", "EnvironmentFile") {
		optional := strings.HasPrefix(f, "-")
		f = strings.TrimPrefix(f, "-")
		b, err := os.ReadFile(f)
		if err != nil {
			if optional {
				continue
			}
			return nil, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") {
				continue
			}
			if k, v, ok := strings.Cut(l, "="); ok {
				env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
			}
		}
	}
	return env, nil
}

// splitWords splits a unit-file value into words, honouring double and
// single quotes.
func splitWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quote, started := false, rune(0), false
	for _, r := range s {
		switch {
		case in && r == quote:
			in = false
		case !in && (r == '"' || r == '\''):
			in, quote, started = true, r, true
		case !in && (r == ' ' || r == '\t'):
			if started {
				out = append(out, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if started {
		out = append(out, cur.String())
	}
	return out
}

// command expands one Exec line: "-" prefix (ignore failure), $VAR (split
// into words) and ${VAR} (one word).
func command(line string, env map[string]string) (argv []string, ignoreFailure bool) {
	for len(line) > 0 && strings.ContainsRune("-@+!:", rune(line[0])) {
		if line[0] == '-' {
			ignoreFailure = true
		}
		line = line[1:]
	}
	for _, w := range splitWords(line) {
		switch {
		case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
			argv = append(argv, env[w[2:len(w)-1]])
		case strings.HasPrefix(w, "$") && len(w) > 1:
			argv = append(argv, strings.Fields(env[w[1:]])...)
		default:
			argv = append(argv, os.Expand(w, func(k string) string { return env[k] }))
		}
	}
	return argv, ignoreFailure
}

func (u *unit) user() (*user.User, *syscall.Credential, error) {
	name := u.last("Service", "User", "")
	if name == "" {
		return nil, nil, nil
	}
	usr, err := user.Lookup(name)
	if err != nil {
		return nil, nil, err
	}
	uid, _ := strconv.Atoi(usr.Uid)
	gid, _ := strconv.Atoi(usr.Gid)
	if g := u.last("Service", "Group", ""); g != "" {
		grp, err := user.LookupGroup(g)
		if err != nil {
			return nil, nil, err
		}
		gid, _ = strconv.Atoi(grp.Gid)
	}
	var groups []uint32
	if ids, err := usr.GroupIds(); err == nil {
		for _, id := range ids {
			n, _ := strconv.Atoi(id)
			groups = append(groups, uint32(n))
		}
	}
	return usr, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, nil
}

func duration(s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	if s == "infinity" {
		return 24 * time.Hour
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d
	}
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second
	}
	if d, err := time.ParseDuration(strings.ReplaceAll(strings.ReplaceAll(s, "min", "m"), " ", "")); err == nil {
		return d
	}
	return def
}

// ---------------------------------------------------------------------------
// State

func statePath(u, suffix string) string { return filepath.Join(stateDir(), u+suffix) }

func mainPID(u string) int {
	b, err := os.ReadFile(statePath(u, ".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// ---------------------------------------------------------------------------
// start / stop / reload / status

func start(name string, noBlock bool) error {
	if mainPID(name) > 0 {
		return nil // already active
	}
	u, err := loadUnit(name)
	if err != nil {
		return err
	}
	for _, p := range u.get("Unit", "ConditionPathExists") {
		neg := strings.HasPrefix(p, "!")
		_, err := os.Stat(strings.TrimPrefix(p, "!"))
		if (err == nil) == neg {
			fmt.Fprintf(os.Stderr, "%s: condition ConditionPathExists=%s was not met; start skipped\n", name, p)
			return nil
		}
	}
	if err := os.MkdirAll(stateDir(), 0o755); err != nil {
		return err
	}
	_ = os.Remove(statePath(name, ".result"))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "__supervise", name)
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return err
	}
	w.Close()
	go func() { _ = cmd.Wait() }()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "started" && noBlock:
			return nil
		case l == "ready":
			return nil
		case strings.HasPrefix(l, "failed"):
			return fmt.Errorf("Job for %s failed: %s (see %s)", name, strings.TrimPrefix(l, "failed: "), statePath(name, ".log"))
		}
	}
	return fmt.Errorf("Job for %s failed: the supervisor ended without a result (see %s)", name, statePath(name, ".log"))
}

// supervise runs in the background for one running unit (fd 3 reports to
// the starting systemctl).
func supervise(name string) int {
	report := os.NewFile(3, "report")
	say := func(s string) { fmt.Fprintln(report, s) }
	fail := func(err error) int {
		say("failed: " + err.Error())
		_ = os.WriteFile(statePath(name, ".result"), []byte(err.Error()+"\n"), 0o644)
		return 1
	}
	u, err := loadUnit(name)
	if err != nil {
		return fail(err)
	}
	usr, cred, err := u.user()
	if err != nil {
		return fail(err)
	}
	env, err := u.environment(usr)
	if err != nil {
		return fail(err)
	}
	logf, err := os.OpenFile(statePath(name, ".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fail(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "-- %s: starting %s (%s)\n", time.Now().Format(time.RFC3339), name, u.file)

	for _, d := range u.get("Service", "StateDirectory") {
		for _, sub := range strings.Fields(d) {
			p := filepath.Join("/var/lib", sub)
			mode, _ := strconv.ParseUint(u.last("Service", "StateDirectoryMode", "0755"), 8, 32)
			if err := os.MkdirAll(p, os.FileMode(mode)); err != nil {
				return fail(err)
			}
			_ = os.Chmod(p, os.FileMode(mode))
			if cred != nil {
				_ = os.Chown(p, int(cred.Uid), int(cred.Gid))
			}
		}
	}
	environ := func(extra ...string) []string {
		var out []string
		for k, v := range env {
			out = append(out, k+"="+v)
		}
		return append(out, extra...)
	}
	runSync := func(line string) error {
		argv, ignore := command(line, env)
		c := exec.Command(argv[0], argv[1:]...)
		c.Env, c.Dir, c.Stdout, c.Stderr = environ(), "/", logf, logf
		if cred != nil {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		if err := c.Run(); err != nil && !ignore {
			return fmt.Errorf("%s: %v", line, err)
		}
		return nil
	}
	for _, l := range u.get("Service", "ExecStartPre") {
		if err := runSync(l); err != nil {
			return fail(err)
		}
	}
	execStart := u.get("Service", "ExecStart")
	if len(execStart) == 0 {
		return fail(errors.New("no ExecStart="))
	}
	notify := u.last("Service", "Type", "simple") == "notify"
	var mgr *sdtest.Manager
	var extra []string
	if notify {
		mgr, err = sdtest.Listen(statePath(name, ".notify"))
		if err != nil {
			return fail(err)
		}
		defer mgr.Close()
		extra = append(extra, mgr.Env())
	}
	watchdog := duration(u.last("Service", "WatchdogSec", ""), 0)
	if watchdog > 0 {
		extra = append(extra, fmt.Sprintf("WATCHDOG_USEC=%d", watchdog.Microseconds()))
	}
	argv, _ := command(execStart[len(execStart)-1], env)
	// Like systemd, WATCHDOG_PID is the main process's own PID: the shell
	// sets it and execs the program, keeping its PID.
	sh := append([]string{"/bin/sh", "-c", `WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"`}, argv...)
	main := exec.Command(sh[0], sh[1:]...)
	main.Env, main.Dir, main.Stdout, main.Stderr = environ(extra...), "/", logf, logf
	main.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := main.Start(); err != nil {
		return fail(err)
	}
	pid := main.Process.Pid
	if err := os.WriteFile(statePath(name, ".pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fail(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = main.Wait(); close(exited) }()
	say("started")

	if notify {
		timeout := duration(u.last("Service", "TimeoutStartSec", ""), 90*time.Second)
		readyCh := make(chan bool, 1)
		go func() {
			_, _, ok := mgr.Wait(0, timeout, func(m sdtest.Message) bool { return m.PID == pid && m.Has("READY", "1") })
			readyCh <- ok
		}()
		select {
		case ok := <-readyCh:
			if !ok {
				_ = syscall.Kill(pid, syscall.SIGTERM)
				return fail(fmt.Errorf("start timed out after %v without READY=1", timeout))
			}
		case <-exited:
			return fail(fmt.Errorf("the main process exited before READY=1: %v", waitErr))
		}
	}
	say("ready")
	report.Close()

	// Supervise: keep the socket open, record STATUS=, enforce the watchdog.
	from, lastPing := 0, time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			_ = os.Remove(statePath(name, ".pid"))
			_ = os.WriteFile(statePath(name, ".result"), []byte(fmt.Sprintf("exited: %v\n", waitErr)), 0o644)
			fmt.Fprintf(logf, "-- %s: %s main process exited: %v\n", time.Now().Format(time.RFC3339), name, waitErr)
			return 0
		case <-tick.C:
		}
		if mgr == nil {
			continue
		}
		msgs := mgr.Messages()
		for _, m := range msgs[from:] {
			if m.PID != pid {
				fmt.Fprintf(logf, "-- notification from PID %d ignored (NotifyAccess=main): %q\n", m.PID, m.Raw)
				continue
			}
			f := m.Fields()
			if st, ok := f["STATUS"]; ok {
				_ = os.WriteFile(statePath(name, ".status"), []byte(st+"\n"), 0o644)
			}
			if f["WATCHDOG"] == "1" {
				lastPing = m.At
			}
		}
		from = len(msgs)
		if watchdog > 0 && time.Since(lastPing) > watchdog {
			fmt.Fprintf(logf, "-- %s: watchdog timeout (%v): SIGABRT\n", name, watchdog)
			_ = syscall.Kill(pid, syscall.SIGABRT)
			lastPing = time.Now()
		}
	}
}

func stop(name string) error {
	pid := mainPID(name)
	if pid == 0 {
		return nil
	}
	u, err := loadUnit(name)
	if err != nil {
		return err
	}
	timeout := duration(u.last("Service", "TimeoutStopSec", ""), 90*time.Second)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// KillMode=control-group (default) and mixed end the rest of the
	// service's processes; process leaves them (steward: the database).
	if km := u.last("Service", "KillMode", "control-group"); km != "process" && km != "none" {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	for i := 0; i < 100 && fileExists(statePath(name, ".pid")); i++ {
		time.Sleep(50 * time.Millisecond) // the supervisor notices the exit
	}
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func reload(name string) error {
	pid := mainPID(name)
	if pid == 0 {
		return fmt.Errorf("Job for %s failed: unit is not active", name)
	}
	u, err := loadUnit(name)
	if err != nil {
		return err
	}
	usr, cred, err := u.user()
	if err != nil {
		return err
	}
	env, err := u.environment(usr)
	if err != nil {
		return err
	}
	env["MAINPID"] = strconv.Itoa(pid)
	for _, l := range u.get("Service", "ExecReload") {
		argv, ignore := command(l, env)
		c := exec.Command(argv[0], argv[1:]...)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		if cred != nil {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		if err := c.Run(); err != nil && !ignore {
			return fmt.Errorf("Job for %s failed: %s: %v", name, l, err)
		}
	}
	return nil
}

func status(name string) bool {
	u, err := loadUnit(name)
	if err != nil {
		fmt.Println(err)
		return false
	}
	fmt.Printf("● %s - %s\n     Loaded: loaded (%s)\n", name, u.last("Unit", "Description", name), u.file)
	pid := mainPID(name)
	if pid == 0 {
		res, _ := os.ReadFile(statePath(name, ".result"))
		fmt.Printf("     Active: inactive (dead) %s\n", strings.TrimSpace(string(res)))
		return false
	}
	fmt.Printf("     Active: active (running)\n   Main PID: %d\n", pid)
	if st, err := os.ReadFile(statePath(name, ".status")); err == nil {
		fmt.Printf("     Status: %q\n", strings.TrimSpace(string(st)))
	}
	return true
}
