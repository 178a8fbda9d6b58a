package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stewardha/steward/config"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecretPrecedence: environment variable > password_file > password.
func TestSecretPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "rep", "from-file\n")

	inline := head + "postgres: {data_dir: /d, replication: {password: inline}}\n"
	fromFile := head + "postgres: {data_dir: /d, replication: {password_file: " + file + "}}\n"
	envVar := map[string]string{"STEWARD_POSTGRES_REPLICATION_PASSWORD": "from-env"}

	tests := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{"inline only", inline, nil, "inline"},
		{"file only", fromFile, nil, "from-file"},
		{"env over inline", inline, envVar, "from-env"},
		{"env over file", fromFile, envVar, "from-env"},
		{"empty env is unset", fromFile, map[string]string{"STEWARD_POSTGRES_REPLICATION_PASSWORD": ""}, "from-file"},
		{"other variables ignored", inline, map[string]string{"STEWARD_POSTGRES_SUPERUSER_PASSWORD": "x"}, "inline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tt.file), env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Postgres.Replication.Password; got != tt.want {
				t.Errorf("password = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSecretEnvNames checks the variable name of every password key.
func TestSecretEnvNames(t *testing.T) {
	vars := map[string]string{
		"STEWARD_ETCD_PASSWORD":                 "etcd",
		"STEWARD_API_PASSWORD":                  "api",
		"STEWARD_POSTGRES_SUPERUSER_PASSWORD":   "pg-super",
		"STEWARD_POSTGRES_REPLICATION_PASSWORD": "pg-repl",
		"STEWARD_MYSQL_PASSWORD":                "my",
		"STEWARD_MYSQL_REPLICATION_PASSWORD":    "my-repl",
	}
	base := "cluster: main\nname: db1\netcd: {endpoints: [\"http://e:2379\"], username: root}\napi: {username: admin}\n"
	pgc, err := config.Parse([]byte(base+pg), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	myc, err := config.Parse([]byte(base+"mysql: {}\n"), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{
		"etcd": pgc.Etcd.Password, "api": pgc.API.Password,
		"pg-super": pgc.Postgres.Superuser.Password, "pg-repl": pgc.Postgres.Replication.Password,
		"my": myc.MySQL.Password, "my-repl": myc.MySQL.Replication.Password,
	}
	for want, value := range got {
		if value != want {
			t.Errorf("%s password = %q, want %q", want, value, want)
		}
	}
}

func TestPasswordFileTrimsNewlines(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "api", "s3cret \r\n\n")
	c := mustParse(t, head+pg+"api: {username: admin, password_file: "+file+"}\n")
	if c.API.Password != "s3cret " {
		t.Errorf("password = %q, want trailing newlines (only) trimmed", c.API.Password)
	}
	if c.API.PasswordFile != file {
		t.Errorf("password_file = %q", c.API.PasswordFile)
	}
}

func TestPasswordFileProblems(t *testing.T) {
	dir := t.TempDir()
	empty := writeFile(t, dir, "empty", "\n")
	tests := []struct{ name, file, msg string }{
		{"missing", filepath.Join(dir, "missing"), "no such file or directory"},
		{"empty", empty, "is empty"},
		{"directory", dir, "is a directory"},
		{"device", "/dev/null", "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(head+"mysql: {password_file: "+tt.file+"}\n"), noEnv)
			var errs *config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error = %v", err)
			}
			fe, ok := errs.Lookup("mysql.password_file")
			if !ok || !strings.Contains(fe.Msg, tt.msg) || !strings.Contains(fe.Msg, tt.file) {
				t.Errorf("error = %v, want mysql.password_file naming %s and %q", err, tt.file, tt.msg)
			}
		})
	}
}

// The environment variable wins, so an unreadable password_file is not read.
func TestEnvSkipsPasswordFile(t *testing.T) {
	file := head + "mysql: {password_file: /nonexistent/secret}\n"
	c, err := config.Parse([]byte(file), env(map[string]string{"STEWARD_MYSQL_PASSWORD": "e"}))
	if err != nil || c.MySQL.Password != "e" {
		t.Errorf("Parse = %v, %v", c, err)
	}
}

// Load resolves a relative password_file against the config file's
// directory.
func TestLoadRelativePasswordFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rep.txt", "rel-secret\n")
	path := writeFile(t, dir, "steward.yml", head+"postgres: {data_dir: /d, replication: {password_file: rep.txt}}\n")
	c, err := config.Load(path, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Postgres.Replication.Password != "rel-secret" || c.Path != path {
		t.Errorf("password = %q, path = %q", c.Postgres.Replication.Password, c.Path)
	}
}
