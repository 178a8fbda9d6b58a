package backends

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Position is how far a database's history goes. PostgreSQL uses LSN (a byte
// offset in the WAL); MySQL/MariaDB use GTID (a set of executed transactions).
// Exactly one of the two is meaningful for a given backend.
type Position struct {
	LSN  uint64 `json:"lsn,omitempty"`
	GTID string `json:"gtid,omitempty"`
}

// IsZero reports whether the position is unknown.
func (p Position) IsZero() bool { return p.LSN == 0 && p.GTID == "" }

// String renders an LSN the way PostgreSQL does ("0/3000148") or the GTID set.
func (p Position) String() string {
	if p.GTID != "" {
		return p.GTID
	}
	if p.LSN == 0 {
		return ""
	}
	return FormatLSN(p.LSN)
}

// FormatLSN renders a WAL position as PostgreSQL does: high/low 32 bits in hex.
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", uint32(lsn>>32), uint32(lsn))
}

// ParseLSN parses PostgreSQL's "X/Y" text form.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("%q is not an LSN: expected the form 16/B374D848", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an LSN: expected the form 16/B374D848", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an LSN: expected the form 16/B374D848", s)
	}
	return h<<32 | l, nil
}

// State is the database process state as the agent observes it.
type State string

const (
	StateUninitialized State = "uninitialized" // no data directory (or an empty one)
	StateStopped       State = "stopped"       // data present, not running, shut down cleanly
	StateCrashed       State = "crashed"       // data present, not running, not shut down cleanly
	StateStarting      State = "starting"      // process up, not accepting connections yet
	StateRunning       State = "running"       // accepting connections and answering queries
	StateUnresponsive  State = "unresponsive"  // process up but queries fail or time out
)

// Status is one observation of the local database, taken once per loop.
// Fields that do not apply (a primary's Received, a stopped server's
// positions) are zero.
type Status struct {
	State  State  `json:"state"`
	Reason string `json:"reason,omitempty"` // why it is not running/healthy, for operators

	InRecovery bool `json:"in_recovery"` // running as a standby/replica
	// Writable: running, not in recovery, and accepting writes. For MySQL:
	// read_only (and super_read_only) off.
	Writable bool `json:"writable"`

	Timeline int64    `json:"timeline,omitempty"`
	Position Position `json:"position"` // primary: flushed WAL (executed GTIDs); replica: max(received, replayed)
	Received Position `json:"received"` // replica only
	Replayed Position `json:"replayed"` // replica only

	ReplayPaused bool `json:"replay_paused,omitempty"`
	// ApplierError: MySQL, the error that stopped the replication applier
	// (SQL thread); it does not restart by itself ("" when it runs or was
	// stopped without an error, by hand).
	ApplierError string    `json:"applier_error,omitempty"`
	ReplayTime   time.Time `json:"replay_time,omitzero"` // commit time of the last replayed transaction
	// Streaming: the WAL receiver (IO thread) is connected and receiving.
	Streaming     bool   `json:"streaming"`
	ReceiverState string `json:"receiver_state,omitempty"` // e.g. streaming, stopped, waiting
	Upstream      string `json:"upstream,omitempty"`       // host:port the replica is configured to follow

	SystemID       string `json:"system_id,omitempty"`
	Version        string `json:"version,omitempty"`
	PendingRestart bool   `json:"pending_restart,omitempty"`
	// CannotPromote says why this running standby could not be promoted
	// right now although its position may be the best (for PostgreSQL: too
	// little free space for the new timeline's first WAL segment). Empty:
	// nothing known against it. The agent makes such a member ineligible
	// and tells its peers, so that a member that is ahead but cannot promote
	// does not hold the others back.
	CannotPromote string `json:"cannot_promote,omitempty"`
	PID           int    `json:"pid,omitempty"`

	// Replicas connected to this server (primary side), for sync mode and
	// the API.
	Replicas []ReplicaConn `json:"replicas,omitempty"`
	// Sync is which standbys this server waits for before it acknowledges a
	// commit, as the running server has it configured (primary side; for
	// PostgreSQL synchronous_standby_names). Zero: asynchronous.
	Sync SyncConfig `json:"sync,omitzero"`
	// SemiSync: MySQL/MariaDB semi-synchronous replication as the server
	// has it (nil: not read, or not MariaDB).
	SemiSync *SemiSync `json:"semi_sync,omitempty"`
	// SyncWait: how long the longest-waiting commit has waited so far for
	// the synchronous standbys to confirm it (0: none waits).
	SyncWait time.Duration `json:"sync_wait,omitempty"`
}

