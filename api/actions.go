package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/dcs"
)

// actionAgent is the agent's side of the operator actions.
type actionAgent interface {
	Plan(ctx context.Context, r agent.SwitchoverRequest) (agent.SwitchoverPlan, *dcs.Cluster, error)
	Submit(ctx context.Context, r agent.SwitchoverRequest) (agent.SwitchoverPlan, dcs.Versioned[dcs.Switchover], error)
	Cancel(ctx context.Context) (dcs.Switchover, error)
	RequestRestart(pendingOnly bool) error
	RequestReinit() error
	LiveStatus(ctx context.Context) agent.PeerStatus
	AcceptFailsafe(leader string, term int64) error
}

// FailsafeRequest is POST /failsafe: a leader that cannot reach the DCS asks
// this member to confirm it.
type FailsafeRequest struct {
	Leader string `json:"leader"`
	Term   int64  `json:"term"`
}

// SwitchoverBody is POST /switchover and POST /failover.
type SwitchoverBody struct {
	Leader      string `json:"leader,omitempty"`
	Candidate   string `json:"candidate,omitempty"`
	ScheduledAt string `json:"scheduled_at,omitempty"` // RFC 3339 with a time zone
	Force       bool   `json:"force,omitempty"`
	// DryRun: only check the request and say which candidate would be
	// chosen, and why the others would not.
	DryRun bool `json:"dry_run,omitempty"`
}

// ActionResult is the answer of the state-changing endpoints.
type ActionResult struct {
	Message   string                `json:"message"`
	Plan      *agent.SwitchoverPlan `json:"plan,omitempty"`
	Request   *dcs.Switchover       `json:"request,omitempty"`
	Leader    string                `json:"leader,omitempty"`
	Term      int64                 `json:"term,omitempty"`
	ElapsedMS int64                 `json:"elapsed_ms,omitempty"`
	Error     string                `json:"error,omitempty"`
}

// RestartBody is POST /restart.
type RestartBody struct {
	// Pending: restart only if a setting waits for a restart.
	Pending bool `json:"pending,omitempty"`
}

// registerActions adds the state-changing endpoints of the HA protocol and
// the operator actions.
func registerActions(r *gin.Engine, s *Server) {
	r.POST("/failsafe", s.failsafe)
	r.GET("/status/live", s.liveStatus)
	r.POST("/switchover", func(c *gin.Context) { s.switchover(c, false) })
	r.POST("/failover", func(c *gin.Context) { s.switchover(c, true) })
	r.DELETE("/switchover", s.cancelSwitchover)
	r.POST("/restart", s.restart)
	r.POST("/reinitialize", s.reinitialize)
}

func (s *Server) actions(c *gin.Context) (actionAgent, bool) {
	a, ok := s.d.Agent.(actionAgent)
	if !ok {
		c.JSON(http.StatusServiceUnavailable, ActionResult{Error: "this member does not support operator actions"})
	}
	return a, ok
}

// decodeBody decodes a JSON body strictly: unknown fields and trailing data
// are 400 errors naming the problem. An empty body decodes to the zero value.
func decodeBody(c *gin.Context, into any) bool {
	raw, err := io.ReadAll(io.LimitReader(c.Request.Body, 64<<10+1))
	if err != nil {
		c.JSON(http.StatusBadRequest, ActionResult{Error: "reading the body: " + err.Error()})
		return false
	}
	if len(raw) > 64<<10 {
		c.JSON(http.StatusRequestEntityTooLarge, ActionResult{Error: "body larger than 64 KiB"})
		return false
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		c.JSON(http.StatusBadRequest, ActionResult{Error: "body: " + jsonProblem(err)})
		return false
	}
	if dec.More() {
		c.JSON(http.StatusBadRequest, ActionResult{Error: "body: unexpected data after the JSON object"})
		return false
	}
	return true
}

func jsonProblem(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("field %q: expected a %s, found a JSON %s", ute.Field, ute.Type, ute.Value)
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + f
	}
	return msg
}

