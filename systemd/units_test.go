package systemd_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitDirectives returns "Section.Key=value" for every directive of a unit
// file (comments and blank lines dropped).
func unitDirectives(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
		default:
			out = append(out, section+"."+l)
		}
	}
	return out
}

// systemd-analyze verify accepts both units without a single warning (an
// unknown or misspelt directive is only a warning for systemd, so any
// output fails the test). ExecStart must name an existing executable: the
// test builds steward and points copies of the units at it.
func TestUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: apt-get install systemd")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "steward")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/stewardha/steward/cmd/steward").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, u := range []string{"steward.service", "steward@.service"} {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "ExecStart=/usr/bin/steward ", "ExecStart="+bin+" ")
		if err := os.WriteFile(filepath.Join(dir, u), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"steward.service", "steward@main.service"} {
		cmd := exec.Command("systemd-analyze", "verify", "--man=no", "./"+u)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
}

// The template differs from steward.service only where the instance
// matters, so that the two cannot drift apart.
func TestTemplateMatchesUnit(t *testing.T) {
	plain := map[string]bool{}
	for _, d := range unitDirectives(t, "steward.service") {
		plain[d] = true
	}
	inst := map[string]bool{}
	for _, d := range unitDirectives(t, "steward@.service") {
		inst[d] = true
	}
	instanceOnly := map[string]bool{
		"Unit.Description=steward HA agent for PostgreSQL/MySQL (%i)":           true,
		"Unit.ConditionPathExists=/etc/steward/%i.yml":                          true,
		"Service.EnvironmentFile=-/etc/default/steward-%i":                      true,
		"Service.ExecStart=/usr/bin/steward agent --config /etc/steward/%i.yml": true,
		"Service.SyslogIdentifier=steward-%i":                                   true,
	}
	plainOnly := map[string]bool{
		"Unit.Description=steward HA agent for PostgreSQL/MySQL (%N)":                true,
		"Unit.ConditionPathExists=/etc/steward/steward.yml":                          true,
		"Service.ExecStart=/usr/bin/steward agent --config /etc/steward/steward.yml": true,
	}
	for d := range inst {
		if !plain[d] && !instanceOnly[d] {
			t.Errorf("steward@.service has %q, steward.service does not", d)
		}
	}
	for d := range plain {
		if !inst[d] && !plainOnly[d] {
			t.Errorf("steward.service has %q, steward@.service does not", d)
		}
	}
	for _, want := range []string{"Service.Type=notify", "Service.NotifyAccess=main", "Service.KillMode=process",
		"Service.WatchdogSec=30s", "Service.Restart=on-failure", "Service.User=postgres", "Service.ExecReload=/bin/kill -HUP $MAINPID"} {
		if !plain[want] {
			t.Errorf("steward.service lacks %s", want)
		}
	}
}