// SemiSync is a MariaDB server's semi-synchronous replication state.
type SemiSync struct {
	// Primary side: rpl_semi_sync_master_enabled, Rpl_semi_sync_master_clients
	// (replicas connected as acknowledgers) and
	// Rpl_semi_sync_master_wait_sessions (commits waiting for one).
	MasterEnabled bool `json:"master_enabled"`
	Clients       int  `json:"clients,omitempty"`
	WaitSessions  int  `json:"wait_sessions,omitempty"`
	// Replica side: rpl_semi_sync_slave_enabled (takes effect when the IO
	// thread connects) and Rpl_semi_sync_slave_status (acknowledging now).
	SlaveEnabled bool `json:"slave_enabled"`
	SlaveActive  bool `json:"slave_active,omitempty"`
}

// Synchronous replication methods (SyncConfig.Method).
const (
	// SyncFirst: the first Num of Names that are connected, in list order,
	// confirm every commit (PostgreSQL FIRST n (...)).
	SyncFirst = "FIRST"
	// SyncAny: any Num of Names confirm every commit (PostgreSQL ANY n
	// (...), a quorum).
	SyncAny = "ANY"
)

// SyncConfig is which standbys a primary waits for before it acknowledges a
// commit: Num of Names must have the commit on disk. The zero value (or Num
// 0, or no names) is asynchronous replication.
type SyncConfig struct {
	Method string   `json:"method,omitempty"` // SyncFirst or SyncAny
	Num    int      `json:"num,omitempty"`
	Names  []string `json:"names,omitempty"` // member names (application_name)
}

// Async reports whether no commit waits for a standby.
func (c SyncConfig) Async() bool { return c.Num <= 0 || len(c.Names) == 0 }

// Equal compares two configurations (names in order: for FIRST the order is
// the priority). Every asynchronous configuration equals every other.
func (c SyncConfig) Equal(o SyncConfig) bool {
	if c.Async() || o.Async() {
		return c.Async() == o.Async()
	}
	if c.Method != o.Method || c.Num != o.Num || len(c.Names) != len(o.Names) {
		return false
	}
	for i := range c.Names {
		if c.Names[i] != o.Names[i] {
			return false
		}
	}
	return true
}

// Has reports whether name is one of the standbys waited for.
func (c SyncConfig) Has(name string) bool {
	if c.Async() {
		return false
	}
	for _, n := range c.Names {
		if n == name {
			return true
		}
	}
	return false
}

// String renders the configuration for logs: "FIRST 1 (b)", "ANY 2 (b, c,
// d)" or "async".
func (c SyncConfig) String() string {
	if c.Async() {
		return "async"
	}
	return fmt.Sprintf("%s %d (%s)", c.Method, c.Num, strings.Join(c.Names, ", "))
}

// ReplicaConn is one downstream replication connection seen on a primary.
type ReplicaConn struct {
	Name      string   `json:"name"` // application_name (the member name)
	State     string   `json:"state"`
	SyncState string   `json:"sync_state"` // async, sync, quorum, potential
	Flushed   Position `json:"flushed"`
	Replayed  Position `json:"replayed"`
	// Unconfirmed: while this standby has not confirmed flushing all the
	// primary has flushed, how long ago it last replied (0: caught up, or
	// unknown). A standby that streams replies within milliseconds of
	// every flush; a frozen one (SIGSTOP, a hung disk) keeps its
	// connection open and stops replying.
	Unconfirmed time.Duration `json:"unconfirmed,omitempty"`
}

// Role is what the agent wants the database to run as.
type Role string

const (
	RolePrimary Role = "primary"
	RoleReplica Role = "replica"
)

// Upstream is the member a replica follows (the leader).
type Upstream struct {
	Name string // member name
	Host string // database host
	Port int    // database port
}

// StopMode says how hard to stop a database.
type StopMode string

const (
	// StopFast ends client sessions, writes a shutdown checkpoint and lets
	// replicas receive all WAL first (PostgreSQL "fast").
	StopFast StopMode = "fast"
	// StopImmediate stops at once, without a checkpoint (crash recovery on
	// the next start). Used when writes must stop now.
	StopImmediate StopMode = "immediate"
)

// Divergence is the result of comparing a member's history with the
// upstream it should follow (DESIGN rule 5).
type Divergence struct {
	// Diverged: the local history contains changes the upstream does not
	// have; following it needs a rewind (or a re-clone).
	Diverged         bool     `json:"diverged"`
	LocalTimeline    int64    `json:"local_timeline"`
	LocalPosition    Position `json:"local_position"`
	UpstreamTimeline int64    `json:"upstream_timeline"`
	// SwitchPoint is where the upstream's history left the local timeline.
	SwitchPoint Position `json:"switch_point"`
	// Discarded is how many bytes of local history a rewind throws away.
	Discarded int64  `json:"discarded_bytes"`
	Reason    string `json:"reason"`
}
