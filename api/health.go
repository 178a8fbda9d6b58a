package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// Health endpoints (Patroni's paths). Every one answers GET (status and JSON
// body), HEAD and OPTIONS (status only), 200 when the member is in that
// state and 503 otherwise; 400 when a query parameter is invalid.
//
// Each check is a pure function of one snapshot of the agent's in-memory
// view, the lease deadline read at request time, and the parsed query.

// snapshot is the view one request judges, read once.
type snapshot struct {
	v        agent.View
	now      time.Time
	deadline time.Time
}

func (s *Server) snap() *snapshot {
	return &snapshot{v: s.d.Agent.Snapshot(), now: s.d.Now(), deadline: s.d.Agent.LeaseDeadline()}
}

// leaderNow: this member holds the lease by its own deadline at this instant
// (rule 1), whatever the HA loop is doing.
func (sn *snapshot) leaderNow() bool { return !sn.deadline.IsZero() && sn.now.Before(sn.deadline) }

// healthQuery is a health request's parsed query string.
type healthQuery struct {
	lag       lagLimit
	replState string   // replication_state
	tags      []tagReq // tag_<key>=<value>
	writeMode bool     // readiness ?mode=write: judge received, not replayed, WAL
}

type tagReq struct{ key, value string }

// lagLimit is ?lag=: a number of bytes, or a replay delay.
type lagLimit struct {
	set   bool
	bytes int64
	dur   time.Duration
	isDur bool
}

// queryError is a bad query parameter: 400, naming it.
type queryError struct{ param, msg string }

func (e *queryError) Error() string { return e.param + ": " + e.msg }

// replicationStates are the accepted ?replication_state= values: the
// WAL receiver states of pg_stat_wal_receiver, and Patroni's
// "in archive recovery" (in recovery, not streaming).
var replicationStates = []string{"streaming", "in archive recovery", "starting", "waiting", "restarting", "stopping", "stopped", "catchup"}

// queryCache remembers parsed query strings: load balancers send the same
// few over and over. Bounded, so that arbitrary queries cannot grow it.
var (
	queryCache     sync.Map // raw query -> parsedQuery
	queryCacheSize atomic.Int32
)

const queryCacheMax = 256

type parsedQuery struct {
	q   healthQuery
	err error
}

// parseHealthQuery parses the query string of a health request. Unknown
// parameters are ignored (as Patroni does); known ones with a bad value are
// errors. The result must not be modified (it may be shared).
func parseHealthQuery(raw string) (healthQuery, error) {
	if raw == "" {
		return healthQuery{}, nil
	}
	if p, ok := queryCache.Load(raw); ok {
		pq := p.(parsedQuery)
		return pq.q, pq.err
	}
	q, err := parseQueryString(raw)
	if queryCacheSize.Load() < queryCacheMax {
		if _, loaded := queryCache.LoadOrStore(raw, parsedQuery{q, err}); !loaded {
			queryCacheSize.Add(1)
		}
	}
	return q, err
}

func parseQueryString(raw string) (healthQuery, error) {
	var q healthQuery
	seen := map[string]bool{}
	once := func(k string) error {
		if seen[k] {
			return &queryError{k, "given more than once"}
		}
		seen[k] = true
		return nil
	}
	for rest := raw; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		if strings.Contains(part, ";") {
			return q, &queryError{"query string", "cannot be parsed: invalid semicolon separator in query"}
		}
		if part == "" {
			continue
		}
		rk, rv, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(rk)
		if err != nil {
			return q, &queryError{"query string", "cannot be parsed: " + err.Error()}
		}
		v, err := url.QueryUnescape(rv)
		if err != nil {
			return q, &queryError{"query string", "cannot be parsed: " + err.Error()}
		}
		switch {
		case k == "lag":
			if err := once(k); err != nil {
				return q, err
			}
			l, err := parseLag(v)
			if err != nil {
				return q, err
			}
			q.lag = l
		case k == "replication_state":
			if err := once(k); err != nil {
				return q, err
			}
			if !slices.Contains(replicationStates, v) {
				return q, &queryError{"replication_state", fmt.Sprintf("%q is not a replication state: expected streaming or in archive recovery (or a WAL receiver state: %s)",
					short(v), strings.Join(replicationStates[2:], ", "))}
			}
			q.replState = v
		case k == "mode":
			if err := once(k); err != nil {
				return q, err
			}
			switch v {
			case "apply":
			case "write":
				q.writeMode = true
			default:
				return q, &queryError{"mode", fmt.Sprintf("%q is not a mode: expected apply (replayed WAL, the default) or write (received WAL)", short(v))}
			}
		case strings.HasPrefix(k, "tag_"):
			key := strings.TrimPrefix(k, "tag_")
			if key == "" {
				return q, &queryError{k, "empty tag name: expected tag_<name>=<value>, e.g. tag_zone=a"}
			}
			q.tags = append(q.tags, tagReq{key, v})
		}
	}
	return q, nil
}

// short keeps an echoed query value readable.
func short(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}

