package config

// Config is one agent's configuration file (DESIGN.md "Interfaces users
// touch"), after defaults were applied and Validate passed.
//
// Keys are the yaml tags; the loader rejects keys that are not listed here.
// Keys marked "dynamic" live in the Dynamic struct: the bootstrap section of
// the file seeds the DCS `config` key once, after which `steward edit-config`
// (the DCS) is the source of truth for them.
type Config struct {
	Cluster   string `yaml:"cluster"`   // required; all members of one cluster share it
	Name      string `yaml:"name"`      // required; unique member name
	Namespace string `yaml:"namespace"` // default "/steward"

	Etcd      Etcd      `yaml:"etcd"`
	Bootstrap Dynamic   `yaml:"bootstrap"`
	API       API       `yaml:"api"`
	Postgres  *Postgres `yaml:"postgres"` // exactly one of postgres / mysql
	MySQL     *MySQL    `yaml:"mysql"`
	Fencing   Fencing   `yaml:"fencing"`
	Watchdog  Watchdog  `yaml:"watchdog"`
	Tags      Tags      `yaml:"tags"`
	Callbacks Callbacks `yaml:"callbacks"`
	Log       Log       `yaml:"log"`

	// OnShutdown says what SIGTERM does to a primary: "stop-database"
	// (release the leader key so that a replica takes over at once) or
	// "leave-running". Default "stop-database".
	OnShutdown string `yaml:"on_shutdown"`

	// Path is the file the configuration was read from ("" when parsed from
	// bytes). Not a yaml key.
	Path string `yaml:"-"`
}

// Etcd says how to reach the DCS.
type Etcd struct {
	Endpoints    []string `yaml:"endpoints"` // required; http(s)://host:port
	Username     string   `yaml:"username"`
	Password     string   `yaml:"password"`      // or password_file, or STEWARD_ETCD_PASSWORD
	PasswordFile string   `yaml:"password_file"` //
	CAFile       string   `yaml:"ca_file"`
	CertFile     string   `yaml:"cert_file"`
	KeyFile      string   `yaml:"key_file"`
	DialTimeout  Duration `yaml:"dial_timeout"` // default 2s
}

// Dynamic holds the cluster-wide settings. They are written to the DCS
// `config` key by the first member and changed there with compare-and-swap;
// every agent applies the DCS copy on its next loop. Stored in the DCS as JSON
// with the same key names.
type Dynamic struct {
	TTL                     Duration `yaml:"ttl" json:"ttl"`                                             // default 10s; whole seconds
	LoopWait                Duration `yaml:"loop_wait" json:"loop_wait"`                                 // default 1s
	RetryTimeout            Duration `yaml:"retry_timeout" json:"retry_timeout"`                         // default 3s
	MaximumLagOnFailover    Size     `yaml:"maximum_lag_on_failover" json:"maximum_lag_on_failover"`     // default 1MB
	SynchronousMode         string   `yaml:"synchronous_mode" json:"synchronous_mode"`                   // off|on|strict|quorum, default off
	SynchronousNodeCount    int      `yaml:"synchronous_node_count" json:"synchronous_node_count"`       // default 1
	PrimaryUnhealthyTimeout Duration `yaml:"primary_unhealthy_timeout" json:"primary_unhealthy_timeout"` // default 30s
	PrimaryStartTimeout     Duration `yaml:"primary_start_timeout" json:"primary_start_timeout"`         // default 30s
	FailsafeMode            bool     `yaml:"failsafe_mode" json:"failsafe_mode"`                         // default false
	Paused                  bool     `yaml:"paused" json:"paused"`                                       // maintenance mode
}

// API is the member's REST server.
type API struct {
	Listen         string   `yaml:"listen"`          // default 127.0.0.1:8008
	ConnectAddress string   `yaml:"connect_address"` // how others reach it; default listen (required when listen is a wildcard)
	Username       string   `yaml:"username"`
	Password       string   `yaml:"password"` // or password_file, or STEWARD_API_PASSWORD
	PasswordFile   string   `yaml:"password_file"`
	TLS            APITLS   `yaml:"tls"`
	Allowlist      []string `yaml:"allowlist"` // CIDRs or addresses allowed to make state-changing requests
}

