package api

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/gin-gonic/gin"
)

// DefaultMaxBodyBytes bounds request bodies (413 beyond it).
const DefaultMaxBodyBytes = 64 << 10

// Security guards the state-changing requests (POST, PATCH, PUT, DELETE).
// Safe methods (GET, HEAD, OPTIONS) stay open: load balancers, probes and
// monitoring need no credentials.
type Security struct {
	// Username and Password (api.username/password): when both are set,
	// every state-changing request must carry them as HTTP basic auth
	// (401 otherwise).
	Username string
	Password string
	// Allowlist (api.allowlist): when not empty, state-changing requests are
	// accepted only from these networks (403 otherwise). Judged on the TCP
	// peer address; X-Forwarded-For and similar headers are never trusted.
	Allowlist []netip.Prefix
	// RequireClientCert (api.tls.verify_client optional): state-changing
	// requests must come over TLS with a client certificate that verified
	// against api.tls.ca_file (403 otherwise). With verify_client required
	// the TLS handshake itself refuses clients without one.
	RequireClientCert bool
}

// ParseAllowlist turns api.allowlist entries (addresses or CIDRs) into
// prefixes. Errors name the entry (api.allowlist[i]).
func ParseAllowlist(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, e := range entries {
		e = strings.TrimSpace(e)
		if a, err := netip.ParseAddr(e); err == nil {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("api.allowlist[%d]: %q is not an IP address or CIDR: expected e.g. 10.0.0.5 or 10.0.0.0/24", i, e)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// unsafeMethod: the request may change state.
func unsafeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// guard is the middleware for state-changing requests: allowlist (403),
// client certificate (403), basic auth (401), body size (413), in that
// order. Nothing behind it runs when it refuses.
func (s *Server) guard(c *gin.Context) {
	if !unsafeMethod(c.Request.Method) {
		c.Next()
		return
	}
	sec := &s.d.Security
	if len(sec.Allowlist) > 0 && !allowed(sec.Allowlist, c.Request.RemoteAddr) {
		s.fail(c, http.StatusForbidden, "this client address may not make state-changing requests (api.allowlist)")
		c.Abort()
		return
	}
	if sec.RequireClientCert {
		ts := c.Request.TLS
		if ts == nil || len(ts.VerifiedChains) == 0 {
			s.fail(c, http.StatusForbidden, "state-changing requests need a client certificate signed by api.tls.ca_file (api.tls.verify_client optional)")
			c.Abort()
			return
		}
	}
	if s.authHash != nil {
		u, p, ok := c.Request.BasicAuth()
		if !ok || !s.authHash.match(u, p) {
			c.Header("WWW-Authenticate", `Basic realm="steward", charset="UTF-8"`)
			s.fail(c, http.StatusUnauthorized, "state-changing requests need the API credentials (api.username/api.password) as HTTP basic auth")
			c.Abort()
			return
		}
	}
	limit := s.d.MaxBodyBytes
	if c.Request.ContentLength > limit {
		s.fail(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: %d bytes is too large: at most %d bytes", c.Request.ContentLength, limit))
		c.Abort()
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
	c.Next()
}

// credentials compares basic-auth credentials in constant time: both sides
// are hashed first, so neither the lengths nor the contents leak through
// timing.
type credentials struct {
	user, pass [32]byte
}

func newCredentials(user, pass string) *credentials {
	if user == "" && pass == "" {
		return nil
	}
	return &credentials{user: sha256.Sum256([]byte(user)), pass: sha256.Sum256([]byte(pass))}
}

func (c *credentials) match(user, pass string) bool {
	u := sha256.Sum256([]byte(user))
	p := sha256.Sum256([]byte(pass))
	// Both compares always run.
	okU := subtle.ConstantTimeCompare(u[:], c.user[:])
	okP := subtle.ConstantTimeCompare(p[:], c.pass[:])
	return okU&okP == 1
}

// allowed reports whether the peer address is inside one of the prefixes.
func allowed(list []netip.Prefix, remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	if i := strings.IndexByte(host, '%'); i >= 0 { // zone
		host = host[:i]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// readBody reads a request body within the size limit. On failure it has
// answered (413 or 400) and returns false.
func (s *Server) readBody(c *gin.Context) ([]byte, bool) {
	b, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: too large: at most %d bytes", mbe.Limit))
			return nil, false
		}
		s.fail(c, http.StatusBadRequest, "body: cannot be read: "+err.Error())
		return nil, false
	}
	return b, true
}

// decodeStrict decodes a JSON object body into v: unknown fields, trailing
// data and type mismatches are errors naming the field. An empty body
// decodes as {} when emptyOK.
func decodeStrict(b []byte, v any, emptyOK bool) error {
	if len(bytes.TrimSpace(b)) == 0 {
		if emptyOK {
			return nil
		}
		return errors.New("body: empty: expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonFieldError(err)
	}
	if dec.More() {
		return errors.New("body: unexpected data after the JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("body: unexpected data after the JSON object")
	}
	return nil
}

// jsonFieldError rewrites encoding/json errors so that they name the field.
func jsonFieldError(err error) error {
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &ute):
		field := ute.Field
		if field == "" {
			return fmt.Errorf("body: expected a JSON object, found %s", ute.Value)
		}
		return fmt.Errorf("%s: expected %s, found %s", field, jsonKind(ute.Type.Kind().String()), ute.Value)
	case errors.As(err, &se):
		return fmt.Errorf("body: invalid JSON at byte %d: %v", se.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errors.New("body: invalid JSON: unexpected end of input")
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fmt.Errorf("%s: unknown field", strings.Trim(f, `"`))
	}
	return fmt.Errorf("body: %s", strings.TrimPrefix(msg, "json: "))
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	}
	return k
}
