package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stewardha/steward/config"
)

// head is the part of a valid file that most cases keep; pg completes it.
const (
	head = "cluster: main\nname: db1\netcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n"
	pg   = "postgres: {data_dir: /var/lib/steward/db1}\n"
)

// TestBadFiles checks, for each broken file, the exact key path of the error
// and a meaningful part of its message.
func TestBadFiles(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		path string // exact FieldError.Path
		msg  string // must appear in FieldError.Msg
	}{
		// Unknown keys.
		{"unknown top-level key", head + pg + "namspace: /x\n",
			"namspace", "unknown key; did you mean namespace?"},
		{"top-level key that belongs in a section", head + pg + "ttl: 10s\n",
			"ttl", "ttl belongs in the bootstrap section (bootstrap.ttl)"},
		{"unknown top-level key without suggestion", head + pg + "frobnicate: 1\n",
			"frobnicate", "unknown key; valid keys here: cluster, name, namespace"},
		{"nested unknown key", head + pg + "bootstrap: {loop_wiat: 1s}\n",
			"bootstrap.loop_wiat", "unknown key; did you mean loop_wait?"},
		{"unknown key by prefix", head + pg + "bootstrap: {synchronous: on}\n",
			"bootstrap.synchronous", "did you mean synchronous_mode or synchronous_node_count?"},
		{"unknown key in a list item", head + pg + "fencing: {hooks: [{name: ipmi, command: [/bin/true], timout: 5s}]}\n",
			"fencing.hooks[0].timout", "unknown key; did you mean timeout?"},
		{"unknown key two levels down", head + "postgres: {data_dir: /d, superuser: {usename: x}}\n",
			"postgres.superuser.usename", "did you mean username?"},
		{"typo'd tag", head + pg + "tags: {nofailvoer: true}\n",
			"tags.nofailvoer", "did you mean nofailover?"},
		{"tag in the wrong case", head + pg + "tags: {NoFailover: true}\n",
			"tags.NoFailover", "did you mean nofailover?"},
		{"tag near nosync", head + pg + "tags: {no_sync: true}\n",
			"tags.no_sync", "did you mean nosync?"},
		{"invalid custom tag name", head + pg + "tags: {my-zone: a}\n",
			"tags.my-zone", "not a valid custom tag name"},

		// Types.
		{"bad bool", head + pg + "tags: {nofailover: yes please}\n",
			"tags.nofailover", `expected true or false, found "yes please"`},
		{"bad duration", head + pg + "bootstrap: {ttl: ten}\n",
			"bootstrap.ttl", `"ten" is not a duration: `},
		{"bad size", head + pg + "bootstrap: {maximum_lag_on_failover: 1XB}\n",
			"bootstrap.maximum_lag_on_failover", `"1XB" is not a size`},
		{"bad integer", head + pg + "bootstrap: {synchronous_node_count: two}\n",
			"bootstrap.synchronous_node_count", `expected an integer, found "two"`},
		{"section given as a scalar", head + pg + "bootstrap: 10s\n",
			"bootstrap", "expected a mapping (key: value), found a string"},
		{"endpoints as a string", "cluster: main\nname: db1\netcd: {endpoints: http://127.0.0.1:2379}\n" + pg,
			"etcd.endpoints", "expected a list, found a string; write endpoints: [http://127.0.0.1:2379]"},
		{"command as a string", head + pg + "fencing: {hooks: [{name: ipmi, command: /usr/bin/fence --host x}]}\n",
			"fencing.hooks[0].command", "expected a list, found a string; write the command as a list of arguments, e.g. [/usr/bin/fence, --host, x]"},
		{"parameter value as a mapping", head + "postgres: {data_dir: /d, parameters: {work_mem: {a: 1}}}\n",
			"postgres.parameters.work_mem", "expected a single value (string, number or boolean), found a mapping"},
		{"list item null", head + pg + "api: {allowlist: [10.0.0.1, ~]}\n",
			"api.allowlist[1]", "expected a string, found null"},

		// Whole-file problems.
		{"empty file", "", "", "empty configuration"},
		{"comments only", "# nothing here\n", "", "empty configuration"},
		{"top level is a list", "- cluster: main\n", "", "must be a YAML mapping of keys"},
		{"top level is a scalar", "hello\n", "", "found a string"},
		{"multiple documents", head + pg + "---\n" + head, "", "multiple YAML documents (the second starts on line 5)"},
		{"yaml syntax error with line", head + pg + "bootstrap:\n  ttl: 10s\n loop_wait: 1s\n", "", "YAML syntax error on line 6: did not find expected key"},
		{"tab indentation", head + pg + "bootstrap:\n\tttl: 10s\n", "", "YAML syntax error on line 6"},
		{"duplicate key", head + pg + "bootstrap:\n  ttl: 10s\n  ttl: 20s\n",
			"bootstrap.ttl", "duplicate key: set on line 6 and again on line 7"},
		{"duplicate top-level key", head + pg + "name: db2\n",
			"name", "duplicate key: set on line 2 and again on line 5"},

		// Identity.
		{"missing cluster", "name: db1\netcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n" + pg,
			"cluster", "required"},
		{"bad member name", "cluster: main\nname: db 1\netcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n" + pg,
			"name", `"db 1" is not a valid name`},
		{"namespace without slash", head + pg + "namespace: steward\n",
			"namespace", `"steward" must start with /`},
		{"namespace with trailing slash", head + pg + "namespace: /steward/\n",
			"namespace", "must not end with /: write /steward"},
		{"namespace with a space", head + pg + "namespace: /my steward\n",
			"namespace", "must not contain spaces"},

		// etcd.
		{"empty endpoints", "cluster: main\nname: db1\netcd: {endpoints: []}\n" + pg,
			"etcd.endpoints", "required; list at least one etcd URL"},
		{"endpoint without scheme", "cluster: main\nname: db1\netcd: {endpoints: [\"127.0.0.1:2379\"]}\n" + pg,
			"etcd.endpoints[0]", `"127.0.0.1:2379" is not an etcd URL: expected http://host:port or https://host:port`},
		{"endpoint without port", "cluster: main\nname: db1\netcd: {endpoints: [\"http://10.0.0.1:2379\", \"http://etcd2\"]}\n" + pg,
			"etcd.endpoints[1]", `"http://etcd2" has no port: expected e.g. http://etcd2:2379`},
		{"endpoint with a path", "cluster: main\nname: db1\netcd: {endpoints: [\"http://etcd:2379/v3\"]}\n" + pg,
			"etcd.endpoints[0]", "without user, path or query"},
		{"http endpoint with TLS files", "cluster: main\nname: db1\netcd: {endpoints: [\"http://etcd:2379\"], ca_file: /ca.pem}\n" + pg,
			"etcd.endpoints[0]", "use https://etcd:2379"},
		{"etcd cert without key", "cluster: main\nname: db1\netcd: {endpoints: [\"https://etcd:2379\"], cert_file: /c.pem}\n" + pg,
			"etcd.key_file", "missing; cert_file is set, so key_file is required too"},
		{"etcd dial_timeout zero", "cluster: main\nname: db1\netcd: {endpoints: [\"http://etcd:2379\"], dial_timeout: 0}\n" + pg,
			"etcd.dial_timeout", "0s is too short"},

		// bootstrap.
		{"bare-number ttl too short", head + pg + "bootstrap: {ttl: 2}\n",
			"bootstrap.ttl", "2s is too short: ttl must be >= loop_wait + 2*retry_timeout (7s)"},
		{"ttl below the floor", head + pg + "bootstrap: {ttl: 1s, loop_wait: 100ms, retry_timeout: 500ms}\n",
			"bootstrap.ttl", "1s is too short: expected at least 2s"},
		{"ttl not whole seconds", head + pg + "bootstrap: {ttl: 10.5s}\n",
			"bootstrap.ttl", "10.5s is not a whole number of seconds (etcd leases have 1s granularity): use 10s or 11s"},
		{"loop_wait too short", head + pg + "bootstrap: {loop_wait: 50ms}\n",
			"bootstrap.loop_wait", "50ms is too short: expected at least 100ms"},
		{"retry_timeout too short", head + pg + "bootstrap: {retry_timeout: 100ms}\n",
			"bootstrap.retry_timeout", "100ms is too short: expected at least 500ms"},
		{"negative maximum lag", head + pg + "bootstrap: {maximum_lag_on_failover: -1}\n",
			"bootstrap.maximum_lag_on_failover", "-1 is negative"},
		{"bad synchronous_mode", head + pg + "bootstrap: {synchronous_mode: true}\n",
			"bootstrap.synchronous_mode", `expected off, on, strict or quorum, found "true" (Patroni's true is on, false is off)`},
		{"synchronous_node_count zero", head + pg + "bootstrap: {synchronous_node_count: 0}\n",
			"bootstrap.synchronous_node_count", "0 is too small: expected at least 1"},
		{"primary_unhealthy_timeout below loop_wait", head + pg + "bootstrap: {primary_unhealthy_timeout: 500ms}\n",
			"bootstrap.primary_unhealthy_timeout", "500ms is too short: must be >= loop_wait (1s)"},
		{"negative primary_start_timeout", head + pg + "bootstrap: {primary_start_timeout: -1s}\n",
			"bootstrap.primary_start_timeout", "-1s is negative"},

		// api.
		{"wildcard api listen without connect_address", head + pg + "api: {listen: 0.0.0.0:8008}\n",
			"api.connect_address", "required because api.listen (0.0.0.0:8008) listens on all interfaces"},
		{"api connect_address is a wildcard", head + pg + "api: {connect_address: \"[::]:8008\"}\n",
			"api.connect_address", "is a wildcard address"},
		{"api listen bad port", head + pg + "api: {listen: \"127.0.0.1:99999\"}\n",
			"api.listen", `port "99999" is not a number from 1 to 65535`},
		{"api listen without port", head + pg + "api: {listen: 127.0.0.1}\n",
			"api.listen", `"127.0.0.1" is not host:port`},
		{"bad verify_client", head + pg + "api: {tls: {verify_client: always}}\n",
			"api.tls.verify_client", `expected none, optional or required, found "always"`},
		{"verify_client required without ca", head + pg + "api: {tls: {cert_file: /c, key_file: /k, verify_client: required}}\n",
			"api.tls.ca_file", "required when verify_client is required"},
		{"verify_client optional without cert", head + pg + "api: {tls: {ca_file: /ca, verify_client: optional}}\n",
			"api.tls.cert_file", "client certificates are only checked over HTTPS"},
		{"api cert without key", head + pg + "api: {tls: {cert_file: /etc/steward/api.pem}}\n",
			"api.tls.key_file", "missing; cert_file is set, so key_file is required too"},
		{"api key without cert", head + pg + "api: {tls: {key_file: /etc/steward/api.key}}\n",
			"api.tls.cert_file", "missing; key_file is set, so cert_file is required too"},
		{"bad allowlist entry", head + pg + "api: {allowlist: [10.0.0.0/24, 10.0.0.0/33]}\n",
			"api.allowlist[1]", `"10.0.0.0/33" is not an IP address or CIDR`},
		{"api username without password", head + pg + "api: {username: admin}\n",
			"api.password", "missing; api.username is set, so set password, password_file or STEWARD_API_PASSWORD"},

		// Database sections.
		{"both postgres and mysql", head + pg + "mysql: {address: 127.0.0.1:3306}\n",
			"postgres, mysql", "both are set; a member manages exactly one database"},
		{"neither postgres nor mysql", head,
			"postgres", "missing; set exactly one of postgres or mysql"},
		{"relative data_dir", head + "postgres: {data_dir: data/db1}\n",
			"postgres.data_dir", `"data/db1" is not an absolute path`},
		{"missing data_dir", head + "postgres: {listen: 127.0.0.1:5433}\n",
			"postgres.data_dir", "required; expected an absolute path"},
		{"relative bin_dir", head + "postgres: {data_dir: /d, bin_dir: bin}\n",
			"postgres.bin_dir", "is not an absolute path"},
		{"managed parameter port", head + "postgres: {data_dir: /d, parameters: {port: 5433}}\n",
			"postgres.parameters.port", "managed by steward; set postgres.listen instead"},
		{"managed parameter in capitals", head + "postgres: {data_dir: /d, parameters: {Hba_File: /x}}\n",
			"postgres.parameters.Hba_File", "managed by steward; set postgres.pg_hba instead"},
		{"managed parameter synchronous_standby_names", head + "postgres: {data_dir: /d, parameters: {synchronous_standby_names: '*'}}\n",
			"postgres.parameters.synchronous_standby_names", "managed by steward; set bootstrap.synchronous_mode"},
		{"parameter value with a line break", head + "postgres: {data_dir: /d, parameters: {work_mem: \"4MB\\nport = 1\"}}\n",
			"postgres.parameters.work_mem", "single-line"},
		{"same superuser and replication user", head + "postgres: {data_dir: /d, replication: {username: postgres}}\n",
			"postgres.replication.username", `"postgres" is also the superuser`},
		{"empty pg_hba line", head + "postgres: {data_dir: /d, pg_hba: [\"local all all peer\", \"  \"]}\n",
			"postgres.pg_hba[1]", "empty line"},
		{"wildcard postgres listen", head + "postgres: {data_dir: /d, listen: \"0.0.0.0:5432\"}\n",
			"postgres.connect_address", "required because postgres.listen (0.0.0.0:5432) listens on all interfaces"},
		{"empty run_as", head + "postgres: {data_dir: /d, run_as: ''}\n",
			"postgres.run_as", "required"},
		{"mysql empty program", head + "mysql: {start_command: ['', --defaults-file=/etc/my.cnf]}\n",
			"mysql.start_command[0]", "empty program name"},
		{"mysql bad address", head + "mysql: {address: localhost}\n",
			"mysql.address", `"localhost" is not host:port`},

		// Fencing.
		{"fencing required without hooks", head + pg + "fencing: {mode: required}\n",
			"fencing.hooks", "required when fencing.mode is required"},
		{"bad fencing mode", head + pg + "fencing: {mode: on}\n",
			"fencing.mode", `expected off, best-effort or required, found "on"`},
		{"unknown placeholder", head + pg + "fencing: {hooks: [{name: ipmi, command: [/bin/fence, --host, \"{target_ip}\"]}]}\n",
			"fencing.hooks[0].command[2]", "unknown placeholder {target_ip} in fencing hook 0"},
		{"duplicate hook name", head + pg + "fencing: {hooks: [{name: a, command: [/bin/a]}, {name: a, command: [/bin/b]}]}\n",
			"fencing.hooks[1].name", `"a" is already used by fencing.hooks[0]`},
		{"hook without name", head + pg + "fencing: {hooks: [{command: [/bin/a]}]}\n",
			"fencing.hooks[0].name", "required"},
		{"hook without command", head + pg + "fencing: {hooks: [{name: a}]}\n",
			"fencing.hooks[0].command", "required; expected the command as a list of arguments"},
		{"hook relative program", head + pg + "fencing: {hooks: [{name: a, command: [bin/fence]}]}\n",
			"fencing.hooks[0].command[0]", `"bin/fence" is a relative path`},
		{"hook command in one string", head + pg + "fencing: {hooks: [{name: a, command: [\"/bin/fence --host x\"]}]}\n",
			"fencing.hooks[0].command[0]", "runs without a shell"},
		{"hook timeout zero", head + pg + "fencing: {hooks: [{name: a, command: [/bin/a], timeout: 0s}]}\n",
			"fencing.hooks[0].timeout", "0s is too short"},

		// Watchdog.
		{"watchdog margin too large", head + pg + "watchdog: {safety_margin: 9s}\n",
			"watchdog.safety_margin", "9s is too large: must be < ttl - loop_wait (9s) so that a lease renewal fits"},
		{"watchdog automatic margin too large", head + pg + "bootstrap: {ttl: 20s, loop_wait: 18s, retry_timeout: 1s, primary_unhealthy_timeout: 30s}\n",
			"watchdog.safety_margin", "the automatic margin 4s"},
		{"negative watchdog margin", head + pg + "watchdog: {safety_margin: -1s}\n",
			"watchdog.safety_margin", "-1s is negative"},
		{"bad watchdog mode", head + pg + "watchdog: {mode: on}\n",
			"watchdog.mode", `expected off, automatic or required, found "on"`},

		// Tags, callbacks, log, shutdown.
		{"negative failover_priority", head + pg + "tags: {failover_priority: -1}\n",
			"tags.failover_priority", "-1 is negative"},
		{"empty callback program", head + pg + "callbacks: {on_role_change: [' ']}\n",
			"callbacks.on_role_change[0]", "empty program name"},
		{"bad log level", head + pg + "log: {level: verbose}\n",
			"log.level", `expected debug, info, warn or error, found "verbose"`},
		{"bad log format", head + pg + "log: {format: xml}\n",
			"log.format", `expected text or json, found "xml"`},
		{"bad on_shutdown", head + pg + "on_shutdown: stop\n",
			"on_shutdown", `expected stop-database or leave-running, found "stop"`},

		// Secrets.
		{"password and password_file", head + pg + "api: {username: u, password: p, password_file: /run/secrets/api}\n",
			"api.password, api.password_file", "both are set; keep one of them (or set STEWARD_API_PASSWORD)"},
		{"unreadable password_file", head + "postgres: {data_dir: /d, replication: {password_file: /nonexistent/steward-test/rep}}\n",
			"postgres.replication.password_file", "cannot read /nonexistent/steward-test/rep: no such file or directory"},
		{"password_file is a directory", head + "postgres: {data_dir: /d, superuser: {password_file: /}}\n",
			"postgres.superuser.password_file", "cannot read /: it is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatalf("Parse succeeded, want an error at %q; got %+v", tt.path, c)
			}
			if c != nil {
				t.Errorf("Parse returned a config along with the error")
			}
			var errs *config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want *config.Errors: %v", err, err)
			}
			fe, ok := errs.Lookup(tt.path)
			if !ok {
				t.Fatalf("no error at path %q; got:\n%v", tt.path, err)
			}
			if !strings.Contains(fe.Msg, tt.msg) {
				t.Errorf("error at %q = %q, want it to contain %q", tt.path, fe.Msg, tt.msg)
			}
			if !strings.Contains(err.Error(), fe.Error()) {
				t.Errorf("Error() does not contain %q:\n%s", fe.Error(), err)
			}
		})
	}
}