// failsafe: 200 when this member accepts the caller as leader (and will not
// race for ttl), 409 when it refuses (it is a primary itself), 400 on a bad
// request.
func (s *Server) failsafe(c *gin.Context) {
	var req FailsafeRequest
	if !decodeBody(c, &req) {
		return
	}
	if req.Leader == "" {
		c.JSON(http.StatusBadRequest, ActionResult{Error: "leader: missing; expected the name of the member asking"})
		return
	}
	a, ok := s.actions(c)
	if !ok {
		return
	}
	if err := a.AcceptFailsafe(req.Leader, req.Term); err != nil {
		c.JSON(http.StatusConflict, gin.H{"accepted": false, "error": err.Error()})
		return
	}
	c.JSON(http.StatusOK, gin.H{"accepted": true})
}

// liveStatus is GET /status with the database's positions read now.
func (s *Server) liveStatus(c *gin.Context) {
	a, ok := s.actions(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, a.LiveStatus(c.Request.Context()))
}

// switchover handles POST /switchover and POST /failover. Without a
// schedule it waits (up to ?timeout=, default 60s) for the outcome unless
// ?wait=false: 200 done; 202 scheduled or not waited for; 400 bad request;
// 409 another request pending; 412 not possible (with the reason); 422
// scheduled in the past; 503 the outcome is unknown (timeout, DCS).
func (s *Server) switchover(c *gin.Context, failover bool) {
	var b SwitchoverBody
	if !decodeBody(c, &b) {
		return
	}
	r := agent.SwitchoverRequest{Leader: b.Leader, Candidate: b.Candidate, Force: b.Force, Failover: failover}
	if failover {
		if b.Candidate == "" {
			c.JSON(http.StatusBadRequest, ActionResult{Error: "candidate: missing; a failover names the member to promote"})
			return
		}
		if b.ScheduledAt != "" {
			c.JSON(http.StatusBadRequest, ActionResult{Error: "scheduled_at: a failover cannot be scheduled; use a switchover"})
			return
		}
	}
	if b.ScheduledAt != "" {
		t, err := time.Parse(time.RFC3339, b.ScheduledAt)
		if err != nil {
			c.JSON(http.StatusBadRequest, ActionResult{Error: fmt.Sprintf("scheduled_at: %q is not an RFC 3339 time with a zone, e.g. 2026-11-22T03:00:00+01:00", b.ScheduledAt)})
			return
		}
		if !t.After(s.d.Now()) {
			c.JSON(http.StatusUnprocessableEntity, ActionResult{Error: fmt.Sprintf("scheduled_at: %s is in the past", t.Format(time.RFC3339))})
			return
		}
		r.ScheduledAt = t
	}
	a, ok := s.actions(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	if b.DryRun {
		plan, cl, err := a.Plan(ctx, r)
		if err != nil && agent.Deferrable(r, cl, s.d.Now()) {
			c.JSON(http.StatusOK, ActionResult{Plan: &plan, Message: fmt.Sprintf("would schedule a switchover from %s at %s; not possible now (%v): the leader checks again at the scheduled time",
				orNone(plan.Leader), r.ScheduledAt.Format(time.RFC3339), err)})
			return
		}
		if err != nil {
			c.JSON(http.StatusPreconditionFailed, ActionResult{Plan: &plan, Error: err.Error()})
			return
		}
		c.JSON(http.StatusOK, ActionResult{Plan: &plan, Message: fmt.Sprintf("would switch over from %s to %s", orNone(plan.Leader), plan.Candidate)})
		return
	}
	plan, req, err := a.Submit(ctx, r)
	switch {
	case errors.Is(err, dcs.ErrConflict):
		c.JSON(http.StatusConflict, ActionResult{Plan: &plan, Error: err.Error()})
		return
	case errors.Is(err, dcs.ErrUnavailable):
		c.JSON(http.StatusServiceUnavailable, ActionResult{Plan: &plan, Error: err.Error()})
		return
	case err != nil:
		c.JSON(http.StatusPreconditionFailed, ActionResult{Plan: &plan, Error: err.Error()})
		return
	}
	v := req.Value
	if !v.ScheduledAt.IsZero() {
		c.JSON(http.StatusAccepted, ActionResult{Plan: &plan, Request: &v, Message: "switchover scheduled at " + v.ScheduledAt.Format(time.RFC3339)})
		return
	}
	if c.Query("wait") == "false" {
		c.JSON(http.StatusAccepted, ActionResult{Plan: &plan, Request: &v, Message: "requested"})
		return
	}
	timeout := 60 * time.Second
	if q := c.Query("timeout"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d <= 0 {
			c.JSON(http.StatusBadRequest, ActionResult{Error: fmt.Sprintf("timeout: %q is not a positive duration such as 30s", q)})
			return
		}
		timeout = d
	}
	res, code := s.awaitLeader(ctx, v.Leader, v.Candidate, timeout)
	res.Plan, res.Request = &plan, &v
	c.JSON(code, res)
}

// awaitLeader polls the DCS until candidate leads (200), the request was
// dropped without a change (412, with the reason from history), or timeout
// (503).
func (s *Server) awaitLeader(ctx context.Context, from, to string, timeout time.Duration) (ActionResult, int) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		cl, err := s.d.Store.Load(lctx)
		cancel()
		if err == nil {
			if cl.Leader != nil && cl.Leader.Name == to && (cl.Switchover == nil) {
				if m, ok := cl.Members[to]; ok && m.Writable {
					return ActionResult{Message: fmt.Sprintf("%s is the new leader", to), Leader: to, Term: cl.Leader.Term,
						ElapsedMS: time.Since(start).Milliseconds()}, http.StatusOK
				}
			}
			if cl.Switchover == nil && (cl.Leader == nil || cl.Leader.Name != to) {
				reason := "the request was dropped"
				hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				if h, err := s.d.Store.History(hctx); err == nil && len(h) > 0 && h[len(h)-1].Kind == "switchover-failed" {
					reason = h[len(h)-1].Reason
				}
				cancel()
				return ActionResult{Error: reason, ElapsedMS: time.Since(start).Milliseconds()}, http.StatusPreconditionFailed
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return ActionResult{Error: fmt.Sprintf("no outcome within %v; check steward list and steward history", timeout)}, http.StatusServiceUnavailable
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(no leader)"
	}
	return s
}

// cancelSwitchover is DELETE /switchover: 200 cancelled, 404 none pending,
// 409 already running.
func (s *Server) cancelSwitchover(c *gin.Context) {
	a, ok := s.actions(c)
	if !ok {
		return
	}
	v, err := a.Cancel(c.Request.Context())
	switch {
	case errors.Is(err, dcs.ErrNotFound):
		c.JSON(http.StatusNotFound, ActionResult{Error: err.Error()})
	case errors.Is(err, dcs.ErrConflict):
		c.JSON(http.StatusConflict, ActionResult{Request: &v, Error: err.Error()})
	case err != nil:
		c.JSON(http.StatusServiceUnavailable, ActionResult{Error: err.Error()})
	default:
		c.JSON(http.StatusOK, ActionResult{Request: &v, Message: "cancelled"})
	}
}

// restart is POST /restart: 202 the restart is under way, 409 refused (with
// the reason).
func (s *Server) restart(c *gin.Context) {
	var b RestartBody
	if !decodeBody(c, &b) {
		return
	}
	a, ok := s.actions(c)
	if !ok {
		return
	}
	if err := a.RequestRestart(b.Pending); err != nil {
		c.JSON(http.StatusConflict, ActionResult{Error: err.Error()})
		return
	}
	c.JSON(http.StatusAccepted, ActionResult{Message: "restart requested"})
}

// reinitialize is POST /reinitialize: 202 under way, 409 refused (on the
// leader, or busy).
func (s *Server) reinitialize(c *gin.Context) {
	var b struct {
		Force bool `json:"force,omitempty"`
	}
	if !decodeBody(c, &b) {
		return
	}
	a, ok := s.actions(c)
	if !ok {
		return
	}
	if err := a.RequestReinit(); err != nil {
		c.JSON(http.StatusConflict, ActionResult{Error: err.Error()})
		return
	}
	c.JSON(http.StatusAccepted, ActionResult{Message: "reinit requested: the data directory will be wiped and cloned from the leader"})
}

// ---------------------------------------------------------------------------
// Client side

func (c *Client) postJSON(ctx context.Context, method, url string, body any, into any) (int, error) {
	return c.doJSON(ctx, c.HTTP, method, url, body, into)
}

func (c *Client) doJSON(ctx context.Context, hc *http.Client, method, url string, body any, into any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if into != nil && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, into); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(raw)))
		}
	}
	return resp.StatusCode, nil
}