// parseLag parses ?lag=: a Go duration with a unit (10s, 500ms, 1m — one
// minute) is a replay delay; anything else is a size (bytes, or with a unit:
// 16kB, 1MB, 1GB; powers of 1024). Negative values are errors.
func parseLag(v string) (lagLimit, error) {
	bad := func(msg string) error {
		return &queryError{"lag", fmt.Sprintf("%q %s: expected bytes (1048576), a size (16kB, 1MB) or a replay delay (10s, 500ms)", short(v), msg)}
	}
	if strings.TrimSpace(v) == "" {
		return lagLimit{}, bad("is empty")
	}
	if _, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
		if d, err := time.ParseDuration(v); err == nil {
			if d < 0 {
				return lagLimit{}, bad("is negative")
			}
			return lagLimit{set: true, dur: d, isDur: true}, nil
		}
	}
	sz, err := config.ParseSize(v)
	if err != nil {
		return lagLimit{}, bad("is not a size or duration")
	}
	if sz < 0 {
		return lagLimit{}, bad("is negative")
	}
	return lagLimit{set: true, bytes: int64(sz)}, nil
}

// byteLag is how far this replica's replayed WAL is behind the leader, in
// bytes: the lag against the position the leader last published in the DCS,
// or the gap between received and replayed WAL when that is larger (it is
// known without the DCS, and grows at once when replay stops). -1: unknown.
func byteLag(v *agent.View) int64 {
	lag := v.Member.LagBytes
	db := v.DB
	if db.Received.LSN > db.Replayed.LSN && db.Replayed.LSN > 0 {
		gap := int64(db.Received.LSN - db.Replayed.LSN)
		if lag >= 0 || db.Streaming {
			lag = max(lag, gap)
		}
	}
	if lag < 0 && db.Streaming && db.Received.LSN > 0 && db.Received.LSN == db.Replayed.LSN {
		// Streaming and fully replayed, the leader's position unknown
		// (DCS unreachable): the receive gap, 0, is the best estimate.
		lag = 0
	}
	return lag
}

// receiveLag is the lag of received (not replayed) WAL: readiness?mode=write.
func receiveLag(v *agent.View) int64 {
	lag := v.Member.LagBytes
	db := v.DB
	if lag < 0 {
		return lag
	}
	if db.Received.LSN > db.Replayed.LSN {
		lag -= int64(db.Received.LSN - db.Replayed.LSN)
	}
	return max(lag, 0)
}

// replayDelay is how far behind the primary this replica's applied data is
// in time: zero when it streams and has replayed all it received and all
// the leader published; otherwise the age of the last replayed commit.
func replayDelay(sn *snapshot) time.Duration {
	db := sn.v.DB
	if db.Streaming && !db.ReplayPaused && db.Replayed.LSN >= db.Received.LSN && sn.v.Member.LagBytes == 0 {
		return 0
	}
	if db.ReplayTime.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return max(sn.now.Sub(db.ReplayTime), 0)
}

// lagOK applies ?lag= (def when absent; def < 0: no limit).
func lagOK(sn *snapshot, q *healthQuery, def int64, write bool) bool {
	l := q.lag
	if !l.set {
		if def < 0 {
			return true
		}
		l = lagLimit{set: true, bytes: def}
	}
	if l.isDur {
		return replayDelay(sn) <= l.dur
	}
	lag := byteLag(&sn.v)
	if write {
		lag = receiveLag(&sn.v)
	}
	return lag >= 0 && lag <= l.bytes
}

// isPrimary: holds the lease at this instant and the database takes writes.
func isPrimary(sn *snapshot, _ *healthQuery) bool {
	return sn.leaderNow() && sn.v.DB.State == backends.StateRunning && sn.v.DB.Writable
}

// runningReplica: a running standby that is not the leader.
func runningReplica(sn *snapshot) bool {
	db := sn.v.DB
	return db.State == backends.StateRunning && db.InRecovery && !db.Writable && !sn.leaderNow()
}

// replicaFilters applies noloadbalance, ?lag, ?replication_state and the
// tag filters to a running replica.
func replicaFilters(sn *snapshot, q *healthQuery) bool {
	db := sn.v.DB
	m := &sn.v.Member
	if m.NoLoadBalance {
		return false
	}
	if !lagOK(sn, q, -1, false) {
		return false
	}
	switch q.replState {
	case "":
	case "streaming":
		if !db.Streaming {
			return false
		}
	case "in archive recovery":
		if db.Streaming {
			return false
		}
	default:
		if db.ReceiverState != q.replState {
			return false
		}
	}
	for _, t := range q.tags {
		if got, ok := memberTag(m, t.key); !ok || got != t.value {
			return false
		}
	}
	return true
}

func isReplica(sn *snapshot, q *healthQuery) bool {
	return runningReplica(sn) && replicaFilters(sn, q)
}

// syncState is the member's synchronous-replication role: sync, quorum or
// async ("" counts as async: no synchronous replication configured).
func syncState(m *dcs.Member) string {
	switch m.Sync {
	case "sync", "quorum":
		return m.Sync
	}
	return "async"
}

