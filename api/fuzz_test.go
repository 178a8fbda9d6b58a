package api

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stewardha/steward/config"
)

// Fuzz targets for request parsing. Their seed corpora live in
// testdata/fuzz/<target>/ and run with every `go test`; `make fuzz` runs
// each for FUZZTIME. Invariants: no panic, only the documented status
// codes, and no request answered with a 4xx changes any state.

var healthCodes = map[int]bool{200: true, 400: true, 503: true}

// fuzzMetrics is shared by the fuzz targets' servers: building a registry
// with the Go runtime collector per input would dominate the fuzzing time.
var fuzzMetrics = NewMetrics(MetricsOptions{Cluster: "fuzz"})

func FuzzLagQuery(f *testing.F) {
	for _, s := range []string{"1MB", "0", "16kB", "10s", "1m", "-1", "abc", "", "1e400", "NaN", "9223372036854775807", "1.5GiB", " 1MB"} {
		f.Add(s)
	}
	type srv struct {
		h  http.Handler
		fa *fakeAgent
		fs *fakeStore
	}
	var servers []srv
	for _, r := range []role{replicaView(), roles()[2], primaryView()} {
		h, fa, fs := newTestServer(f, r, Deps{Metrics: fuzzMetrics})
		servers = append(servers, srv{h, fa, fs})
	}
	f.Fuzz(func(t *testing.T, lag string) {
		l, perr := parseLag(lag)
		if perr == nil && (l.bytes < 0 || l.dur < 0 || !l.set) {
			t.Fatalf("parseLag(%q) = %+v", lag, l)
		}
		for _, sv := range servers {
			h, fa, fs := sv.h, sv.fa, sv.fs
			for _, ep := range []string{"/replica", "/readiness", "/async", "/read-only"} {
				code, _, _ := do(h, "GET", ep+"?lag="+url.QueryEscape(lag), "")
				if !healthCodes[code] {
					t.Fatalf("GET %s?lag=%q = %d", ep, lag, code)
				}
				if (perr != nil) != (code == 400) {
					t.Fatalf("GET %s?lag=%q = %d, parse error %v", ep, lag, code, perr)
				}
			}
			if _, _, w := fs.state(); w != 0 || fa.wakes != 0 {
				t.Fatal("a health request changed state")
			}
		}
	})
}

func FuzzTagQuery(f *testing.F) {
	f.Add("zone", "a")
	f.Add("zone", "b")
	f.Add("", "x")
	f.Add("nofailover", "false")
	f.Add("failover_priority", "1")
	f.Add("a&b", "c=d")
	f.Add("%zz", "1")
	r := replicaView()
	h, fa, fs := newTestServer(f, r, Deps{Metrics: fuzzMetrics})
	f.Fuzz(func(t *testing.T, key, value string) {
		raw := "tag_" + key + "=" + value // unescaped on purpose: the parser sees anything
		code, _, _ := do(h, "GET", "/replica?"+raw, "")
		if !healthCodes[code] {
			t.Fatalf("GET /replica?%s = %d", raw, code)
		}
		if code == 200 {
			// Every tag filter that passed matches the member.
			q, err := parseHealthQuery(raw)
			if err != nil {
				t.Fatalf("200 for a query that does not parse: %v", err)
			}
			m := r.v.Member
			for _, tr := range q.tags {
				if got, ok := memberTag(&m, tr.key); !ok || got != tr.value {
					t.Fatalf("200 although tag %q=%q does not match (member has %q, %v)", tr.key, tr.value, got, ok)
				}
			}
		}
		if _, _, w := fs.state(); w != 0 || fa.wakes != 0 {
			t.Fatal("a health request changed state")
		}
	})
}

