package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A switchover the member answers only once it is done (here after 5.5 s,
// past the default client's 5 s header timeout) still gets its answer; a
// plain GET keeps the short timeouts.
func TestClientWaitsForSlowSwitchover(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5500 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"message":"switched over to m2"}`))
	}))
	defer srv.Close()
	c := NewClient(nil, "", "")
	res, code, err := c.Switchover(context.Background(), srv.URL, SwitchoverBody{Leader: "m1", Candidate: "m2"}, false, true)
	if err != nil || code != 200 || res.Message != "switched over to m2" {
		t.Fatalf("waiting switchover: %d %+v %v", code, res, err)
	}
	if _, err := c.Status(context.Background(), srv.URL); err == nil {
		t.Fatal("a 5.5 s GET /status answered: the probe client must keep its 5 s header timeout")
	}
}
