package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/config"
)

const seedConfig = `{"loop_wait":"1s","maximum_lag_on_failover":1048576,"paused":false,"retry_timeout":"3s","ttl":"10s"}`

func configServer(t *testing.T, d Deps) (http.Handler, *fakeAgent, *fakeStore) {
	t.Helper()
	fs := &fakeStore{config: []byte(seedConfig), version: 100}
	d.Store = fs
	return newTestServerStore(t, d, fs)
}

func newTestServerStore(t *testing.T, d Deps, fs *fakeStore) (http.Handler, *fakeAgent, *fakeStore) {
	h, fa, _ := newTestServer(t, primaryView(), d)
	return h, fa, fs
}

func decodeMap(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, s)
	}
	return m
}

func TestGetConfig(t *testing.T) {
	h, _, _ := configServer(t, Deps{})
	code, body, hdr := do(h, "GET", "/config", "")
	if code != 200 || strings.TrimSpace(body) != seedConfig || hdr.Get("ETag") != `"100"` {
		t.Fatalf("GET /config = %d %s ETag %s", code, body, hdr.Get("ETag"))
	}
	// No config key yet: the settings this member runs with.
	h, _, _ = newTestServer(t, primaryView(), Deps{})
	code, body, _ = do(h, "GET", "/config", "")
	if code != 200 || decodeMap(t, body)["ttl"] != "10s" {
		t.Fatalf("GET /config without a key = %d %s", code, body)
	}
	// DCS down: 503.
	h, _, _ = newTestServer(t, primaryView(), Deps{Store: &fakeStore{down: true}})
	if code, body, _ := do(h, "GET", "/config", ""); code != 503 || !strings.Contains(body, "DCS") {
		t.Fatalf("GET /config with the DCS down = %d %s", code, body)
	}
}

func TestPatchConfig(t *testing.T) {
	h, fa, fs := configServer(t, Deps{})
	code, body, hdr := do(h, "PATCH", "/config", `{"loop_wait": 2, "ttl": "12s", "paused": true, "maximum_lag_on_failover": "2MB"}`)
	if code != 200 {
		t.Fatalf("PATCH = %d %s", code, body)
	}
	got := decodeMap(t, body)
	want := map[string]any{"loop_wait": "2s", "ttl": "12s", "paused": true, "maximum_lag_on_failover": float64(2 << 20), "retry_timeout": "3s"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (%s)", k, got[k], v, body)
		}
	}
	stored, ver, writes := fs.state()
	if writes != 1 || ver != 110 || hdr.Get("ETag") != `"110"` || strings.TrimSpace(body) != stored {
		t.Fatalf("store: %s v%d writes %d, ETag %s", stored, ver, writes, hdr.Get("ETag"))
	}
	if d, err := config.ParseDynamicJSON([]byte(stored)); err != nil || d.LoopWait.D() != 2*time.Second || !d.Paused {
		t.Fatalf("stored config does not parse back: %v %+v", err, d)
	}
	if fa.wakes != 1 {
		t.Fatalf("the agent was not woken")
	}
	// null removes a key: back to its default.
	code, body, _ = do(h, "PATCH", "/config", `{"maximum_lag_on_failover": null, "paused": null}`)
	got = decodeMap(t, body)
	if _, ok := got["maximum_lag_on_failover"]; code != 200 || ok || got["paused"] != nil {
		t.Fatalf("null did not delete: %d %s", code, body)
	}
	// A no-op patch writes nothing.
	_, _, w0 := fs.state()
	if code, _, _ := do(h, "PATCH", "/config", `{}`); code != 200 {
		t.Fatalf("empty patch = %d", code)
	}
	if _, _, w1 := fs.state(); w1 != w0 {
		t.Fatalf("an empty patch wrote")
	}
}

