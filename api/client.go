package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/stewardha/steward/agent"
)

// Client talks to members' REST APIs: the agent's peer probes (rule 2) and
// the CLI.
type Client struct {
	HTTP *http.Client
	// Waiting is for requests whose answer comes when an action finished
	// (POST /switchover, /failover without wait=false): no header or
	// overall timeout of its own, bounded by the request's context (90 s
	// when the context has no deadline). nil: HTTP.
	Waiting  *http.Client
	Username string
	Password string
}

// NewClient returns a client with conservative timeouts. tlsCfg may be nil.
func NewClient(tlsCfg *tls.Config, username, password string) *Client {
	tr := &http.Transport{
		TLSClientConfig:       tlsCfg,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
		DisableCompression:    true,
	}
	long := tr.Clone()
	long.ResponseHeaderTimeout = 0
	return &Client{HTTP: &http.Client{Transport: tr, Timeout: 10 * time.Second}, Waiting: &http.Client{Transport: long},
		Username: username, Password: password}
}

// Status fetches GET <apiURL>/status.
func (c *Client) Status(ctx context.Context, apiURL string) (agent.PeerStatus, error) {
	var st agent.PeerStatus
	err := c.getJSON(ctx, strings.TrimRight(apiURL, "/")+"/status", &st)
	return st, err
}

func (c *Client) getJSON(ctx context.Context, url string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("GET %s: decoding the answer: %w", url, err)
	}
	return nil
}
