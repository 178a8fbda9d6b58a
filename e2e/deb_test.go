package e2e

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Debian package as an operator gets it: `make deb`, then dpkg -i /
// dpkg -r / dpkg -P on this machine (as root), leaving it as it was found.

// repoRoot is the module root (tests run in e2e/).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// buildDeb runs `make deb` into a directory removed when the test ends and
// returns the package.
func buildDeb(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	start := time.Now()
	out, err := exec.Command("make", "--no-print-directory", "-C", repoRoot(t), "deb", "DEB_DIR="+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	m, _ := filepath.Glob(filepath.Join(dir, "steward_*.deb"))
	if len(m) != 1 {
		t.Fatalf("make deb produced %v\n%s", m, out)
	}
	t.Logf("MEASURED make deb: %v (%s)", time.Since(start).Round(100*time.Millisecond), filepath.Base(m[0]))
	return m[0]
}

// requireRoot fails (it does not skip) when the test cannot install
// packages: CI runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test installs a Debian package and must run as root (CI does; locally: sudo go test ./e2e -run ...)")
	}
	for _, p := range []string{"dpkg", "dpkg-deb", "apt-get"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: this test needs a Debian system", p)
		}
	}
}

// requireNotInstalled refuses to touch a machine where steward is already
// installed (the test would remove the operator's copy).
func requireNotInstalled(t *testing.T) {
	t.Helper()
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "steward").Output(); strings.Contains(string(out), "installed") || strings.Contains(string(out), "config-files") {
		t.Fatalf("the steward package is already on this machine (%s); the test installs and purges it, so it will not run here", out)
	}
	if _, err := os.Stat("/usr/bin/steward"); err == nil {
		t.Fatal("/usr/bin/steward exists; the test installs the package there and will not overwrite it")
	}
}

// dpkg runs dpkg, waiting (bounded) while another apt/dpkg holds the lock.
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if strings.Contains(string(out), "lock") && time.Now().Before(deadline) {
			time.Sleep(2 * time.Second)
			continue
		}
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// purgeAtCleanup removes the package (and only what the test created) when
// the test ends, however it ends.
func purgeAtCleanup(t *testing.T, created ...string) {
	t.Cleanup(func() {
		if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "steward").Output(); len(out) > 0 && !strings.Contains(string(out), "not-installed") {
			dpkg(t, "--purge", "steward")
		}
		for i := len(created) - 1; i >= 0; i-- {
			_ = os.Remove(created[i]) // files we created, then directories if empty
		}
	})
}