func TestPutConfig(t *testing.T) {
	h, _, fs := configServer(t, Deps{})
	code, body, _ := do(h, "PUT", "/config", `{"ttl": "20s", "loop_wait": "2s"}`)
	if code != 200 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	stored, _, _ := fs.state()
	if stored != `{"loop_wait":"2s","ttl":"20s"}` {
		t.Fatalf("stored %s", stored)
	}
	// PUT creates the key when absent (CAS on "absent").
	fs2 := &fakeStore{}
	h2, _, _ := newTestServer(t, primaryView(), Deps{Store: fs2})
	if code, body, _ := do(h2, "PUT", "/config", `{"paused": true}`); code != 200 {
		t.Fatalf("PUT without a key = %d %s", code, body)
	}
	if s, _, w := fs2.state(); w != 1 || s != `{"paused":true}` {
		t.Fatalf("stored %s (%d writes)", s, w)
	}
}

// Every bad request: its status, a message naming the field, and nothing
// written.
func TestConfigBadRequests(t *testing.T) {
	for _, c := range []struct {
		method, body string
		hdr          []string
		code         int
		names        string
	}{
		{"PATCH", `{"ttl": "abc"}`, nil, 400, "config.ttl"},
		{"PATCH", `{"ttl": "1s"}`, nil, 400, "config.ttl"},
		{"PATCH", `{"loop_wait": "30s"}`, nil, 400, "config.ttl"}, // loop_wait + 2*retry_timeout > ttl
		{"PATCH", `{"tll": "10s"}`, nil, 400, "config.tll"},
		{"PATCH", `{"synchronous_mode": "maybe"}`, nil, 400, "config.synchronous_mode"},
		{"PATCH", `{"paused": "yes"}`, nil, 400, "config.paused"},
		{"PATCH", `{"maximum_lag_on_failover": -1}`, nil, 400, "config.maximum_lag_on_failover"},
		{"PATCH", `{"ttl": {"a": 1}}`, nil, 400, "config.ttl"},
		{"PATCH", `{"ttl": "10s", "ttl": "12s"}`, nil, 400, "ttl"},
		{"PATCH", `{"ttl": "10s"`, nil, 400, "body"},
		{"PATCH", `{"ttl": "10s"} {}`, nil, 400, "body"},
		{"PATCH", `[1,2]`, nil, 400, "body"},
		{"PATCH", `"ttl"`, nil, 400, "body"},
		{"PATCH", ``, nil, 400, "body"},
		{"PATCH", `null`, nil, 400, "body"},
		{"PUT", `{"retry_timeout": "1ms"}`, nil, 400, "config.retry_timeout"},
		{"PUT", `{"nope": 1}`, nil, 400, "config.nope"},
		{"PATCH", `{"ttl": "12s"}`, []string{"If-Match", `"99"`}, 412, "changed"},
		{"PATCH", `{"ttl": "12s"}`, []string{"If-Match", `x`}, 400, "If-Match"},
		{"PATCH", `{"ttl": "` + strings.Repeat("9", 70<<10) + `"}`, nil, 413, "body"},
	} {
		h, fa, fs := configServer(t, Deps{})
		code, body, _ := do(h, c.method, "/config", c.body, c.hdr...)
		if code != c.code || !strings.Contains(body, c.names) {
			t.Errorf("%s %.60s = %d %s, want %d naming %s", c.method, c.body, code, body, c.code, c.names)
		}
		if s, v, w := fs.state(); w != 0 || s != seedConfig || v != 100 || fa.wakes != 0 {
			t.Errorf("%s %.60s changed state: %s v%d writes %d", c.method, c.body, s, v, w)
		}
	}
}