// FuzzHealthQuery throws arbitrary query strings at every health endpoint.
func FuzzHealthQuery(f *testing.F) {
	for _, s := range []string{"lag=1MB", "replication_state=streaming", "mode=write&lag=1s", "tag_a=b&tag_a=c", "a=1;b=2", "%", "lag=1MB&lag=1MB"} {
		f.Add(uint8(0), s)
	}
	all := roles()
	type srv struct {
		h  http.Handler
		fa *fakeAgent
		fs *fakeStore
	}
	servers := make([]srv, len(all))
	for i, r := range all {
		h, fa, fs := newTestServer(f, r, Deps{Metrics: fuzzMetrics})
		servers[i] = srv{h, fa, fs}
	}
	f.Fuzz(func(t *testing.T, which uint8, raw string) {
		sv := servers[int(which)%len(servers)]
		h, fa, fs := sv.h, sv.fa, sv.fs
		for _, ep := range endpoints {
			path, _, _ := strings.Cut(ep, "?")
			code, _, _ := do(h, "GET", path+"?"+raw, "")
			if !healthCodes[code] {
				t.Fatalf("GET %s?%s = %d", path, raw, code)
			}
		}
		if _, _, w := fs.state(); w != 0 || fa.wakes != 0 {
			t.Fatal("a health request changed state")
		}
	})
}

func FuzzPatchConfig(f *testing.F) {
	for _, s := range []string{`{"ttl":"12s"}`, `{"paused":true}`, `{"maximum_lag_on_failover":null}`, `{"ttl":1}`, `[]`, `{`, `{"x":{"y":null}}`,
		`{"loop_wait":"2s","retry_timeout":"4s","ttl":"10s"}`, `{"synchronous_mode":"on"}`, `{"ttl":"10s","ttl":"11s"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, method := range []string{"PATCH", "PUT"} {
			h, fa, fs := configServer(t, Deps{Metrics: fuzzMetrics})
			code, resp, _ := do(h, method, "/config", body)
			stored, ver, writes := fs.state()
			switch code {
			case 200:
				if _, err := config.ParseDynamicJSON([]byte(stored)); err != nil {
					t.Fatalf("%s %q stored a config the agents cannot read: %v\n%s", method, body, err, stored)
				}
				if strings.TrimSpace(resp) != stored {
					t.Fatalf("%s answer %s differs from what was stored %s", method, resp, stored)
				}
			case 400, 413:
				if writes != 0 || stored != seedConfig || ver != 100 || fa.wakes != 0 {
					t.Fatalf("%s %q = %d but changed state", method, body, code)
				}
				if !strings.Contains(resp, `"error":`) {
					t.Fatalf("%s %q = %d without an error message: %s", method, body, code, resp)
				}
			default:
				t.Fatalf("%s %q = %d %s", method, body, code, resp)
			}
		}
	})
}

// FuzzStateChangingBodies sends arbitrary bodies (with and without
// credentials) to every state-changing endpoint this package serves.
func FuzzStateChangingBodies(f *testing.F) {
	for i, r := range stateChanging {
		f.Add(uint8(i), r.body, true)
		f.Add(uint8(i), r.body, false)
	}
	f.Add(uint8(2), `{"force":true}`, true)
	f.Add(uint8(2), `{}`, true)
	f.Add(uint8(0), strings.Repeat("[", 1000), true)
	f.Fuzz(func(t *testing.T, which uint8, body string, auth bool) {
		ep := stateChanging[int(which)%len(stateChanging)]
		reloads := 0
		h, fa, fs := configServer(t, Deps{
			Metrics:  fuzzMetrics,
			Security: Security{Username: "u", Password: "p"},
			Reload:   func() error { reloads++; return nil },
		})
		var hdr []string
		if auth {
			hdr = []string{"Authorization", basic("u", "p")}
		}
		code, resp, _ := do(h, ep.method, ep.path, body, hdr...)
		stored, ver, writes := fs.state()
		changed := writes != 0 || stored != seedConfig || ver != 100 || fa.wakes != 0 || reloads != 0
		switch {
		case !auth && code != http.StatusUnauthorized:
			t.Fatalf("%s %s without credentials = %d", ep.method, ep.path, code)
		case code >= 400 && code < 500 && changed:
			t.Fatalf("%s %s %q = %d but changed state", ep.method, ep.path, body, code)
		case code >= 500:
			t.Fatalf("%s %s %q = %d %s", ep.method, ep.path, body, code, resp)
		}
	})
}