// APITLS enables HTTPS on the REST API.
type APITLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	CAFile       string `yaml:"ca_file"`
	VerifyClient string `yaml:"verify_client"` // none|optional|required, default none
}

// Credentials is a database role.
type Credentials struct {
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// Postgres configures the PostgreSQL backend.
type Postgres struct {
	DataDir        string            `yaml:"data_dir"`        // required, absolute
	BinDir         string            `yaml:"bin_dir"`         // default /usr/lib/postgresql/15/bin
	Listen         string            `yaml:"listen"`          // default 127.0.0.1:5432
	ConnectAddress string            `yaml:"connect_address"` // default listen
	Superuser      Credentials       `yaml:"superuser"`       // default username postgres
	Replication    Credentials       `yaml:"replication"`     // default username replicator
	Parameters     map[string]string `yaml:"parameters"`      // extra postgresql.conf settings
	PgHba          []string          `yaml:"pg_hba"`          // pg_hba.conf lines
	UsePgRewind    bool              `yaml:"use_pg_rewind"`   // default true
	// RemoveDataDirectoryOnRewindFailure lets the agent wipe and re-clone a
	// member whose history diverged and could not be rewound. Default false:
	// the member stays down and says why.
	RemoveDataDirectoryOnRewindFailure bool `yaml:"remove_data_directory_on_rewind_failure"`
	// RunAs is the OS user PostgreSQL runs as when the agent itself runs as
	// root (PostgreSQL refuses root). Default "postgres". Ignored otherwise.
	RunAs string `yaml:"run_as"`
}

// MySQL configures the MySQL/MariaDB backend.
type MySQL struct {
	Address        string      `yaml:"address"`         // default 127.0.0.1:3306
	ConnectAddress string      `yaml:"connect_address"` // default address
	User           string      `yaml:"user"`            // default steward
	Password       string      `yaml:"password"`
	PasswordFile   string      `yaml:"password_file"`
	Replication    Credentials `yaml:"replication"` // default username repl
	StartCommand   []string    `yaml:"start_command"`
	StopCommand    []string    `yaml:"stop_command"`
	DataDir        string      `yaml:"data_dir"`
	CloneCommand   []string    `yaml:"clone_command"`
	// RecloneOnDivergence lets the agent re-clone a member whose history
	// has transactions the leader never had (errant: typically the last
	// writes of a former primary, discarded by the failover), discarding
	// them. Off, it stays out until `steward reinit`. MySQL cannot rewind,
	// so this is the MySQL side of postgres.remove_data_directory_on_rewind_failure.
	RecloneOnDivergence bool `yaml:"reclone_on_divergence"`
}

// Fencing configures STONITH.
type Fencing struct {
	Mode  string `yaml:"mode"` // off|best-effort|required, default off
	Hooks []Hook `yaml:"hooks"`
}

// Hook is one fencing command, run without a shell.
type Hook struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"` // argv; placeholders {target_name} {target_host} {target_api} {cluster}
	Timeout Duration `yaml:"timeout"` // default 30s
}

// Watchdog configures /dev/watchdog and the lease safety margin.
type Watchdog struct {
	Mode   string `yaml:"mode"`   // off|automatic|required, default off
	Device string `yaml:"device"` // default /dev/watchdog
	// SafetyMargin is subtracted from ttl both for the local lease deadline
	// (rule 1) and for the watchdog timeout. Zero means automatic:
	// ttl/5 clamped to [500ms, 5s].
	SafetyMargin Duration `yaml:"safety_margin"`
}

// Tags are per-member flags. Built-in tags are typed; any other key is a
// custom tag (string value) usable in `/replica?tag_<key>=<value>`.
type Tags struct {
	NoFailover       bool              `yaml:"nofailover"`
	NoLoadBalance    bool              `yaml:"noloadbalance"`
	NoSync           bool              `yaml:"nosync"`
	FailoverPriority int               `yaml:"failover_priority"` // default 1; 0 means never promote
	Custom           map[string]string `yaml:",inline"`
}

// Callbacks are notification commands (argv, no shell) run after an event.
// They never block the HA loop.
type Callbacks struct {
	OnRoleChange []string `yaml:"on_role_change"` // called as: argv... <action> <role> <cluster>
}

// Log configures the agent's structured log.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error, default info
	Format string `yaml:"format"` // text|json, default text
}
