package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/config"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64 = 1000

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a certificate for 127.0.0.1 usable for both server and
// client authentication (a member's certificate); it returns the PEM
// certificate and key and the serial.
func (ca *testCA) issue(t *testing.T, cn string) (certPEM, keyPEM []byte, sn int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), serial
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

type tlsFixture struct {
	dir                string
	ca                 *testCA
	caFile             string
	certFile, keyFile  string
	serverSerial       int64
	clientCert         tls.Certificate
	strangerCert       tls.Certificate // signed by another CA
	url                string
	state              *TLSState
	fs                 *fakeStore
	clientCAPool       *x509.CertPool
	clientCertFile     string
	clientKeyFile      string
	clientMemberSerial int64
}

// startTLS serves the API over TLS with verify_client verify.
func startTLS(t *testing.T, verify string, sec Security) *tlsFixture {
	t.Helper()
	f := &tlsFixture{dir: t.TempDir(), ca: newCA(t, "steward test CA")}
	f.caFile = filepath.Join(f.dir, "ca.pem")
	f.certFile = filepath.Join(f.dir, "server.pem")
	f.keyFile = filepath.Join(f.dir, "server.key")
	writeFile(t, f.caFile, f.ca.pem)
	c, k, sn := f.ca.issue(t, "m1")
	writeFile(t, f.certFile, c)
	writeFile(t, f.keyFile, k)
	f.serverSerial = sn
	cc, ck, csn := f.ca.issue(t, "m2")
	f.clientCertFile, f.clientKeyFile, f.clientMemberSerial = filepath.Join(f.dir, "m2.pem"), filepath.Join(f.dir, "m2.key"), csn
	writeFile(t, f.clientCertFile, cc)
	writeFile(t, f.clientKeyFile, ck)
	f.clientCert, _ = tls.X509KeyPair(cc, ck)
	other := newCA(t, "someone else's CA")
	oc, ok, _ := other.issue(t, "stranger")
	f.strangerCert, _ = tls.X509KeyPair(oc, ok)
	f.clientCAPool = x509.NewCertPool()
	f.clientCAPool.AppendCertsFromPEM(f.ca.pem)

	st, err := NewTLSState(config.APITLS{CertFile: f.certFile, KeyFile: f.keyFile, CAFile: f.caFile, VerifyClient: verify})
	if err != nil {
		t.Fatal(err)
	}
	f.state = st
	f.fs = &fakeStore{config: []byte(seedConfig), version: 100}
	sec.RequireClientCert = verify == "optional"
	fa := &fakeAgent{}
	p := primaryView()
	fa.set(p.v, time.Now().Add(time.Hour))
	h := New(Deps{Agent: fa, Store: f.fs, Security: sec})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: nil}
	srv.ErrorLog = discardLogger()
	go func() { _ = srv.Serve(tls.NewListener(ln, st.ServerConfig())) }()
	t.Cleanup(func() { _ = srv.Close() })
	f.url = "https://" + ln.Addr().String()
	return f
}

func (f *tlsFixture) client(cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: f.clientCAPool}
	if cert != nil {
		// Always present it, even when the server's acceptable CAs do not
		// include its issuer (Go's default would then send none).
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
}

func get(c *http.Client, method, url, body string, hdr ...string) (int, string, *tls.ConnectionState, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.TLS, nil
}

func TestTLSPlainHTTPFails(t *testing.T) {
	f := startTLS(t, "none", Security{})
	plain := &http.Client{Timeout: 5 * time.Second}
	code, body, _, err := get(plain, "GET", strings.Replace(f.url, "https://", "http://", 1)+"/primary", "")
	if err == nil && (code == 200 || code == 503 || strings.Contains(body, "role")) {
		t.Fatalf("plain HTTP to the TLS port answered %d %s", code, body)
	}
	t.Logf("plain HTTP to the TLS port: code %d, err %v, body %q", code, err, strings.TrimSpace(body))
	if code, _, _, err := get(f.client(nil), "GET", f.url+"/primary", ""); err != nil || code != 200 {
		t.Fatalf("HTTPS /primary = %d %v", code, err)
	}
}

func TestTLSVerifyClientRequired(t *testing.T) {
	f := startTLS(t, "required", Security{})
	if _, _, _, err := get(f.client(nil), "GET", f.url+"/primary", ""); err == nil {
		t.Fatal("a client without a certificate was served (verify_client required)")
	} else {
		t.Logf("without a client certificate: %v", err)
	}
	if _, _, _, err := get(f.client(&f.strangerCert), "GET", f.url+"/primary", ""); err == nil {
		t.Fatal("a client with a certificate from another CA was served")
	}
	if code, _, _, err := get(f.client(&f.clientCert), "GET", f.url+"/primary", ""); err != nil || code != 200 {
		t.Fatalf("with a valid client certificate: %d %v", code, err)
	}
	// The peer client presents the member's own certificate.
	st, err := NewTLSState(config.APITLS{CertFile: f.clientCertFile, KeyFile: f.clientKeyFile, CAFile: f.caFile, VerifyClient: "required"})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ClientTLSConfig(f.caFile, st)
	if err != nil {
		t.Fatal(err)
	}
	pc := NewClient(tc, "", "")
	ps, err := pc.Status(context.Background(), f.url)
	if err != nil || ps.Name != "m1" || !ps.Leader {
		t.Fatalf("peer client over mutual TLS: %+v %v", ps, err)
	}
	// Without the CA the peer client refuses the server.
	tc2, _ := ClientTLSConfig("", st)
	if _, err := NewClient(tc2, "", "").Status(context.Background(), f.url); err == nil {
		t.Fatal("the peer client trusted a certificate from an unknown CA")
	}
}

