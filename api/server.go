// Package api is steward's REST API: Patroni-compatible health endpoints for
// load balancers and probes, the member's own state for its peers, the
// cluster's state and dynamic configuration for operators, and Prometheus
// metrics.
//
// Health answers come from the agent's in-memory view: no database or DCS
// round trip per request, so a load balancer polling every few hundred
// milliseconds costs nothing. /primary is judged at request time against the
// lease deadline (rule 1), so it turns 503 the instant the deadline passes,
// even when the HA loop is stuck.
//
// State-changing requests (POST, PATCH, PUT, DELETE) pass the guard of
// Security (allowlist, client certificate, basic auth) and a body size
// limit; they change nothing unless they answer 2xx.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

const jsonContentType = "application/json; charset=utf-8"

// AgentView is what the API reads from the agent.
type AgentView interface {
	Snapshot() agent.View
	PeerStatus(now time.Time) agent.PeerStatus
	LeaseDeadline() time.Time
	Wake()
}

// Store is what the API needs of the DCS (for /cluster, /history, /config).
// dcs/etcd implements it.
type Store interface {
	Load(ctx context.Context) (*dcs.Cluster, error)
	History(ctx context.Context) ([]dcs.HistoryRecord, error)
	// GetConfig reads the dynamic config JSON and its version
	// (dcs.ErrNotFound when absent).
	GetConfig(ctx context.Context) ([]byte, int64, error)
	// CASConfig writes it if its version is still version (0: only if
	// absent); dcs.ErrConflict otherwise.
	CASConfig(ctx context.Context, cfg []byte, version int64) (int64, error)
}

// Deps are the API's collaborators and settings.
type Deps struct {
	Agent   AgentView
	Store   Store
	Cluster string
	Logger  *slog.Logger
	Now     func() time.Time

	// Security guards state-changing requests.
	Security Security
	// Metrics serves /metrics and counts requests (nil: a registry of the
	// server's own, without the agent's event counters).
	Metrics *Metrics
	// Reload re-reads the configuration file (POST /reload, as SIGHUP).
	// nil: POST /reload answers 503.
	Reload func() error
	// ValidateConfig adds this member's checks of a new dynamic config
	// (e.g. the watchdog safety margin against ttl) to
	// config.ParseDynamicJSON's. Its *config.Errors name the fields.
	ValidateConfig func(config.Dynamic) error
	// MaxBodyBytes bounds request bodies (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// DCSTimeout bounds each DCS call of a request (default 5s).
	DCSTimeout time.Duration
}

// Server holds the handlers.
type Server struct {
	d        Deps
	authHash *credentials
	metrics  *Metrics
	bodies   bodyCache
}

