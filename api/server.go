// Package api is steward's REST API: Patroni-compatible health endpoints for
// load balancers and probes, the member's own state for its peers, and the
// cluster's state for operators.
//
// Health answers come from the agent's in-memory view: no database or DCS
// round trip per request, so a load balancer polling every few hundred
// milliseconds costs nothing. /primary is judged at request time against the
// lease deadline (rule 1), so it turns 503 the instant the deadline passes,
// even when the HA loop is stuck.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// AgentView is what the API reads from the agent.
type AgentView interface {
	Snapshot() agent.View
	PeerStatus(now time.Time) agent.PeerStatus
	LeaseDeadline() time.Time
	Wake()
}

// Store is what the API reads from the DCS (for /cluster, /history, /config).
type Store interface {
	Load(ctx context.Context) (*dcs.Cluster, error)
	History(ctx context.Context) ([]dcs.HistoryRecord, error)
}

// Deps are the API's collaborators.
type Deps struct {
	Agent   AgentView
	Store   Store
	Cluster string
	Logger  *slog.Logger
	Now     func() time.Time
}

// Server holds the handlers.
type Server struct {
	d Deps
}

// New returns the API as an http.Handler.
func New(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &Server{d: d}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	r.HandleMethodNotAllowed = true

	health := func(path string, check func(*gin.Context, *snapshot) bool) {
		h := func(c *gin.Context) { s.health(c, check) }
		r.GET(path, h)
		r.HEAD(path, h)
		r.OPTIONS(path, h)
	}
	for _, p := range []string{"/primary", "/leader", "/read-write", "/master"} {
		health(p, isPrimary)
	}
	health("/replica", isReplica)
	health("/read-only", func(c *gin.Context, s *snapshot) bool { return isPrimary(c, s) || isReplica(c, s) })
	health("/health", func(_ *gin.Context, s *snapshot) bool { return s.v.DB.State == backends.StateRunning })
	health("/liveness", isLive)
	health("/readiness", isReady)

	r.GET("/", s.status)
	r.GET("/status", s.status)
	r.GET("/cluster", s.cluster)
	r.GET("/history", s.history)
	r.GET("/config", s.config)
	registerActions(r, s) // actions.go: state-changing endpoints of the HA protocol
	return r
}

// snapshot is the view one request judges, read once.
type snapshot struct {
	v        agent.View
	now      time.Time
	deadline time.Time
}

func (s *Server) snap() *snapshot {
	return &snapshot{v: s.d.Agent.Snapshot(), now: s.d.Now(), deadline: s.d.Agent.LeaseDeadline()}
}

// leaderNow: this member holds the lease by its own deadline at this instant.
func (sn *snapshot) leaderNow() bool { return !sn.deadline.IsZero() && sn.now.Before(sn.deadline) }

func isPrimary(_ *gin.Context, sn *snapshot) bool {
	return sn.leaderNow() && sn.v.DB.State == backends.StateRunning && sn.v.DB.Writable
}

// isReplica: a running replica that load balancers may send reads to, with
// the request's filters (lag, replication_state, tag_*).
func isReplica(c *gin.Context, sn *snapshot) bool {
	db := sn.v.DB
	m := sn.v.Member
	if db.State != backends.StateRunning || !db.InRecovery || m.NoLoadBalance || sn.leaderNow() {
		return false
	}
	if !lagOK(c, sn, -1) {
		return false
	}
	if rs := c.Query("replication_state"); rs != "" && !(rs == "streaming" && db.Streaming) && rs != db.ReceiverState {
		return false
	}
	for k, vals := range c.Request.URL.Query() {
		tag, ok := strings.CutPrefix(k, "tag_")
		if !ok {
			continue
		}
		if got, ok := memberTag(m, tag); !ok || got != vals[0] {
			return false
		}
	}
	return true
}

// lagOK checks ?lag= (a size like 1MB or bytes: replay lag in bytes; a
// duration like 10s: replay delay). def applies when no ?lag is given (-1:
// no limit).
func lagOK(c *gin.Context, sn *snapshot, def int64) bool {
	q := c.Query("lag")
	m := sn.v.Member
	if q == "" {
		return def < 0 || (m.LagBytes >= 0 && m.LagBytes <= def)
	}
	if d, ok := parseLagDuration(q); ok {
		return replayDelay(sn) <= d
	}
	sz, err := config.ParseSize(q)
	if err != nil {
		return false
	}
	return m.LagBytes >= 0 && m.LagBytes <= int64(sz)
}

// parseLagDuration accepts Go durations with a unit ("10s", "500ms"); a bare
// number is a size in bytes (Patroni's meaning).
func parseLagDuration(q string) (time.Duration, bool) {
	if _, err := strconv.ParseFloat(q, 64); err == nil {
		return 0, false
	}
	d, err := time.ParseDuration(q)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}

// replayDelay is how far behind the primary this replica's applied data is
// in time: zero when it has replayed everything it received and streams
// (an idle primary makes the last commit old without any lag), otherwise the
// age of the last replayed commit.
func replayDelay(sn *snapshot) time.Duration {
	db := sn.v.DB
	if db.Streaming && db.Replayed.LSN >= db.Received.LSN && sn.v.Member.LagBytes == 0 {
		return 0
	}
	if db.ReplayTime.IsZero() {
		return time.Duration(1<<62 - 1)
	}
	return sn.now.Sub(db.ReplayTime)
}

func isLive(_ *gin.Context, sn *snapshot) bool {
	if sn.v.Config.Paused {
		return true
	}
	ttl := sn.v.Config.TTL.D()
	if !sn.leaderNow() {
		ttl *= 2
	}
	return !sn.v.LoopAt.IsZero() && sn.now.Sub(sn.v.LoopAt) <= ttl
}

