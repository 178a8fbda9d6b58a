package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/backends/postgres/pgtest"
)

// docs/getting-started.md, followed to the letter on one machine, so that
// the guide cannot rot. Each host of the guide is a private mount namespace
// (its own /etc/steward, /var/lib/steward, /etc/default/etcd, /var/lib/etcd,
// /etc/haproxy, /run) and a 127.0.0.x address; each host has one shell whose
// variables (and functions) carry over from block to block, as a reader's
// terminal would; systemctl is testdata/systemctl, which runs the real unit
// files. Blocks are marked in their info string:
//
//	```sh vars                 variable assignments: the test supplies its own
//	                           values and checks that the names match
//	```sh packages             apt-get install lines: checked, not run
//	```sh on=<hosts>           run: etcd-host, db-hosts (db1, db2, db3 in
//	                           turn), one-db-host, app-host, leader-host (the
//	                           member whose /primary answers 200),
//	                           former-leader-host (the last leader-host)
//	```text expect=steward-list  the previous block's output, compared by
//	                           member names and (ROLE, STATE) pairs, retried
//	                           until it matches

type docBlock struct {
	line   int
	lang   string
	attrs  map[string]string
	flags  []string
	body   string
	expect *docBlock // the text block that follows, if it has expect=
}

var fenceRe = regexp.MustCompile("^```(.*)$")

func parseDoc(t *testing.T, path string) []*docBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*docBlock
	var cur *docBlock
	var body strings.Builder
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		m := fenceRe.FindStringSubmatch(l)
		switch {
		case m != nil && cur == nil:
			fields := strings.Fields(m[1])
			cur = &docBlock{line: n, attrs: map[string]string{}}
			if len(fields) > 0 {
				cur.lang = fields[0]
				for _, f := range fields[1:] {
					if k, v, ok := strings.Cut(f, "="); ok {
						cur.attrs[k] = v
					} else {
						cur.flags = append(cur.flags, f)
					}
				}
			}
			body.Reset()
		case m != nil && cur != nil:
			cur.body = body.String()
			if cur.attrs["expect"] != "" && len(out) > 0 {
				out[len(out)-1].expect = cur
			} else {
				out = append(out, cur)
			}
			cur = nil
		case cur != nil:
			body.WriteString(l + "\n")
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: unterminated code block", path, cur.line)
	}
	return out
}

// docHost is one host of the guide.
type docHost struct {
	name   string
	ip     string
	dir    string // its private files
	keeper *exec.Cmd
	env    string // the shell's saved variables and functions
	vars   map[string]string
	// dataDir is the real path of the PostgreSQL data directory the guide
	// creates on a database host (/var/lib/steward/main inside it).
	dataDir string
}

func (h *docHost) ns() string { return fmt.Sprintf("/proc/%d/ns/mnt", h.keeper.Process.Pid) }

// inNS runs a command in the host's mount namespace.
func (h *docHost) inNS(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--mount=" + h.ns(), "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", h.name, strings.Join(args, " "), err, out)
	}
}

// bind mounts src over dst inside the host.
func (h *docHost) bind(t *testing.T, src, dst string) { h.inNS(t, "mount", "--bind", src, dst) }

func chownTo(t *testing.T, path, name string) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// mountPoint makes sure dir exists on the real file system, to mount over
// it inside the namespaces; one the test created is removed at the end.
func mountPoint(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err == nil {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
}

func freeAddr(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s is in use on this machine; the guide's hosts need it: %v", addr, err)
	}
	l.Close()
}