func fileState(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		data, err := os.ReadFile(p)
		fmt.Fprintf(&b, "%s %d %v\n", p, len(data), err)
		b.Write(data)
	}
	return b.String()
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// make deb builds a package that dpkg installs and removes cleanly: binary,
// units, example config, completions, docs; no user, no started service;
// conffiles kept on remove and gone on purge; the administrator's own
// configuration never touched.
func TestDebPackage(t *testing.T) {
	requireRoot(t)
	requireNotInstalled(t)
	deb := buildDeb(t)

	// What the package declares.
	info, err := exec.Command("dpkg-deb", "--info", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb --info: %v\n%s", err, info)
	}
	for _, want := range []string{"Package: steward", "Architecture: amd64", "Maintainer: ", "Description: ", "conffiles", "postinst", "prerm", "postrm", "md5sums"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("package control lacks %q:\n%s", want, info)
		}
	}
	if strings.Contains(string(info), "Depends:") || strings.Contains(string(info), "Pre-Depends:") {
		t.Errorf("the package depends on something (the binary is static):\n%s", info)
	}
	version := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, "Version"))
	if strings.ContainsAny(version, "-_ ") || version == "" {
		t.Errorf("Debian version %q is not Debian-safe", version)
	}
	contents := run(t, "dpkg-deb", "--contents", deb)
	wantFiles := []string{"./usr/bin/steward", "./lib/systemd/system/steward.service", "./lib/systemd/system/steward@.service",
		"./etc/steward/steward.yml.example", "./usr/share/bash-completion/completions/steward",
		"./usr/share/zsh/vendor-completions/_steward", "./usr/share/fish/vendor_completions.d/steward.fish",
		"./usr/share/doc/steward/README.md"}
	for _, f := range wantFiles {
		if !strings.Contains(contents, " "+f+"\n") {
			t.Errorf("package lacks %s", f)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(contents), "\n") {
		if !strings.Contains(l, " root/root ") {
			t.Errorf("not owned by root in the package: %s", l)
		}
	}
	if strings.Contains(contents, "./etc/steward/steward.yml\n") || strings.Contains(contents, "./var/") {
		t.Errorf("the package ships a real configuration or state:\n%s", contents)
	}

	// apt accepts it (simulated: nothing changes).
	sim, err := exec.Command("apt-get", "install", "-s", "-o", "Debug::NoLocking=1", deb).CombinedOutput()
	if err != nil || !strings.Contains(string(sim), "Inst steward") {
		t.Fatalf("apt-get install -s %s: %v\n%s", deb, err, sim)
	}

	// Install. Nothing surprising: no user or group, no state directory, no
	// enablement link, nothing started.
	createdEtc, hadState := !exists("/etc/steward"), exists("/var/lib/steward")
	before := fileState("/etc/passwd", "/etc/group")
	links, _ := filepath.Glob("/etc/systemd/system/*.wants/steward*")
	var created []string
	if createdEtc {
		created = append(created, "/etc/steward")
	}
	purgeAtCleanup(t, created...)
	out := dpkg(t, "--install", deb)
	t.Logf("dpkg -i:\n%s", out)
	if !strings.Contains(out, "write /etc/steward/steward.yml") {
		t.Errorf("postinst does not tell the operator what to do next:\n%s", out)
	}
	if after := fileState("/etc/passwd", "/etc/group"); after != before {
		t.Errorf("installing the package changed /etc/passwd or /etc/group")
	}
	if exists("/var/lib/steward") != hadState {
		t.Errorf("installing the package created /var/lib/steward (systemd's StateDirectory= does, at start)")
	}
	if l, _ := filepath.Glob("/etc/systemd/system/*.wants/steward*"); len(l) != len(links) {
		t.Errorf("installing the package enabled a unit: %v", l)
	}
	vout := run(t, "/usr/bin/steward", "version")
	if !strings.HasPrefix(vout, "steward ") || strings.Contains(vout, "commit unknown") || strings.Contains(vout, "steward dev ") {
		t.Errorf("steward version = %q: version and commit not stamped", vout)
	}
	t.Logf("installed %s: %s", version, strings.TrimSpace(vout))
	if f, err := elf.Open("/usr/bin/steward"); err != nil {
		t.Error(err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("/usr/bin/steward is dynamically linked; the package declares no Depends")
			}
		}
		f.Close()
	}
	if out, err := exec.Command("dpkg", "--verify", "steward").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("dpkg --verify steward: %v\n%s", err, out)
	}
	verifyUnits(t, "/lib/systemd/system", "/usr/bin/steward")
	if out := run(t, "bash", "-c", "source /usr/share/bash-completion/completions/steward && complete -p steward"); !strings.Contains(out, "steward") {
		t.Errorf("bash completion does not register: %s", out)
	}

	// The operator writes a configuration; reinstalling (an upgrade) and
	// removing keep it.
	if err := os.WriteFile("/etc/steward/steward.yml", []byte("# operator's file\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove("/etc/steward/steward.yml") })
	out = dpkg(t, "--install", deb)
	if !strings.Contains(out, "upgraded from") {
		t.Errorf("postinst on upgrade does not say that running agents keep the old version:\n%s", out)
	}

	dpkg(t, "--remove", "steward")
	for _, f := range []string{"/usr/bin/steward", "/lib/systemd/system/steward.service", "/lib/systemd/system/steward@.service",
		"/usr/share/bash-completion/completions/steward", "/usr/share/doc/steward"} {
		if exists(f) {
			t.Errorf("%s still exists after dpkg -r", f)
		}
	}
	if !exists("/etc/steward/steward.yml.example") {
		t.Errorf("dpkg -r removed the conffile (it is kept until purge)")
	}
	if st, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "steward").Output(); !strings.Contains(string(st), "config-files") {
		t.Errorf("after dpkg -r the package state is %q, want config-files", st)
	}

	dpkg(t, "--purge", "steward")
	if exists("/etc/steward/steward.yml.example") {
		t.Errorf("the conffile survived dpkg -P")
	}
	if b, err := os.ReadFile("/etc/steward/steward.yml"); err != nil || string(b) != "# operator's file\n" {
		t.Errorf("dpkg -P touched the operator's /etc/steward/steward.yml: %v", err)
	}
	if st, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "steward").Output(); strings.Contains(string(st), "installed") || strings.Contains(string(st), "config-files") {
		t.Errorf("after dpkg -P the package state is %q", st)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// verifyUnits runs systemd-analyze verify on copies of the two units in dir
// whose ExecStart names binary (which must exist); any warning fails.
func verifyUnits(t *testing.T, dir, binary string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: apt-get install systemd")
	}
	tmp := t.TempDir()
	for _, u := range []string{"steward.service", "steward@.service"} {
		b, err := os.ReadFile(filepath.Join(dir, u))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"steward.service", "steward@main.service"} {
		cmd := exec.Command("systemd-analyze", "verify", "--man=no", "./"+u)
		cmd.Dir = tmp
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s (%s): %v\n%s", u, binary, err, out)
		}
	}
}
