package api

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
)

// endpoints are every health check, with the query variants that matter.
var endpoints = []string{
	"/primary", "/leader", "/read-write", "/master", "/",
	"/standby-leader", "/standby_leader",
	"/replica", "/replica?lag=1MB", "/replica?lag=1048576", "/replica?lag=10s", "/replica?lag=1m",
	"/replica?replication_state=streaming", "/replica?replication_state=in+archive+recovery",
	"/replica?tag_zone=a", "/replica?tag_zone=b", "/replica?tag_nofailover=false", "/replica?tag_missing=x",
	"/replica?unknown_param=ignored",
	"/read-only", "/read-only?lag=1MB",
	"/synchronous", "/sync", "/quorum", "/asynchronous", "/async", "/async?lag=1MB",
	"/read-only-sync", "/read-only-synchronous", "/read-only-quorum",
	"/health", "/liveness", "/readiness", "/readiness?lag=16MB", "/readiness?mode=write",
}

var (
	primaryOK = []string{"/primary", "/leader", "/read-write", "/master", "/", "/read-only", "/read-only?lag=1MB",
		"/read-only-sync", "/read-only-synchronous", "/read-only-quorum", "/health", "/liveness", "/readiness", "/readiness?lag=16MB", "/readiness?mode=write"}
	replicaBase = []string{"/replica", "/replica?replication_state=streaming", "/replica?tag_zone=a", "/replica?tag_nofailover=false",
		"/replica?unknown_param=ignored", "/read-only", "/health", "/liveness", "/readiness?lag=16MB", "/readiness?mode=write"}
	caughtUp = []string{"/replica?lag=1MB", "/replica?lag=1048576", "/replica?lag=10s", "/replica?lag=1m", "/read-only?lag=1MB", "/readiness"}
	async    = []string{"/asynchronous", "/async"}
)

func cat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// want200 is, per role, every endpoint answering 200; all others must
// answer 503.
var want200 = map[string][]string{
	"primary":                    primaryOK,
	"paused primary, loop stuck": primaryOK, // liveness stays 200 in pause
	"primary, loop stuck":        slices.DeleteFunc(slices.Clone(primaryOK), func(s string) bool { return s == "/liveness" }),
	"replica":                    cat(replicaBase, caughtUp, async, []string{"/async?lag=1MB"}),
	"paused replica":             cat(replicaBase, caughtUp, async, []string{"/async?lag=1MB"}),
	// 3 MB behind, replay paused for 30 s: fails byte limits below 3 MB and
	// delay limits below 30 s; received WAL is current (mode=write).
	"lagging replica": cat(replicaBase, async, []string{"/replica?lag=1m"}),
	// a former primary past its lease deadline, still writable: only
	// /health and /liveness.
	"lease expired":         {"/health", "/liveness"},
	"database down":         {"/liveness"},
	"leader, database down": {"/liveness"},
	"not streaming": {"/replica", "/replica?lag=1MB", "/replica?lag=1048576", "/replica?lag=1m",
		"/replica?replication_state=in+archive+recovery", "/replica?tag_zone=a", "/replica?tag_nofailover=false", "/replica?unknown_param=ignored",
		"/read-only", "/read-only?lag=1MB", "/asynchronous", "/async", "/async?lag=1MB", "/health", "/liveness"},
	"noloadbalance":  {"/health", "/liveness", "/readiness", "/readiness?lag=16MB", "/readiness?mode=write"},
	"sync replica":   cat(replicaBase, caughtUp, []string{"/synchronous", "/sync", "/read-only-sync", "/read-only-synchronous"}),
	"quorum replica": cat(replicaBase, caughtUp, []string{"/quorum", "/read-only-quorum"}),
	"starting":       nil,
}

