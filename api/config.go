package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// The cluster-wide (dynamic) settings: GET, PATCH and PUT /config.
//
// The DCS `config` key holds a JSON object with the keys of config.Dynamic;
// a key that is absent takes its default. PATCH merges (RFC 7386: a key set
// to null is removed, i.e. goes back to its default), PUT replaces. Both
// validate the result as the agents will read it (config.ParseDynamicJSON,
// plus Deps.ValidateConfig) before writing anything, and write with a
// compare-and-swap against the version they read: a concurrent change makes
// them fail with 409, never overwrite it. The version is the ETag of
// GET /config; a PATCH or PUT with If-Match fails with 412 when the config
// changed since.

// ConfigError is one problem of a rejected config change.
type ConfigError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// errorBody is every error answer: a sentence, and per-field details when
// there are several.
type errorBody struct {
	Error  string        `json:"error"`
	Fields []ConfigError `json:"fields,omitempty"`
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// ifMatch parses the If-Match header: the version the client read (-1: none
// given; 0: "the key must not exist" is not expressible, so 0 is never sent).
func ifMatch(h string) (int64, error) {
	h = strings.TrimSpace(h)
	if h == "" || h == "*" {
		return -1, nil
	}
	h = strings.TrimPrefix(h, "W/")
	v, err := strconv.ParseInt(strings.Trim(h, `"`), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("If-Match: %q is not a config version: expected the ETag of GET /config, e.g. \"1234\"", short(h))
	}
	return v, nil
}

// getConfig answers GET /config: the DCS copy, as stored, with its version
// as ETag; when the key does not exist yet, the settings this member runs
// with.
func (s *Server) getConfig(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.d.DCSTimeout)
	defer cancel()
	raw, ver, err := s.d.Store.GetConfig(ctx)
	switch {
	case errors.Is(err, dcs.ErrNotFound):
		c.JSON(http.StatusOK, s.d.Agent.Snapshot().Config)
		return
	case err != nil:
		s.fail(c, http.StatusServiceUnavailable, "cannot read the config from the DCS: "+err.Error())
		return
	}
	if !json.Valid(raw) {
		s.fail(c, http.StatusBadGateway, "the DCS config is not valid JSON; replace it with PUT /config")
		return
	}
	c.Header("ETag", etag(ver))
	c.Data(http.StatusOK, jsonContentType, append(bytes.TrimSpace(raw), '\n'))
}

// patchConfig answers PATCH /config.
func (s *Server) patchConfig(c *gin.Context) { s.changeConfig(c, false) }

// putConfig answers PUT /config.
func (s *Server) putConfig(c *gin.Context) { s.changeConfig(c, true) }

