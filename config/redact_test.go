package config_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/stewardha/steward/config"
)

func TestRedacted(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yml")
	if err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.Replace(string(data), "  dial_timeout: 2s\n", "  dial_timeout: 2s\n  username: root\n", 1))
	c, err := config.Parse(data, env(map[string]string{"STEWARD_ETCD_PASSWORD": "etcd-secret"}))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redacted()

	for name, got := range map[string]string{
		"etcd": r.Etcd.Password, "api": r.API.Password,
		"superuser": r.Postgres.Superuser.Password, "replication": r.Postgres.Replication.Password,
	} {
		if got != config.Masked {
			t.Errorf("%s password = %q, want %q", name, got, config.Masked)
		}
	}
	if c.API.Password != "api-secret" || c.Etcd.Password != "etcd-secret" {
		t.Error("Redacted changed the original")
	}

	// A deep copy: changing the copy leaves the original alone.
	r.Postgres.Parameters["max_connections"] = "1"
	r.Etcd.Endpoints[0] = "http://changed:1"
	r.Fencing.Hooks[0].Command[0] = "/changed"
	r.Tags.Custom["zone"] = "changed"
	if c.Postgres.Parameters["max_connections"] != "200" || c.Etcd.Endpoints[0] == "http://changed:1" ||
		c.Fencing.Hooks[0].Command[0] == "/changed" || c.Tags.Custom["zone"] == "changed" {
		t.Error("Redacted shares memory with the original")
	}

	out, err := yaml.Marshal(c.Redacted())
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"etcd-secret", "api-secret", "super-secret", "rep-secret"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("redacted output contains %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"ttl: 10s", "maximum_lag_on_failover: 1MB", "timeout: 15s", "zone: eu-west-1a"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("redacted output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "path:") || strings.Contains(string(out), "testdata") {
		t.Errorf("redacted output contains Path:\n%s", out)
	}

	// The printed file loads again and means the same thing.
	back, err := config.Parse(out, noEnv)
	if err != nil {
		t.Fatalf("redacted output does not load:\n%v\n%s", err, out)
	}
	want := c.Redacted()
	want.Path = ""
	if !reflect.DeepEqual(back, want) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", back, want)
	}
}

// With password_file, the redacted output names the file instead of
// masking, so that it loads again.
func TestRedactedPasswordFile(t *testing.T) {
	file := writeFile(t, t.TempDir(), "pw", "hunter2\n")
	c := mustParse(t, head+"mysql: {password_file: "+file+"}\n")
	r := c.Redacted()
	if r.MySQL.Password != "" || r.MySQL.PasswordFile != file {
		t.Errorf("redacted mysql = %+v", r.MySQL)
	}
	out, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(out, noEnv)
	if err != nil {
		t.Fatalf("does not load:\n%v\n%s", err, out)
	}
	if back.MySQL.Password != "hunter2" {
		t.Errorf("reloaded password = %q", back.MySQL.Password)
	}
	if strings.Contains(string(out), "hunter2") {
		t.Errorf("output contains the secret:\n%s", out)
	}
}

func TestRedactedMySQLRoundTrip(t *testing.T) {
	data, err := os.ReadFile("testdata/design-example.yml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(dropSection(data, "postgres"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	c.MySQL.StartCommand = []string{"/usr/bin/systemctl", "start", "mariadb"}
	out, err := yaml.Marshal(c.Redacted())
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(out, noEnv)
	if err != nil {
		t.Fatalf("does not load:\n%v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, c.Redacted()) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", back, c.Redacted())
	}
	if (*config.Config)(nil).Redacted() != nil {
		t.Error("nil.Redacted() != nil")
	}
}