// New returns the API as an http.Handler.
func New(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.MaxBodyBytes <= 0 {
		d.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if d.DCSTimeout <= 0 {
		d.DCSTimeout = 5 * time.Second
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(MetricsOptions{Cluster: d.Cluster})
	}
	s := &Server{d: d, metrics: d.Metrics}
	if d.Security.Username != "" || d.Security.Password != "" {
		s.authHash = newCredentials(d.Security.Username, d.Security.Password)
	}
	s.metrics.attach(d.Agent, d.Now)

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	_ = r.SetTrustedProxies(nil) // never believe X-Forwarded-For
	r.HandleMethodNotAllowed = true
	r.Use(s.countRequests, gin.CustomRecoveryWithWriter(discard{}, s.recovered), s.guard)
	r.NoRoute(func(c *gin.Context) { s.fail(c, http.StatusNotFound, "no such endpoint: "+c.Request.URL.Path) })
	r.NoMethod(func(c *gin.Context) {
		s.fail(c, http.StatusMethodNotAllowed, c.Request.Method+" is not allowed on "+c.Request.URL.Path)
	})

	health := func(check healthCheck, paths ...string) {
		h := func(c *gin.Context) { s.health(c, check) }
		for _, p := range paths {
			r.GET(p, h)
			r.HEAD(p, h)
			r.OPTIONS(p, h)
		}
	}
	health(isPrimary, "/primary", "/leader", "/read-write", "/master")
	health(isStandbyLeader, "/standby-leader", "/standby_leader")
	health(isReplica, "/replica")
	health(isReadOnly, "/read-only")
	health(isSync, "/synchronous", "/sync")
	health(isQuorum, "/quorum")
	health(isAsync, "/asynchronous", "/async")
	health(isReadOnlySync, "/read-only-sync", "/read-only-synchronous")
	health(isReadOnlyQuorum, "/read-only-quorum")
	health(isHealthy, "/health")
	health(isLive, "/liveness")
	health(isReady, "/readiness")

	// GET / is this member in full, with /primary's status code (Patroni's
	// GET / is the primary check; HAProxy's bare `option httpchk` sends
	// OPTIONS /). GET /status always answers 200: peers read it.
	r.GET("/", func(c *gin.Context) { s.status(c, true) })
	r.HEAD("/", func(c *gin.Context) { s.health(c, isPrimary) })
	r.OPTIONS("/", func(c *gin.Context) { s.health(c, isPrimary) })
	r.GET("/status", func(c *gin.Context) { s.status(c, false) })
	r.GET("/cluster", s.cluster)
	r.GET("/history", s.history)
	r.GET("/config", s.getConfig)
	r.PATCH("/config", s.patchConfig)
	r.PUT("/config", s.putConfig)
	r.POST("/reload", s.reload)
	mh := s.metrics.Handler()
	r.GET("/metrics", gin.WrapH(mh))
	registerActions(r, s) // actions.go: state-changing endpoints of the HA protocol
	return r
}

// fail answers an error with a JSON body naming what is wrong.
func (s *Server) fail(c *gin.Context, code int, msg string) {
	c.JSON(code, errorBody{Error: msg})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (s *Server) recovered(c *gin.Context, err any) {
	s.d.Logger.Error("API handler panicked", "method", c.Request.Method, "path", c.Request.URL.Path, "panic", fmt.Sprint(err))
	s.fail(c, http.StatusInternalServerError, "internal error")
	c.Abort()
}

// countRequests feeds steward_api_requests_total: the route template (never
// the raw URL, so that the label set stays bounded) and the status code.
func (s *Server) countRequests(c *gin.Context) {
	c.Next()
	path := c.FullPath()
	if path == "" {
		path = "unmatched"
	}
	s.metrics.apiRequest(path, statusText(c.Writer.Status()))
}

var statusTexts = func() map[int]string {
	m := map[int]string{}
	for code := 100; code < 600; code++ {
		m[code] = strconv.Itoa(code)
	}
	return m
}()

func statusText(code int) string {
	if t, ok := statusTexts[code]; ok {
		return t
	}
	return strconv.Itoa(code)
}

// StatusBody is GET /status (and GET /): everything this member knows about
// itself. It embeds agent.PeerStatus, which peers decode.
type StatusBody struct {
	agent.PeerStatus
	Member        dcs.Member      `json:"member"`
	Database      backends.Status `json:"database"`
	Decision      string          `json:"decision"`
	Lag           int64           `json:"lag"` // replica: bytes behind the leader (-1 unknown); primary: 0
	LeaseDeadline string          `json:"lease_deadline,omitempty"`
	LeaseLeftSec  float64         `json:"lease_remaining_seconds"`
	LoopAt        time.Time       `json:"last_loop"`
	DCSLastSeen   time.Time       `json:"dcs_last_seen"`
	DCSError      string          `json:"dcs_error,omitempty"`
	Config        config.Dynamic  `json:"config"`
	Cluster       string          `json:"cluster"`
}

func (s *Server) status(c *gin.Context, primaryCode bool) {
	sn := s.snap()
	b := StatusBody{
		PeerStatus: s.d.Agent.PeerStatus(sn.now),
		Member:     sn.v.Member, Database: sn.v.DB, Decision: sn.v.Decision,
		LoopAt: sn.v.LoopAt, DCSLastSeen: sn.v.DCSAt, DCSError: sn.v.DCSError, Config: sn.v.Config, Cluster: s.d.Cluster,
		Lag: sn.v.Member.LagBytes,
	}
	if sn.v.Member.Role == dcs.RoleReplica {
		b.Lag = byteLag(&sn.v)
	}
	if sn.leaderNow() {
		b.LeaseDeadline = "in " + sn.deadline.Sub(sn.now).Round(time.Millisecond).String()
		b.LeaseLeftSec = sn.deadline.Sub(sn.now).Seconds()
	}
	code := http.StatusOK
	if primaryCode && !isPrimary(sn, &healthQuery{}) {
		code = http.StatusServiceUnavailable
	}
	c.JSON(code, b)
}

func (s *Server) cluster(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.d.DCSTimeout)
	defer cancel()
	cl, err := s.d.Store.Load(ctx)
	if err != nil {
		s.fail(c, http.StatusServiceUnavailable, "cannot read the DCS: "+err.Error())
		return
	}
	c.JSON(http.StatusOK, ClusterBody(s.d.Cluster, cl))
}

// ClusterMember is one member in GET /cluster.
type ClusterMember struct {
	dcs.Member
	// Host and Port of the member's database (from db_address).
	Host     string `json:"host,omitempty"`
	Port     int    `json:"port,omitempty"`
	IsLeader bool   `json:"is_leader"`
}

// ClusterView is GET /cluster.
type ClusterView struct {
	Cluster    string          `json:"cluster"`
	Leader     string          `json:"leader,omitempty"`
	Term       int64           `json:"term,omitempty"`
	Paused     bool            `json:"paused"`
	Switchover *dcs.Switchover `json:"scheduled_switchover,omitempty"`
	// Synchronous is the DCS sync key (rule 6): which members hold every
	// acknowledged commit. Absent when the cluster never ran synchronous
	// replication.
	Synchronous *ClusterSync    `json:"synchronous,omitempty"`
	Members     []ClusterMember `json:"members"`
}

// ClusterSync is the sync key as GET /cluster shows it.
type ClusterSync struct {
	Mode    string   `json:"mode"`
	Leader  string   `json:"leader,omitempty"`
	Members []string `json:"members"`
	// Quorum: every acknowledged commit is on at least this many of
	// Members (modes on and strict: all of them).
	Quorum int `json:"quorum"`
	// Error: the key exists but cannot be decoded; nobody may be promoted
	// until the leader rewrites it.
	Error string `json:"error,omitempty"`
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
	if cl.SyncError != "" {
		v.Synchronous = &ClusterSync{Members: []string{}, Error: cl.SyncError}
	} else if cl.Sync != nil {
		s := cl.Sync.Value
		mode := s.Mode
		if mode == "" {
			mode = "off"
		}
		v.Synchronous = &ClusterSync{Mode: mode, Leader: s.Leader, Members: append([]string{}, s.Members...), Quorum: s.Quorum}
	}
	for _, m := range sortedMembers(cl) {
		cm := ClusterMember{Member: m, IsLeader: cl.Leader != nil && cl.Leader.Name == m.Name}
		if h, p, err := net.SplitHostPort(m.DBURL); err == nil {
			cm.Host = h
			cm.Port, _ = strconv.Atoi(p)
		}
		v.Members = append(v.Members, cm)
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
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.d.DCSTimeout)
	defer cancel()
	h, err := s.d.Store.History(ctx)
	if err != nil {
		s.fail(c, http.StatusServiceUnavailable, "cannot read the DCS: "+err.Error())
		return
	}
	if h == nil {
		h = []dcs.HistoryRecord{}
	}
	c.JSON(http.StatusOK, h)
}
