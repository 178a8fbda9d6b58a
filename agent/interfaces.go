package agent

import (
	"context"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// Store is what the agent needs of the DCS. dcs/etcd implements it.
// Every method is bounded by the store's request timeout.
type Store interface {
	// Load reads the cluster view in one consistent snapshot.
	Load(ctx context.Context) (*dcs.Cluster, error)
	// KeepAlive renews this member's session lease (which also carries the
	// leader key while we hold it) and returns the local time read just
	// before the request was sent. dcs.ErrLeaseLost: the lease is gone.
	KeepAlive(ctx context.Context) (time.Time, error)
	// AcquireLeader creates the leader key on our lease if it is absent.
	// dcs.ErrConflict: someone holds it.
	AcquireLeader(ctx context.Context) (dcs.Leader, time.Time, error)
	// ReleaseLeader deletes the leader key only if it is ours with this term.
	ReleaseLeader(ctx context.Context, term int64) error
	// AdoptLease takes over a live lease (agent restarted while the leader
	// key it held was still alive).
	AdoptLease(ctx context.Context, lease int64) (time.Time, error)
	// Lease is the current session lease ID (0 when none).
	Lease() int64
	// RotateLease moves our keys to a new lease granted at the current TTL.
	RotateLease(ctx context.Context, member *dcs.Member) (time.Time, error)
	// SetTimings changes the per-call timeout and the TTL of future leases.
	SetTimings(requestTimeout, ttl time.Duration)
	TTL() time.Duration
	// RevokeSession drops our lease (clean shutdown).
	RevokeSession(ctx context.Context) error

	PutMember(ctx context.Context, m dcs.Member) error
	PutStatus(ctx context.Context, st dcs.Status, term int64) error
	CASConfig(ctx context.Context, cfg []byte, version int64) (int64, error)
	CreateInitialize(ctx context.Context, v dcs.Initialize) (int64, error)
	UpdateInitialize(ctx context.Context, v dcs.Initialize, version int64) (int64, error)
	DeleteInitialize(ctx context.Context, version int64) error
	PutSwitchover(ctx context.Context, v dcs.Switchover, version int64) (int64, error)
	DeleteSwitchover(ctx context.Context, version int64) error
	CASSync(ctx context.Context, v dcs.SyncState, version, term int64) (int64, error)
	AppendHistory(ctx context.Context, rec dcs.HistoryRecord) (int64, error)
	// WatchLeader delivers leader-key changes until ctx ends.
	WatchLeader(ctx context.Context) <-chan dcs.LeaderEvent
}

// Backend is what the agent needs of the database it manages.
// backends/postgres (and backends/mysql) implement it. Every method is
// bounded by its context; none may block past it.
type Backend interface {
	// Kind is "postgres" or "mysql".
	Kind() string

	// Observe reads the local database state. It never returns an error:
	// a database that cannot be read is reported in Status.State/Reason.
	Observe(ctx context.Context) backends.Status

	// Bootstrap creates a new database (initdb), configures it, starts it
	// as a writable primary, and creates the replication role and
	// steward's own schema. Called only by the member that won the
	// initialize key and holds the leader key. Returns the system id.
	Bootstrap(ctx context.Context) (systemID string, err error)

	// Clone copies the upstream's data into the (empty) data directory and
	// configures it as a replica of the upstream. It does not start it.
	Clone(ctx context.Context, up backends.Upstream) error

	// Start writes the configuration for the role (a replica follows up,
	// or nothing when up is nil) and starts the database. It returns once
	// the process is launched; it does not wait for it to accept
	// connections (Observe reports StateStarting until then).
	Start(ctx context.Context, role backends.Role, up *backends.Upstream) error

	// Stop stops the database and waits until it has (bounded by ctx).
	Stop(ctx context.Context, mode backends.StopMode) error

	// FenceWrites makes the database stop accepting writes now, whatever
	// it takes (immediate stop, then SIGKILL of the server process if it
	// has not exited within a bound). It must not depend on a working
	// database connection. Used by the lease deadline timer (rule 1).
	FenceWrites(ctx context.Context) error

	// Promote turns a running replica into a writable primary and waits
	// until it accepts writes.
	Promote(ctx context.Context) error

	// Follow points a running replica at a new upstream (nil: none),
	// reloading rather than restarting when the database allows it.
	Follow(ctx context.Context, up *backends.Upstream) error

	// Divergence compares the local history with the upstream's. It needs
	// the local database running (as a replica) or cleanly stopped.
	Divergence(ctx context.Context, up backends.Upstream) (backends.Divergence, error)

	// Rewind rewrites the local data directory (database stopped) to the
	// upstream's history, discarding local changes after the fork, and
	// configures it as a replica of the upstream. It does not start it.
	Rewind(ctx context.Context, up backends.Upstream) error

	// Wipe removes the data directory's contents (before a re-clone).
	Wipe(ctx context.Context) error

	// EnsureSlots makes sure the primary has a physical replication slot
	// for each named member. It only creates: a member that is briefly
	// gone must find its slot (and its WAL) when it returns.
	EnsureSlots(ctx context.Context, members []string) error

	// Heartbeat proves the primary can commit: a small write with a
	// deadline, in steward's own schema, committed locally.
	Heartbeat(ctx context.Context, member string) error

	// Lag returns how far `pos` is behind `leader` (bytes for PostgreSQL;
	// 0 when not behind; -1 when the positions cannot be compared).
	Lag(leader, pos backends.Position) int64
	// Compare orders two positions: -1 a behind b, 0 equal, +1 a ahead.
	Compare(a, b backends.Position) int
}

// Peers asks other members about their state over the REST API.
type Peers interface {
	// Status fetches a member's live state from its REST API (bounded by
	// ctx). An error means unreachable.
	Status(ctx context.Context, apiURL string) (PeerStatus, error)
	// LiveStatus is Status with the member's database positions read at
	// the time of the request (GET /status/live).
	LiveStatus(ctx context.Context, apiURL string) (PeerStatus, error)
	// Failsafe asks a member to accept this member as leader while the DCS
	// is unreachable (POST /failsafe). nil: accepted.
	Failsafe(ctx context.Context, apiURL, leader string, term int64) error
}

// Fencer runs the STONITH hooks against a former primary. confirmed: a hook
// exited 0. attempts describes every attempt, for the history and metrics.
type Fencer interface {
	Fence(ctx context.Context, t FenceTarget) (confirmed bool, attempts []FenceAttempt)
}

// FenceAttempt is one run of one hook.
type FenceAttempt struct {
	Hook   string
	Result string // success, failure, timeout
	Detail string // e.g. "try 2: exit status 1"
}

func (f FenceAttempt) String() string {
	return "hook " + f.Hook + " " + f.Result + " (" + f.Detail + ")"
}

// FenceTarget is the former primary to fence.
type FenceTarget struct {
	Name   string
	Host   string // database host
	APIURL string
}

// PeerFencer is an optional Backend capability: make another member's
// database stop taking writes through the database itself (the first,
// cheap step of fencing, tried when that database is reachable).
type PeerFencer interface {
	FencePeer(ctx context.Context, up backends.Upstream) error
}

// SlotCleaner is an optional Backend capability: on a replica, drop the
// replication slots named after the given members (those it created when
// it led). Slots it did not create are left alone.
type SlotCleaner interface {
	DropMemberSlots(ctx context.Context, members []string) error
}

// Watchdog is a hardware or software watchdog armed while this member
// leads (fencing.Watchdog).
type Watchdog interface {
	// Arm opens the device and sets its timeout; an error means this
	// member must not lead (watchdog.mode required).
	Arm(timeout time.Duration) error
	// Keepalive pets an armed device; called only after a successful
	// lease renewal.
	Keepalive() error
	// Disarm closes the device cleanly; called only once the database no
	// longer takes writes.
	Disarm() error
}

// Fencing modes (fencing.mode).
const (
	FencingOff        = "off"
	FencingBestEffort = "best-effort"
	FencingRequired   = "required"
)

// ForkReporter is a Backend that knows where its last promotion forked
// from the former primary's history (MySQL/MariaDB; see
// dcs.HistoryRecord.Forked), and which positions the history after such a
// fork cannot contain (SinceFork: a reason, "" when compatible).
type ForkReporter interface {
	ForkPosition() backends.Position
	SinceFork(pos, fork backends.Position) string
}

// PeerStatus is what a member reports about itself to other members
// (GET /status): enough for the failover checks of rules 2 and 3.
type PeerStatus struct {
	Name     string            `json:"name"`
	Role     string            `json:"role"`
	State    string            `json:"state"`
	Writable bool              `json:"writable"`
	Leader   bool              `json:"leader"` // holds the leader key by its own lease deadline
	Timeline int64             `json:"timeline"`
	Position backends.Position `json:"position"`
	Received backends.Position `json:"received"`
	Replayed backends.Position `json:"replayed"`
	Eligible bool              `json:"eligible"`
	Reasons  []string          `json:"ineligible_reasons,omitempty"`
	Priority int               `json:"failover_priority"`
	// NoFailover: tagged nofailover (never a candidate).
	NoFailover bool `json:"nofailover"`
	Paused     bool `json:"paused"`
	// CannotPromote: why this member could not promote now for reasons
	// only it can see (agent.promotionBlocks); the others race without it.
	CannotPromote []string `json:"cannot_promote,omitempty"`
	// LagBytes is the member's own replay lag, measured in its last loop
	// against the leader position it read just before observing its
	// database (nil: unknown, or an agent that does not report it). Used by
	// the switchover pre-check: the leader's current position against this
	// member's replay of up to a loop ago overstates the lag, by 16 MB right
	// after a WAL segment switch.
	LagBytes *int64 `json:"lag_bytes,omitempty"`
}

// Metrics receives the agent's events; cmd/steward wires the Prometheus
// implementation. Every method must return at once.
type Metrics interface {
	// LoopDone: one loop took d.
	LoopDone(d time.Duration)
	// LeaderChange: this member became or stopped being the leader.
	// reason: bootstrap, failover, switchover, manual-failover, adopt,
	// reacquire, lost, released, shutdown, deadline.
	LeaderChange(reason string)
	// DCSError: a DCS call failed (op: load, renew, acquire, release,
	// publish, status, history, config).
	DCSError(op string)
	// FencingAttempt: one fencing step ran (result: success, failure,
	// timeout, skipped).
	FencingAttempt(result string)
}

type noMetrics struct{}

func (noMetrics) LoopDone(time.Duration) {}
func (noMetrics) LeaderChange(string)    {}
func (noMetrics) DCSError(string)        {}
func (noMetrics) FencingAttempt(string)  {}
