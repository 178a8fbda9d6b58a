package api

import (
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// MetricsOptions describe the member the metrics are about.
type MetricsOptions struct {
	Cluster string // constant label cluster
	Member  string // constant label member
	Version string // steward_build_info{version}
	Commit  string // steward_build_info{commit}
}

// Metrics is steward's Prometheus instrumentation, on a registry of its own
// (never the global one, so that several members can run in one process).
// It implements agent.Metrics: the agent's events become counters and the
// loop-duration histogram. The gauges (role, leadership, lag, timeline,
// lease, paused, writable, ...) are computed at scrape time from the
// agent's view (a custom collector), so they are never stale. Every series
// carries the constant labels cluster and member.
type Metrics struct {
	reg *prometheus.Registry

	loop          prometheus.Histogram
	leaderChanges *prometheus.CounterVec
	dcsErrors     *prometheus.CounterVec
	fencing       *prometheus.CounterVec
	apiRequests   *prometheus.CounterVec

	src atomic.Pointer[viewSource]
}

var _ agent.Metrics = (*Metrics)(nil)

type viewSource struct {
	agent AgentView
	now   func() time.Time
}

// Label values that exist from the start (at 0), so that increase() and
// rate() see the first event.
var (
	leaderChangeReasons = []string{"bootstrap", "failover", "switchover", "manual-failover", "adopt", "reacquire", "lost", "released", "shutdown", "deadline"}
	dcsOps              = []string{"load", "renew", "acquire", "release", "publish", "status", "history", "config"}
	fencingResults      = []string{"success", "failure", "timeout", "skipped"}
	metricRoles         = []string{dcs.RolePrimary, dcs.RoleReplica, dcs.RoleUninitialized, dcs.RoleUnknown}
)

// NewMetrics builds the registry with every steward metric and the Go
// runtime and process collectors.
func NewMetrics(o MetricsOptions) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"cluster": o.Cluster, "member": o.Member}, m.reg)
	m.loop = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "steward_loop_duration_seconds",
		Help:    "Duration of one HA loop (observe, decide, act, publish).",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	})
	m.leaderChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "steward_leader_changes_total",
		Help: "Times this member became or stopped being the leader, by reason.",
	}, []string{"reason"})
	m.dcsErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "steward_dcs_errors_total",
		Help: "Failed DCS (etcd) calls, by operation.",
	}, []string{"op"})
	m.fencing = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "steward_fencing_attempts_total",
		Help: "Fencing steps run against a former primary, by result.",
	}, []string{"result"})
	m.apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "steward_api_requests_total",
		Help: "REST API requests answered, by route template and status code.",
	}, []string{"path", "code"})
	for _, r := range leaderChangeReasons {
		m.leaderChanges.WithLabelValues(r)
	}
	for _, op := range dcsOps {
		m.dcsErrors.WithLabelValues(op)
	}
	for _, r := range fencingResults {
		m.fencing.WithLabelValues(r)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "steward_build_info",
		Help:        "Always 1; the labels say which steward build runs.",
		ConstLabels: prometheus.Labels{"version": o.Version, "commit": o.Commit, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(m.loop, m.leaderChanges, m.dcsErrors, m.fencing, m.apiRequests, buildInfo,
		&viewCollector{m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// LoopDone records one HA loop (agent.Metrics).
func (m *Metrics) LoopDone(d time.Duration) { m.loop.Observe(d.Seconds()) }

// LeaderChange counts a leadership change (agent.Metrics).
func (m *Metrics) LeaderChange(reason string) { m.leaderChanges.WithLabelValues(reason).Inc() }

// DCSError counts a failed DCS call (agent.Metrics).
func (m *Metrics) DCSError(op string) { m.dcsErrors.WithLabelValues(op).Inc() }

// FencingAttempt counts a fencing step (agent.Metrics).
func (m *Metrics) FencingAttempt(result string) { m.fencing.WithLabelValues(result).Inc() }

// Gatherer is the registry, for tests and for serving it elsewhere.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// attach makes the scrape-time gauges read this agent view.
func (m *Metrics) attach(a AgentView, now func() time.Time) {
	m.src.Store(&viewSource{agent: a, now: now})
}

func (m *Metrics) apiRequest(path, code string) { m.apiRequests.WithLabelValues(path, code).Inc() }

// viewCollector computes the gauges from the agent's view at scrape time.
type viewCollector struct{ m *Metrics }

var (
	descRole = prometheus.NewDesc("steward_role",
		"1 for the role this member's database runs as (primary, replica, uninitialized, unknown), 0 for the others.", []string{"role"}, nil)
	descIsLeader = prometheus.NewDesc("steward_is_leader",
		"1 while this member holds the leader lease by its own deadline (rule 1), else 0.", nil, nil)
	descLag = prometheus.NewDesc("steward_replication_lag_bytes",
		"Replica: bytes of WAL the replica has not replayed, against the leader's last published position (absent when unknown); primary: 0.", nil, nil)
	descDelay = prometheus.NewDesc("steward_replay_delay_seconds",
		"Replica: age of the last replayed transaction's commit (absent when unknown).", nil, nil)
	descTimeline = prometheus.NewDesc("steward_timeline",
		"The database's timeline (PostgreSQL); absent when unknown.", nil, nil)
	descLease = prometheus.NewDesc("steward_lease_remaining_seconds",
		"Seconds until this member's leader lease deadline; 0 when it is not the leader.", nil, nil)
	descPaused = prometheus.NewDesc("steward_paused",
		"1 when the cluster is in maintenance mode (paused).", nil, nil)
	descWritable = prometheus.NewDesc("steward_writable",
		"1 when this member's database accepts writes.", nil, nil)
	descEligible = prometheus.NewDesc("steward_failover_eligible",
		"1 when this member could be promoted by a failover now (rule 3).", nil, nil)
	descHealthy = prometheus.NewDesc("steward_database_running",
		"1 when this member's database is running and answering queries.", nil, nil)
	descPending = prometheus.NewDesc("steward_pending_restart",
		"1 when the database needs a restart to apply changed settings.", nil, nil)
	descDCSSeen = prometheus.NewDesc("steward_dcs_last_seen_timestamp_seconds",
		"Unix time of the last successful read of the DCS by the HA loop.", nil, nil)
	descLoopAt = prometheus.NewDesc("steward_loop_last_run_timestamp_seconds",
		"Unix time the last HA loop started.", nil, nil)
)

func (c *viewCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRole, descIsLeader, descLag, descDelay, descTimeline, descLease, descPaused,
		descWritable, descEligible, descHealthy, descPending, descDCSSeen, descLoopAt} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *viewCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.src.Load()
	if src == nil {
		return
	}
	sn := &snapshot{v: src.agent.Snapshot(), now: src.now(), deadline: src.agent.LeaseDeadline()}
	v := &sn.v
	m := &v.Member
	gauge := func(d *prometheus.Desc, val float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, val, labels...)
	}
	for _, r := range metricRoles {
		gauge(descRole, b2f(m.Role == r), r)
	}
	leader := sn.leaderNow()
	gauge(descIsLeader, b2f(leader))
	switch m.Role {
	case dcs.RolePrimary:
		gauge(descLag, 0)
	case dcs.RoleReplica:
		if lag := byteLag(v); lag >= 0 {
			gauge(descLag, float64(lag))
		}
		if !v.DB.ReplayTime.IsZero() {
			gauge(descDelay, replayDelay(sn).Seconds())
		}
	}
	if m.Timeline > 0 {
		gauge(descTimeline, float64(m.Timeline))
	}
	left := 0.0
	if leader {
		left = sn.deadline.Sub(sn.now).Seconds()
	}
	gauge(descLease, left)
	gauge(descPaused, b2f(v.Config.Paused))
	gauge(descWritable, b2f(v.DB.State == backends.StateRunning && v.DB.Writable))
	gauge(descEligible, b2f(m.Eligible))
	gauge(descHealthy, b2f(v.DB.State == backends.StateRunning))
	gauge(descPending, b2f(v.DB.PendingRestart))
	if !v.DCSAt.IsZero() {
		gauge(descDCSSeen, float64(v.DCSAt.UnixNano())/1e9)
	}
	if !v.LoopAt.IsZero() {
		gauge(descLoopAt, float64(v.LoopAt.UnixNano())/1e9)
	}
}