// TestExactMessages pins the wording of the messages the design quotes.
func TestExactMessages(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{head + pg + "bootstrap: {ttl: 2s}\n",
			"bootstrap.ttl: 2s is too short: ttl must be >= loop_wait + 2*retry_timeout (7s)"},
		{head + pg + "bootstrap: {loop_wiat: 1s}\n",
			"bootstrap.loop_wiat: unknown key; did you mean loop_wait?"},
		{head + pg + "tags: {nofailover: yes please}\n",
			`tags.nofailover: expected true or false, found "yes please"`},
		{head + pg + "mysql: {}\n",
			"postgres, mysql: both are set; a member manages exactly one database"},
		{head,
			"postgres: missing; set exactly one of postgres or mysql"},
		{head + "postgres: {data_dir: /d, parameters: {port: 5433}}\n",
			"postgres.parameters.port: managed by steward; set postgres.listen instead"},
	}
	for _, tt := range tests {
		_, err := config.Parse([]byte(tt.yaml), noEnv)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q) error =\n%v\nwant\n%s", tt.yaml, err, tt.want)
		}
	}
}

// TestAllErrorsCollected checks that one pass reports every problem, in
// file order, and that a value that failed to decode is not reported again
// by validation.
func TestAllErrorsCollected(t *testing.T) {
	const file = `cluster: main
name: db1
etcd: {endpoints: [http://127.0.0.1:2379], dial_timeout: fast}
bootstrap: {ttl: 2s, loop_wiat: 1s}
postgres: {data_dir: relative, parameters: {port: 1}}
mysql: {}
log: {level: loud}
`
	_, err := config.Parse([]byte(file), noEnv)
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want *config.Errors: %v", err, err)
	}
	want := []string{
		"etcd.dial_timeout",
		"bootstrap.loop_wiat",
		"bootstrap.ttl",
		"postgres, mysql",
		"postgres.data_dir",
		"postgres.parameters.port",
		"log.level",
	}
	var got []string
	for _, fe := range *errs {
		got = append(got, fe.Path)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("error paths =\n%q\nwant\n%q\nerrors:\n%v", got, want, err)
	}

	var fe config.FieldError
	if !errors.As(err, &fe) || fe.Path != "etcd.dial_timeout" {
		t.Errorf("errors.As(FieldError) = %+v, want the first error", fe)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(want) {
		t.Errorf("Error() has %d lines, want %d:\n%s", n, len(want), err)
	}
}