func TestConfigConflictAndOutage(t *testing.T) {
	// Someone else writes between our read and our CAS: 409, nothing of
	// ours written.
	h, _, fs := configServer(t, Deps{})
	fs.beforeCAS = func(f *fakeStore) {
		f.config, f.version, f.beforeCAS = []byte(`{"ttl":"30s"}`), 555, nil
	}
	code, body, _ := do(h, "PATCH", "/config", `{"paused": true}`)
	if code != 409 || !strings.Contains(body, "concurrently") {
		t.Fatalf("conflict = %d %s", code, body)
	}
	if s, _, w := fs.state(); s != `{"ttl":"30s"}` || w != 0 {
		t.Fatalf("after the conflict: %s (%d writes by us)", s, w)
	}
	// The DCS down: 503.
	h, _, fs = configServer(t, Deps{})
	fs.down = true
	if code, body, _ := do(h, "PATCH", "/config", `{"paused": true}`); code != 503 {
		t.Fatalf("DCS down = %d %s", code, body)
	}
	// The DCS fails at the write: 503.
	h, _, fs = configServer(t, Deps{})
	fs.beforeCAS = func(f *fakeStore) { f.down = true }
	if code, body, _ := do(h, "PATCH", "/config", `{"paused": true}`); code != 503 || !strings.Contains(body, "may or may not") {
		t.Fatalf("DCS down at write = %d %s", code, body)
	}
	// The stored config is not an object: PATCH refuses (502), PUT repairs.
	h, _, fs = configServer(t, Deps{})
	fs.config = []byte(`[]`)
	if code, _, _ := do(h, "PATCH", "/config", `{"paused": true}`); code != 502 {
		t.Fatalf("PATCH over a broken config = %d", code)
	}
	if code, _, _ := do(h, "PUT", "/config", `{"paused": true}`); code != 200 {
		t.Fatalf("PUT over a broken config = %d", code)
	}
	// If-Match with the current version passes.
	h, _, _ = configServer(t, Deps{})
	if code, body, _ := do(h, "PATCH", "/config", `{"paused": true}`, "If-Match", `"100"`); code != 200 {
		t.Fatalf("If-Match current = %d %s", code, body)
	}
}

// Deps.ValidateConfig adds this member's checks (the watchdog margin).
func TestConfigLocalValidation(t *testing.T) {
	wd := config.Watchdog{SafetyMargin: config.Duration(5 * time.Second)}
	h, _, fs := configServer(t, Deps{ValidateConfig: wd.ValidateTiming})
	code, body, _ := do(h, "PATCH", "/config", `{"ttl": "6s", "loop_wait": "1s", "retry_timeout": "2s"}`)
	if code != 400 || !strings.Contains(body, "watchdog.safety_margin") {
		t.Fatalf("= %d %s", code, body)
	}
	if _, _, w := fs.state(); w != 0 {
		t.Fatal("written")
	}
	var eb errorBody
	_ = json.Unmarshal([]byte(body), &eb)
	if len(eb.Fields) != 1 || eb.Fields[0].Field != "watchdog.safety_margin" {
		t.Fatalf("fields %+v", eb.Fields)
	}
}

func TestReload(t *testing.T) {
	h, _, _ := newTestServer(t, primaryView(), Deps{})
	if code, body, _ := do(h, "POST", "/reload", ""); code != 503 || !strings.Contains(body, `"error":"reload is not available"`) {
		t.Fatalf("no reload func = %d %s", code, body)
	}
	calls := 0
	fail := false
	h, _, _ = newTestServer(t, primaryView(), Deps{Reload: func() error {
		calls++
		if fail {
			return errors.New("config: ttl: bad")
		}
		return nil
	}})
	if code, _, _ := do(h, "POST", "/reload", ""); code != 200 || calls != 1 {
		t.Fatalf("reload = %d (%d calls)", code, calls)
	}
	if code, _, _ := do(h, "POST", "/reload", "{}"); code != 200 || calls != 2 {
		t.Fatalf("reload {} = %d (%d calls)", code, calls)
	}
	for _, b := range []string{`{"force": true}`, `[]`, `{`, `{} x`} {
		if code, body, _ := do(h, "POST", "/reload", b); code != 400 || calls != 2 {
			t.Fatalf("reload %s = %d %s (%d calls)", b, code, body, calls)
		}
	}
	fail = true
	if code, body, _ := do(h, "POST", "/reload", ""); code != 500 || !strings.Contains(body, "ttl: bad") {
		t.Fatalf("failing reload = %d %s", code, body)
	}
}

func TestMergePatch(t *testing.T) {
	cur, _ := parseObject([]byte(`{"a":1,"b":{"x":1,"y":2},"c":3}`))
	p, _ := parseObject([]byte(`{"a":null,"b":{"y":null,"z":3},"d":[1]}`))
	out, _ := json.Marshal(mergePatch(cur, p))
	if string(out) != `{"b":{"x":1,"z":3},"c":3,"d":[1]}` {
		t.Fatalf("merge = %s", out)
	}
}
