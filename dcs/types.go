package dcs

import (
	"time"

	"github.com/stewardha/steward/backends"
)

// Roles a member reports.
const (
	RolePrimary       = "primary"
	RoleReplica       = "replica"
	RoleUninitialized = "uninitialized" // no data directory yet
	RoleUnknown       = "unknown"       // database not reachable
)

// Leader is the leader key as read from the store.
type Leader struct {
	Name string `json:"name"`
	// Term is the create revision of the key: it changes every time the key
	// is created, so it identifies one leadership (the fencing token).
	Term int64 `json:"term"`
	// Lease is the session lease the key is attached to.
	Lease int64 `json:"lease"`
	// ModRevision changes on every write to the key.
	ModRevision int64 `json:"mod_revision"`
}

// Member is what a member publishes about itself under members/<name>, on its
// own session lease (the key vanishes when the agent stops renewing).
type Member struct {
	Name    string `json:"name"`
	Role    string `json:"role"`  // RolePrimary, RoleReplica, ...
	State   string `json:"state"` // running, streaming, starting, stopped, crashed, rewinding, cloning, ...
	Reason  string `json:"reason,omitempty"`
	APIURL  string `json:"api_url"`
	DBURL   string `json:"db_address"` // host:port the database is reached at
	Backend string `json:"backend"`    // postgres | mysql

	// Writable is true when this member's database accepts writes.
	Writable bool `json:"writable"`
	// Leader is the member this one replicates from ("" for a primary).
	Following string `json:"following,omitempty"`

	Timeline int64             `json:"timeline,omitempty"`
	Position backends.Position `json:"position"`                 // primary: flushed WAL / executed GTIDs; replica: max(received, replayed)
	Received backends.Position `json:"received,omitempty"`       // replica: received WAL / retrieved GTIDs
	Replayed backends.Position `json:"replayed,omitempty"`       // replica: replayed WAL / executed GTIDs
	LagBytes int64             `json:"lag_bytes"`                // replay lag behind the leader's published position; -1 unknown
	Delay    float64           `json:"replay_delay_s,omitempty"` // seconds since the last replayed transaction's commit on the primary, when known
	// ReplicationState is "streaming" when the replica's WAL receiver (or IO
	// thread) is connected and receiving.
	ReplicationState string `json:"replication_state,omitempty"`

	// Failover readiness, computed every loop (DESIGN rule 3).
	Eligible         bool     `json:"eligible"`
	IneligibleReason []string `json:"ineligible_reasons,omitempty"`
	// CannotPromote: the reasons among IneligibleReason that only this
	// member can see (a full WAL disk, a backoff after its own promotion
	// failed, a broken required watchdog); peers count it out of the race
	// for them.
	CannotPromote []string `json:"cannot_promote,omitempty"`

	Sync string `json:"sync_state,omitempty"` // sync | quorum | async, for replicas
	// SemiSync: a MySQL/MariaDB replica's semi-synchronous acknowledger
	// state (nil: not reported; the leader then assumes it may acknowledge
	// while it is connected).
	SemiSync       *SemiSyncReport   `json:"semi_sync,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	NoFailover     bool              `json:"nofailover,omitempty"`
	NoLoadBalance  bool              `json:"noloadbalance,omitempty"`
	NoSync         bool              `json:"nosync,omitempty"`
	Priority       int               `json:"failover_priority"`
	PendingRestart bool              `json:"pending_restart,omitempty"`
	Paused         bool              `json:"paused,omitempty"`

	Version   string    `json:"version"`              // steward version
	DBVersion string    `json:"db_version,omitempty"` // e.g. "15.18"
	SystemID  string    `json:"system_id,omitempty"`  // PostgreSQL system identifier / MySQL server uuid
	Heartbeat time.Time `json:"heartbeat"`            // wall-clock time of the last write; informational only
}

// SemiSyncReport is what a MySQL/MariaDB replica says about its
// acknowledgements, as observed in its loop after it read the sync key of
// epoch Epoch (SyncState.AckEpoch).
type SemiSyncReport struct {
	// Acking: rpl_semi_sync_slave_enabled or Rpl_semi_sync_slave_status is
	// on: the server acknowledges, or will once its IO thread connects.
	Acking bool `json:"acking"`
	// Active: Rpl_semi_sync_slave_status is on (connected as a
	// semi-synchronous replica).
	Active bool  `json:"active,omitempty"`
	Epoch  int64 `json:"epoch"`
}

// Status is written by the leader every loop in which its position changed:
// the last position the leader is known to have had (rule 3 measures lag
// against it).
type Status struct {
	Leader   string            `json:"leader"`
	Term     int64             `json:"term"`
	Timeline int64             `json:"timeline,omitempty"`
	Position backends.Position `json:"position"`
	Time     time.Time         `json:"time"`
}

// Initialize records who bootstrapped the cluster. It is created exactly once.
type Initialize struct {
	Member   string    `json:"member"`
	SystemID string    `json:"system_id,omitempty"` // filled in after initdb
	Time     time.Time `json:"time"`
}

// Switchover is a pending planned switchover (Leader set) or manual failover
// (only Candidate set).
type Switchover struct {
	Leader      string    `json:"leader,omitempty"`
	Candidate   string    `json:"candidate,omitempty"`
	ScheduledAt time.Time `json:"scheduled_at,omitzero"`
	RequestedAt time.Time `json:"requested_at"`
	Force       bool      `json:"force,omitempty"`
	// Phase and the fields after it are written by the old leader while it
	// carries the request out, so that the candidate and the CLI can follow.
	Phase         string            `json:"phase,omitempty"`
	FinalPosition backends.Position `json:"final_position,omitzero"`
	Reason        string            `json:"reason,omitempty"`
}

// SyncState is the synchronous standby set (rule 6), written only by the
// leader, with compare-and-swap, guarded by its term.
//
// It is a promise about the past: every commit the leader acknowledged is on
// at least Quorum of Members (each of which holds everything up to where
// its own copy of the commit is). So a member holds every acknowledged
// commit when it is in Members and, among any len(Members)-Quorum+1 of
// Members it can reach (itself included), none has a later position than
// its own (docs/replication-modes.md). In modes on and strict Quorum equals
// len(Members): each listed member alone is enough. Quorum 0 (or no
// Members) promises nothing: no member may be promoted.
type SyncState struct {
	Leader  string   `json:"leader"`
	Members []string `json:"members"`
	Quorum  int      `json:"quorum,omitempty"`
	// Mode is the synchronous_mode the leader runs (on, strict, quorum).
	// "off" (or a missing key) means the leader acknowledges commits
	// without waiting for standbys and the rules above do not apply.
	Mode string `json:"mode,omitempty"`
	// Acknowledgers (MySQL/MariaDB semi-synchronous replication) are the
	// replicas the leader allows to acknowledge commits: a replica's agent
	// turns rpl_semi_sync_slave_enabled on only while it is listed here, and
	// off otherwise. The primary waits for one acknowledgement from any of
	// them; Members never counts a replica that is not listed or that has
	// not yet reported its flag off (agent/ack.go). AckEpoch grows by one
	// every time Acknowledgers changes (and with every new leader), so that
	// a replica's report names the list it acted on.
	Acknowledgers []string `json:"acknowledgers,omitempty"`
	AckEpoch      int64    `json:"ack_epoch,omitempty"`
}

// Active reports whether the sync rules restrict promotion.
func (s SyncState) Active() bool { return s.Mode != "" && s.Mode != "off" }

// Has reports whether name is in Members.
func (s SyncState) Has(name string) bool {
	for _, m := range s.Members {
		if m == name {
			return true
		}
	}
	return false
}

// Candidate is one member considered in a leader change.
type Candidate struct {
	Name     string            `json:"name"`
	Position backends.Position `json:"position"`
	Timeline int64             `json:"timeline,omitempty"`
	Eligible bool              `json:"eligible"`
	Reasons  []string          `json:"reasons,omitempty"` // why it was rejected
}

// HistoryRecord is one entry of history/<n>: a leader change or another event
// that changed a member's data (a rewind that discarded WAL, a re-clone).
type HistoryRecord struct {
	Index     int64             `json:"index"`
	Time      time.Time         `json:"time"`
	Kind      string            `json:"kind"` // bootstrap, failover, switchover, manual-failover, rewind, reinit
	OldLeader string            `json:"old_leader,omitempty"`
	NewLeader string            `json:"new_leader,omitempty"`
	Member    string            `json:"member,omitempty"` // for rewind/reinit: the member concerned
	Term      int64             `json:"term,omitempty"`
	Timeline  int64             `json:"timeline,omitempty"`
	Position  backends.Position `json:"position"`              // last position published by the old leader
	Promoted  backends.Position `json:"promoted_at,omitempty"` // position of the new leader when it promoted
	// Forked: the new leader's history before its first write (MySQL/
	// MariaDB: the GTID history after the relay log was applied, before
	// read_only was turned off). The former leader's transactions it does
	// not contain were discarded by this change. Zero when the backend does
	// not report it (PostgreSQL: the timeline history file has the switch
	// point).
	Forked    backends.Position `json:"forked_at,omitzero"`
	Discarded int64             `json:"discarded_bytes,omitempty"`
	Reason    string            `json:"reason"`
	// Candidates lists every member considered and why each was rejected.
	Candidates []Candidate `json:"candidates,omitempty"`
}

// Versioned is a value with the revision it was read at; pass Version back to
// a compare-and-swap. Version 0 means the key did not exist.
type Versioned[T any] struct {
	Value   T
	Version int64
}

// Cluster is everything the agent reads in one loop, from one consistent
// snapshot of the store (one revision).
type Cluster struct {
	Revision   int64
	Leader     *Leader // nil when no member holds the key
	Members    map[string]Member
	Status     *Status
	Config     *Versioned[[]byte] // raw dynamic-config JSON; nil when absent
	Initialize *Versioned[Initialize]
	Switchover *Versioned[Switchover]
	Sync       *Versioned[SyncState]
	// SyncError is set when the sync key exists but cannot be decoded (Sync
	// then carries only its version, so that the leader can overwrite it).
	// Nobody may be promoted on the strength of such a key.
	SyncError string
	// LastHistory is the newest history record (nil when there is none).
	LastHistory *HistoryRecord
	// Errors lists records that could not be decoded (key: error). The agent
	// logs them and carries on: bad data in the store never crashes it.
	Errors map[string]string
}

// LeaderEvent is sent on a leader watch when the key changes.
type LeaderEvent struct {
	Leader   *Leader // nil: the key was deleted (or expired)
	Revision int64
	// Resync is true when the watch was re-established after an error and
	// changes may have been missed: re-read the cluster.
	Resync bool
}
