package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs/etcd"
)

// newMetrics builds this member's Prometheus metrics (its own registry). It
// is the agent's agent.Metrics and the API's /metrics.
func newMetrics(cfg *config.Config) *api.Metrics {
	v, c := buildVersion()
	return api.NewMetrics(api.MetricsOptions{Cluster: cfg.Cluster, Member: cfg.Name, Version: v, Commit: c})
}

// newAPIServer builds the member's REST API server and its listener (bound
// now, so that a port conflict is reported before the agent starts). With
// api.tls the listener speaks TLS; the certificate is re-read from disk when
// its files change (checked at most once a second, on new connections) and
// on POST /reload. reload re-reads the configuration file (SIGHUP's work);
// nil: POST /reload answers 503.
func newAPIServer(cfg *config.Config, ag *agent.Agent, store *etcd.Store, metrics *api.Metrics, log *slog.Logger, reload func() error) (*http.Server, net.Listener, error) {
	allow, err := api.ParseAllowlist(cfg.API.Allowlist)
	if err != nil {
		return nil, nil, err
	}
	tlsState, err := api.NewTLSState(cfg.API.TLS)
	if err != nil {
		return nil, nil, err
	}
	apiReload := reload
	if reload != nil && tlsState != nil {
		apiReload = func() error { return errors.Join(tlsState.Reload(), reload()) }
	}
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("api.listen %s: %w", cfg.API.Listen, err)
	}
	var tlsCfg *tls.Config
	if tlsState != nil {
		tlsCfg = tlsState.ServerConfig()
		ln = tls.NewListener(ln, tlsCfg)
	}
	h := api.New(api.Deps{
		Agent: ag, Store: store, Cluster: cfg.Cluster, Logger: log,
		Security: api.Security{
			Username: cfg.API.Username, Password: cfg.API.Password, Allowlist: allow,
			RequireClientCert: tlsState != nil && cfg.API.TLS.VerifyClient == "optional",
		},
		Metrics:        metrics,
		Reload:         apiReload,
		ValidateConfig: cfg.Watchdog.ValidateTiming,
	})
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return srv, ln, nil
}

// newPeerClient is the client of the other members' APIs (the agent's peer
// probes and failsafe requests): it trusts api.tls.ca_file when set (else
// the system roots), presents this member's own certificate when a member
// asks for a client certificate (verify_client optional/required), and
// sends api.username/password as basic auth.
func newPeerClient(cfg *config.Config) (*api.Client, error) {
	st, err := api.NewTLSState(cfg.API.TLS)
	if err != nil {
		return nil, err
	}
	tc, err := api.ClientTLSConfig(cfg.API.TLS.CAFile, st)
	if err != nil {
		return nil, err
	}
	return api.NewClient(tc, cfg.API.Username, cfg.API.Password), nil
}
