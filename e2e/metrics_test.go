package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeMetrics fetches a member's /metrics and parses it with the
// Prometheus text parser (nil when the member does not answer).
func scrapeMetrics(t testing.TB, m *Member) map[string]*dto.MetricFamily {
	t.Helper()
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", m.APIPort))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: GET /metrics = %s", m.Name, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s: /metrics does not parse: %v", m.Name, err)
	}
	return mfs
}

// metricValue is the value of the series of name with the given labels
// (k, v pairs); ok false when absent.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
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
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func mustMetric(t testing.TB, mfs map[string]*dto.MetricFamily, who, name string, labels ...string) float64 {
	t.Helper()
	v, ok := metricValue(mfs, name, labels...)
	if !ok {
		t.Fatalf("%s: /metrics has no %s%v", who, name, labels)
	}
	return v
}

// /metrics, scraped and parsed as Prometheus does, shows leadership move
// across a failover: steward_is_leader and steward_leader_changes_total.
func TestMetrics(t *testing.T) {
	t.Parallel()
	c, leader := startAPICluster(t, 2, Fast)
	other := c.Members[1]
	if other == leader {
		other = c.Members[0]
	}
	lm, om := scrapeMetrics(t, leader), scrapeMetrics(t, other)
	if lm == nil || om == nil {
		t.Fatal("a member does not serve /metrics")
	}
	lint, err := promlint.NewWithMetricFamilies(func() []*dto.MetricFamily {
		var out []*dto.MetricFamily
		for _, mf := range lm {
			out = append(out, mf)
		}
		return out
	}()).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lint {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, c := range []struct {
		mfs    map[string]*dto.MetricFamily
		who    string
		name   string
		labels []string
		want   float64
	}{
		{lm, leader.Name, "steward_is_leader", []string{"cluster", "e2e", "member", leader.Name}, 1},
		{lm, leader.Name, "steward_writable", nil, 1},
		{lm, leader.Name, "steward_role", []string{"role", "primary"}, 1},
		{lm, leader.Name, "steward_timeline", nil, 1},
		{om, other.Name, "steward_is_leader", []string{"member", other.Name}, 0},
		{om, other.Name, "steward_writable", nil, 0},
		{om, other.Name, "steward_role", []string{"role", "replica"}, 1},
		{om, other.Name, "steward_lease_remaining_seconds", nil, 0},
		{om, other.Name, "steward_leader_changes_total", []string{"reason", "failover"}, 0},
	} {
		if got := mustMetric(t, c.mfs, c.who, c.name, c.labels...); got != c.want {
			t.Errorf("%s: %s%v = %v, want %v", c.who, c.name, c.labels, got, c.want)
		}
	}
	if v := mustMetric(t, lm, leader.Name, "steward_leader_changes_total", "reason", "bootstrap"); v != 1 {
		t.Errorf("%s: leader changes (bootstrap) = %v, want 1", leader.Name, v)
	}
	if v := mustMetric(t, lm, leader.Name, "steward_lease_remaining_seconds"); v <= 0 || v > Fast.TTL.Seconds() {
		t.Errorf("%s: lease remaining %v s", leader.Name, v)
	}
	if v := mustMetric(t, lm, leader.Name, "steward_loop_duration_seconds"); v < 1 {
		t.Errorf("%s: no loop observed (%v)", leader.Name, v)
	}
	if v := mustMetric(t, om, other.Name, "steward_replication_lag_bytes"); v < 0 {
		t.Errorf("%s: lag %v", other.Name, v)
	}
	mustMetric(t, lm, leader.Name, "steward_build_info")
	mustMetric(t, lm, leader.Name, "go_goroutines")
	mustMetric(t, lm, leader.Name, "process_resident_memory_bytes")
	if v := mustMetric(t, lm, leader.Name, "steward_api_requests_total", "path", "/status", "code", "200"); v < 1 {
		t.Errorf("%s: /status requests %v", leader.Name, v)
	}

	killed := time.Now()
	leader.Crash()
	var after map[string]*dto.MetricFamily
	took := Eventually(t, Fast.TTL+15*time.Second, other.Name+" reports steward_is_leader 1 and is writable", func() bool {
		after = scrapeMetrics(t, other)
		if after == nil {
			return false
		}
		il, _ := metricValue(after, "steward_is_leader")
		w, _ := metricValue(after, "steward_writable")
		return il == 1 && w == 1
	})
	t.Logf("MEASURED metrics: kill -9 of the primary -> steward_is_leader 1 and steward_writable 1 on %s: %v", other.Name, took.Round(time.Millisecond))
	if v := mustMetric(t, after, other.Name, "steward_leader_changes_total", "reason", "failover"); v != 1 {
		t.Errorf("%s: leader changes (failover) = %v after the failover, want 1", other.Name, v)
	}
	if v := mustMetric(t, after, other.Name, "steward_role", "role", "primary"); v != 1 {
		t.Errorf("%s: steward_role{role=primary} = %v", other.Name, v)
	}
	if v := mustMetric(t, after, other.Name, "steward_timeline"); v != 2 {
		t.Errorf("%s: timeline %v after the promotion, want 2", other.Name, v)
	}
	if v := mustMetric(t, after, other.Name, "steward_lease_remaining_seconds"); v <= 0 {
		t.Errorf("%s: lease remaining %v after taking the lead", other.Name, v)
	}

	// The old primary comes back as a replica: a fresh process, 0 leader
	// changes, not leader.
	leader.Start()
	Eventually(t, 60*time.Second, leader.Name+" reports role replica", func() bool {
		m := scrapeMetrics(t, leader)
		if m == nil {
			return false
		}
		r, _ := metricValue(m, "steward_role", "role", "replica")
		il, _ := metricValue(m, "steward_is_leader")
		return r == 1 && il == 0
	})
	_ = killed
}