func (s *Server) changeConfig(c *gin.Context, replace bool) {
	want, err := ifMatch(c.GetHeader("If-Match"))
	if err != nil {
		s.fail(c, http.StatusBadRequest, err.Error())
		return
	}
	body, ok := s.readBody(c)
	if !ok {
		return
	}
	patch, err := parseObject(body)
	if err != nil {
		s.fail(c, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.d.DCSTimeout)
	defer cancel()
	raw, ver, err := s.d.Store.GetConfig(ctx)
	switch {
	case errors.Is(err, dcs.ErrNotFound):
		raw, ver = []byte("{}"), 0
	case err != nil:
		s.fail(c, http.StatusServiceUnavailable, "cannot read the config from the DCS: "+err.Error())
		return
	}
	if want >= 0 && want != ver {
		s.fail(c, http.StatusPreconditionFailed, fmt.Sprintf("the config changed since it was read (version %d, If-Match %d): read it again", ver, want))
		return
	}
	merged := patch
	if !replace {
		cur, err := parseObject(raw)
		if err != nil {
			s.fail(c, http.StatusBadGateway, "the DCS config is not a JSON object ("+err.Error()+"); replace it with PUT /config")
			return
		}
		merged = mergePatch(cur, patch)
	}
	out, d, fields := s.validateConfig(merged)
	if fields != nil {
		msg := make([]string, len(fields))
		for i, f := range fields {
			msg[i] = f.Field + ": " + f.Message
		}
		c.JSON(http.StatusBadRequest, errorBody{Error: strings.Join(msg, "; "), Fields: fields})
		return
	}
	if ver != 0 && bytes.Equal(bytes.TrimSpace(raw), out) {
		c.Header("ETag", etag(ver))
		c.Data(http.StatusOK, jsonContentType, append(out, '\n'))
		return
	}
	nv, err := s.d.Store.CASConfig(ctx, out, ver)
	switch {
	case errors.Is(err, dcs.ErrConflict):
		s.fail(c, http.StatusConflict, "the config changed concurrently; nothing was written: read it again and retry")
		return
	case err != nil:
		s.fail(c, http.StatusServiceUnavailable, "writing the config to the DCS failed (it may or may not have been written; read it again): "+err.Error())
		return
	}
	s.d.Logger.Info("dynamic config changed through the API", "client", c.Request.RemoteAddr, "method", c.Request.Method,
		"ttl", d.TTL.D(), "loop_wait", d.LoopWait.D(), "retry_timeout", d.RetryTimeout.D(), "paused", d.Paused, "version", nv)
	s.d.Agent.Wake()
	c.Header("ETag", etag(nv))
	c.Data(http.StatusOK, jsonContentType, append(out, '\n'))
}

// validateConfig checks a complete config object the way the agents will
// read it, and returns its canonical encoding (the keys given, each value
// in canonical form: "10s", bytes) or the problems, each naming its field.
func (s *Server) validateConfig(obj map[string]json.RawMessage) ([]byte, config.Dynamic, []ConfigError) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, config.Dynamic{}, []ConfigError{{Field: "body", Message: err.Error()}}
	}
	d, err := config.ParseDynamicJSON(raw)
	if err == nil && s.d.ValidateConfig != nil {
		err = s.d.ValidateConfig(d)
	}
	if err != nil {
		var errs *config.Errors
		if errors.As(err, &errs) {
			out := make([]ConfigError, 0, len(*errs))
			for _, fe := range *errs {
				out = append(out, ConfigError{Field: fe.Path, Message: fe.Msg})
			}
			return nil, config.Dynamic{}, out
		}
		return nil, config.Dynamic{}, []ConfigError{{Field: "config", Message: err.Error()}}
	}
	full, _ := json.Marshal(d)
	var canon map[string]json.RawMessage
	_ = json.Unmarshal(full, &canon)
	keep := make(map[string]json.RawMessage, len(obj))
	for k := range obj {
		keep[k] = canon[k]
	}
	out, _ := json.Marshal(keep)
	return out, d, nil
}

// parseObject decodes a JSON object into its members (values kept raw).
// Duplicate keys are errors, so that no key is silently dropped.
func parseObject(b []byte) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("body: empty: expected a JSON object, e.g. {\"loop_wait\": \"2s\"}")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonFieldError(err)
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("body: expected a JSON object, found %s", tokenKind(tok))
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonFieldError(err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%s: %v", key, jsonFieldError(err))
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%s: given more than once", key)
		}
		out[key] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, jsonFieldError(err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("body: unexpected data after the JSON object")
	}
	return out, nil
}

func tokenKind(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		return string(t)
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a number"
}

// mergePatch applies an RFC 7386 merge patch to an object: null removes a
// key, an object merges into an object, anything else replaces.
func mergePatch(cur, patch map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(cur)+len(patch))
	for k, v := range cur {
		out[k] = v
	}
	for k, v := range patch {
		if isNull(v) {
			delete(out, k)
			continue
		}
		if pv, err := parseObject(v); err == nil {
			if cv, ok := out[k]; ok {
				if co, err := parseObject(cv); err == nil {
					b, _ := json.Marshal(mergePatch(co, pv))
					out[k] = b
					continue
				}
			}
			b, _ := json.Marshal(mergePatch(map[string]json.RawMessage{}, pv))
			out[k] = b
			continue
		}
		out[k] = v
	}
	return out
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// reloadRequest is the (empty) body of POST /reload.
type reloadRequest struct{}

// reload answers POST /reload: re-read the configuration file (as SIGHUP).
func (s *Server) reload(c *gin.Context) {
	body, ok := s.readBody(c)
	if !ok {
		return
	}
	var req reloadRequest
	if err := decodeStrict(body, &req, true); err != nil {
		s.fail(c, http.StatusBadRequest, err.Error()+"; POST /reload takes no parameters")
		return
	}
	if s.d.Reload == nil {
		s.fail(c, http.StatusServiceUnavailable, "reload is not available")
		return
	}
	start := time.Now()
	if err := s.d.Reload(); err != nil {
		s.fail(c, http.StatusInternalServerError, "reload failed; the previous configuration stays in effect: "+err.Error())
		return
	}
	s.d.Logger.Info("configuration reloaded through the API", "client", c.Request.RemoteAddr, "took", time.Since(start).Round(time.Millisecond))
	c.JSON(http.StatusOK, gin.H{"reloaded": true})
}
