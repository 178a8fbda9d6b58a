package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/dcstest"
	"github.com/stewardha/steward/dcs/etcd"
)

// runCLI runs steward in-process with the given environment.
func runCLI(t *testing.T, envv map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, lookupEnv: func(k string) (string, bool) {
		v, ok := envv[k]
		return v, ok
	}}
	code := run(e, args)
	return out.String(), errb.String(), code
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "steward.yml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func goodConfig(endpoint, dataDir string) string {
	return fmt.Sprintf(`cluster: main
name: db1
etcd:
  endpoints: [%s]
bootstrap:
  ttl: 10s
  retry_timeout: 1s
api:
  listen: 127.0.0.1:8008
  username: admin
  password: api-secret
postgres:
  data_dir: %s
  superuser: {username: postgres, password: super-secret}
  replication: {username: replicator, password: rep-secret}
`, endpoint, dataDir)
}

func TestVersion(t *testing.T) {
	out, _, code := runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "steward ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

// An invalid file: exit 2, the key path in the message, nothing touched
// (no data directory created, no etcd contacted).
func TestAgentBadConfigExits2AndTouchesNothing(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, strings.Replace(goodConfig("http://127.0.0.1:1", data), "ttl: 10s", "ttl: 2s", 1))
	_, stderr, code := runCLI(t, nil, "agent", "--config", cfg)
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr: %s", code, stderr)
	}
	if !strings.Contains(stderr, "bootstrap.ttl: 2s is too short: ttl must be >= loop_wait + 2*retry_timeout (3s)") {
		t.Fatalf("stderr does not name the key and the rule:\n%s", stderr)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the data directory was touched: %v", err)
	}
	// A typo gets a suggestion.
	cfg = writeConfig(t, dir, strings.Replace(goodConfig("http://127.0.0.1:1", data), "retry_timeout", "retry_timout", 1))
	_, stderr, code = runCLI(t, nil, "agent", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, "bootstrap.retry_timout") || !strings.Contains(stderr, "did you mean retry_timeout") {
		t.Fatalf("typo: exit %d, stderr %s", code, stderr)
	}
	// A missing file is a usage error too.
	_, stderr, code = runCLI(t, nil, "agent", "--config", filepath.Join(dir, "nope.yml"))
	if code != 2 || !strings.Contains(stderr, "nope.yml") {
		t.Fatalf("missing file: exit %d, %s", code, stderr)
	}
}

func TestAgentDryRunMasksSecrets(t *testing.T) {
	dir := t.TempDir()
	body := strings.Replace(goodConfig("http://127.0.0.1:2379", filepath.Join(dir, "data")), "bootstrap:", "  username: steward\nbootstrap:", 1)
	cfg := writeConfig(t, dir, body)
	out, stderr, code := runCLI(t, map[string]string{"STEWARD_ETCD_PASSWORD": "etcd-secret"}, "agent", "--dry-run", "--config", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, secret := range []string{"api-secret", "super-secret", "rep-secret", "etcd-secret"} {
		if strings.Contains(out, secret) {
			t.Fatalf("--dry-run printed the secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"is valid", "loop_wait: 1s", "maximum_lag_on_failover: 1MB", "******", "bin_dir: /usr/lib/postgresql/15/bin"} {
		if !strings.Contains(out, want) {
			t.Fatalf("--dry-run output lacks %q:\n%s", want, out)
		}
	}
}

func TestListAgainstDCS(t *testing.T) {
	srv := dcstest.StartEmbedded(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, goodConfig(srv.Endpoints()[0], filepath.Join(dir, "data")))
	ctx := context.Background()
	for _, m := range []dcs.Member{
		{Name: "db1", Role: dcs.RolePrimary, State: "running", DBURL: "10.0.0.1:5432", Timeline: 3, Writable: true, Position: backends.Position{LSN: 0x3000148}, Priority: 1},
		{Name: "db2", Role: dcs.RoleReplica, State: "streaming", DBURL: "10.0.0.2:5432", Timeline: 3, LagBytes: 12288, Eligible: true, Priority: 1},
		{Name: "db3", Role: dcs.RoleReplica, State: "running", Reason: "not streaming", DBURL: "10.0.0.3:5432", Timeline: 3, LagBytes: 5 << 20,
			IneligibleReason: []string{"replay lag 5.0 MB exceeds maximum_lag_on_failover 1MB"}, NoFailover: true, Priority: 1},
	} {
		st, err := etcd.New(etcd.Options{Endpoints: srv.Endpoints(), Namespace: "/steward", Cluster: "main", Member: m.Name, TTL: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.PutMember(ctx, m); err != nil {
			t.Fatal(err)
		}
		if m.Name == "db1" {
			if _, _, err := st.AcquireLeader(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, stderr, code := runCLI(t, nil, "list", "--config", cfg)
	if code != 0 {
		t.Fatalf("list exit %d: %s", code, stderr)
	}
	for _, want := range []string{"Leader: db1", "db2", "10.0.0.2:5432", "streaming", "12.0 kB (12288)", "eligible", "no: replay lag 5.0 MB", "nofailover=true"} {
		if !strings.Contains(out, want) {
			t.Fatalf("list output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runCLI(t, nil, "list", "-o", "json", "--config", cfg)
	var v listView
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("list -o json: exit %d, %s", code, out)
	}
	if v.Leader != "db1" || len(v.Members) != 3 || v.Members[0].Role != "leader" || v.Members[1].LagBytes != 12288 || v.Members[2].Eligible {
		t.Fatalf("list json = %+v", v)
	}
	out, _, code = runCLI(t, nil, "list", "-o", "yaml", "--config", cfg)
	if code != 0 || !strings.Contains(out, "leader: db1") {
		t.Fatalf("list -o yaml: exit %d:\n%s", code, out)
	}
	_, stderr, code = runCLI(t, nil, "list", "-o", "xml", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, "expected table, json or yaml") {
		t.Fatalf("list -o xml: exit %d: %s", code, stderr)
	}
}

func TestListUnreachableEtcd(t *testing.T) {
	dir := t.TempDir()
	port := dcstest.FreePort(t)
	ep := fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := writeConfig(t, dir, goodConfig(ep, filepath.Join(dir, "data")))
	start := time.Now()
	_, stderr, code := runCLI(t, nil, "list", "--config", cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	if !strings.Contains(stderr, "etcd unreachable: tried "+ep) {
		t.Fatalf("stderr does not say which endpoints were tried: %s", stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("list took %v against an unreachable etcd", d)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"list", "extra"}, {"version", "x"}, {"list", "--no-such-flag"}} {
		_, stderr, code := runCLI(t, nil, args...)
		if code != 2 {
			t.Errorf("steward %v: exit %d, want 2 (%s)", args, code, stderr)
		}
	}
}