// TestNoFollowUpErrors: one mistake gives one error, not a cascade.
func TestNoFollowUpErrors(t *testing.T) {
	for _, file := range []string{
		head + pg + "api: {listen: \"127.0.0.1:99999\"}\n",
		head + "postgres: {data_dir: {a: 1}}\n",
		head + pg + "bootstrap: {ttl: ten}\n",
		head + pg + "fencing: {mode: required, hooks: [{name: a, command: /bin/a}]}\n",
	} {
		_, err := config.Parse([]byte(file), noEnv)
		var errs *config.Errors
		if !errors.As(err, &errs) || len(*errs) != 1 {
			t.Errorf("Parse(%q) =\n%v\nwant exactly one error", file, err)
		}
	}
}

// TestFollowUpErrorsKept: problems that leave a value in place (a duplicate
// key) do not hide what is wrong with that value.
func TestFollowUpErrorsKept(t *testing.T) {
	_, err := config.Parse([]byte(head+pg+"bootstrap:\n  ttl: 2s\n  ttl: 10s\n"), noEnv)
	var errs *config.Errors
	if !errors.As(err, &errs) || len(*errs) != 2 {
		t.Fatalf("error =\n%v\nwant the duplicate and the ttl rule", err)
	}
	if fe := (*errs)[1]; fe.Path != "bootstrap.ttl" || !strings.Contains(fe.Msg, "2s is too short") {
		t.Errorf("second error = %v", fe)
	}

	// An unreadable password_file is one error, not also "password missing".
	_, err = config.Parse([]byte(head+pg+"api: {username: u, password_file: /nonexistent/x}\n"), noEnv)
	if !errors.As(err, &errs) || len(*errs) != 1 || (*errs)[0].Path != "api.password_file" {
		t.Errorf("error =\n%v\nwant only api.password_file", err)
	}
}
