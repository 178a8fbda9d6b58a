package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stewardha/steward/backends"
)

// Credentials are a MySQL account name and its password.
type Credentials struct {
	Username string
	Password string
}

// Options configure a Backend. The names in error messages are the keys of
// steward's configuration file (mysql.address, ...).
type Options struct {
	// Member is this member's name (the configuration's "name"), used in
	// messages (`steward reinit <member>`) and as the heartbeat row key.
	Member string
	// Address is host:port of the local server; steward's own connections
	// go there (127.0.0.1 for a wildcard host).
	Address string
	// ConnectAddress is host:port other members use to reach this server.
	// Default: Address.
	ConnectAddress string
	// User and Password are the account steward connects as, on this
	// server and on the other members' servers (divergence checks, clones,
	// fencing of a former primary). It needs every privilege (see
	// docs/mysql.md): GRANT ALL PRIVILEGES ON *.* ... WITH GRANT OPTION.
	User     string
	Password string
	// Replication is the account replicas replicate as. Bootstrap creates
	// it on the first primary (host ReplicationHost).
	Replication Credentials
	// ReplicationHost is the host part of the replication account Bootstrap
	// creates. Default "%".
	ReplicationHost string
	// DataDir is the server's data directory. It identifies the server
	// process (its working directory) for FenceWrites and Stop when SQL
	// does not answer, and tells a stopped server from an empty one.
	// Optional but strongly recommended.
	DataDir string
	// StartCommand starts the server (argv, no shell): either a command
	// that starts it and returns (systemctl start mariadb), or the server
	// itself in the foreground (/usr/sbin/mariadbd --defaults-file=...),
	// which steward then runs detached in its own session so that it
	// outlives the agent. Without it, steward cannot start a stopped
	// server (Start, and the restart after a demotion, fail).
	StartCommand []string
	// StopCommand stops the server (argv, no shell). Default: the SQL
	// statement SHUTDOWN (WAIT FOR ALL SLAVES on MariaDB).
	StopCommand []string
	// CloneCommand, when set, copies the upstream's data into the stopped
	// local server instead of the default logical dump (argv, no shell;
	// placeholders {upstream_host} {upstream_port} {upstream_name}
	// {data_dir} {member}).
	CloneCommand []string
	// Logger receives one Info line per action and Debug lines for routine
	// queries. Default: slog.Default().
	Logger *slog.Logger
	// QueryTimeout bounds each routine query and connection attempt (on
	// top of the caller's context). Default 3s.
	QueryTimeout time.Duration
}

// Backend manages one local MySQL or MariaDB server. It implements the
// agent's Backend interface (and PeerFencer).
//
// Observe, Heartbeat, Divergence, FenceWrites, FencePeer, Lag and Compare
// may run concurrently with anything; FenceWrites never waits for another
// method and opens its own connection. The state-changing methods
// (Bootstrap, Clone, Start, Stop, Promote, Follow, Rewind, Wipe) are
// serialised by the backend.
type Backend struct {
	opts    Options
	log     *slog.Logger
	dataDir string // cleaned absolute path, "" when not configured

	db *sql.DB // pool to the local server

	opMu sync.Mutex   // serialises state-changing methods
	gen  atomic.Int64 // bumped by every state-changing method (see finishStartLater)

	mu          sync.Mutex
	flavor      *Flavor           // of the local server, once seen
	serverID    uint64            // @@server_id of the local server
	pidFile     string            // @@pid_file, once seen
	seenDataDir string            // @@datadir, once seen
	masterIDs   map[string]uint64 // upstream host:port → last Master_Server_Id seen
	refused     string            // why replication was deliberately not started (errant GTIDs)
	lastErrant  string            // errant GTIDs found by the last Divergence
	forkedAt    backends.Position // GTID history when the last promotion made the server writable
	childPID    int               // a foreground server process started by Start, while alive
	stoppedPos  backends.Position // where the history ended at the last clean stop (zero: unknown)
	semiSync    *semiSyncDecision // SetSync's last decision (semisync.go), nil: unknown yet

	replayBeatBusy atomic.Bool   // a replicated heartbeat waits for its commit (replayBeat)
	replayPending  replayPending // b.mu: the replicated heartbeat in progress
	replayErr      error         // b.mu: why the last replicated heartbeat failed (nil: it did not)

	// op is the long operation in progress (bootstrap, clone, wipe), for
	// Observe; nil when none.
	op atomic.Pointer[operation]

	closeCtx context.Context
	closeFn  context.CancelFunc
	bg       sync.WaitGroup // background work (a start finished later)
}