func TestHealthEndpointsByRole(t *testing.T) {
	for _, r := range roles() {
		ok, found := want200[r.name]
		if !found {
			t.Fatalf("no expectations for role %q", r.name)
		}
		for _, ep := range ok {
			if !slices.Contains(endpoints, ep) {
				t.Fatalf("role %q expects unknown endpoint %s", r.name, ep)
			}
		}
		t.Run(r.name, func(t *testing.T) {
			h, _, _ := newTestServer(t, r, Deps{})
			for _, ep := range endpoints {
				want := http.StatusServiceUnavailable
				if slices.Contains(ok, ep) {
					want = http.StatusOK
				}
				for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
					code, body, hdr := do(h, method, ep, "")
					if code != want {
						t.Errorf("%s %s = %d, want %d (body %s)", method, ep, code, want, body)
					}
					if method != http.MethodGet {
						if body != "" {
							t.Errorf("%s %s has a body: %q", method, ep, body)
						}
						continue
					}
					if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
						t.Errorf("GET %s Content-Type %q", ep, ct)
					}
					var b map[string]any
					if err := json.Unmarshal([]byte(body), &b); err != nil {
						t.Fatalf("GET %s body is not JSON: %v: %q", ep, err, body)
					}
					for _, k := range []string{"role", "state", "lag", "paused"} {
						if _, ok := b[k]; !ok {
							t.Errorf("GET %s body lacks %q: %s", ep, k, body)
						}
					}
				}
			}
		})
	}
}

// The health body carries the member's state.
func TestHealthBody(t *testing.T) {
	r := replicaView()
	r.v.Member.LagBytes = 4096
	h, _, _ := newTestServer(t, r, Deps{})
	code, body, _ := do(h, "GET", "/replica", "")
	if code != 200 {
		t.Fatalf("code %d", code)
	}
	var b HealthBody
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatal(err)
	}
	want := HealthBody{Name: "m2", Role: "replica", State: "streaming", Timeline: 2, Lag: 4096, Position: "0/3000000",
		Leader: "m1", ReplicationState: "streaming", SyncState: "async", Tags: map[string]string{"zone": "a"}}
	if !reflect.DeepEqual(b, want) {
		t.Fatalf("body\n got %+v\nwant %+v", b, want)
	}
	p := primaryView()
	p.v.Config.Paused = true
	h, _, _ = newTestServer(t, p, Deps{})
	_, body, _ = do(h, "GET", "/primary", "")
	if !strings.Contains(body, `"is_leader":true`) || !strings.Contains(body, `"paused":true`) || !strings.Contains(body, `"role":"primary"`) {
		t.Fatalf("primary body %s", body)
	}
}

// /primary is judged at request time: the same view answers 200, then 503
// once the clock passes the lease deadline, without any loop running.
func TestPrimaryTurnsAtDeadline(t *testing.T) {
	r := primaryView()
	fa := &fakeAgent{}
	fa.set(r.v, t0.Add(time.Second))
	now := t0
	h := New(Deps{Agent: fa, Store: &fakeStore{}, Now: func() time.Time { return now }})
	for _, c := range []struct {
		at   time.Duration
		want int
	}{{0, 200}, {999 * time.Millisecond, 200}, {time.Second, 503}, {2 * time.Second, 503}} {
		now = t0.Add(c.at)
		if code, body, _ := do(h, "GET", "/primary", ""); code != c.want {
			t.Fatalf("at +%v /primary = %d, want %d", c.at, code, c.want)
		} else if c.want == 503 && !strings.Contains(body, `"is_leader":false`) {
			t.Fatalf("at +%v body %s", c.at, body)
		}
	}
}

// The cached body follows every change of the view.
func TestHealthBodyCacheFollowsView(t *testing.T) {
	r := replicaView()
	fa := &fakeAgent{}
	fa.set(r.v, time.Time{})
	h := New(Deps{Agent: fa, Store: &fakeStore{}, Now: func() time.Time { return t0 }})
	_, b1, _ := do(h, "GET", "/replica", "")
	r.v.Member.LagBytes = 77
	r.v.Member.Tags = map[string]string{"zone": "b"}
	fa.set(r.v, time.Time{})
	_, b2, _ := do(h, "GET", "/replica", "")
	if b1 == b2 || !strings.Contains(b2, `"lag":77`) || !strings.Contains(b2, `"zone":"b"`) {
		t.Fatalf("cached body did not follow the view:\n%s\n%s", b1, b2)
	}
	// every HealthBody field is part of the cache key
	if n, k := reflect.TypeOf(HealthBody{}).NumField(), reflect.TypeOf(bodyKey{}).NumField(); n != k+1 {
		t.Fatalf("HealthBody has %d fields, bodyKey %d: update keyOf", n, k)
	}
}

