package config_test

import (
	"testing"
	"time"

	"github.com/stewardha/steward/config"
)

// TestDefaults has one case per default: a file that leaves the key out
// gets the documented value.
func TestDefaults(t *testing.T) {
	pgFile := mustParse(t, head+pg+"fencing: {hooks: [{name: ipmi, command: [/bin/fence]}]}\n")
	myFile := mustParse(t, head+"mysql: {}\n")

	tests := []struct {
		name string
		got  any
		want any
	}{
		{"namespace", pgFile.Namespace, "/steward"},
		{"etcd.dial_timeout", pgFile.Etcd.DialTimeout.D(), 2 * time.Second},
		{"bootstrap.ttl", pgFile.Bootstrap.TTL.D(), 10 * time.Second},
		{"bootstrap.loop_wait", pgFile.Bootstrap.LoopWait.D(), time.Second},
		{"bootstrap.retry_timeout", pgFile.Bootstrap.RetryTimeout.D(), 3 * time.Second},
		{"bootstrap.maximum_lag_on_failover", pgFile.Bootstrap.MaximumLagOnFailover, config.Size(1 << 20)},
		{"bootstrap.synchronous_mode", pgFile.Bootstrap.SynchronousMode, "off"},
		{"bootstrap.synchronous_node_count", pgFile.Bootstrap.SynchronousNodeCount, 1},
		{"bootstrap.primary_unhealthy_timeout", pgFile.Bootstrap.PrimaryUnhealthyTimeout.D(), 30 * time.Second},
		{"bootstrap.primary_start_timeout", pgFile.Bootstrap.PrimaryStartTimeout.D(), 30 * time.Second},
		{"bootstrap.failsafe_mode", pgFile.Bootstrap.FailsafeMode, false},
		{"bootstrap.paused", pgFile.Bootstrap.Paused, false},
		{"api.listen", pgFile.API.Listen, "127.0.0.1:8008"},
		{"api.connect_address", pgFile.API.ConnectAddress, "127.0.0.1:8008"},
		{"api.tls.verify_client", pgFile.API.TLS.VerifyClient, "none"},
		{"postgres.bin_dir", pgFile.Postgres.BinDir, "/usr/lib/postgresql/15/bin"},
		{"postgres.listen", pgFile.Postgres.Listen, "127.0.0.1:5432"},
		{"postgres.connect_address", pgFile.Postgres.ConnectAddress, "127.0.0.1:5432"},
		{"postgres.superuser.username", pgFile.Postgres.Superuser.Username, "postgres"},
		{"postgres.replication.username", pgFile.Postgres.Replication.Username, "replicator"},
		{"postgres.use_pg_rewind", pgFile.Postgres.UsePgRewind, true},
		{"postgres.remove_data_directory_on_rewind_failure", pgFile.Postgres.RemoveDataDirectoryOnRewindFailure, false},
		{"postgres.run_as", pgFile.Postgres.RunAs, "postgres"},
		{"mysql.address", myFile.MySQL.Address, "127.0.0.1:3306"},
		{"mysql.connect_address", myFile.MySQL.ConnectAddress, "127.0.0.1:3306"},
		{"mysql.user", myFile.MySQL.User, "steward"},
		{"mysql.replication.username", myFile.MySQL.Replication.Username, "repl"},
		{"fencing.mode", pgFile.Fencing.Mode, "off"},
		{"fencing.hooks[].timeout", pgFile.Fencing.Hooks[0].Timeout.D(), 30 * time.Second},
		{"watchdog.mode", pgFile.Watchdog.Mode, "off"},
		{"watchdog.device", pgFile.Watchdog.Device, "/dev/watchdog"},
		{"watchdog.safety_margin", pgFile.Watchdog.SafetyMargin.D(), time.Duration(0)},
		{"tags.failover_priority", pgFile.Tags.FailoverPriority, 1},
		{"tags.nofailover", pgFile.Tags.NoFailover, false},
		{"log.level", pgFile.Log.Level, "info"},
		{"log.format", pgFile.Log.Format, "text"},
		{"on_shutdown", pgFile.OnShutdown, "stop-database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("%s = %v (%T), want %v (%T)", tt.name, tt.got, tt.got, tt.want, tt.want)
			}
		})
	}
}

func TestDefaultDynamicIsTheBootstrapDefault(t *testing.T) {
	d := config.DefaultDynamic()
	if c := mustParse(t, head+pg); c.Bootstrap != d {
		t.Errorf("bootstrap = %+v, want DefaultDynamic() %+v", c.Bootstrap, d)
	}
	if err := d.Validate("config"); err != nil {
		t.Errorf("DefaultDynamic does not validate: %v", err)
	}
}

// A bool whose default is true: absent means true, an explicit false stays
// false.
func TestUsePgRewindExplicitFalse(t *testing.T) {
	c := mustParse(t, head+"postgres: {data_dir: /d, use_pg_rewind: false}\n")
	if c.Postgres.UsePgRewind {
		t.Error("use_pg_rewind: false was overridden by the default")
	}
}

// An explicit value that equals the zero value is kept, not replaced by the
// default.
func TestExplicitZeroIsNotDefaulted(t *testing.T) {
	c := mustParse(t, head+pg+"tags: {failover_priority: 0}\nbootstrap: {primary_start_timeout: 0s, maximum_lag_on_failover: 0}\n")
	if c.Tags.FailoverPriority != 0 || c.Bootstrap.PrimaryStartTimeout != 0 || c.Bootstrap.MaximumLagOnFailover != 0 {
		t.Errorf("explicit zeros = %d %v %v", c.Tags.FailoverPriority, c.Bootstrap.PrimaryStartTimeout, c.Bootstrap.MaximumLagOnFailover)
	}
}

func TestConnectAddressFollowsListen(t *testing.T) {
	tests := []struct {
		name, file string
		api, db    string
	}{
		{"specific listen", head + "api: {listen: 10.0.0.5:9000}\npostgres: {data_dir: /d, listen: 10.0.0.5:5433}\n", "10.0.0.5:9000", "10.0.0.5:5433"},
		{"explicit connect", head + "api: {listen: 0.0.0.0:8008, connect_address: db1.example.com:8008}\npostgres: {data_dir: /d, listen: \"[::]:5432\", connect_address: \"[fd00::1]:5432\"}\n", "db1.example.com:8008", "[fd00::1]:5432"},
		{"mysql address", head + "mysql: {address: 10.0.0.7:3307}\n", "127.0.0.1:8008", "10.0.0.7:3307"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.file)
			db := ""
			if c.Postgres != nil {
				db = c.Postgres.ConnectAddress
			} else {
				db = c.MySQL.ConnectAddress
			}
			if c.API.ConnectAddress != tt.api || db != tt.db {
				t.Errorf("connect addresses = %q, %q; want %q, %q", c.API.ConnectAddress, db, tt.api, tt.db)
			}
		})
	}
}
