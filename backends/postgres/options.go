package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stewardha/steward/backends"
)

// Credentials are a PostgreSQL role name and its password.
type Credentials struct {
	Username string
	Password string
}

// Options configure a Backend. The names in error messages are the keys of
// steward's configuration file (postgres.data_dir, ...).
type Options struct {
	// Member is this member's name (the configuration's "name"). It is the
	// application_name of this server's replication connection and the
	// source of its replication slot name (SlotName).
	Member string
	// DataDir is the PostgreSQL data directory (absolute path).
	DataDir string
	// BinDir holds the PostgreSQL programs (pg_ctl, initdb, ...).
	BinDir string
	// Listen is host:port the server listens on (listen_addresses, port).
	// steward's own connections go there (127.0.0.1 for a wildcard host).
	Listen string
	// ConnectAddress is host:port other members use to reach this server.
	// Default: Listen.
	ConnectAddress string
	// Superuser is the role steward connects as (initdb's -U). Default
	// username: postgres.
	Superuser Credentials
	// Replication is the role replicas stream as. Default username:
	// replicator.
	Replication Credentials
	// Parameters are extra postgresql.conf settings; they override
	// steward's defaults.
	Parameters map[string]string
	// PgHba are the lines of pg_hba.conf. Default: scram-sha-256 from
	// 127.0.0.1 for all databases and for replication.
	PgHba []string
	// UsePgRewind allows Rewind (postgres.use_pg_rewind).
	UsePgRewind bool
	// RunAs is the OS user PostgreSQL's programs run as when this process
	// runs as root (PostgreSQL refuses root). Default "postgres". Ignored
	// when not root: the programs then run as this process's user.
	RunAs string
	// Logger receives one Info line per action and Debug lines for routine
	// queries. Default: slog.Default().
	Logger *slog.Logger
	// QueryTimeout bounds each routine query and connection attempt (on top
	// of the caller's context). Default 3s.
	QueryTimeout time.Duration
}

// DefaultPgHba is the pg_hba.conf written when Options.PgHba is empty.
var DefaultPgHba = []string{
	"host all all 127.0.0.1/32 scram-sha-256",
	"host replication all 127.0.0.1/32 scram-sha-256",
}

// programs every backend needs in BinDir.
var requiredPrograms = []string{"pg_ctl", "postgres", "initdb", "pg_controldata", "pg_basebackup", "pg_waldump"}

// settings derived from other options; Parameters must not set them.
var reservedParameters = map[string]string{
	"listen_addresses":  "postgres.listen",
	"port":              "postgres.listen",
	"primary_conninfo":  "the upstream the agent follows",
	"primary_slot_name": "the member name (name)",
	"data_directory":    "postgres.data_dir",
	"config_file":       "postgres.data_dir",
	// The leader manages it (bootstrap.synchronous_mode, DESIGN rule 6).
	"synchronous_standby_names": "synchronous_mode and synchronous_node_count",
}

var parameterName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// Backend manages one local PostgreSQL server. It implements the agent's
// Backend interface.
//
// Observe, Heartbeat, EnsureSlots, Divergence, FenceWrites, Lag and Compare
// may run concurrently with anything (the queries share one connection,
// taken in turn, each bounded by its context); FenceWrites never waits for
// another method. The state-changing methods (Bootstrap, Clone, Start,
// Stop, Promote, Follow, Rewind, Wipe) are meant to be run one at a time,
// as the agent does.
type Backend struct {
	opts    Options
	log     *slog.Logger
	runAs   *osUser // nil: run programs as this process's user
	dataDir string  // cleaned absolute path

	confMu sync.Mutex // serialises configuration writes
	// syncCfg is the synchronous_standby_names steward keeps in
	// postgresql.conf (SetSync); read from the file once (syncLoaded) when
	// this process has not set it yet. Guarded by confMu.
	syncCfg    backends.SyncConfig
	syncLoaded bool

	connSem chan struct{} // guards conn (a lock that honours contexts)
	conn    *pgx.Conn
	connPID int // postmaster PID conn was made to

	staticMu sync.Mutex
	sysID    string    // cached system identifier (running server)
	version  string    // cached server_version
	walSeg   int64     // cached wal_segment_size in bytes
	tli      int64     // cached replay timeline of a standby
	tliAt    time.Time // when tli was read
	// stopped caches the end of WAL of a cleanly stopped server, keyed by
	// its control file's checkpoint location (reading it runs pg_waldump).
	stoppedCkpt uint64
	stoppedTLI  int64
	stoppedPos  uint64

	// op is the data-directory operation in progress (bootstrap, clone,
	// rewind, wipe), for Observe; nil when none.
	op atomic.Pointer[operation]
}

// operation is a long data-directory change that Observe reports.
type operation struct {
	state  backends.State // what Observe reports while the server does not run
	reason string
}

// begin marks an operation in progress until the returned func is called.
func (b *Backend) begin(state backends.State, reason string) func() {
	op := &operation{state: state, reason: reason}
	b.op.Store(op)
	return func() { b.op.CompareAndSwap(op, nil) }
}

// osUser is the resolved Options.RunAs.
type osUser struct {
	name     string
	uid, gid uint32
	home     string
}