// operation is a long change that Observe reports.
type operation struct {
	state  backends.State
	reason string
}

// begin marks an operation in progress until the returned func is called.
func (b *Backend) begin(state backends.State, reason string) func() {
	op := &operation{state: state, reason: reason}
	b.op.Store(op)
	return func() { b.op.CompareAndSwap(op, nil) }
}

// New validates opts, fills in defaults and returns a Backend. It neither
// connects nor touches the data directory.
func New(opts Options) (*Backend, error) {
	if opts.Member == "" {
		return nil, errors.New("name: the member name is required")
	}
	if opts.Address == "" {
		opts.Address = "127.0.0.1:3306"
	}
	if _, _, err := splitAddr(opts.Address); err != nil {
		return nil, fmt.Errorf("mysql.address: %w", err)
	}
	if opts.ConnectAddress == "" {
		opts.ConnectAddress = opts.Address
	}
	if h, _, err := splitAddr(opts.ConnectAddress); err != nil {
		return nil, fmt.Errorf("mysql.connect_address: %w", err)
	} else if isWildcard(h) {
		return nil, fmt.Errorf("mysql.connect_address %q: other members cannot connect to a wildcard address; set the host they should use", opts.ConnectAddress)
	}
	if opts.User == "" {
		return nil, errors.New("mysql.user is required (the account steward connects as)")
	}
	if opts.Replication.Username == "" {
		return nil, errors.New("mysql.replication.username is required (the account replicas replicate as)")
	}
	if opts.ReplicationHost == "" {
		opts.ReplicationHost = "%"
	}
	dataDir := ""
	if opts.DataDir != "" {
		if !filepath.IsAbs(opts.DataDir) {
			return nil, fmt.Errorf("mysql.data_dir %q must be an absolute path", opts.DataDir)
		}
		dataDir = filepath.Clean(opts.DataDir)
		if dataDir == "/" {
			return nil, errors.New("mysql.data_dir must not be /")
		}
	}
	for _, c := range []struct {
		key  string
		argv []string
	}{{"mysql.start_command", opts.StartCommand}, {"mysql.stop_command", opts.StopCommand}, {"mysql.clone_command", opts.CloneCommand}} {
		if len(c.argv) > 0 && strings.TrimSpace(c.argv[0]) == "" {
			return nil, fmt.Errorf("%s: the first item must be the program", c.key)
		}
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 3 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	b := &Backend{
		opts:      opts,
		log:       opts.Logger.With("backend", "mysql"),
		dataDir:   dataDir,
		masterIDs: map[string]uint64{},
	}
	b.closeCtx, b.closeFn = context.WithCancel(context.Background())
	host, port := b.localHostPort()
	b.db = sql.OpenDB(b.connector(host, port, 0))
	b.db.SetMaxOpenConns(8)
	b.db.SetMaxIdleConns(2)
	b.db.SetConnMaxIdleTime(30 * time.Second)
	b.db.SetConnMaxLifetime(5 * time.Minute)
	return b, nil
}

// Close releases the connection pool and ends background work. The server
// is left as it is.
func (b *Backend) Close() error {
	b.closeFn()
	b.bg.Wait()
	return b.db.Close()
}

// Kind returns "mysql".
func (b *Backend) Kind() string { return "mysql" }

// DataDir returns the (cleaned) data directory ("" when not configured).
func (b *Backend) DataDir() string { return b.dataDir }

// StartLog is the file the start command's output goes to:
// <data_dir>.start.log ("" without a data directory: discarded).
func (b *Backend) StartLog() string {
	if b.dataDir == "" {
		return ""
	}
	return b.dataDir + ".start.log"
}

// Flavor returns the local server's flavour, once it has been seen.
func (b *Backend) Flavor() (Flavor, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.flavor == nil {
		return Flavor{}, false
	}
	return *b.flavor, true
}

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
	h, p, _ := splitAddr(b.opts.Address)
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

func hostPort(up backends.Upstream) string { return net.JoinHostPort(up.Host, strconv.Itoa(up.Port)) }
