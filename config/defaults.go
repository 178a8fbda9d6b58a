package config

import (
	"net"
	"time"
)

// Defaults. Every one of them has a test in defaults_test.go.
const (
	defaultNamespace        = "/steward"
	defaultEtcdDialTimeout  = 2 * time.Second
	defaultAPIListen        = "127.0.0.1:8008"
	defaultPostgresBinDir   = "/usr/lib/postgresql/15/bin"
	defaultPostgresListen   = "127.0.0.1:5432"
	defaultMySQLAddress     = "127.0.0.1:3306"
	defaultHookTimeout      = 30 * time.Second
	defaultWatchdogDevice   = "/dev/watchdog"
	defaultFailoverPriority = 1
)

// DefaultDynamic returns the cluster-wide settings used for every key that
// neither the file's bootstrap section nor the DCS copy sets.
func DefaultDynamic() Dynamic {
	return Dynamic{
		TTL:                     Duration(10 * time.Second),
		LoopWait:                Duration(time.Second),
		RetryTimeout:            Duration(3 * time.Second),
		MaximumLagOnFailover:    Size(1 << 20),
		SynchronousMode:         "off",
		SynchronousNodeCount:    1,
		PrimaryUnhealthyTimeout: Duration(30 * time.Second),
		PrimaryStartTimeout:     Duration(30 * time.Second),
	}
}

// defaultConfig is a Config with every default set and nothing else.
func defaultConfig() Config {
	return Config{
		Namespace: defaultNamespace,
		Etcd:      Etcd{DialTimeout: Duration(defaultEtcdDialTimeout)},
		Bootstrap: DefaultDynamic(),
		API: API{
			Listen: defaultAPIListen,
			TLS:    APITLS{VerifyClient: "none"},
		},
		Fencing:    Fencing{Mode: "off"},
		Watchdog:   Watchdog{Mode: "off", Device: defaultWatchdogDevice},
		Tags:       Tags{FailoverPriority: defaultFailoverPriority},
		Log:        Log{Level: "info", Format: "text"},
		OnShutdown: "stop-database",
	}
}

func (p *Postgres) setDefaults() {
	*p = Postgres{
		BinDir:      defaultPostgresBinDir,
		Listen:      defaultPostgresListen,
		Superuser:   Credentials{Username: "postgres"},
		Replication: Credentials{Username: "replicator"},
		UsePgRewind: true,
		RunAs:       "postgres",
	}
}

func (m *MySQL) setDefaults() {
	*m = MySQL{
		Address:     defaultMySQLAddress,
		User:        "steward",
		Replication: Credentials{Username: "repl"},
	}
}

func (h *Hook) setDefaults() {
	*h = Hook{Timeout: Duration(defaultHookTimeout)}
}

// derive fills the defaults that depend on other keys: a connect address
// defaults to the listen address unless that is a wildcard.
func (c *Config) derive() {
	deriveConnect(&c.API.ConnectAddress, c.API.Listen)
	if c.Postgres != nil {
		deriveConnect(&c.Postgres.ConnectAddress, c.Postgres.Listen)
	}
	if c.MySQL != nil {
		deriveConnect(&c.MySQL.ConnectAddress, c.MySQL.Address)
	}
}

func deriveConnect(connect *string, listen string) {
	if *connect != "" {
		return
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil || isWildcard(host) || checkPort(port) != "" {
		return // Validate explains what is wrong
	}
	*connect = listen
}

// isWildcard reports whether a listen host means "all interfaces".
func isWildcard(host string) bool {
	switch host {
	case "", "0.0.0.0", "::", "[::]", "*":
		return true
	}
	return false
}