func isSync(sn *snapshot, q *healthQuery) bool {
	return isReplica(sn, q) && syncState(&sn.v.Member) == "sync"
}

func isQuorum(sn *snapshot, q *healthQuery) bool {
	return isReplica(sn, q) && syncState(&sn.v.Member) == "quorum"
}

func isAsync(sn *snapshot, q *healthQuery) bool {
	return isReplica(sn, q) && syncState(&sn.v.Member) == "async"
}

func isReadOnly(sn *snapshot, q *healthQuery) bool { return isPrimary(sn, q) || isReplica(sn, q) }

func isReadOnlySync(sn *snapshot, q *healthQuery) bool { return isPrimary(sn, q) || isSync(sn, q) }

func isReadOnlyQuorum(sn *snapshot, q *healthQuery) bool { return isPrimary(sn, q) || isQuorum(sn, q) }

// isStandbyLeader: steward has no standby clusters (yet).
func isStandbyLeader(*snapshot, *healthQuery) bool { return false }

func isHealthy(sn *snapshot, _ *healthQuery) bool { return sn.v.DB.State == backends.StateRunning }

// isLive: the HA loop ran within ttl (leader) or 2*ttl; always when paused.
// It never looks at the database.
func isLive(sn *snapshot, _ *healthQuery) bool {
	if sn.v.Config.Paused {
		return true
	}
	ttl := sn.v.Config.TTL.D()
	if !sn.leaderNow() {
		ttl *= 2
	}
	return !sn.v.LoopAt.IsZero() && sn.now.Sub(sn.v.LoopAt) <= ttl
}

// isReady: the primary, or a running, streaming replica within ?lag=
// (default maximum_lag_on_failover).
func isReady(sn *snapshot, q *healthQuery) bool {
	if isPrimary(sn, q) {
		return true
	}
	return runningReplica(sn) && sn.v.DB.Streaming && lagOK(sn, q, int64(sn.v.Config.MaximumLagOnFailover), q.writeMode)
}

// memberTag reads a tag, built-in or custom.
func memberTag(m *dcs.Member, k string) (string, bool) {
	switch k {
	case "nofailover":
		return strconv.FormatBool(m.NoFailover), true
	case "noloadbalance":
		return strconv.FormatBool(m.NoLoadBalance), true
	case "nosync":
		return strconv.FormatBool(m.NoSync), true
	case "failover_priority":
		return strconv.Itoa(m.Priority), true
	}
	v, ok := m.Tags[k]
	return v, ok
}

// HealthBody is the JSON body of every health endpoint.
type HealthBody struct {
	Name             string            `json:"name"`
	Role             string            `json:"role"`
	State            string            `json:"state"`
	Timeline         int64             `json:"timeline,omitempty"`
	Lag              int64             `json:"lag"` // bytes; -1 unknown
	Position         string            `json:"position,omitempty"`
	Leader           string            `json:"leader,omitempty"`
	IsLeader         bool              `json:"is_leader"`
	Paused           bool              `json:"paused"`
	ReplicationState string            `json:"replication_state,omitempty"`
	SyncState        string            `json:"sync_state,omitempty"`
	Tags             map[string]string `json:"tags,omitempty"`
}

func healthBody(sn *snapshot) HealthBody {
	m := &sn.v.Member
	b := HealthBody{Name: m.Name, Role: m.Role, State: m.State, Timeline: m.Timeline, Lag: m.LagBytes,
		Position: m.Position.String(), IsLeader: sn.leaderNow(), Paused: sn.v.Config.Paused, Tags: m.Tags,
		ReplicationState: m.ReplicationState}
	if m.Role == dcs.RoleReplica {
		b.Lag = byteLag(&sn.v)
		b.SyncState = syncState(m)
	}
	if sn.v.Cluster != nil && sn.v.Cluster.Leader != nil {
		b.Leader = sn.v.Cluster.Leader.Name
	}
	return b
}

type healthCheck func(*snapshot, *healthQuery) bool

// health answers one health request.
func (s *Server) health(c *gin.Context, check healthCheck) {
	q, err := parseHealthQuery(c.Request.URL.RawQuery)
	if err != nil {
		var qe *queryError
		if errors.As(err, &qe) {
			s.fail(c, http.StatusBadRequest, qe.Error())
			return
		}
		s.fail(c, http.StatusBadRequest, err.Error())
		return
	}
	// Snapshots are pooled: a view copy is about a kilobyte, and load
	// balancers ask often.
	sn, _ := snapPool.Get().(*snapshot)
	if sn == nil {
		sn = new(snapshot)
	}
	defer func() {
		*sn = snapshot{}
		snapPool.Put(sn)
	}()
	sn.v, sn.now, sn.deadline = s.d.Agent.Snapshot(), s.d.Now(), s.d.Agent.LeaseDeadline()
	code := http.StatusServiceUnavailable
	if check(sn, &q) {
		code = http.StatusOK
	}
	if c.Request.Method != http.MethodGet {
		c.Status(code)
		c.Writer.WriteHeaderNow()
		return
	}
	c.Data(code, jsonContentType, s.bodies.get(sn))
}

var snapPool sync.Pool
