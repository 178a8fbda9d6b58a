package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// failsafeAccepter is the agent's side of the DCS failsafe.
type failsafeAccepter interface {
	AcceptFailsafe(leader string, term int64) error
}

// FailsafeRequest is POST /failsafe: a leader that cannot reach the DCS asks
// this member to confirm it.
type FailsafeRequest struct {
	Leader string `json:"leader"`
	Term   int64  `json:"term"`
}

// registerActions adds the state-changing endpoints of the HA protocol.
func registerActions(r *gin.Engine, s *Server) {
	r.POST("/failsafe", s.failsafe)
}

// failsafe: 200 when this member accepts the caller as leader (and will not
// race for ttl), 409 when it refuses (it is a primary itself), 400 on a bad
// request.
func (s *Server) failsafe(c *gin.Context) {
	var req FailsafeRequest
	dec := json.NewDecoder(io.LimitReader(c.Request.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "body: " + err.Error() + `; expected {"leader": "<member>", "term": <n>}`})
		return
	}
	if req.Leader == "" {
		c.JSON(http.StatusBadRequest, gin.H{"error": "leader: missing; expected the name of the member asking"})
		return
	}
	fa, ok := s.d.Agent.(failsafeAccepter)
	if !ok {
		c.JSON(http.StatusServiceUnavailable, gin.H{"error": "failsafe is not available on this member"})
		return
	}
	if err := fa.AcceptFailsafe(req.Leader, req.Term); err != nil {
		c.JSON(http.StatusConflict, gin.H{"accepted": false, "error": err.Error()})
		return
	}
	c.JSON(http.StatusOK, gin.H{"accepted": true})
}

// Failsafe asks the member at apiURL to accept leader (POST /failsafe).
func (c *Client) Failsafe(ctx context.Context, apiURL, leader string, term int64) error {
	body, _ := json.Marshal(FailsafeRequest{Leader: leader, Term: term})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(apiURL, "/")+"/failsafe", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("refused (%s): %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}