func TestBadHealthQueries(t *testing.T) {
	h, _, fs := newTestServer(t, replicaView(), Deps{})
	for _, c := range []struct{ target, param string }{
		{"/replica?lag=abc", "lag"},
		{"/replica?lag=", "lag"},
		{"/replica?lag=-1", "lag"},
		{"/replica?lag=-5s", "lag"},
		{"/replica?lag=1MB&lag=2MB", "lag"},
		{"/replica?lag=NaN", "lag"},
		{"/replica?lag=1e400", "lag"},
		{"/async?lag=ten", "lag"},
		{"/readiness?lag=1XB", "lag"},
		{"/primary?lag=abc", "lag"},
		{"/replica?replication_state=bogus", "replication_state"},
		{"/replica?replication_state=streaming&replication_state=streaming", "replication_state"},
		{"/readiness?mode=fast", "mode"},
		{"/replica?tag_=x", "tag_"},
		{"/replica?lag=%zz", "query string"},
		{"/replica?a=1;b=2", "query string"},
	} {
		for _, m := range []string{"GET", "HEAD", "OPTIONS"} {
			code, body, _ := do(h, m, c.target, "")
			if code != http.StatusBadRequest {
				t.Errorf("%s %s = %d, want 400", m, c.target, code)
			}
			if m == "GET" && !strings.Contains(body, `"error":"`+c.param) {
				t.Errorf("GET %s: body %s does not name %s", c.target, body, c.param)
			}
		}
	}
	if _, _, w := fs.state(); w != 0 {
		t.Fatalf("a health request wrote to the DCS")
	}
}

func TestParseLag(t *testing.T) {
	for _, c := range []struct {
		in    string
		bytes int64
		dur   time.Duration
		isDur bool
	}{
		{"0", 0, 0, false}, {"1048576", 1 << 20, 0, false}, {"1MB", 1 << 20, 0, false}, {"16kB", 16 << 10, 0, false},
		{"1GB", 1 << 30, 0, false}, {"1.5MB", 3 << 19, 0, false}, {"1M", 1 << 20, 0, false},
		{"10s", 0, 10 * time.Second, true}, {"500ms", 0, 500 * time.Millisecond, true},
		{"1m", 0, time.Minute, true}, {"1h30m", 0, 90 * time.Minute, true}, {"0s", 0, 0, true},
	} {
		l, err := parseLag(c.in)
		if err != nil {
			t.Errorf("parseLag(%q): %v", c.in, err)
			continue
		}
		if !l.set || l.bytes != c.bytes || l.dur != c.dur || l.isDur != c.isDur {
			t.Errorf("parseLag(%q) = %+v, want bytes %d dur %v isDur %v", c.in, l, c.bytes, c.dur, c.isDur)
		}
	}
}

// Byte lag is the larger of the lag against the leader's published
// position and the local receive/replay gap.
func TestByteLag(t *testing.T) {
	v := replicaView().v
	if got := byteLag(&v); got != 0 {
		t.Fatalf("caught up: %d", got)
	}
	v.DB.Received = backends.Position{LSN: 0x3000000 + 2<<20}
	if got := byteLag(&v); got != 2<<20 {
		t.Fatalf("replay gap: %d", got)
	}
	v.Member.LagBytes = -1 // the leader's position unknown (DCS down), streaming
	if got := byteLag(&v); got != 2<<20 {
		t.Fatalf("unknown lag, streaming with a gap: %d", got)
	}
	v.DB.Streaming = false
	if got := byteLag(&v); got != -1 {
		t.Fatalf("unknown lag, not streaming: %d", got)
	}
}
