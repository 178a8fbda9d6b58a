package api

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value returns the value of the series of name whose labels include
// labels (k, v pairs); ok false when absent.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsLint(t *testing.T) {
	m := NewMetrics(MetricsOptions{Cluster: "main", Member: "m1", Version: "1.0", Commit: "abc"})
	fa := &fakeAgent{}
	p := primaryView()
	fa.set(p.v, p.deadline)
	m.attach(fa, func() time.Time { return t0 })
	m.LoopDone(20 * time.Millisecond)
	m.apiRequest("/primary", "200")
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	// promlint directly (testutil.GatherAndLint is the same linter; its
	// package pulls in a diff library this module does not carry).
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"steward_role", "steward_is_leader", "steward_replication_lag_bytes", "steward_timeline",
		"steward_lease_remaining_seconds", "steward_loop_duration_seconds", "steward_leader_changes_total", "steward_dcs_errors_total",
		"steward_fencing_attempts_total", "steward_api_requests_total", "steward_paused", "steward_writable", "steward_build_info"} {
		if !names[want] {
			t.Errorf("%s is not exported", want)
		}
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "steward_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestMetricsFromView(t *testing.T) {
	m := NewMetrics(MetricsOptions{Cluster: "main", Member: "m1", Version: "1.0", Commit: "abc"})
	fa := &fakeAgent{}
	now := t0
	m.attach(fa, func() time.Time { return now })
	p := primaryView()
	fa.set(p.v, t0.Add(2500*time.Millisecond))
	mfs := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"steward_is_leader", nil, 1},
		{"steward_role", []string{"role", "primary"}, 1},
		{"steward_role", []string{"role", "replica"}, 0},
		{"steward_writable", nil, 1},
		{"steward_lease_remaining_seconds", nil, 2.5},
		{"steward_timeline", nil, 2},
		{"steward_replication_lag_bytes", nil, 0},
		{"steward_paused", nil, 0},
		{"steward_build_info", []string{"version", "1.0", "commit", "abc"}, 1},
		{"steward_is_leader", []string{"cluster", "main", "member", "m1"}, 1},
		{"steward_leader_changes_total", []string{"reason", "failover"}, 0},
		{"steward_dcs_errors_total", []string{"op", "renew"}, 0},
		{"steward_fencing_attempts_total", []string{"result", "success"}, 0},
	} {
		if got, ok := value(mfs, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, n := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := mfs[n]; !ok {
			t.Errorf("%s missing (runtime/process collectors)", n)
		}
	}
	// The lease deadline passes: is_leader turns 0 at scrape time.
	now = t0.Add(3 * time.Second)
	mfs = scrape(t, m)
	if v, _ := value(mfs, "steward_is_leader"); v != 0 {
		t.Errorf("is_leader after the deadline = %v", v)
	}
	if v, _ := value(mfs, "steward_lease_remaining_seconds"); v != 0 {
		t.Errorf("lease remaining after the deadline = %v", v)
	}
	// A lagging replica.
	r := replicaView()
	r.v.Member.LagBytes = 5000
	r.v.Config.Paused = true
	fa.set(r.v, time.Time{})
	mfs = scrape(t, m)
	for name, want := range map[string]float64{"steward_replication_lag_bytes": 5000, "steward_paused": 1, "steward_writable": 0, "steward_is_leader": 0, "steward_failover_eligible": 1} {
		if v, ok := value(mfs, name); !ok || v != want {
			t.Errorf("replica %s = %v (%v), want %v", name, v, ok, want)
		}
	}
	if v, _ := value(mfs, "steward_role", "role", "replica"); v != 1 {
		t.Errorf("role replica = %v", v)
	}
	// Unknown lag: no sample rather than a magic value.
	r.v.Member.LagBytes = -1
	r.v.DB.Streaming = false
	fa.set(r.v, time.Time{})
	if _, ok := value(scrape(t, m), "steward_replication_lag_bytes"); ok {
		t.Errorf("unknown lag exported")
	}
}

func TestMetricsEvents(t *testing.T) {
	m := NewMetrics(MetricsOptions{Cluster: "main", Member: "m1"})
	m.LeaderChange("failover")
	m.LeaderChange("failover")
	m.LeaderChange("lost")
	m.DCSError("renew")
	m.FencingAttempt("timeout")
	m.LoopDone(30 * time.Millisecond)
	m.LoopDone(2 * time.Second)
	mfs := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"steward_leader_changes_total", []string{"reason", "failover"}, 2},
		{"steward_leader_changes_total", []string{"reason", "lost"}, 1},
		{"steward_dcs_errors_total", []string{"op", "renew"}, 1},
		{"steward_fencing_attempts_total", []string{"result", "timeout"}, 1},
		{"steward_loop_duration_seconds", nil, 2},
	} {
		if got, ok := value(mfs, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// /metrics is served in the text format; request counts use the route
// template, never the raw URL.
func TestMetricsEndpointAndRequestLabels(t *testing.T) {
	m := NewMetrics(MetricsOptions{Cluster: "main", Member: "m1"})
	h, _, _ := newTestServer(t, replicaView(), Deps{Metrics: m})
	do(h, "GET", "/replica?lag=1MB", "")
	do(h, "GET", "/replica?lag=2MB&tag_x=y", "")
	do(h, "HEAD", "/replica", "")
	do(h, "GET", "/primary", "")
	do(h, "GET", "/replica?lag=bad", "")
	do(h, "GET", "/no/such/path/1234", "")
	do(h, "GET", "/no/such/path/5678", "")
	code, body, hdr := do(h, "GET", "/metrics", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics = %d %s", code, hdr.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"path", "/replica", "code", "200"}, 2},
		{[]string{"path", "/replica", "code", "503"}, 1}, // tag_x=y does not match
		{[]string{"path", "/primary", "code", "503"}, 1},
		{[]string{"path", "/replica", "code", "400"}, 1},
		{[]string{"path", "unmatched", "code", "404"}, 2},
	} {
		if got, ok := value(mfs, "steward_api_requests_total", c.labels...); !ok || got != c.want {
			t.Errorf("steward_api_requests_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if strings.Contains(body, "lag=") || strings.Contains(body, "/no/such") {
		t.Fatalf("raw URLs leaked into labels")
	}
	if _, ok := value(mfs, "steward_role", "role", "replica", "cluster", "main", "member", "m1"); !ok {
		t.Fatalf("steward_role missing from /metrics")
	}
}