func TestGettingStarted(t *testing.T) {
	requireRoot(t)
	for _, p := range []string{"unshare", "nsenter", "curl", "psql", "haproxy", "etcd", "etcdctl"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: make deps installs what the guide needs", p)
		}
	}
	pgtest.RequireBinaries(t)
	requireNotInstalled(t)
	blocks := parseDoc(t, filepath.Join(repoRoot(t), "docs", "getting-started.md"))
	deb := buildDeb(t)

	// The shim systemctl, and a directory for it and the package.
	work := pgtest.Dir(t) // traversable by postgres/etcd
	if out, err := exec.Command("go", "build", "-o", filepath.Join(work, "bin", "systemctl"), "./testdata/systemctl").CombinedOutput(); err != nil {
		t.Fatalf("building the systemctl stand-in: %v\n%s", err, out)
	}
	pkgDir := filepath.Join(work, "pkg")
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(deb); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(filepath.Join(pkgDir, filepath.Base(deb)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	aptConf := filepath.Join(work, "apt.conf")
	if err := os.WriteFile(aptConf, []byte("DPkg::Lock::Timeout \"180\";\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The guide's variables, for one machine.
	common := map[string]string{
		"ETCD_IP": "127.0.0.10", "DB1_IP": "127.0.0.11", "DB2_IP": "127.0.0.12", "DB3_IP": "127.0.0.13",
		"CLUSTER_NET":          "127.0.0.0/8", // connections between 127.0.0.x come from 127.0.0.1
		"SUPERUSER_PASSWORD":   "guide-super-secret",
		"REPLICATION_PASSWORD": "guide-repl-secret",
	}
	perDB := []string{"NAME", "HOST_IP"}
	var declared []string
	for _, b := range blocks {
		if b.lang == "sh" && slices.Contains(b.flags, "vars") {
			for _, l := range strings.Split(b.body, "\n") {
				if m := regexp.MustCompile(`^([A-Z_][A-Z0-9_]*)=`).FindStringSubmatch(l); m != nil {
					declared = append(declared, m[1])
				}
			}
		}
	}
	var supplied []string
	for k := range common {
		supplied = append(supplied, k)
	}
	supplied = append(supplied, perDB...)
	sort.Strings(declared)
	sort.Strings(supplied)
	if !slices.Equal(declared, supplied) {
		t.Fatalf("the guide's variables are %v; the test supplies %v: update one of them", declared, supplied)
	}

	// Packages the guide installs (checked, not installed here: make deps).
	for _, b := range blocks {
		if b.lang == "sh" && slices.Contains(b.flags, "packages") {
			for _, l := range strings.Split(b.body, "\n") {
				f := strings.Fields(l)
				if len(f) < 2 || f[0] != "apt-get" || f[1] != "install" {
					continue
				}
				for _, p := range f[2:] {
					if strings.HasPrefix(p, "-") {
						continue
					}
					out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", p).Output()
					if !strings.Contains(string(out), "install ok installed") {
						t.Fatalf("the guide installs %s (line %d), which is not installed here: add it to the Makefile's DEB_PKGS", p, b.line)
					}
				}
			}
		}
	}

	// Hosts.
	for _, a := range []string{"127.0.0.10:2379", "127.0.0.10:2380", "127.0.0.1:5000", "127.0.0.1:5001",
		"127.0.0.11:5432", "127.0.0.12:5432", "127.0.0.13:5432", "127.0.0.11:8008", "127.0.0.12:8008", "127.0.0.13:8008"} {
		freeAddr(t, a)
	}
	mountPoint(t, "/etc/steward")
	mountPoint(t, "/var/lib/steward")
	purgeAtCleanup(t)
	hosts := map[string]*docHost{}
	newHost := func(name, ip string) *docHost {
		h := &docHost{name: name, ip: ip, dir: filepath.Join(work, name), vars: map[string]string{}}
		for _, d := range []string{"systemd"} {
			if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		h.keeper = exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
		if err := h.keeper.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until the keeper is in its own namespace.
		self, _ := os.Readlink("/proc/self/ns/mnt")
		Eventually(t, 5*time.Second, name+"'s mount namespace", func() bool {
			ns, err := os.Readlink(h.ns())
			return err == nil && ns != self
		})
		for k, v := range common {
			h.vars[k] = v
		}
		h.vars["PATH"] = filepath.Join(work, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		h.vars["HOME"] = "/root"
		h.vars["LANG"] = "C.UTF-8"
		h.vars["SYSTEMCTL_SHIM_STATE"] = filepath.Join(h.dir, "systemd")
		h.vars["APT_CONFIG"] = aptConf
		h.vars["DEBIAN_FRONTEND"] = "noninteractive"
		h.env = filepath.Join(h.dir, "shell.env")
		hosts[name] = h
		t.Cleanup(func() { stopHost(h) })
		return h
	}
	mkdir := func(p string, mode os.FileMode, owner string) string {
		if err := os.MkdirAll(p, mode); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(p, mode)
		if owner != "" {
			chownTo(t, p, owner)
		}
		return p
	}

	etcd := newHost("etcd1", "127.0.0.10")
	if b, err := os.ReadFile("/etc/default/etcd"); err != nil {
		t.Fatalf("/etc/default/etcd: %v (etcd-server is installed by make deps)", err)
	} else if err := os.WriteFile(filepath.Join(etcd.dir, "default-etcd"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	etcd.bind(t, filepath.Join(etcd.dir, "default-etcd"), "/etc/default/etcd")
	etcd.bind(t, mkdir(filepath.Join(etcd.dir, "lib-etcd"), 0o700, "etcd"), "/var/lib/etcd")

	var dbs []*docHost
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("db%d", i)
		h := newHost(name, fmt.Sprintf("127.0.0.1%d", i))
		h.vars["NAME"], h.vars["HOST_IP"] = name, h.ip
		h.bind(t, mkdir(filepath.Join(h.dir, "etc-steward"), 0o755, ""), "/etc/steward")
		h.bind(t, mkdir(filepath.Join(h.dir, "lib-steward"), 0o755, ""), "/var/lib/steward")
		h.dataDir = filepath.Join(h.dir, "lib-steward", "main")
		dbs = append(dbs, h)
	}

	app := newHost("app", "127.0.0.1")
	etcHAProxy := mkdir(filepath.Join(app.dir, "etc-haproxy"), 0o755, "")
	if out, err := exec.Command("cp", "-a", "/etc/haproxy/.", etcHAProxy).CombinedOutput(); err != nil {
		t.Fatalf("copying /etc/haproxy: %v\n%s", err, out)
	}
	app.bind(t, etcHAProxy, "/etc/haproxy")
	app.inNS(t, "mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")
	app.inNS(t, "install", "-d", "-m", "2775", "-o", "haproxy", "-g", "haproxy", "/run/haproxy") // tmpfiles.d/haproxy.conf

	// Run the guide.
	var leader, formerLeader *docHost
	start := time.Now()
	for _, b := range blocks {
		on := b.attrs["on"]
		if b.lang != "sh" || on == "" {
			continue
		}
		var targets []*docHost
		switch on {
		case "etcd-host":
			targets = []*docHost{etcd}
		case "db-hosts":
			targets = dbs
		case "one-db-host":
			targets = dbs[:1]
		case "app-host":
			targets = []*docHost{app}
		case "leader-host":
			leader = primaryHost(t, dbs)
			formerLeader = leader
			targets = []*docHost{leader}
		case "former-leader-host":
			if formerLeader == nil {
				t.Fatalf("docs/getting-started.md:%d: on=former-leader-host before any on=leader-host", b.line)
			}
			targets = []*docHost{formerLeader}
		default:
			t.Fatalf("docs/getting-started.md:%d: unknown on=%s", b.line, on)
		}
		for _, h := range targets {
			if b.expect == nil {
				out, err := runBlock(h, pkgDir, b.body, 3*time.Minute)
				t.Logf("docs/getting-started.md:%d on %s (%v):\n%s", b.line, h.name, time.Since(start).Round(time.Second), out)
				if err != nil {
					t.Fatalf("docs/getting-started.md:%d failed on %s: %v", b.line, h.name, err)
				}
				continue
			}
			// A block with expected output: run it until its output matches.
			var out string
			var err error
			took := Eventually(t, 3*time.Minute, fmt.Sprintf("docs/getting-started.md:%d on %s prints what line %d shows", b.line, h.name, b.expect.line), func() bool {
				out, err = runBlock(h, pkgDir, b.body, time.Minute)
				return err == nil && sameList(out, b.expect.body)
			})
			t.Logf("docs/getting-started.md:%d on %s, matched line %d after %v:\n%s", b.line, h.name, b.expect.line, took.Round(100*time.Millisecond), out)
		}
	}
	t.Logf("MEASURED docs/getting-started.md followed on one machine: %v", time.Since(start).Round(time.Second))
	// What systemd saw of each agent: its STATUS= line, no watchdog
	// timeout, no notification from anyone but the agent, no failed send.
	statusRe := regexp.MustCompile(`^(primary|replica) of cluster main, leader db[123]$`)
	for _, h := range dbs {
		// The status line follows the member key by up to a loop.
		var st []byte
		Eventually(t, 10*time.Second, h.name+"'s systemd status line", func() bool {
			st, _ = os.ReadFile(filepath.Join(h.dir, "systemd", "steward.service.status"))
			return statusRe.MatchString(strings.TrimSpace(string(st)))
		})
		t.Logf("%s: Status: %q", h.name, strings.TrimSpace(string(st)))
		journal, _ := os.ReadFile(filepath.Join(h.dir, "systemd", "steward.service.log"))
		for _, bad := range []string{"watchdog timeout", "ignored (NotifyAccess=main)", "notifying systemd failed"} {
			if strings.Contains(string(journal), bad) {
				t.Errorf("%s: %q in the service's journal", h.name, bad)
			}
		}
	}
}

// runBlock runs a block in the host's shell: previous variables and
// functions loaded, errexit on, everything exported for the next block.
func runBlock(h *docHost, dir, body string, timeout time.Duration) (string, error) {
	script := fmt.Sprintf(`set -a
[ -f %[1]q ] && . %[1]q
cd %[2]q
set -e -o pipefail
%[3]s
set +e
{ export -p | grep -vE '^declare -[a-z]*r|^declare -x (PWD|OLDPWD|SHLVL|_)='; declare -f; } > %[1]q.new && mv %[1]q.new %[1]q
`, h.env, dir, body)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--mount="+h.ns(), "--", "/bin/bash", "-c", script)
	for k, v := range h.vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	return string(out), err
}

// primaryHost is the database host whose /primary answers 200.
func primaryHost(t *testing.T, dbs []*docHost) *docHost {
	t.Helper()
	var found *docHost
	Eventually(t, 30*time.Second, "a database host answering 200 on /primary", func() bool {
		for _, h := range dbs {
			resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + h.ip + ":8008/primary")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					found = h
					return true
				}
			}
		}
		return false
	})
	return found
}

// sameList compares `steward list` outputs by member names and the
// multiset of (ROLE, STATE): which replica wins a failover, terms, system
// IDs, lag and addresses may differ from the guide's example.
func sameList(got, want string) bool {
	g, w := listRows(got), listRows(want)
	return g != nil && w != nil && slices.Equal(g.names, w.names) && slices.Equal(g.roles, w.roles)
}

type listSummary struct{ names, roles []string }

func listRows(s string) *listSummary {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	hdr := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "MEMBER ") {
			hdr = i
			break
		}
	}
	if hdr < 0 {
		return nil
	}
	col := func(name string) int { return strings.Index(lines[hdr], name) }
	role, state, tl := col("ROLE"), col("STATE"), col("TL")
	if role < 0 || state < 0 || tl < 0 {
		return nil
	}
	out := &listSummary{}
	for _, l := range lines[hdr+1:] {
		if len(l) < tl || strings.HasPrefix(l, "warning:") || strings.HasPrefix(l, "(") {
			continue
		}
		out.names = append(out.names, strings.Fields(l)[0])
		out.roles = append(out.roles, strings.TrimSpace(l[role:state])+"/"+strings.TrimSpace(l[state:tl]))
	}
	sort.Strings(out.names)
	sort.Strings(out.roles)
	return out
}

// stopHost ends everything the guide started on a host (by the PIDs the
// systemctl stand-in recorded, then their process groups) and its
// namespace.
func stopHost(h *docHost) {
	pids, _ := filepath.Glob(filepath.Join(h.dir, "systemd", "*.pid"))
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	if h.dataDir != "" {
		pgtest.Kill(h.dataDir, 5*time.Second)
	}
	if h.keeper != nil && h.keeper.Process != nil {
		_ = h.keeper.Process.Kill()
		_ = h.keeper.Wait()
	}
}
