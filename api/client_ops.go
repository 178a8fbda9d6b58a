package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// The operator CLI's side of GET /status and PATCH /config.

// StatusBody fetches the full GET <apiURL>/status answer (the member's
// database status, its decision and the dynamic config it runs with).
func (c *Client) StatusBody(ctx context.Context, apiURL string) (StatusBody, error) {
	var b StatusBody
	err := c.getJSON(ctx, strings.TrimRight(apiURL, "/")+"/status", &b)
	return b, err
}

// ConfigAnswer is the answer of PATCH or PUT /config: the stored config and
// its version on success, or the error and the fields it concerns.
type ConfigAnswer struct {
	Config  json.RawMessage `json:"-"`
	Version int64           `json:"-"`
	Error   string          `json:"error,omitempty"`
	Fields  []ConfigError   `json:"fields,omitempty"`
}

// PatchConfig sends PATCH <apiURL>/config with patch (an RFC 7386 merge
// patch). ifMatch > 0 makes the write conditional on the config version
// read before (412 when it changed). It returns the HTTP status code.
func (c *Client) PatchConfig(ctx context.Context, apiURL string, patch map[string]json.RawMessage, ifMatch int64) (ConfigAnswer, int, error) {
	body, err := json.Marshal(patch)
	if err != nil {
		return ConfigAnswer{}, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, strings.TrimRight(apiURL, "/")+"/config", strings.NewReader(string(body)))
	if err != nil {
		return ConfigAnswer{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if ifMatch > 0 {
		req.Header.Set("If-Match", etag(ifMatch))
	}
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return ConfigAnswer{}, 0, err
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&raw); err != nil {
		return ConfigAnswer{Error: resp.Status}, resp.StatusCode, nil
	}
	var a ConfigAnswer
	if resp.StatusCode != http.StatusOK {
		_ = json.Unmarshal(raw, &a)
		if a.Error == "" {
			a.Error = resp.Status
		}
		return a, resp.StatusCode, nil
	}
	a.Config = raw
	a.Version, _ = strconv.ParseInt(strings.Trim(strings.TrimPrefix(resp.Header.Get("ETag"), "W/"), `"`), 10, 64)
	return a, resp.StatusCode, nil
}