func TestTLSVerifyClientOptional(t *testing.T) {
	f := startTLS(t, "optional", Security{Username: "admin", Password: "pw"})
	if code, _, _, err := get(f.client(nil), "GET", f.url+"/primary", ""); err != nil || code != 200 {
		t.Fatalf("GET without a client certificate: %d %v", code, err)
	}
	code, body, _, err := get(f.client(nil), "PATCH", f.url+"/config", `{"paused": true}`, "Authorization", basic("admin", "pw"))
	if err != nil || code != 403 || !strings.Contains(body, "client certificate") {
		t.Fatalf("PATCH without a client certificate: %d %s %v", code, body, err)
	}
	if _, _, w := f.fs.state(); w != 0 {
		t.Fatal("written")
	}
	if _, _, _, err := get(f.client(&f.strangerCert), "GET", f.url+"/primary", ""); err == nil {
		t.Fatal("a certificate from another CA was accepted (optional still verifies what is given)")
	}
	code, body, _, err = get(f.client(&f.clientCert), "PATCH", f.url+"/config", `{"paused": true}`)
	if err != nil || code != 401 {
		t.Fatalf("PATCH with a certificate, without credentials: %d %s %v", code, body, err)
	}
	code, body, _, err = get(f.client(&f.clientCert), "PATCH", f.url+"/config", `{"paused": true}`, "Authorization", basic("admin", "pw"))
	if err != nil || code != 200 {
		t.Fatalf("PATCH with a certificate and credentials: %d %s %v", code, body, err)
	}
}

func serverSerial(t *testing.T, f *tlsFixture) int64 {
	t.Helper()
	_, _, cs, err := get(f.client(nil), "GET", f.url+"/health", "")
	if err != nil {
		t.Fatal(err)
	}
	return cs.PeerCertificates[0].SerialNumber.Int64()
}

func TestTLSCertificateReload(t *testing.T) {
	f := startTLS(t, "none", Security{})
	if got := serverSerial(t, f); got != f.serverSerial {
		t.Fatalf("serial %d, want %d", got, f.serverSerial)
	}
	// Explicit reload (SIGHUP, POST /reload).
	c, k, sn := f.ca.issue(t, "m1 renewed")
	writeFile(t, f.certFile, c)
	writeFile(t, f.keyFile, k)
	if err := f.state.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serverSerial(t, f); got != sn {
		t.Fatalf("after Reload: serial %d, want %d", got, sn)
	}
	// A broken file keeps the certificate in use; Reload says why.
	writeFile(t, f.keyFile, []byte("not a key"))
	if err := f.state.Reload(); err == nil || !strings.Contains(err.Error(), "api.tls.cert_file") {
		t.Fatalf("Reload of a broken key: %v", err)
	}
	if got := serverSerial(t, f); got != sn {
		t.Fatalf("after a failed reload: serial %d, want %d", got, sn)
	}
	// On-demand reload when the files change on disk (checked at most once
	// a second).
	c, k, sn2 := f.ca.issue(t, "m1 rotated")
	writeFile(t, f.certFile, c)
	writeFile(t, f.keyFile, k)
	deadline := time.Now().Add(5 * time.Second)
	for serverSerial(t, f) != sn2 {
		if time.Now().After(deadline) {
			t.Fatalf("the rotated certificate was not picked up from disk")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestNewTLSStateErrors(t *testing.T) {
	if st, err := NewTLSState(config.APITLS{}); st != nil || err != nil {
		t.Fatalf("no TLS: %v %v", st, err)
	}
	for _, c := range []struct {
		cfg  config.APITLS
		want string
	}{
		{config.APITLS{CertFile: "/nope.pem"}, "together"},
		{config.APITLS{CertFile: "/nope.pem", KeyFile: "/nope.key"}, "api.tls.cert_file"},
		{config.APITLS{CertFile: "/a", KeyFile: "/b", VerifyClient: "sometimes"}, "verify_client"},
		{config.APITLS{CertFile: "/a", KeyFile: "/b", VerifyClient: "required"}, "api.tls.ca_file"},
	} {
		if _, err := NewTLSState(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
	if _, err := ClientTLSConfig("/nope-ca.pem", nil); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ClientTLSConfig with a missing CA: %v", err)
	}
}
