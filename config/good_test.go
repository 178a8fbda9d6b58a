package config_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/config"
)

// noEnv is an empty environment.
func noEnv(string) (string, bool) { return "", false }

// env returns a lookupEnv over m.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func mustParse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(yaml), noEnv)
	if err != nil {
		t.Fatalf("Parse failed:\n%v\nfile:\n%s", err, yaml)
	}
	return c
}

// dropSection removes a top-level key and its indented block from a file.
func dropSection(data []byte, key string) []byte {
	var out []string
	skipping := false
	for line := range strings.Lines(string(data)) {
		top := line != "" && line[0] != ' ' && line[0] != '#' && line[0] != '\n'
		if top {
			skipping = strings.HasPrefix(line, key+":")
		}
		if !skipping {
			out = append(out, line)
		}
	}
	return []byte(strings.Join(out, ""))
}

func TestExampleFile(t *testing.T) {
	c, err := config.Load("testdata/example.yml", os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != "testdata/example.yml" {
		t.Errorf("Path = %q", c.Path)
	}
	if c.Cluster != "main" || c.Name != "db1" || len(c.Etcd.Endpoints) != 3 {
		t.Errorf("identity/etcd = %q %q %v", c.Cluster, c.Name, c.Etcd.Endpoints)
	}
	if c.Postgres == nil || c.MySQL != nil {
		t.Fatalf("want a postgres member, got postgres=%v mysql=%v", c.Postgres, c.MySQL)
	}
	p := c.Postgres
	if p.ConnectAddress != "10.0.0.11:5432" || c.API.ConnectAddress != "10.0.0.11:8008" {
		t.Errorf("connect addresses = %q, %q", p.ConnectAddress, c.API.ConnectAddress)
	}
	if p.Parameters["max_connections"] != "200" || p.Parameters["wal_log_hints"] != "on" || p.Parameters["shared_buffers"] != "1GB" {
		t.Errorf("parameters = %v", p.Parameters)
	}
	if len(p.PgHba) != 4 || !p.UsePgRewind {
		t.Errorf("pg_hba = %v, use_pg_rewind = %v", p.PgHba, p.UsePgRewind)
	}
	if c.Tags.Custom["zone"] != "eu-west-1a" || len(c.Tags.Custom) != 1 {
		t.Errorf("custom tags = %v", c.Tags.Custom)
	}
	if len(c.Fencing.Hooks) != 1 || c.Fencing.Hooks[0].Timeout.D() != 15*time.Second {
		t.Errorf("hooks = %+v", c.Fencing.Hooks)
	}
	if c.Log.Format != "json" {
		t.Errorf("log.format = %q", c.Log.Format)
	}
}

// TestDesignExample: the DESIGN.md example shows both database sections as
// alternatives; as written it is rejected for exactly that reason, and with
// either one removed it loads.
func TestDesignExample(t *testing.T) {
	data, err := os.ReadFile("testdata/design-example.yml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = config.Parse(data, noEnv)
	if err == nil || err.Error() != "postgres, mysql: both are set; a member manages exactly one database" {
		t.Fatalf("verbatim example: error = %v, want only the both-set error", err)
	}

	c, err := config.Parse(dropSection(data, "mysql"), noEnv)
	if err != nil {
		t.Fatalf("postgres variant: %v", err)
	}
	want := config.DefaultDynamic()
	if c.Bootstrap != want {
		t.Errorf("bootstrap = %+v, want the defaults %+v", c.Bootstrap, want)
	}
	if c.Postgres.Replication.Password != "rep-secret" || c.Postgres.Parameters["max_connections"] != "100" {
		t.Errorf("postgres = %+v", c.Postgres)
	}
	if c.Watchdog.SafetyMargin.D() != 5*time.Second || c.Fencing.Hooks[0].Command[2] != "{target_host}" {
		t.Errorf("watchdog = %+v, hooks = %+v", c.Watchdog, c.Fencing.Hooks)
	}
	if !reflect.DeepEqual(c.Callbacks.OnRoleChange, []string{"/usr/local/bin/move-vip"}) {
		t.Errorf("callbacks = %v", c.Callbacks.OnRoleChange)
	}

	c, err = config.Parse(dropSection(data, "postgres"), noEnv)
	if err != nil {
		t.Fatalf("mysql variant: %v", err)
	}
	if c.MySQL == nil || c.MySQL.Password != "secret" || c.MySQL.ConnectAddress != "127.0.0.1:3306" {
		t.Errorf("mysql = %+v", c.MySQL)
	}
}

func TestBareNumbersAndUnits(t *testing.T) {
	c := mustParse(t, head+pg+`bootstrap:
  ttl: 12
  loop_wait: 0.5
  retry_timeout: 2s
  maximum_lag_on_failover: 16kB
  primary_start_timeout: 0
`)
	b := c.Bootstrap
	if b.TTL.D() != 12*time.Second || b.LoopWait.D() != 500*time.Millisecond || b.RetryTimeout.D() != 2*time.Second {
		t.Errorf("durations = %v %v %v", b.TTL, b.LoopWait, b.RetryTimeout)
	}
	if b.MaximumLagOnFailover != 16<<10 || b.PrimaryStartTimeout != 0 {
		t.Errorf("lag = %d, primary_start_timeout = %v", b.MaximumLagOnFailover, b.PrimaryStartTimeout)
	}

	c = mustParse(t, head+pg+"bootstrap: {maximum_lag_on_failover: 1048576}\n")
	if c.Bootstrap.MaximumLagOnFailover != 1<<20 {
		t.Errorf("bytes = %d", c.Bootstrap.MaximumLagOnFailover)
	}
}

func TestScalarForms(t *testing.T) {
	c := mustParse(t, head+`postgres:
  data_dir: /d
  parameters: {hot_standby_feedback: on, max_connections: 100, random_page_cost: 1.1, log_line_prefix: '%m [%p] ', shared_preload_libraries: ""}
  superuser: {username: postgres, password: 012345}
tags: {nofailover: yes, nosync: True, rack: 7, enabled: false}
`)
	want := map[string]string{"hot_standby_feedback": "on", "max_connections": "100", "random_page_cost": "1.1", "log_line_prefix": "%m [%p] ", "shared_preload_libraries": ""}
	if !reflect.DeepEqual(c.Postgres.Parameters, want) {
		t.Errorf("parameters = %q, want %q", c.Postgres.Parameters, want)
	}
	if c.Postgres.Superuser.Password != "012345" {
		t.Errorf("password = %q; numbers must keep their text", c.Postgres.Superuser.Password)
	}
	if !c.Tags.NoFailover || !c.Tags.NoSync || c.Tags.Custom["rack"] != "7" || c.Tags.Custom["enabled"] != "false" {
		t.Errorf("tags = %+v", c.Tags)
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	c := mustParse(t, head+`postgres:
  data_dir: /d
  superuser: &creds {username: admin, password: pw}
  replication:
    <<: *creds
    username: replicator
fencing:
  hooks:
    - &hook {name: a, command: [/bin/fence-a], timeout: 5s}
    - <<: *hook
      name: b
`)
	if c.Postgres.Replication != (config.Credentials{Username: "replicator", Password: "pw"}) {
		t.Errorf("replication = %+v", c.Postgres.Replication)
	}
	if len(c.Fencing.Hooks) != 2 || c.Fencing.Hooks[1].Name != "b" || c.Fencing.Hooks[1].Timeout.D() != 5*time.Second {
		t.Errorf("hooks = %+v", c.Fencing.Hooks)
	}

	// A mapping that merges itself must terminate.
	c = mustParse(t, head+pg+"tags: &t {zone: a, <<: *t}\n")
	if c.Tags.Custom["zone"] != "a" {
		t.Errorf("tags = %+v", c.Tags)
	}
}

func TestNullMeansDefault(t *testing.T) {
	c := mustParse(t, head+pg+"namespace:\nbootstrap: {ttl: ~}\nmysql: null\nlog:\n")
	if c.Namespace != "/steward" || c.Bootstrap.TTL.D() != 10*time.Second || c.MySQL != nil || c.Log.Level != "info" {
		t.Errorf("nulls did not keep defaults: %q %v %v %q", c.Namespace, c.Bootstrap.TTL, c.MySQL, c.Log.Level)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yml"), noEnv)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error = %v, want fs.ErrNotExist", err)
	}
}

func TestValidateHandBuilt(t *testing.T) {
	c := mustParse(t, head+pg)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate of a parsed config: %v", err)
	}
	c.Bootstrap.TTL = config.Duration(3 * time.Second)
	c.Postgres.Parameters = map[string]string{"hot_standby": "off"}
	err := c.Validate()
	var errs *config.Errors
	if !errors.As(err, &errs) || len(*errs) != 2 {
		t.Fatalf("Validate = %v, want 2 errors", err)
	}
	if _, ok := errs.Lookup("postgres.parameters.hot_standby"); !ok {
		t.Errorf("no hot_standby error: %v", err)
	}

	var empty config.Config
	if err := empty.Validate(); err == nil {
		t.Errorf("zero Config validated")
	}
}

func TestMargin(t *testing.T) {
	tests := []struct {
		margin, ttl, want time.Duration
	}{
		{0, 10 * time.Second, 2 * time.Second},
		{0, 2 * time.Second, 500 * time.Millisecond},
		{0, 60 * time.Second, 5 * time.Second},
		{0, 25 * time.Second, 5 * time.Second},
		{0, 20 * time.Second, 4 * time.Second},
		{3 * time.Second, 10 * time.Second, 3 * time.Second},
	}
	for _, tt := range tests {
		w := config.Watchdog{SafetyMargin: config.Duration(tt.margin)}
		if got := w.Margin(tt.ttl); got != tt.want {
			t.Errorf("Margin(%v) with safety_margin %v = %v, want %v", tt.ttl, tt.margin, got, tt.want)
		}
	}
}

func TestValidateTiming(t *testing.T) {
	w := config.Watchdog{SafetyMargin: config.Duration(5 * time.Second)}
	d := config.DefaultDynamic()
	if err := w.ValidateTiming(d); err != nil {
		t.Errorf("5s margin with ttl 10s: %v", err)
	}
	d.TTL = config.Duration(6 * time.Second)
	err := w.ValidateTiming(d)
	if err == nil || !strings.Contains(err.Error(), "watchdog.safety_margin: 5s is too large: must be < ttl - loop_wait (5s)") {
		t.Errorf("5s margin with ttl 6s: %v", err)
	}
}

func TestErrorsFormatting(t *testing.T) {
	errs := config.Errors{{Path: "a.b", Msg: "bad"}, {Msg: "whole file"}}
	if got := (&errs).Error(); got != "a.b: bad\nwhole file" {
		t.Errorf("Error() = %q", got)
	}
	var err error = &errs
	var fe config.FieldError
	if !errors.As(err, &fe) || fe.Path != "a.b" {
		t.Errorf("errors.As FieldError = %+v", fe)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("whole file")) {
		t.Error("missing line")
	}
}

func TestRootNamespace(t *testing.T) {
	if c := mustParse(t, head+pg+"namespace: /\n"); c.Namespace != "/" {
		t.Errorf("namespace = %q", c.Namespace)
	}
	c := mustParse(t, head+pg+"namespace: /dc1/steward\n")
	if c.Namespace != "/dc1/steward" {
		t.Errorf("namespace = %q", c.Namespace)
	}
}

func TestParameterNamesAreCaseInsensitive(t *testing.T) {
	_, err := config.Parse([]byte(head+"postgres: {data_dir: /d, parameters: {work_mem: 4MB, WORK_MEM: 8MB}}\n"), noEnv)
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error = %v", err)
	}
	if fe, ok := errs.Lookup("postgres.parameters.work_mem"); !ok || !strings.Contains(fe.Msg, "WORK_MEM is also set") {
		t.Errorf("error = %v", err)
	}
}

func TestLongValuesAreShortened(t *testing.T) {
	long := strings.Repeat("x", 500)
	_, err := config.Parse([]byte(head+pg+"tags: {nofailover: "+long+"}\n"), noEnv)
	if err == nil || len(err.Error()) > 200 || !strings.Contains(err.Error(), `xxx..."`) {
		t.Errorf("error = %v", err)
	}
}

func TestValidateNil(t *testing.T) {
	var c *config.Config
	if err := c.Validate(); err == nil {
		t.Error("nil config validated")
	}
}
