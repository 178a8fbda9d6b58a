package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/dcs"
)

// node is what the cross-backend checks need of a member, PostgreSQL or
// MySQL alike.
type node struct {
	name    string
	apiPort int
	steward func(args ...string) (string, int)
	crash   func()
}

// nodeCluster is a running cluster of either backend.
type nodeCluster struct {
	nodes       []node
	waitHealthy func(time.Duration) string // the leader's name
	store       interface {
		History(context.Context) ([]dcs.HistoryRecord, error)
	}
}

func pgNodes(t *testing.T) nodeCluster {
	c, _ := startAPICluster(t, 3, Fast)
	nc := nodeCluster{waitHealthy: func(d time.Duration) string { return c.WaitHealthy(d).Name }, store: c.Store()}
	for _, m := range c.Members {
		nc.nodes = append(nc.nodes, node{name: m.Name, apiPort: m.APIPort, steward: m.Steward, crash: m.Crash})
	}
	return nc
}

func myNodes(t *testing.T) nodeCluster {
	c := NewMyCluster(t, 3, Fast)
	c.Members[0].Start()
	Eventually(t, 60*time.Second, "m1 leads", func() bool { l := c.Leader(); return l != nil && l.Name == "m1" })
	for _, m := range c.Members[1:] {
		m.Start()
	}
	nc := nodeCluster{waitHealthy: func(d time.Duration) string { return c.WaitHealthy(d).Name }, store: c.store}
	for _, m := range c.Members {
		nc.nodes = append(nc.nodes, node{name: m.Name, apiPort: m.APIPort, steward: m.Steward, crash: m.Crash})
	}
	return nc
}

// The same operator-facing behaviour for both backends: health endpoints,
// `steward list`, the history and the metrics, on a healthy cluster and
// across a failover (kill -9 of the primary's agent and database).
func TestObservabilityByBackend(t *testing.T) {
	t.Parallel()
	for _, b := range []struct {
		name  string
		start func(*testing.T) nodeCluster
	}{{"postgres", pgNodes}, {"mysql", myNodes}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			nc := b.start(t)
			leader := nc.waitHealthy(90 * time.Second)
			checkRoles(t, nc.nodes, leader, "")
			for _, n := range nc.nodes {
				if n.name == leader {
					continue
				}
				if v := metricOf(t, n, "steward_leader_changes_total", "reason", "failover"); v != 0 {
					t.Errorf("%s: failovers counted before any: %v", n.name, v)
				}
			}

			var old node
			for _, n := range nc.nodes {
				if n.name == leader {
					old = n
				}
			}
			old.crash()
			var newLeader string
			Eventually(t, Fast.TTL+15*time.Second, "a new leader after the crash", func() bool {
				h, err := nc.store.History(context.Background())
				if err != nil || len(h) == 0 {
					return false
				}
				last := h[len(h)-1]
				if last.Kind != "failover" || last.OldLeader != leader {
					return false
				}
				newLeader = last.NewLeader
				return true
			})
			var survivors []node
			for _, n := range nc.nodes {
				if n.name != leader {
					survivors = append(survivors, n)
				}
			}
			Eventually(t, 30*time.Second, "the survivors report the new roles", func() bool {
				return rolesOK(survivors, newLeader, leader) == ""
			})
			checkRoles(t, survivors, newLeader, leader)
			for _, n := range survivors {
				if n.name != newLeader {
					continue
				}
				if v := metricOf(t, n, "steward_leader_changes_total", "reason", "failover"); v != 1 {
					t.Errorf("%s: steward_leader_changes_total{reason=failover} = %v after its promotion, want 1", n.name, v)
				}
			}
			h, err := nc.store.History(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			last := h[len(h)-1]
			if last.Term == 0 || last.Position.IsZero() || last.Reason == "" || len(last.Candidates) == 0 {
				t.Errorf("the failover's history record lacks term, position, reason or candidates: %+v", last)
			}
			out, code := survivors[0].steward("history")
			if code != 0 || !containsAll(out, leader, newLeader, "failover") {
				t.Errorf("steward history (exit %d) does not show the failover %s -> %s:\n%s", code, leader, newLeader, out)
			}
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

func httpCode(n node, path string) int {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d%s", n.apiPort, path))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// rolesOK says what is wrong ("" when nothing) with the health endpoints and
// `steward list` of the nodes, given the leader (and a dead member gone).
func rolesOK(nodes []node, leader, dead string) string {
	for _, n := range nodes {
		isLeader := n.name == leader
		want := map[string]int{"/primary": 503, "/replica": 200, "/health": 200, "/liveness": 200, "/readiness": 200, "/asynchronous": 200}
		if isLeader {
			want["/primary"], want["/replica"], want["/asynchronous"] = 200, 503, 503
		}
		for p, w := range want {
			if got := httpCode(n, p); got != w {
				return fmt.Sprintf("%s: GET %s = %d, want %d", n.name, p, got, w)
			}
		}
	}
	out, code := nodes[0].steward("list", "-o", "json")
	if code != 0 {
		return fmt.Sprintf("steward list exited %d: %s", code, out)
	}
	var v struct {
		Leader  string `json:"leader"`
		Members []struct {
			Name  string `json:"name"`
			Role  string `json:"role"`
			State string `json:"state"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return fmt.Sprintf("steward list -o json: %v\n%s", err, out)
	}
	roles := map[string]string{}
	for _, m := range v.Members {
		roles[m.Name] = m.Role + "/" + m.State
	}
	for _, n := range nodes {
		want := "replica/streaming"
		if n.name == leader {
			want = "leader/running"
		}
		if roles[n.name] != want {
			return fmt.Sprintf("steward list shows %s as %q, want %q (list: %v)", n.name, roles[n.name], want, roles)
		}
	}
	if r, ok := roles[dead]; ok && dead != "" && (r == "leader/running" || r == "replica/streaming") {
		return fmt.Sprintf("steward list still shows the dead %s as %q", dead, r)
	}
	return ""
}

func checkRoles(t *testing.T, nodes []node, leader, dead string) {
	t.Helper()
	why := ""
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if why = rolesOK(nodes, leader, dead); why == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s, health endpoints and steward list still disagree with the roles: %s", why)
		}
	}
	for _, n := range nodes {
		want := 0.0
		if n.name == leader {
			want = 1
		}
		for _, m := range []string{"steward_is_leader", "steward_writable"} {
			if v := metricOf(t, n, m); v != want {
				t.Errorf("%s: %s = %v, want %v", n.name, m, v, want)
			}
		}
	}
}

func metricOf(t *testing.T, n node, name string, labels ...string) float64 {
	t.Helper()
	mfs := scrapeMetrics(t, &Member{Name: n.name, APIPort: n.apiPort})
	if mfs == nil {
		t.Fatalf("%s does not serve /metrics", n.name)
	}
	return mustMetric(t, mfs, n.name, name, labels...)
}