func isReady(c *gin.Context, sn *snapshot) bool {
	if isPrimary(c, sn) {
		return true
	}
	db := sn.v.DB
	if db.State != backends.StateRunning || !db.InRecovery || !db.Streaming {
		return false
	}
	return lagOK(c, sn, int64(sn.v.Config.MaximumLagOnFailover))
}

func memberTag(m dcs.Member, k string) (string, bool) {
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

// healthBody is the JSON body of every health endpoint.
type healthBody struct {
	Name     string            `json:"name"`
	Role     string            `json:"role"`
	State    string            `json:"state"`
	Timeline int64             `json:"timeline,omitempty"`
	Lag      int64             `json:"lag"`
	Position string            `json:"position,omitempty"`
	Leader   string            `json:"leader,omitempty"`
	IsLeader bool              `json:"is_leader"`
	Paused   bool              `json:"paused"`
	Tags     map[string]string `json:"tags,omitempty"`
}

func (s *Server) health(c *gin.Context, check func(*gin.Context, *snapshot) bool) {
	sn := s.snap()
	code := http.StatusServiceUnavailable
	if check(c, sn) {
		code = http.StatusOK
	}
	if c.Request.Method != http.MethodGet {
		c.Status(code)
		return
	}
	m := sn.v.Member
	b := healthBody{Name: m.Name, Role: m.Role, State: m.State, Timeline: m.Timeline, Lag: m.LagBytes,
		Position: m.Position.String(), IsLeader: sn.leaderNow(), Paused: sn.v.Config.Paused, Tags: m.Tags}
	if sn.v.Cluster != nil && sn.v.Cluster.Leader != nil {
		b.Leader = sn.v.Cluster.Leader.Name
	}
	c.JSON(code, b)
}

// statusBody is GET /status: everything this member knows about itself.
type statusBody struct {
	agent.PeerStatus
	Member        dcs.Member      `json:"member"`
	Database      backends.Status `json:"database"`
	Decision      string          `json:"decision"`
	LeaseDeadline string          `json:"lease_deadline,omitempty"`
	LeaseLeftSec  float64         `json:"lease_remaining_seconds"`
	LoopAt        time.Time       `json:"last_loop"`
	DCSLastSeen   time.Time       `json:"dcs_last_seen"`
	DCSError      string          `json:"dcs_error,omitempty"`
	Config        config.Dynamic  `json:"config"`
	Cluster       string          `json:"cluster"`
}

func (s *Server) status(c *gin.Context) {
	sn := s.snap()
	b := statusBody{
		PeerStatus: s.d.Agent.PeerStatus(sn.now),
		Member:     sn.v.Member, Database: sn.v.DB, Decision: sn.v.Decision,
		LoopAt: sn.v.LoopAt, DCSLastSeen: sn.v.DCSAt, DCSError: sn.v.DCSError, Config: sn.v.Config, Cluster: s.d.Cluster,
	}
	if sn.leaderNow() {
		b.LeaseDeadline = "in " + sn.deadline.Sub(sn.now).Round(time.Millisecond).String()
		b.LeaseLeftSec = sn.deadline.Sub(sn.now).Seconds()
	}
	c.JSON(http.StatusOK, b)
}

func (s *Server) cluster(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	cl, err := s.d.Store.Load(ctx)
	if err != nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"error": "cannot read the DCS: " + err.Error()})
		return
	}
	c.JSON(http.StatusOK, ClusterBody(s.d.Cluster, cl))
}

// ClusterMember is one member in GET /cluster.
type ClusterMember struct {
	dcs.Member
	IsLeader bool `json:"is_leader"`
}

// ClusterView is GET /cluster.
type ClusterView struct {
	Cluster    string          `json:"cluster"`
	Leader     string          `json:"leader,omitempty"`
	Term       int64           `json:"term,omitempty"`
	Paused     bool            `json:"paused"`
	Switchover *dcs.Switchover `json:"scheduled_switchover,omitempty"`
	Members    []ClusterMember `json:"members"`
}

// ClusterBody builds the /cluster answer from a DCS view.
func ClusterBody(name string, cl *dcs.Cluster) ClusterView {
	v := ClusterView{Cluster: name, Members: []ClusterMember{}}
	if cl.Leader != nil {
		v.Leader, v.Term = cl.Leader.Name, cl.Leader.Term
	}
	if cl.Config != nil {
		if d, err := config.ParseDynamicJSON(cl.Config.Value); err == nil {
			v.Paused = d.Paused
		}
	}
	if cl.Switchover != nil {
		sw := cl.Switchover.Value
		v.Switchover = &sw
	}
	for _, m := range sortedMembers(cl) {
		v.Members = append(v.Members, ClusterMember{Member: m, IsLeader: cl.Leader != nil && cl.Leader.Name == m.Name})
	}
	return v
}

func sortedMembers(cl *dcs.Cluster) []dcs.Member {
	out := make([]dcs.Member, 0, len(cl.Members))
	for _, m := range cl.Members {
		out = append(out, m)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Name < out[j-1].Name; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func (s *Server) history(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	h, err := s.d.Store.History(ctx)
	if err != nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"error": "cannot read the DCS: " + err.Error()})
		return
	}
	c.JSON(http.StatusOK, h)
}

func (s *Server) config(c *gin.Context) {
	v := s.d.Agent.Snapshot()
	if v.Cluster == nil || v.Cluster.Config == nil {
		c.JSON(http.StatusOK, v.Config)
		return
	}
	var raw json.RawMessage = v.Cluster.Config.Value
	if !json.Valid(raw) {
		c.JSON(http.StatusBadGateway, gin.H{"error": fmt.Sprintf("the DCS config is not valid JSON")})
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", raw)
}
