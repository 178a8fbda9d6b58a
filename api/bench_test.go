package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(c int)           { w.code = c }

// BenchmarkHealthHandler is the handler's own cost per health request
// (no network): the budget the HTTP server and the kernel add to.
func BenchmarkHealthHandler(b *testing.B) {
	for _, c := range []struct {
		name, target string
		r            role
	}{{"primary", "/primary", primaryView()}, {"replica-lag", "/replica?lag=1MB", replicaView()}} {
		b.Run(c.name, func(b *testing.B) {
			h, _, _ := newTestServer(b, c.r, Deps{})
			req := httptest.NewRequest("GET", c.target, nil)
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
			if w.code != 200 {
				b.Fatalf("code %d", w.code)
			}
		})
	}
}