// Failsafe asks the member at apiURL to accept leader (POST /failsafe).
func (c *Client) Failsafe(ctx context.Context, apiURL, leader string, term int64) error {
	var res struct {
		Accepted bool   `json:"accepted"`
		Error    string `json:"error"`
	}
	code, err := c.postJSON(ctx, http.MethodPost, strings.TrimRight(apiURL, "/")+"/failsafe", FailsafeRequest{Leader: leader, Term: term}, &res)
	if err != nil {
		return err
	}
	if code != http.StatusOK || !res.Accepted {
		return fmt.Errorf("refused (%d): %s", code, res.Error)
	}
	return nil
}

// LiveStatus fetches GET <apiURL>/status/live.
func (c *Client) LiveStatus(ctx context.Context, apiURL string) (agent.PeerStatus, error) {
	var st agent.PeerStatus
	err := c.getJSON(ctx, strings.TrimRight(apiURL, "/")+"/status/live", &st)
	return st, err
}

// Switchover posts a switchover (failover=false) or a manual failover to
// the member at apiURL. wait=false returns as soon as the request is stored.
func (c *Client) Switchover(ctx context.Context, apiURL string, b SwitchoverBody, failover, wait bool) (ActionResult, int, error) {
	path := "/switchover"
	if failover {
		path = "/failover"
	}
	url := strings.TrimRight(apiURL, "/") + path
	if !wait {
		url += "?wait=false"
	}
	var res ActionResult
	hc := c.HTTP
	if wait && c.Waiting != nil {
		// The member answers when the switchover is done (up to 60 s):
		// the default client's 5 s header timeout would cut it off.
		hc = c.Waiting
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
			defer cancel()
		}
	}
	code, err := c.doJSON(ctx, hc, http.MethodPost, url, b, &res)
	return res, code, err
}

// CancelSwitchover is DELETE <apiURL>/switchover.
func (c *Client) CancelSwitchover(ctx context.Context, apiURL string) (ActionResult, int, error) {
	var res ActionResult
	code, err := c.postJSON(ctx, http.MethodDelete, strings.TrimRight(apiURL, "/")+"/switchover", nil, &res)
	return res, code, err
}

// Restart is POST <apiURL>/restart.
func (c *Client) Restart(ctx context.Context, apiURL string, pendingOnly bool) (ActionResult, int, error) {
	var res ActionResult
	code, err := c.postJSON(ctx, http.MethodPost, strings.TrimRight(apiURL, "/")+"/restart", RestartBody{Pending: pendingOnly}, &res)
	return res, code, err
}

// Reinitialize is POST <apiURL>/reinitialize.
func (c *Client) Reinitialize(ctx context.Context, apiURL string) (ActionResult, int, error) {
	var res ActionResult
	code, err := c.postJSON(ctx, http.MethodPost, strings.TrimRight(apiURL, "/")+"/reinitialize", struct{}{}, &res)
	return res, code, err
}