// New validates opts, fills in defaults and returns a Backend. It checks
// what is cheap to check (programs present, addresses parse, run-as user
// exists) and names the configuration key of anything wrong. It neither
// touches the data directory nor connects.
func New(opts Options) (*Backend, error) {
	if opts.Member == "" {
		return nil, errors.New("name: the member name is required (it names this server's replication slot)")
	}
	if opts.DataDir == "" {
		return nil, errors.New("postgres.data_dir is required")
	}
	if !filepath.IsAbs(opts.DataDir) {
		return nil, fmt.Errorf("postgres.data_dir %q must be an absolute path", opts.DataDir)
	}
	dataDir := filepath.Clean(opts.DataDir)
	if dataDir == "/" {
		return nil, errors.New("postgres.data_dir must not be /")
	}
	if opts.BinDir == "" {
		return nil, errors.New("postgres.bin_dir is required (for example /usr/lib/postgresql/15/bin)")
	}
	progs := requiredPrograms
	if opts.UsePgRewind {
		progs = append(append([]string(nil), progs...), "pg_rewind")
	}
	for _, p := range progs {
		fi, err := os.Stat(filepath.Join(opts.BinDir, p))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("postgres.bin_dir %q has no executable %s: install PostgreSQL's server package (Debian: postgresql-15) or fix the path", opts.BinDir, p)
		}
	}
	if opts.Listen == "" {
		return nil, errors.New("postgres.listen is required (host:port, for example 127.0.0.1:5432)")
	}
	if _, _, err := splitAddr(opts.Listen); err != nil {
		return nil, fmt.Errorf("postgres.listen: %w", err)
	}
	if opts.ConnectAddress == "" {
		opts.ConnectAddress = opts.Listen
	}
	if h, _, err := splitAddr(opts.ConnectAddress); err != nil {
		return nil, fmt.Errorf("postgres.connect_address: %w", err)
	} else if isWildcard(h) {
		return nil, fmt.Errorf("postgres.connect_address %q: other members cannot connect to a wildcard address; set the host they should use", opts.ConnectAddress)
	}
	if opts.Superuser.Username == "" {
		opts.Superuser.Username = "postgres"
	}
	if opts.Replication.Username == "" {
		opts.Replication.Username = "replicator"
	}
	for k, v := range opts.Parameters {
		if !parameterName.MatchString(k) {
			return nil, fmt.Errorf("postgres.parameters: %q is not a setting name", k)
		}
		if owner, ok := reservedParameters[strings.ToLower(k)]; ok {
			return nil, fmt.Errorf("postgres.parameters.%s: steward sets it from %s; remove it", k, owner)
		}
		if strings.ContainsAny(v, "\n\r\x00") {
			return nil, fmt.Errorf("postgres.parameters.%s: the value must be on one line", k)
		}
	}
	for i, l := range opts.PgHba {
		if strings.ContainsAny(l, "\n\r\x00") {
			return nil, fmt.Errorf("postgres.pg_hba[%d]: one line per entry", i)
		}
	}
	for _, c := range []struct {
		key string
		v   Credentials
	}{{"postgres.superuser", opts.Superuser}, {"postgres.replication", opts.Replication}} {
		if strings.ContainsAny(c.v.Username+c.v.Password, "\n\r\x00") {
			return nil, fmt.Errorf("%s: user names and passwords must not contain line breaks or NUL", c.key)
		}
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 3 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	b := &Backend{
		opts:    opts,
		log:     opts.Logger.With("backend", "postgres"),
		dataDir: dataDir,
		connSem: make(chan struct{}, 1),
	}
	if os.Geteuid() == 0 {
		if opts.RunAs == "" {
			opts.RunAs = "postgres"
			b.opts.RunAs = "postgres"
		}
		u, err := lookupUser(opts.RunAs)
		if err != nil {
			return nil, fmt.Errorf("postgres.run_as: %w", err)
		}
		if u.uid == 0 {
			return nil, fmt.Errorf("postgres.run_as %q is root; PostgreSQL refuses to run as root: name an unprivileged user", opts.RunAs)
		}
		if u.home == "" {
			u.home = filepath.Dir(dataDir)
		}
		b.runAs = u
	}
	return b, nil
}

func lookupUser(name string) (*osUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("OS user %q not found (%v): create it (Debian's postgresql package creates \"postgres\") or name another", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("OS user %q has a non-numeric uid/gid (%s/%s)", name, u.Uid, u.Gid)
	}
	home := u.HomeDir
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		home = ""
	}
	return &osUser{name: name, uid: uint32(uid), gid: uint32(gid), home: home}, nil
}

// Kind returns "postgres".
func (b *Backend) Kind() string { return "postgres" }

// DataDir returns the (cleaned) data directory.
func (b *Backend) DataDir() string { return b.dataDir }

// LogFile returns the server log file, <DataDir>.log.
func (b *Backend) LogFile() string { return b.dataDir + ".log" }

// splitAddr parses host:port.
func splitAddr(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port must be 1-65535", addr)
	}
	return h, port, nil
}

func isWildcard(h string) bool { return h == "" || h == "*" || h == "0.0.0.0" || h == "::" }

// localHostPort is where steward's own connections go.
func (b *Backend) localHostPort() (string, int) {
	h, p, _ := splitAddr(b.opts.Listen)
	switch h {
	case "", "*", "0.0.0.0":
		h = "127.0.0.1"
	case "::":
		h = "::1"
	}
	return h, p
}

// queryCtx bounds ctx by the query timeout.
func (b *Backend) queryCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.opts.QueryTimeout)
}
