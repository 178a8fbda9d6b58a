package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/stewardha/steward/config"
)

// TLSState holds the REST API's certificate, key and client CA as read from
// disk, and reloads them:
//
//   - on demand: every TLS handshake checks (at most once a second) whether
//     cert_file, key_file or ca_file changed on disk (modification time or
//     size) and reloads them, so that a renewed certificate is served
//     without a restart;
//   - explicitly: Reload, which the SIGHUP handler (and POST /reload) calls.
//
// A reload that fails (a missing file, a key that does not match the
// certificate, a half-written file during a renewal) keeps the previous
// certificate and is retried on the next check; Reload returns the error.
type TLSState struct {
	certFile, keyFile, caFile string
	verify                    string // none | optional | required
	now                       func() time.Time

	mu        sync.RWMutex
	cert      *tls.Certificate
	pool      *x509.CertPool
	stamp     fileStamps
	checkedAt time.Time
	lastErr   error
}

type fileStamp struct {
	mod  time.Time
	size int64
}

type fileStamps [3]fileStamp // cert, key, ca

// NewTLSState reads api.tls. It returns nil (and no error) when TLS is not
// configured (no cert_file).
func NewTLSState(c config.APITLS) (*TLSState, error) {
	if c.CertFile == "" && c.KeyFile == "" {
		return nil, nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("api.tls: cert_file and key_file must be set together")
	}
	verify := c.VerifyClient
	if verify == "" {
		verify = "none"
	}
	switch verify {
	case "none", "optional", "required":
	default:
		return nil, fmt.Errorf("api.tls.verify_client: %q: expected none, optional or required", verify)
	}
	if verify != "none" && c.CAFile == "" {
		return nil, fmt.Errorf("api.tls.ca_file: required when verify_client is %s", verify)
	}
	s := &TLSState{certFile: c.CertFile, keyFile: c.KeyFile, caFile: c.CAFile, verify: verify, now: time.Now}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the certificate, key and CA from disk now. On error the
// previous ones stay in use.
func (s *TLSState) Reload() error {
	if s == nil {
		return nil
	}
	st := s.stamps()
	cert, pool, err := s.load()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkedAt = s.now()
	s.lastErr = err
	if err != nil {
		return err
	}
	s.cert, s.pool, s.stamp = cert, pool, st
	return nil
}

func (s *TLSState) load() (*tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("api.tls.cert_file %s / key_file %s: %w", s.certFile, s.keyFile, err)
	}
	if len(cert.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
			cert.Leaf = leaf
		}
	}
	var pool *x509.CertPool
	if s.caFile != "" {
		pool, err = loadPool(s.caFile, "api.tls.ca_file")
		if err != nil {
			return nil, nil, err
		}
	}
	return &cert, pool, nil
}

func loadPool(file, key string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: no PEM certificate found", key, file)
	}
	return pool, nil
}

func (s *TLSState) stamps() fileStamps {
	var st fileStamps
	for i, f := range []string{s.certFile, s.keyFile, s.caFile} {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			st[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
		}
	}
	return st
}

// refresh reloads when a file changed; checked at most once a second.
func (s *TLSState) refresh() {
	s.mu.RLock()
	due := s.now().Sub(s.checkedAt) >= time.Second
	s.mu.RUnlock()
	if !due {
		return
	}
	st := s.stamps()
	s.mu.Lock()
	changed := st != s.stamp || s.lastErr != nil
	s.checkedAt = s.now()
	s.mu.Unlock()
	if changed {
		_ = s.Reload()
	}
}

func (s *TLSState) current() (*tls.Certificate, *x509.CertPool) {
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cert, s.pool
}

// Certificate returns the certificate in use (for tests and status).
func (s *TLSState) Certificate() *tls.Certificate {
	c, _ := s.current()
	return c
}

// ServerConfig is the tls.Config of the API listener: the current
// certificate, and client-certificate verification per verify_client
// against the current ca_file.
func (s *TLSState) ServerConfig() *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := s.current()
		if cert == nil {
			return nil, errors.New("no API certificate loaded")
		}
		c := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
			Certificates: []tls.Certificate{*cert},
			ClientCAs:    pool,
		}
		switch s.verify {
		case "required":
			c.ClientAuth = tls.RequireAndVerifyClientCert
		case "optional":
			c.ClientAuth = tls.VerifyClientCertIfGiven
		}
		return c, nil
	}
	return base
}

// ClientCertificate is the tls.Config.GetClientCertificate of clients that
// present this member's own certificate (the peer client, when the other
// members ask for client certificates).
func (s *TLSState) ClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	cert, _ := s.current()
	if cert == nil {
		return &tls.Certificate{}, nil
	}
	return cert, nil
}

// ClientTLSConfig builds the TLS configuration of clients of the member
// APIs (the agent's peer probes, the CLI): trust caFile when set (else the
// system roots), and present the member's own certificate (from st, may be
// nil) when a server asks for one.
func ClientTLSConfig(caFile string, st *TLSState) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile, "api.tls.ca_file")
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if st != nil {
		c.GetClientCertificate = st.ClientCertificate
	}
	return c, nil
}
