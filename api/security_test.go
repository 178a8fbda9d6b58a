package api

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func basic(u, p string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))
}

// stateChanging are the state-changing requests this package serves, with a
// valid body each.
var stateChanging = []struct{ method, path, body string }{
	{"PATCH", "/config", `{"paused": true}`},
	{"PUT", "/config", `{"paused": true}`},
	{"POST", "/reload", ``},
}

func TestAuth(t *testing.T) {
	reloads := 0
	d := Deps{Security: Security{Username: "admin", Password: "s3cret"}, Reload: func() error { reloads++; return nil }}
	h, _, fs := configServer(t, d)
	for _, r := range stateChanging {
		s0, _, w0 := fs.state()
		r0 := reloads
		for _, auth := range []string{"", basic("admin", "wrong"), basic("Admin", "s3cret"), basic("admin", "s3cret "), basic("", ""), "Bearer x", "Basic !!!"} {
			hdr := []string{}
			if auth != "" {
				hdr = []string{"Authorization", auth}
			}
			code, body, rh := do(h, r.method, r.path, r.body, hdr...)
			if code != http.StatusUnauthorized || !strings.Contains(rh.Get("WWW-Authenticate"), `Basic realm="steward"`) || !strings.Contains(body, "api.username") {
				t.Errorf("%s %s with %q = %d %s (WWW-Authenticate %q)", r.method, r.path, auth, code, body, rh.Get("WWW-Authenticate"))
			}
		}
		if s, _, w := fs.state(); w != w0 || s != s0 || reloads != r0 {
			t.Fatalf("an unauthenticated request changed state")
		}
		if code, body, _ := do(h, r.method, r.path, r.body, "Authorization", basic("admin", "s3cret")); code != 200 {
			t.Errorf("%s %s authenticated = %d %s", r.method, r.path, code, body)
		}
	}
	// Safe methods stay open.
	for _, p := range []string{"/primary", "/replica", "/health", "/config", "/cluster", "/history", "/status", "/metrics"} {
		if code, body, _ := do(h, "GET", p, ""); code == 401 || code == 403 {
			t.Errorf("GET %s needs auth: %d %s", p, code, body)
		}
	}
	// Unknown paths and methods are refused before routing reveals anything.
	if code, _, _ := do(h, "POST", "/nope", "{}"); code != 401 {
		t.Errorf("POST /nope unauthenticated = %d, want 401", code)
	}
	if code, _, _ := do(h, "DELETE", "/config", "", "Authorization", basic("admin", "s3cret")); code != 405 {
		t.Errorf("DELETE /config = %d, want 405", code)
	}
}

func TestCredentialsMatch(t *testing.T) {
	c := newCredentials("u", "p")
	if !c.match("u", "p") || c.match("u", "") || c.match("", "p") || c.match("u", "pp") || c.match("uu", "p") {
		t.Fatal("credentials compare wrongly")
	}
}

func TestAllowlist(t *testing.T) {
	allow, err := ParseAllowlist([]string{"10.0.0.0/24", "192.168.1.7", "::1", "::ffff:172.16.0.0/108"})
	if err != nil {
		t.Fatal(err)
	}
	h, _, fs := configServer(t, Deps{Security: Security{Allowlist: allow}})
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"10.0.0.9:5000", true}, {"10.0.1.9:5000", false}, {"192.168.1.7:1", true}, {"192.168.1.8:1", false},
		{"[::1]:80", true}, {"[::ffff:10.0.0.3]:80", true}, {"172.16.4.4:9", true}, {"127.0.0.1:80", false}, {"garbage", false},
	} {
		code, body, _ := do(h, "PATCH", "/config", `{"paused": true}`, "RemoteAddr", c.addr, "X-Forwarded-For", "10.0.0.1")
		if c.ok != (code == 200) || !c.ok && (code != 403 || !strings.Contains(body, "api.allowlist")) {
			t.Errorf("PATCH from %s = %d %s", c.addr, code, body)
		}
	}
	if _, _, w := fs.state(); w != 1 { // the first allowed PATCH wrote; the rest were no-ops
		t.Fatalf("%d writes", w)
	}
	// GET is never restricted.
	if code, _, _ := do(h, "GET", "/primary", "", "RemoteAddr", "8.8.8.8:1"); code != 200 {
		t.Fatalf("GET from outside the allowlist = %d", code)
	}
	if _, err := ParseAllowlist([]string{"10.0.0.0/24", "nope"}); err == nil || !strings.Contains(err.Error(), "api.allowlist[1]") {
		t.Fatalf("bad entry: %v", err)
	}
}

// A chunked body over the limit (no Content-Length) is refused with 413 as
// it is read; nothing is written.
func TestBodyLimitChunked(t *testing.T) {
	h, _, fs := configServer(t, Deps{MaxBodyBytes: 1024})
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(`{"ttl": "`))
		_, _ = pw.Write([]byte(strings.Repeat("1", 4096)))
		_, _ = pw.Write([]byte(`s"}`))
		pw.Close()
	}()
	req := httptest.NewRequest("PATCH", "/config", pr)
	req.ContentLength = -1
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 413 {
		t.Fatalf("chunked oversize = %d %s", w.Code, w.Body.String())
	}
	if _, _, n := fs.state(); n != 0 {
		t.Fatal("written")
	}
	// Just under the limit passes the guard.
	if code, body, _ := do(h, "PATCH", "/config", `{"paused": true}`+strings.Repeat(" ", 1000)); code != 200 {
		t.Fatalf("small body = %d %s", code, body)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	h, _, _ := newTestServer(t, primaryView(), Deps{})
	if code, body, _ := do(h, "GET", "/nope", ""); code != 404 || !strings.Contains(body, `"error"`) {
		t.Fatalf("404: %d %s", code, body)
	}
	if code, _, _ := do(h, "POST", "/primary", ""); code != 405 {
		t.Fatalf("POST /primary = %d", code)
	}
	if code, _, _ := do(h, "GET", "/status", ""); code != 200 {
		t.Fatalf("/status = %d", code)
	}
	r := replicaView()
	h, _, _ = newTestServer(t, r, Deps{})
	if code, _, _ := do(h, "GET", "/status", ""); code != 200 {
		t.Fatalf("replica /status = %d", code)
	}
	if code, _, _ := do(h, "GET", "/", ""); code != 503 {
		t.Fatalf("replica / = %d, want 503 (Patroni: GET / is the primary check)", code)
	}
}
