package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/dcs"
)

// apiCall makes one request to a member's API.
func apiCall(t testing.TB, m *Member, method, path, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", m.APIPort, path), rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	cl := http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func sameJSON(a, b string) bool {
	var x, y any
	return json.Unmarshal([]byte(a), &x) == nil && json.Unmarshal([]byte(b), &y) == nil && reflect.DeepEqual(x, y)
}

func dcsConfig(t testing.TB, c *Cluster) (string, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, ver, err := c.Store().GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw), ver
}

// The operator endpoints of a real member against a real etcd: /cluster,
// /history, /config with PATCH/PUT (validation, CAS, If-Match), /reload,
// and the health methods.
func TestAPI(t *testing.T) {
	t.Parallel()
	c, leader := startAPICluster(t, 1, Fast)

	// Health: GET body, HEAD and OPTIONS status only.
	code, body, _ := apiCall(t, leader, "GET", "/primary", "")
	var hb api.HealthBody
	if code != 200 || json.Unmarshal([]byte(body), &hb) != nil || hb.Role != "primary" || !hb.IsLeader || hb.Timeline != 1 || hb.Leader != leader.Name {
		t.Fatalf("GET /primary = %d %s", code, body)
	}
	for _, m := range []string{"HEAD", "OPTIONS"} {
		if code, body, _ := apiCall(t, leader, m, "/primary", ""); code != 200 || body != "" {
			t.Errorf("%s /primary = %d %q", m, code, body)
		}
		if code, _, _ := apiCall(t, leader, m, "/replica", ""); code != 503 {
			t.Errorf("%s /replica on the primary = %d", m, code)
		}
	}
	if code, body, _ := apiCall(t, leader, "GET", "/replica?lag=abc", ""); code != 400 || !strings.Contains(body, "lag") {
		t.Errorf("GET /replica?lag=abc = %d %s", code, body)
	}

	// /cluster and /history from the DCS.
	code, body, _ = apiCall(t, leader, "GET", "/cluster", "")
	var cv api.ClusterView
	if code != 200 || json.Unmarshal([]byte(body), &cv) != nil || cv.Leader != leader.Name || len(cv.Members) != 1 {
		t.Fatalf("GET /cluster = %d %s", code, body)
	}
	if m := cv.Members[0]; m.Host != "127.0.0.1" || m.Port != leader.PGPort || m.Role != "primary" || !m.IsLeader || m.Timeline != 1 {
		t.Errorf("/cluster member %+v", m)
	}
	code, body, _ = apiCall(t, leader, "GET", "/history", "")
	var hist []dcs.HistoryRecord
	if code != 200 || json.Unmarshal([]byte(body), &hist) != nil || len(hist) == 0 || hist[0].Kind != "bootstrap" {
		t.Fatalf("GET /history = %d %s", code, body)
	}

	// GET /config: the DCS copy and its version.
	raw0, ver0 := dcsConfig(t, c)
	code, body, hdr := apiCall(t, leader, "GET", "/config", "")
	if code != 200 || strings.TrimSpace(body) != strings.TrimSpace(raw0) || hdr.Get("ETag") != fmt.Sprintf(`"%d"`, ver0) {
		t.Fatalf("GET /config = %d %s (ETag %s), DCS %s v%d", code, body, hdr.Get("ETag"), raw0, ver0)
	}

	// Bad requests change nothing.
	for _, bad := range []struct {
		method, body string
		hdr          []string
		code         int
		names        string
	}{
		{"PATCH", `{"ttl": "1s"}`, nil, 400, "config.ttl"},
		{"PATCH", `{"loop_wiat": "1s"}`, nil, 400, "config.loop_wiat"},
		{"PATCH", `{"paused": 1}`, nil, 400, "config.paused"},
		{"PATCH", `{"paused": true`, nil, 400, "body"},
		{"PUT", `[]`, nil, 400, "body"},
		{"PATCH", `{"paused": true}`, []string{"If-Match", fmt.Sprintf(`"%d"`, ver0-1)}, 412, "changed"},
		{"PATCH", `{"x": "` + strings.Repeat("y", 70<<10) + `"}`, nil, 413, "body"},
	} {
		code, body, _ := apiCall(t, leader, bad.method, "/config", bad.body, bad.hdr...)
		if code != bad.code || !strings.Contains(body, bad.names) {
			t.Errorf("%s /config %.40s = %d %s, want %d naming %s", bad.method, bad.body, code, body, bad.code, bad.names)
		}
		if raw, ver := dcsConfig(t, c); raw != raw0 || ver != ver0 {
			t.Fatalf("%s /config %.40s (%d) changed the DCS config: %s v%d", bad.method, bad.body, code, raw, ver)
		}
	}

	// PATCH merges and the agent applies it.
	code, body, hdr = apiCall(t, leader, "PATCH", "/config", `{"primary_start_timeout": "25s", "maximum_lag_on_failover": "2MB"}`,
		"If-Match", fmt.Sprintf(`"%d"`, ver0))
	if code != 200 {
		t.Fatalf("PATCH /config = %d %s", code, body)
	}
	raw1, ver1 := dcsConfig(t, c)
	if strings.TrimSpace(body) != raw1 || hdr.Get("ETag") != fmt.Sprintf(`"%d"`, ver1) || !strings.Contains(raw1, `"primary_start_timeout":"25s"`) ||
		!strings.Contains(raw1, `"maximum_lag_on_failover":2097152`) || !strings.Contains(raw1, `"ttl":"4s"`) {
		t.Fatalf("after PATCH: answer %s, DCS %s v%d", body, raw1, ver1)
	}
	Eventually(t, 5*time.Second, "the agent applies the patched config", func() bool {
		_, body, _ := apiCall(t, leader, "GET", "/status", "")
		var st api.StatusBody
		return json.Unmarshal([]byte(body), &st) == nil && st.Config.PrimaryStartTimeout.D() == 25*time.Second && st.Config.MaximumLagOnFailover == 2<<20
	})
	// null: back to the default.
	if code, body, _ := apiCall(t, leader, "PATCH", "/config", `{"maximum_lag_on_failover": null}`); code != 200 || strings.Contains(body, "maximum_lag") {
		t.Fatalf("PATCH null = %d %s", code, body)
	}

	// Concurrent PATCHes against the same version: exactly one wins, the
	// others get 409 or 412 and write nothing.
	_, verC := dcsConfig(t, c)
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			codes[i], _, _ = apiCall(t, leader, "PATCH", "/config", fmt.Sprintf(`{"primary_unhealthy_timeout": "%ds"}`, 20+i),
				"If-Match", fmt.Sprintf(`"%d"`, verC))
		}(i)
	}
	wg.Wait()
	won := -1
	for i, code := range codes {
		switch code {
		case 200:
			if won >= 0 {
				t.Fatalf("two concurrent PATCHes of version %d both succeeded: %v", verC, codes)
			}
			won = i
		case 409, 412:
		default:
			t.Fatalf("concurrent PATCH answered %d: %v", code, codes)
		}
	}
	if raw, _ := dcsConfig(t, c); won < 0 || !strings.Contains(raw, fmt.Sprintf(`"primary_unhealthy_timeout":"%ds"`, 20+won)) {
		t.Fatalf("concurrent PATCHes %v; DCS %s", codes, raw)
	}
	t.Logf("concurrent PATCHes of one version: %v", codes)

	// PUT replaces.
	code, body, _ = apiCall(t, leader, "PUT", "/config", raw0)
	if raw, _ := dcsConfig(t, c); code != 200 || !sameJSON(raw, raw0) {
		t.Fatalf("PUT /config = %d %s; DCS %s, want %s", code, body, raw, raw0)
	}

	// POST /reload: 503 until the agent wires a reload function.
	code, body, _ = apiCall(t, leader, "POST", "/reload", "")
	if code != 200 && !(code == 503 && strings.Contains(body, "reload is not available")) {
		t.Errorf("POST /reload = %d %s", code, body)
	}
	if code, _, _ := apiCall(t, leader, "POST", "/reload", `{"now": true}`); code != 400 {
		t.Errorf("POST /reload with parameters = %d, want 400", code)
	}

	// Every request above was counted by route template.
	mfs := scrapeMetrics(t, leader)
	if v := mustMetric(t, mfs, leader.Name, "steward_api_requests_total", "path", "/config", "code", "400"); v < 5 {
		t.Errorf("400s on /config counted %v", v)
	}
	if v := mustMetric(t, mfs, leader.Name, "steward_api_requests_total", "path", "/replica", "code", "400"); v != 1 {
		t.Errorf("400s on /replica counted %v", v)
	}
}
